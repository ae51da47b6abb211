package backend

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLeftoversKeptWhileAnotherProcessHoldsTheRoot: a slave process that
// opens a root another one holds (a master's new session while the old
// one ends, a second master about to be refused) must not clear the
// other's temps and removals in flight; the last one alone does.
func TestLeftoversKeptWhileAnotherProcessHoldsTheRoot(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	inFlight := []string{
		filepath.Join(dir, ReservedDir, tmpDirName, "temp-in-flight"),
		filepath.Join(dir, ReservedDir, trashDirName, "removal-in-flight"),
	}
	for _, p := range inFlight {
		if err := os.WriteFile(p, []byte("the first process's"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Opens in one test process stand for slave processes: each has its
	// own descriptor of the state directory, and flock is per descriptor.
	second, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("a second open beside a live one: %v", err)
	}
	for _, p := range inFlight {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was cleared by a second slave process while the first held the root: %v", filepath.Base(p), err)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	// Alone again: a crash's leftovers go.
	openBackend(t, dir, Options{})
	for _, p := range inFlight {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived an open with no other slave process: %v", filepath.Base(p), err)
		}
	}
}
