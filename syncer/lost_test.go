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
	mustRunOnce(t, cfg, "first sync")
	if err := os.Remove(filepath.Join(tr.slave, "d", "lost")); err != nil {
		t.Fatal(err)
	}
	// Changed on the master (a new size and mtime), so it is planned.
	write("d/lost", "second, longer content")
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(tr.master, "d", "lost"), future, future); err != nil {
		t.Fatal(err)
	}
	mustRunOnce(t, cfg, "sync after the slave lost a file")
	got, err := os.ReadFile(filepath.Join(tr.slave, "d", "lost"))
	if err != nil || string(got) != "second, longer content" {
		t.Fatalf("slave's d/lost after the second sync: %q, %v; want the master's content", got, err)
	}
	if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
		t.Fatal("the slave differs from the master")
	}
}

// TestSlaveLostHardLinkGroupIsMadeAgain: when the slave loses every name
// of a hard-link group, the file is made again at the one name its data
// item carries; the others must follow (a LINK by GFID on the next pass),
// or the replica would lack them for good: no later crawl sees a change.
func TestSlaveLostHardLinkGroupIsMadeAgain(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{SyncNative, SyncRsync} {
		t.Run(mode, func(t *testing.T) {
			tr := newTrees(t, "d", "e")
			a, b, c := filepath.Join("d", "a"), filepath.Join("d", "b"), filepath.Join("e", "c")
			if err := os.WriteFile(filepath.Join(tr.master, a), []byte("first content"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{b, c} {
				if err := os.Link(filepath.Join(tr.master, a), filepath.Join(tr.master, n)); err != nil {
					t.Fatal(err)
				}
			}
			cfg := tr.config(bin)
			cfg.Retries, cfg.SyncMode = 2, mode
			mustRunOnce(t, cfg, "first sync")
			for _, n := range []string{a, b, c} {
				if err := os.Remove(filepath.Join(tr.slave, n)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(tr.master, a), []byte("second, longer content"), 0o644); err != nil {
				t.Fatal(err)
			}
			future := time.Now().Add(time.Minute)
			if err := os.Chtimes(filepath.Join(tr.master, a), future, future); err != nil {
				t.Fatal(err)
			}
			mustRunOnce(t, cfg, "sync after the slave lost the group")
			var first os.FileInfo
			for _, n := range []string{a, b, c} {
				p := filepath.Join(tr.slave, n)
				got, err := os.ReadFile(p)
				if err != nil || string(got) != "second, longer content" {
					t.Fatalf("slave's %s: %q, %v; want the master's content at every name", n, got, err)
				}
				st, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if first == nil {
					first = st
				} else if !os.SameFile(first, st) {
					t.Errorf("slave's %s is not a hard link of %s", n, a)
				}
			}
			if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
				t.Fatal("the slave differs from the master")
			}
		})
	}
}
