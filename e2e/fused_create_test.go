package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/treecmp"
)

// TestFusedCreateFallback: new files whose names the slave already holds
// (a stray file, a directory, a dangling symlink nobody replicated) are
// refused by the data plane's create (EEXIST); the master then makes them
// with entry ops, in its favour, and sends their content. Both data planes
// converge on the master tree.
func TestFusedCreateFallback(t *testing.T) {
	for _, mode := range []string{"native", "rsync"} {
		t.Run(mode, func(t *testing.T) {
			base := t.TempDir()
			s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
			for name, data := range map[string]string{"stray": "master's", "dir": "was a dir", "link": "was a symlink", "plain": "fresh"} {
				if err := os.WriteFile(filepath.Join(s.master, name), []byte(data), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(s.slave, "stray"), []byte("slave's own"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(s.slave, "dir", "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("nowhere", filepath.Join(s.slave, "link")); err != nil {
				t.Fatal(err)
			}
			s.mustOnce(t, "--sync-mode", mode)
			treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
			// Nothing is left to do: a second run changes nothing.
			s.mustOnce(t, "--sync-mode", mode)
			treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
		})
	}
}
