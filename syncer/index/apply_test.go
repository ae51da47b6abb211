package index

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"

	"github.com/georep/georep/internal/gfid"
)

// dump returns every key and value of the index's buckets.
func dump(t *testing.T, db *DB) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	err := db.View(func(tx *Tx) error {
		return tx.tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			m := map[string]string{}
			out[string(name)] = m
			return b.ForEach(func(k, v []byte) error {
				m[fmt.Sprintf("%x", k)] = fmt.Sprintf("%x", v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatalf("dump %s: %v", db.Path(), err)
	}
	return out
}

// TestApplyMatchesPutAndDelete checks that Apply, which buffers its writes
// and writes each bucket in key order, leaves the index exactly as Delete
// of each key then Put of each object would, from the same start: the
// puts and deletes of one batch read each other's writes.
func TestApplyMatchesPutAndDelete(t *testing.T) {
	d1, d2 := gfid.New(), gfid.New()
	ga, gb, gc := gfid.New(), gfid.New(), gfid.New()
	dir1 := Object{Key: "d1", GFID: d1, Mode: 0o40755, Links: []Link{{gfid.Root, "d1"}}}
	dir2 := Object{Key: "d2", GFID: d2, Mode: 0o40755, Links: []Link{{gfid.Root, "d2"}}}
	a := obj("a", ga, Link{d1, "x"})
	b := obj("b", gb, Link{d1, "y"})
	c := obj("c", gc, Link{d2, "z"}, Link{d1, "hard"})
	start := []Object{dir1, dir2, a, b, c}
	cases := []struct {
		name    string
		deletes []Key
		puts    []Object
	}{
		{"nothing", nil, nil},
		{"new objects out of key order", nil, []Object{obj("z9", gfid.New(), Link{d2, "n2"}), obj("m0", gfid.New(), Link{d1, "n1"}), obj("00", gfid.New(), Link{d2, "n0"})}},
		{"swap of two names", nil, []Object{obj("a", ga, Link{d1, "y"}), obj("b", gb, Link{d1, "x"})}},
		{"name taken from a deleted object", []Key{"b"}, []Object{obj("a", ga, Link{d1, "y"})}},
		{"name taken from a live object put later", nil, []Object{obj("n", gfid.New(), Link{d1, "x"}), obj("a", ga, Link{d2, "x2"})}},
		{"key deleted and put again with a new gfid", []Key{"a"}, []Object{obj("a", gfid.New(), Link{d1, "x"})}},
		{"gfid moves to a new key (a successor)", []Key{"a"}, []Object{obj("a2", ga, Link{d1, "x"})}},
		{"a hard link dropped, then the object deleted", []Key{"c"}, []Object{obj("c2", gfid.New(), Link{d1, "hard"})}},
		{"directory deleted with its children", []Key{"a", "b", "c", "d1"}, nil},
		{"deleting an absent key", []Key{"nope"}, []Object{obj("b", gb, Link{d1, "y"}, Link{d2, "y2"})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var dbs [2]*DB
			for i := range dbs {
				dbs[i] = openDB(t, filepath.Join(dir, fmt.Sprintf("%d.db", i)))
				if err := dbs[i].Update(func(tx *Tx) error { return tx.Apply(nil, start) }); err != nil {
					t.Fatalf("set up: %v", err)
				}
			}
			err := dbs[0].Update(func(tx *Tx) error {
				for _, k := range tc.deletes {
					if err := tx.Delete(k); err != nil {
						return err
					}
				}
				for _, o := range tc.puts {
					if err := tx.Put(o); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Delete/Put: %v", err)
			}
			if err := dbs[1].Update(func(tx *Tx) error { return tx.Apply(tc.deletes, tc.puts) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			want, got := dump(t, dbs[0]), dump(t, dbs[1])
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Apply left another index than Delete/Put (-Delete/Put +Apply):\n%s", diff)
			}
			if len(got["objects"]) == 0 && len(tc.deletes) < 4 {
				t.Errorf("the objects bucket is empty after %q", tc.name)
			}
			// Plain reads work again once Apply returned.
			err = dbs[1].View(func(tx *Tx) error {
				for _, o := range tc.puts {
					g, ok, err := tx.Get(o.Key)
					if err != nil || !ok || g.GFID != o.GFID {
						return fmt.Errorf("Get(%q) = %v, %v, %v after Apply; want gfid %s", o.Key, g.GFID, ok, err, o.GFID)
					}
				}
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
}

// TestApplyErrorWritesNothing checks that a failing Apply leaves bbolt
// untouched and the Tx usable: its buffered writes are dropped.
func TestApplyErrorWritesNothing(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), FileName))
	good := obj("good", gfid.New(), Link{gfid.Root, "g"})
	err := db.Update(func(tx *Tx) error {
		if err := tx.Apply(nil, []Object{good, {Key: "no-gfid"}}); err == nil {
			t.Errorf("Apply of an object without a GFID succeeded")
		}
		if _, ok, err := tx.Get(good.Key); err != nil || ok {
			t.Errorf("Get after a failed Apply = %v, %v; want absent", ok, err)
		}
		return tx.Put(obj("other", gfid.New(), Link{gfid.Root, "o"}))
	})
	if err != nil {
		t.Fatal(err)
	}
	got := dump(t, db)
	if _, ok := got["objects"][fmt.Sprintf("%x", "good")]; ok || len(got["objects"]) != 1 {
		t.Errorf("objects after a failed Apply then a Put: %v; want only \"other\"", got["objects"])
	}
}

// TestIntentsRoundTrip checks PutIntents in any order, Intents and
// ClearIntents, and that an empty batch creates nothing.
func TestIntentsRoundTrip(t *testing.T) {
	objs := newObjects(1500)
	cases := []struct {
		name string
		objs []Object
	}{
		{"none", nil},
		{"one", objs[:1]},
		{"many, out of key order", objs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), FileName))
			if err := db.Update(func(tx *Tx) error { return tx.PutIntents(tc.objs) }); err != nil {
				t.Fatalf("PutIntents: %v", err)
			}
			var got []Object
			if err := db.View(func(tx *Tx) (err error) { got, err = tx.Intents(); return err }); err != nil {
				t.Fatalf("Intents: %v", err)
			}
			want := map[Key]Object{}
			for _, o := range tc.objs {
				want[o.Key] = o
			}
			gotm := map[Key]Object{}
			for i, o := range got {
				if i > 0 && got[i-1].Key >= o.Key {
					t.Errorf("intents not in key order at %d", i)
				}
				gotm[o.Key] = o
			}
			if diff := cmp.Diff(want, gotm); diff != "" {
				t.Errorf("intents (-put +read):\n%s", diff)
			}
			if err := db.Update(func(tx *Tx) error { return tx.ClearIntents() }); err != nil {
				t.Fatalf("ClearIntents: %v", err)
			}
			if _, ok := dump(t, db)["intents"]; ok {
				t.Errorf("the intents bucket is still there after ClearIntents")
			}
		})
	}
}

// TestIntentsAcrossBatchesAndVersions checks that intents accumulate over
// batches a crash left uncommitted (the latest record of an object wins),
// and that per-object intents an older georep wrote are still read.
func TestIntentsAcrossBatchesAndVersions(t *testing.T) {
	objs := newObjects(2)[:3] // a directory and its two files
	db := openDB(t, filepath.Join(t.TempDir(), FileName))
	// An older georep's intent: the object's record under its key.
	legacy := objs[0]
	if err := db.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketIntents)
		if err != nil {
			return err
		}
		v, err := record(&legacy).MarshalVT()
		if err != nil {
			return err
		}
		return b.Put([]byte(legacy.Key), v)
	}); err != nil {
		t.Fatal(err)
	}
	moved := objs[1]
	moved.Links = []Link{{Parent: objs[0].GFID, Name: "later"}}
	for _, batch := range [][]Object{objs[1:], {moved}} {
		if err := db.Update(func(tx *Tx) error { return tx.PutIntents(batch) }); err != nil {
			t.Fatalf("PutIntents: %v", err)
		}
	}
	var got []Object
	if err := db.View(func(tx *Tx) (err error) { got, err = tx.Intents(); return err }); err != nil {
		t.Fatalf("Intents: %v", err)
	}
	want := []Object{legacy, moved, objs[2]}
	slices.SortFunc(want, func(a, b Object) int { return strings.Compare(string(a.Key), string(b.Key)) })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("intents (-want +read):\n%s", diff)
	}
	if err := db.Update(func(tx *Tx) error { return tx.ClearIntents() }); err != nil {
		t.Fatalf("ClearIntents: %v", err)
	}
	if err := db.View(func(tx *Tx) (err error) { got, err = tx.Intents(); return err }); err != nil || len(got) != 0 {
		t.Errorf("after ClearIntents: %d intents, err %v; want none", len(got), err)
	}
}

