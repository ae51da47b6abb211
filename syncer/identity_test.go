package syncer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/syncer/plan"
)

// TestDataOfAnotherObjectIsNotSent: a file is renamed over the name its
// data is to be read from, after the scan and before the transfer. The
// data plane must see that the name now holds another object and defer
// the scanned one (whose other hard link keeps it alive), not send the
// newcomer's bytes as its content: the next crawl sees the scanned
// object lose a name, which is no reason to send its data again, so the
// wrong content would have stayed on the slave for good (found by
// e2e's TestCrashRecovery, "size 20498 on the master, 27080 on the
// slave").
func TestDataOfAnotherObjectIsNotSent(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{SyncNative, SyncRsync} {
		t.Run(mode, func(t *testing.T) {
			tr := newTrees(t, "d")
			p := func(rel string) string { return filepath.Join(tr.master, "d", rel) }
			write := func(rel, content string) {
				t.Helper()
				if err := os.WriteFile(p(rel), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("a", "the first content of the linked file")
			if err := os.Link(p("a"), p("link")); err != nil {
				t.Fatal(err)
			}
			cfg := tr.config(bin)
			cfg.Retries, cfg.SyncMode = 2, mode
			mustRunOnce(t, cfg, "first sync")

			write("a", "the linked file, rewritten to a new length")
			write("other", "a newcomer")
			renamed := false
			cfg.beforeData = func(data []plan.DataItem) {
				for _, d := range data {
					// The linked file's data is read at one of its names.
					if renamed || (d.RelPath != "d/a" && d.RelPath != "d/link") {
						continue
					}
					renamed = true
					if err := os.Rename(p("other"), filepath.Join(tr.master, d.RelPath)); err != nil {
						t.Error(err)
					}
				}
			}
			mustRunOnce(t, cfg, "the sync the rename races")
			cfg.beforeData = nil
			if !renamed {
				t.Fatal("the linked file's data was not planned")
			}
			mustRunOnce(t, cfg, "the next sync")
			if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
				t.Fatal("the slave differs from the master")
			}
		})
	}
}
