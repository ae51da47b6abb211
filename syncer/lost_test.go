package syncer

import (
	"os"
	"path/filepath"
	"testing"
	"time"

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
	tr := newTrees(t, "d")
	write := func(rel, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(tr.master, rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("d/lost", "first content")
	write("d/kept", "stays")
	cfg := tr.config(bin)
	cfg.Retries, cfg.SyncMode = 2, mode
	run := func(what string) {
		t.Helper()
		if logs, err := runOnce(cfg); err != nil {
			t.Fatalf("%s: Run: %v\n%s", what, err, logs)
		}
	}
	run("first sync")
	if err := os.Remove(filepath.Join(tr.slave, "d", "lost")); err != nil {
		t.Fatal(err)
	}
	// Changed on the master (a new size and mtime), so it is planned.
	write("d/lost", "second, longer content")
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(tr.master, "d", "lost"), future, future); err != nil {
		t.Fatal(err)
	}
	run("sync after the slave lost a file")
	got, err := os.ReadFile(filepath.Join(tr.slave, "d", "lost"))
	if err != nil || string(got) != "second, longer content" {
		t.Fatalf("slave's d/lost after the second sync: %q, %v; want the master's content", got, err)
	}
	if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
		t.Fatal("the slave differs from the master")
	}
}
