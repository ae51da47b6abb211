package syncer

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/treecmp"
)

// TestSlaveLostFileIsMadeAgain: a file removed on the slave behind
// georep's back (its name and so its index entry gone) makes the slave
// answer ENOENT to the next put of its content. That is no move on the
// master, so deferring it to "the next crawl" would never send it: each
// crawl would meet the same ENOENT. The master makes the file again, by
// its GFID at its name, and the trees converge.
func TestSlaveLostFileIsMadeAgain(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{SyncNative, SyncRsync} {
		t.Run(mode, func(t *testing.T) { lostFileMadeAgain(t, bin, mode) })
	}
}

func lostFileMadeAgain(t *testing.T, bin, mode string) {
	t.Helper()
	base := t.TempDir()
	master, state, slave := filepath.Join(base, "m"), filepath.Join(base, "state"), filepath.Join(base, "s")
	for _, d := range []string{filepath.Join(master, "d"), state, slave} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(rel, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(master, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("d/lost", "first content")
	write("d/kept", "stays")
	u, err := client.ParseSlaveURL(slave)
	if err != nil {
		t.Fatal(err)
	}
	run := func(what string) {
		t.Helper()
		var logs lockedBuffer
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := Run(ctx, Config{Root: master, StateDir: state, Slave: u, Dial: client.Options{LocalGeorep: bin},
			Once: true, Retries: 2, SyncMode: mode, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}); err != nil {
			t.Fatalf("%s: Run: %v\n%s", what, err, logs.String())
		}
	}
	run("first sync")
	if err := os.Remove(filepath.Join(slave, "d", "lost")); err != nil {
		t.Fatal(err)
	}
	// Changed on the master (a new size and mtime), so it is planned.
	write("d/lost", "second, longer content")
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(master, "d", "lost"), future, future); err != nil {
		t.Fatal(err)
	}
	run("sync after the slave lost a file")
	got, err := os.ReadFile(filepath.Join(slave, "d", "lost"))
	if err != nil || string(got) != "second, longer content" {
		t.Fatalf("slave's d/lost after the second sync: %q, %v; want the master's content", got, err)
	}
	if !treecmp.Compare(t, master, slave, treecmp.Options{}) {
		t.Fatal("the slave differs from the master")
	}
}
