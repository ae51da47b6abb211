package syncer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/treecmp"
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

// TestInterruptedRenameOverThenChange: a batch renames a file over a
// hard link of another and is cut off after its entry ops (the slave
// took the rename; the index never learnt of it). The next session adopts
// the renamed file at that name from the batch's intents, while the index
// still gives the name to the object it replaced. Then the master moves
// or removes the renamed file: both objects now claim the name in the
// index, and each must get its own unlink. With one unlink per name, the
// replaced object's came first, the slave kept the renamed file (it holds
// another GFID), and the index forgot it: a file only on the slave for
// good (e2e's TestCrashRecovery: "churn/d2/r79: only on the slave").
func TestInterruptedRenameOverThenChange(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		then func(p func(string) string) error
	}{
		{"removed", func(p func(string) string) error { return os.Remove(p("d1/link")) }},
		{"renamed in its directory", func(p func(string) string) error { return os.Rename(p("d1/link"), p("d1/moved")) }},
		{"renamed to another directory", func(p func(string) string) error { return os.Rename(p("d1/link"), p("d2/moved")) }},
		{"renamed over another file", func(p func(string) string) error { return os.Rename(p("d1/link"), p("d2/target")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrees(t, "d1", "d2")
			p := func(rel string) string { return filepath.Join(tr.master, rel) }
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(os.WriteFile(p("d1/file"), []byte("the linked file"), 0o644))
			must(os.Link(p("d1/file"), p("d1/link")))
			must(os.WriteFile(p("d1/renamed"), []byte("the file renamed over the link"), 0o644))
			must(os.WriteFile(p("d2/target"), []byte("a bystander"), 0o644))
			cfg := tr.config(bin)
			cfg.Retries = 1
			mustRunOnce(t, cfg, "first sync")

			must(os.Rename(p("d1/renamed"), p("d1/link")))
			cut := cfg
			cut.afterSetStime = func(error) error { return errors.New("the master was killed") }
			if logs, err := runOnce(cut); err == nil {
				t.Fatalf("the cut-off batch succeeded\n%s", logs)
			}
			if got, err := os.ReadFile(filepath.Join(tr.slave, "d1", "link")); err != nil || string(got) != "the file renamed over the link" {
				t.Fatalf("the cut-off batch did not rename on the slave: d1/link holds %q (%v)", got, err)
			}

			must(tc.then(p))
			logs := mustRunOnce(t, cfg, "sync after the cut-off batch")
			if !strings.Contains(logs, "recovered an interrupted batch") {
				t.Errorf("no recovery logged:\n%s", logs)
			}
			if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
				t.Fatalf("the slave differs from the master\n%s", logs)
			}
		})
	}
}
