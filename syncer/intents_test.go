package syncer

import (
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/plan"
)

// TestRecordIntents checks which planned records recordIntents notes before
// a batch is sent: those that give the slave a GFID or a name the index
// does not have, and no others.
func TestRecordIntents(t *testing.T) {
	d1, d2 := gfid.New(), gfid.New()
	g := gfid.New()
	file := func(key string, g gfid.GFID, mtime int64, links ...index.Link) index.Object {
		return index.Object{Key: index.Key(key), GFID: g, Mode: unix.S_IFREG | 0o644, MtimeNs: mtime, CtimeNs: mtime, Links: links}
	}
	indexed := file("f", g, 1, index.Link{Parent: d1, Name: "a"}, index.Link{Parent: d1, Name: "b"})
	cases := []struct {
		name string
		put  index.Object
		want bool
	}{
		{"new object", file("new", gfid.New(), 1, index.Link{Parent: d1, Name: "n"}), true},
		{"data and times changed", file("f", g, 2, indexed.Links...), false},
		{"same names in another order", file("f", g, 2, indexed.Links[1], indexed.Links[0]), false},
		{"a hard link removed", file("f", g, 2, indexed.Links[0]), false},
		{"renamed", file("f", g, 1, index.Link{Parent: d2, Name: "a"}, indexed.Links[1]), true},
		{"a hard link added", file("f", g, 1, append(slices.Clone(indexed.Links), index.Link{Parent: d2, Name: "c"})...), true},
		{"new gfid, same names", file("f", gfid.New(), 1, indexed.Links...), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db, err := index.Open(filepath.Join(t.TempDir(), index.FileName), index.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *index.Tx) error { return tx.Put(indexed) }); err != nil {
				t.Fatal(err)
			}
			m := &master{db: db}
			put := tc.put
			p := &plan.Plan{Changes: []plan.Change{{Key: "gone"}, {Key: put.Key, Object: &put}}}
			if err := m.recordIntents(p); err != nil {
				t.Fatalf("recordIntents: %v", err)
			}
			var got []index.Object
			if err := db.View(func(tx *index.Tx) (err error) { got, err = tx.Intents(); return err }); err != nil {
				t.Fatal(err)
			}
			if tc.want != (len(got) == 1) || len(got) > 1 {
				t.Fatalf("intents %v; want the record noted: %v", got, tc.want)
			}
			if tc.want && (got[0].GFID != put.GFID || !slices.Equal(got[0].Links, put.Links)) {
				t.Errorf("intent %+v; want %+v", got[0], put)
			}
		})
	}
}
