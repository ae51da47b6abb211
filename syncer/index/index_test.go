package index

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
)

func openDB(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func obj(key string, g gfid.GFID, links ...Link) Object {
	return Object{Key: Key(key), GFID: g, Mode: unix.S_IFREG | 0o644, Size: 3, MtimeNs: 17, CtimeNs: 19,
		Ino: 5, Dev: 7, UID: 1, GID: 2, XattrDigest: 99, Links: links}
}

func TestPutGetAndSecondaryBuckets(t *testing.T) {
	d1, d2 := gfid.New(), gfid.New()
	g := gfid.New()
	type step struct {
		put      *Object
		del      Key
		children map[gfid.GFID]map[string]Key
		byGFID   map[gfid.GFID]Key // "" means absent
	}
	a := obj("a", g, Link{d1, "x"}, Link{d1, "y"})
	aMoved := obj("a", g, Link{d2, "z"}, Link{d1, "y"})
	bOverY := obj("b", gfid.New(), Link{d1, "y"})
	aRegfid := obj("a", gfid.New(), Link{d2, "z"})
	steps := []struct {
		name string
		step
	}{
		{"put with two links", step{put: &a,
			children: map[gfid.GFID]map[string]Key{d1: {"x": "a", "y": "a"}, d2: {}},
			byGFID:   map[gfid.GFID]Key{g: "a"}}},
		{"a link moves away, stale child removed", step{put: &aMoved,
			children: map[gfid.GFID]map[string]Key{d1: {"y": "a"}, d2: {"z": "a"}},
			byGFID:   map[gfid.GFID]Key{g: "a"}}},
		{"another object takes a name", step{put: &bOverY,
			children: map[gfid.GFID]map[string]Key{d1: {"y": "b"}, d2: {"z": "a"}},
			byGFID:   map[gfid.GFID]Key{g: "a", bOverY.GFID: "b"}}},
		{"new gfid for the same key drops the old gfid", step{put: &aRegfid,
			children: map[gfid.GFID]map[string]Key{d1: {"y": "b"}, d2: {"z": "a"}},
			byGFID:   map[gfid.GFID]Key{g: "", aRegfid.GFID: "a"}}},
		{"delete leaves names now held by others", step{del: "a",
			children: map[gfid.GFID]map[string]Key{d1: {"y": "b"}, d2: {}},
			byGFID:   map[gfid.GFID]Key{aRegfid.GFID: "", bOverY.GFID: "b"}}},
	}
	db := openDB(t, filepath.Join(t.TempDir(), FileName))
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			err := db.Update(func(tx *Tx) error {
				if s.put != nil {
					return tx.Put(*s.put)
				}
				return tx.Delete(s.del)
			})
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			err = db.View(func(tx *Tx) error {
				if s.put != nil {
					got, ok, err := tx.Get(s.put.Key)
					if err != nil || !ok {
						t.Fatalf("Get(%q) = ok %v, %v", s.put.Key, ok, err)
					}
					if diff := cmp.Diff(*s.put, got); diff != "" {
						t.Errorf("Get(%q) (-want +got):\n%s", s.put.Key, diff)
					}
				} else if _, ok, _ := tx.Get(s.del); ok {
					t.Errorf("Get(%q) found a deleted object", s.del)
				}
				for p, want := range s.children {
					got, err := tx.Children(p)
					if err != nil {
						t.Fatalf("Children: %v", err)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("Children(%s) (-want +got):\n%s", p, diff)
					}
				}
				for g, want := range s.byGFID {
					got, ok := tx.ByGFID(g)
					if want == "" && ok || want != "" && got != want {
						t.Errorf("ByGFID(%s) = %q, %v; want %q", g, got, ok, want)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMetaSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	db := openDB(t, path)
	root := RootID{FSID: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Dev: 66, Ino: 2}
	rootObj := Object{Key: "r", GFID: gfid.Root, Mode: unix.S_IFDIR | 0o755}
	err := db.Update(func(tx *Tx) error {
		if tx.HasObjects() {
			t.Errorf("HasObjects on an empty index")
		}
		if err := tx.Put(rootObj); err != nil {
			return err
		}
		if tx.HasObjects() {
			t.Errorf("HasObjects with only the root")
		}
		if err := tx.Put(obj("f", gfid.New(), Link{gfid.Root, "f"})); err != nil {
			return err
		}
		if err := tx.SetStime(1234567890123456789); err != nil {
			return err
		}
		if err := tx.SetRootID(root); err != nil {
			return err
		}
		if err := tx.RecordFailure(gfid.Root, "EACCES on the slave"); err != nil {
			return err
		}
		return tx.SetInitialised()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, path)
	err = db.View(func(tx *Tx) error {
		if ns, ok := tx.Stime(); !ok || ns != 1234567890123456789 {
			t.Errorf("Stime = %d, %v", ns, ok)
		}
		if r, ok, err := tx.RootID(); err != nil || !ok || r != root {
			t.Errorf("RootID = %v, %v, %v; want %v", r, ok, err, root)
		}
		if !tx.Initialised() {
			t.Errorf("Initialised = false after SetInitialised")
		}
		if !tx.HasObjects() {
			t.Errorf("HasObjects = false with a file indexed")
		}
		f, err := tx.Failures()
		if err != nil || f[gfid.Root] != "EACCES on the slave" {
			t.Errorf("Failures = %v, %v", f, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ns, known, err := db.Ctime("f"); err != nil || !known || ns != 19 {
		t.Errorf("Ctime(f) = %d, %v, %v; want 19", ns, known, err)
	}
	if _, known, err := db.Ctime("nope"); err != nil || known {
		t.Errorf("Ctime(nope) = known %v, %v", known, err)
	}
}

func TestSecondOpenerIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	openDB(t, path)
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if err == nil {
		t.Fatal("a second Open of a held index succeeded")
	}
	if want := "another georep master holds it"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestKeyOfFollowsIdentity(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(dir, "s")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	key := func(name string) Key {
		t.Helper()
		var st unix.Stat_t
		flags := unix.AT_SYMLINK_NOFOLLOW
		if name == "" {
			flags |= unix.AT_EMPTY_PATH
		}
		if err := unix.Fstatat(fd, name, &st, flags); err != nil {
			t.Fatal(err)
		}
		k, err := KeyOf(fd, name, &st)
		if err != nil {
			t.Fatalf("KeyOf(%q): %v", name, err)
		}
		return k
	}
	before := key("a")
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "b"), filepath.Join(dir, "c")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  Key
		same bool
	}{
		{"renamed file keeps its key", key("b"), true},
		{"hard link shares the key", key("c"), true},
		{"symlink is itself, not its target", key("s"), false},
		{"directory itself", key(""), false},
	}
	for _, tc := range tests {
		if (tc.got == before) != tc.same {
			t.Errorf("%s: key %x vs %x, same=%v want %v", tc.name, tc.got, before, tc.got == before, tc.same)
		}
		if tc.got[0] != 'h' {
			t.Errorf("%s: key %x is not a file handle on this filesystem", tc.name, tc.got)
		}
	}
	if k := DevInoKey(1, 2); len(k) != 17 || k[0] != 'i' {
		t.Errorf("DevInoKey = %x", k)
	}
	if _, err := KeyOf(fd, "missing", &unix.Stat_t{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("KeyOf(missing) = %v, want ENOENT", err)
	}
}

// Tx.Ctime reads one field of the record; it must agree with a full decode.
func TestCtimeAgreesWithGet(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), FileName))
	big := obj("big", gfid.New(), Link{gfid.Root, "big"})
	big.CtimeNs, big.Target = 1<<62+12345, []byte("target")
	neg := obj("neg", gfid.New(), Link{gfid.Root, "neg"})
	neg.CtimeNs = -5
	zero := obj("zero", gfid.New())
	zero.CtimeNs = 0
	cases := []struct {
		name    string
		put     *Object
		raw     []byte // stored as is instead of put
		key     Key
		want    int64
		known   bool
		wantErr bool
	}{
		{name: "absent", key: "nothing"},
		{name: "ordinary", put: ptr(obj("a", gfid.New(), Link{gfid.Root, "a"})), key: "a", want: 19, known: true},
		{name: "large, after other fields", put: &big, key: "big", want: 1<<62 + 12345, known: true},
		{name: "negative", put: &neg, key: "neg", want: -5, known: true},
		{name: "zero is not encoded", put: &zero, key: "zero", want: 0, known: true},
		{name: "damaged", raw: []byte{0x42, 0xff}, key: "bad", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := db.Update(func(tx *Tx) error {
				if c.put != nil {
					return tx.Put(*c.put)
				}
				if c.raw != nil {
					return tx.objects.Put([]byte(c.key), c.raw)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			ns, known, err := db.Ctime(c.key)
			if (err != nil) != c.wantErr {
				t.Fatalf("Ctime(%q) error %v, want error %v", c.key, err, c.wantErr)
			}
			if ns != c.want || known != c.known {
				t.Errorf("Ctime(%q) = %d, %v; want %d, %v", c.key, ns, known, c.want, c.known)
			}
			if c.wantErr {
				return
			}
			err = db.View(func(tx *Tx) error {
				o, ok, err := tx.Get(c.key)
				if err != nil {
					return err
				}
				if ok != known || o.CtimeNs != ns {
					t.Errorf("Get(%q) ctime %d, %v; Ctime said %d, %v", c.key, o.CtimeNs, ok, ns, known)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