// TestApplyIntoEmptyIndex checks Apply's path for a first crawl's commit
// (puts alone into an empty index) against Put of each object in turn,
// including batches that path hands back to the general one: two puts of
// one key, of one GFID, of one name.
func TestApplyIntoEmptyIndex(t *testing.T) {
	d1 := gfid.New()
	dir1 := Object{Key: "d1", GFID: d1, Mode: 0o40755, Links: []Link{{gfid.Root, "d1"}}}
	ga := gfid.New()
	many := newObjects(1500)
	cases := []struct {
		name string
		puts []Object
	}{
		{"a tree out of key order", many},
		{"hard links", []Object{dir1, obj("h", gfid.New(), Link{d1, "x"}, Link{gfid.Root, "y"}), obj("a", ga, Link{d1, "z"})}},
		{"one key twice: the last wins", []Object{dir1, obj("a", ga, Link{d1, "x"}), obj("a", ga, Link{d1, "y"})}},
		{"one gfid under two keys", []Object{dir1, obj("a", ga, Link{d1, "x"}), obj("b", ga, Link{d1, "y"})}},
		{"one name for two objects", []Object{dir1, obj("a", ga, Link{d1, "x"}), obj("b", gfid.New(), Link{d1, "x"})}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			want, got := openDB(t, filepath.Join(dir, "put.db")), openDB(t, filepath.Join(dir, "apply.db"))
			err := want.Update(func(tx *Tx) error {
				for _, o := range tc.puts {
					if err := tx.Put(o); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if err := got.Update(func(tx *Tx) error { return tx.Apply(nil, tc.puts) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if diff := cmp.Diff(dump(t, want), dump(t, got)); diff != "" {
				t.Errorf("Apply into an empty index differs from Put (-Put +Apply):\n%s", diff)
			}
		})
	}
}
