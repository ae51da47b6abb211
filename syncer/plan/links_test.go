package plan

import (
	"testing"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/syncer/index"
)

func TestPlanLinks(t *testing.T) {
	two, one, gone := gfid.New(), gfid.New(), gfid.New()
	p := &Plan{Changes: []Change{
		{Key: "k1", Object: &index.Object{GFID: one, Links: []index.Link{{Parent: gfid.Root, Name: "a"}}}},
		{Key: "k2", Object: &index.Object{GFID: two, Links: []index.Link{{Parent: gfid.Root, Name: "b"}, {Parent: gfid.Root, Name: "c"}}}},
		{Key: "k3"}, // a delete
	}}
	for _, tc := range []struct {
		name string
		g    gfid.GFID
		want int
	}{
		{"two names", two, 2},
		{"one name", one, 1},
		{"not in the plan", gone, 1},
	} {
		if got := p.Links(tc.g); got != tc.want {
			t.Errorf("%s: Links = %d, want %d", tc.name, got, tc.want)
		}
	}
}
