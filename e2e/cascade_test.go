package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/internal/treegen"
)

// TestCascade replicates A → B over one session and B → C over a second
// whose master root is B: C equals A, and every path has the same GFID on
// B and C.
func TestCascade(t *testing.T) {
	base := t.TempDir()
	a, b, c := filepath.Join(base, "A"), filepath.Join(base, "B"), filepath.Join(base, "C")
	ab := newSession(t, a, b)
	bc := newSession(t, b, c)
	treegen.First(t, a)

	waves := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"first tree", func(*testing.T) {}},
		{"second wave", func(t *testing.T) { treegen.SecondWave(t, a) }},
	}
	for _, w := range waves {
		t.Run(w.name, func(t *testing.T) {
			w.change(t)
			ab.mustOnce(t)
			bc.mustOnce(t)
			treecmp.Compare(t, a, b, treecmp.Options{})
			treecmp.Compare(t, a, c, treecmp.Options{})
			gb, err := treecmp.GFIDs(b, treecmp.Options{})
			if err != nil {
				t.Fatal(err)
			}
			gc, err := treecmp.GFIDs(c, treecmp.Options{})
			if err != nil {
				t.Fatal(err)
			}
			compareGFIDs(t, gb, gc)
			// B's own .georep is B's slave state, not data: C has its own.
			vb, errB := os.ReadFile(filepath.Join(b, treecmp.ReservedDir, "volume-id"))
			vc, errC := os.ReadFile(filepath.Join(c, treecmp.ReservedDir, "volume-id"))
			if errB != nil || errC != nil || bytes.Equal(vb, vc) {
				t.Errorf("B's and C's volume ids: %q (%v), %q (%v); want two different ones", vb, errB, vc, errC)
			}
		})
	}
}

func compareGFIDs(t *testing.T, b, c map[string]gfid.GFID) {
	t.Helper()
	bad := 0
	for rel, g := range b {
		if gc, ok := c[rel]; !ok || gc != g {
			bad++
			if bad <= 20 {
				t.Errorf("%s: gfid %s on B, %s on C", rel, g, gc)
			}
		}
	}
	if len(b) != len(c) || bad > 0 {
		t.Errorf("%d of %d GFIDs differ between B and C (%d paths on C)", bad, len(b), len(c))
	}
}
