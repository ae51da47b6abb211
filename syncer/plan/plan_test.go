package plan

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/scan"
)

// rig is a master tree, its index and a real slave backend.
type rig struct {
	t              *testing.T
	master, slave  string
	db             *index.DB
	b              *backend.Backend
	opts           Options
	lastEntries    []*pb.Entry
	lastResolution []pb.Resolution
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{t: t, master: t.TempDir(), slave: t.TempDir()}
	db, err := index.Open(filepath.Join(t.TempDir(), index.FileName), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := backend.Open(r.slave, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	r.db, r.b = db, b
	return r
}

func (r *rig) p(rel string) string { return filepath.Join(r.master, rel) }

func (r *rig) must(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) write(rel, data string) {
	r.t.Helper()
	r.must(os.WriteFile(r.p(rel), []byte(data), 0o644))
}

// plan runs a Hybrid Crawl of the whole master tree.
func (r *rig) plan() (*Plan, error) {
	r.t.Helper()
	return Crawl(context.Background(), r.db, r.master, scan.All, scan.Options{Workers: 4}, r.opts)
}

// sync plans, applies the plan to the slave (entries, data, meta), commits
// it and checks the slave equals the master, and that nothing is left to do.
func (r *rig) sync() *Plan {
	r.t.Helper()
	return r.syncDirs(scan.All)
}

// syncDirs is sync with a crawl of dirs only; the check that nothing is
// left to do is a full crawl.
func (r *rig) syncDirs(dirs []scan.Dirty) *Plan {
	r.t.Helper()
	p, err := Crawl(context.Background(), r.db, r.master, dirs, scan.Options{Workers: 4}, r.opts)
	if err != nil {
		r.t.Fatalf("plan: %v", err)
	}
	r.apply(p)
	r.must(r.db.Update(p.Commit))
	compareTrees(r.t, r.master, r.slave)
	again, err := r.plan()
	if err != nil {
		r.t.Fatalf("second plan: %v", err)
	}
	if !again.Empty() {
		r.t.Errorf("a second crawl still finds work: %d entries %v, %d meta, %d data",
			len(again.Entries), describeAll(again.Entries), len(again.Meta), len(again.Data))
	}
	return p
}

func describeAll(es []*pb.Entry) []string {
	var out []string
	for _, e := range es {
		s := strings.TrimPrefix(e.GetOp().String(), "ENTRY_OP_") + " " + string(e.GetName())
		if e.GetOp() == pb.EntryOp_ENTRY_OP_RENAME {
			s += "->" + string(e.GetNewName())
		}
		out = append(out, s)
	}
	return out
}

func (r *rig) apply(p *Plan) {
	r.t.Helper()
	ctx := context.Background()
	res := r.b.EntryOps(ctx, p.Entries)
	r.lastEntries, r.lastResolution = p.Entries, nil
	for i, x := range res {
		r.lastResolution = append(r.lastResolution, x.GetResolution())
		if x.GetErrno() != 0 {
			r.t.Errorf("entry %d %v: %s %s", i, describeAll(p.Entries[i:i+1]), x.GetCode(), x.GetMessage())
		}
	}
	for _, d := range p.Data {
		data, err := os.ReadFile(r.p(d.RelPath))
		r.must(err)
		if d.Create != nil {
			// No entry op made it: the backend's create-with-content does.
			r.createFile(d, data)
			continue
		}
		// Through the slave's GFID index, as the data RPC will.
		r.must(os.WriteFile(filepath.Join(r.slave, backend.IndexPath(d.GFID)), data, 0o600))
	}
	for i, x := range r.b.MetaOps(ctx, p.Meta) {
		if x.GetErrno() != 0 {
			r.t.Errorf("meta %d: %s %s", i, x.GetCode(), x.GetMessage())
		}
	}
}

// createFile makes the new file d with data on the slave, as a PutFiles
// create does.
func (r *rig) createFile(d DataItem, data []byte) {
	r.t.Helper()
	w, err := r.b.BeginPut(backend.PutHeader{GFID: d.GFID, Size: int64(len(data)), LinkParent: d.Parent,
		LinkName: d.Name, Stat: d.Create, Create: true})
	if err != nil {
		r.t.Fatalf("create %s: %v", d.RelPath, err)
	}
	defer w.Abort()
	r.must(w.WriteAt(data, 0))
	sum := blake3.Sum256(data)
	if _, err := w.Commit(sum[:]); err != nil {
		r.t.Fatalf("create %s: %v", d.RelPath, err)
	}
}

type fsNode struct {
	Type    string
	Perm    uint32
	UID     uint32
	GID     uint32
	MtimeNs int64
	Target  string
	Data    string
	Xattrs  map[string]string
	Group   string // the hard-link group: its sorted paths
}

func snapshot(t *testing.T, root string) map[string]fsNode {
	t.Helper()
	out := map[string]fsNode{}
	groups := map[uint64][]string{}
	inoOf := map[string]uint64{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if rel == backend.ReservedDir {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		n := fsNode{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = "dir"
			if rel == "." {
				n.MtimeNs = 0 // the slave root also holds .georep
			}
		case unix.S_IFLNK:
			n.Type = "symlink"
			n.Perm = 0
			tgt, err := os.Readlink(path)
			if err != nil {
				return err
			}
			n.Target = tgt
		case unix.S_IFREG:
			n.Type = "file"
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			n.Data = string(b)
			groups[st.Ino] = append(groups[st.Ino], rel)
			inoOf[rel] = st.Ino
		default:
			n.Type = "node"
		}
		if n.Type != "symlink" {
			names := make([]byte, 4096)
			sz, err := unix.Llistxattr(path, names)
			if err != nil {
				return err
			}
			for _, x := range strings.Split(string(names[:sz]), "\x00") {
				if !strings.HasPrefix(x, "user.") || strings.HasPrefix(x, "user.georep.") {
					continue
				}
				v := make([]byte, 4096)
				vn, err := unix.Lgetxattr(path, x, v)
				if err != nil {
					return err
				}
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[x] = string(v[:vn])
			}
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	for rel, ino := range inoOf {
		g := slices.Clone(groups[ino])
		sort.Strings(g)
		n := out[rel]
		n.Group = strings.Join(g, "|")
		out[rel] = n
	}
	return out
}

func compareTrees(t *testing.T, master, slave string) {
	t.Helper()
	if diff := cmp.Diff(snapshot(t, master), snapshot(t, slave)); diff != "" {
		t.Errorf("slave differs from master (-master +slave):\n%s", diff)
	}
}

func old(n int) time.Time { return time.Date(2001, 2, 3, 4, 5, 6, n, time.UTC) }

func firstWave(r *rig) {
	for _, d := range []string{"a", "a/b", "a/b/c", "x y", "ünï", "sticky", "gone", "gone/deep", "empty", "d1", "d2", "tree"} {
		r.must(os.Mkdir(r.p(d), 0o755))
	}
	r.must(os.Chmod(r.p("sticky"), 0o1777))
	files := map[string]string{
		"a/f1": "one", "a/b/f2": "two", "a/b/c/f3": "three", "x y/f 4": "four", "ünï/é": "accent",
		"empty-file": "", "over-src": "src", "over-dst": "dst", "s1": "first", "s2": "second",
		"gone/g1": "g1", "gone/deep/g2": "g2", "trunc": "0123456789", "same-second": "aaaa",
		"d1/in-d1": "d1", "d2/in-d2": "d2", "sticky/f": "st", "tree/t": "t",
	}
	for f, data := range files {
		r.write(f, data)
	}
	r.must(os.Link(r.p("a/f1"), r.p("a/b/hard")))
	r.must(os.Link(r.p("a/f1"), r.p("x y/hard2")))
	r.must(os.Symlink("../f1", r.p("a/b/rel")))
	r.must(os.Symlink("/etc/passwd", r.p("abs")))
	r.must(os.Symlink("nowhere", r.p("dangling")))
	r.must(unix.Mkfifo(r.p("fifo"), 0o640))
	r.must(os.Lchown(r.p("a/b/f2"), 1234, 5678))
	r.must(os.Lchown(r.p("abs"), 42, 43))
	r.must(unix.Lsetxattr(r.p("a/f1"), "user.colour", []byte("blue"), 0))
	r.must(unix.Lsetxattr(r.p("a/b"), "user.dir", []byte("yes"), 0))
	r.must(os.Chtimes(r.p("a/b/c/f3"), old(0), old(123456789)))
	r.must(os.Chtimes(r.p("a/b/c"), old(0), old(7)))
}

func TestTwoWavesReachTheSlave(t *testing.T) {
	for _, fuse := range []bool{false, true} {
		for _, byNames := range []bool{false, true} {
			name := map[bool]string{false: "entry-op creates", true: "fused creates"}[fuse] +
				map[bool]string{false: ", full crawl", true: ", changed names only"}[byNames]
			t.Run(name, func(t *testing.T) { twoWaves(t, fuse, byNames) })
		}
	}
}

// stamp is what a change detector tells of a path: the inode there, its
// ctime, and the inode of the directory holding the name.
type stamp struct {
	ino, parent uint64
	ctime       unix.Timespec
}

// stamps are the stamps of every path beneath root.
func stamps(t *testing.T, root string) map[string]stamp {
	t.Helper()
	out := map[string]stamp{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st, pst unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if err := unix.Lstat(filepath.Dir(p), &pst); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = stamp{ino: st.Ino, parent: pst.Ino, ctime: st.Ctim}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// changedNames is what a change detector names between two stamps: every
// name added, removed or whose object changed, by the directory that holds
// (or held) it, wherever that directory is now (a directory gone is named
// in its own parent), with the root listed whole as the master does.
func changedNames(before, after map[string]stamp) []scan.Dirty {
	dirAt := map[uint64]string{} // directory inode -> its path now
	for p, st := range after {
		dirAt[st.ino] = p
	}
	names := map[string]map[string]bool{}
	mark := func(p string, parent uint64) {
		dir, ok := dirAt[parent]
		if p == "." || !ok {
			return
		}
		if names[dir] == nil {
			names[dir] = map[string]bool{}
		}
		names[dir][filepath.Base(p)] = true
	}
	for p, st := range after {
		if b, ok := before[p]; !ok || b != st {
			mark(p, st.parent)
		}
	}
	for p, st := range before {
		if a, ok := after[p]; !ok || a != st {
			mark(p, st.parent)
		}
	}
	var dirs []scan.Dirty
	for dir, ns := range names {
		d := scan.Dirty{Path: dir, Names: slices.Sorted(maps.Keys(ns))}
		if dir == "." {
			d.Names = nil
		}
		dirs = append(dirs, d)
	}
	return dirs
}

func twoWaves(t *testing.T, fuse, byNames bool) {
	r := newRig(t)
	r.opts.FuseCreates = fuse
	firstWave(r)
	p := r.sync()
	before := stamps(t, r.master)
	if len(p.Entries) == 0 || len(p.Data) == 0 || len(p.Meta) == 0 {
		t.Fatalf("first plan is missing work: %d entries %d data %d meta", len(p.Entries), len(p.Data), len(p.Meta))
	}
	slaveIno := func(rel string) uint64 {
		t.Helper()
		var st unix.Stat_t
		r.must(unix.Lstat(filepath.Join(r.slave, rel), &st))
		return st.Ino
	}
	inoF1, inoB := slaveIno("a/f1"), slaveIno("a/b")

	// The second wave.
	r.must(os.Rename(r.p("a/f1"), r.p("a/f1.renamed")))  // within a directory
	r.must(os.Rename(r.p("x y/f 4"), r.p("ünï/f 4")))    // across directories
	r.must(os.Rename(r.p("a/b"), r.p("a/bb")))           // a directory with contents
	r.must(os.Rename(r.p("over-src"), r.p("over-dst")))  // over an existing file
	r.must(os.Rename(r.p("s1"), r.p("swap-tmp")))        // two files swapped
	r.must(os.Rename(r.p("s2"), r.p("s1")))              //
	r.must(os.Rename(r.p("swap-tmp"), r.p("s2")))        //
	r.must(os.Rename(r.p("d1"), r.p("d-tmp")))           // two directories swapped
	r.must(os.Rename(r.p("d2"), r.p("d1")))              //
	r.must(os.Rename(r.p("d-tmp"), r.p("d2")))           //
	r.must(os.Link(r.p("a/bb/f2"), r.p("new-link")))     // a new hard link
	r.must(os.Remove(r.p("x y/hard2")))                  // one of several links
	r.must(os.RemoveAll(r.p("gone")))                    // rm -rf
	r.must(os.Remove(r.p("empty")))                      // rmdir
	r.must(os.Rename(r.p("tree"), r.p("tree.old")))      // a name moved away ...
	r.must(os.Mkdir(r.p("tree"), 0o700))                 // ... and reused at once
	r.must(os.Rename(r.p("tree.old/t"), r.p("tree/t")))  //
	r.must(os.Chmod(r.p("a/bb/c/f3"), 0o600))            // chmod
	r.must(os.Lchown(r.p("ünï/é"), 7, 8))                // chown
	r.must(os.Chtimes(r.p("a/bb/f2"), old(5), old(999))) // touch
	r.must(os.Truncate(r.p("trunc"), 3))                 // truncate
	r.must(unix.Lsetxattr(r.p("a/f1.renamed"), "user.colour", []byte("red"), 0))
	r.must(unix.Lremovexattr(r.p("a/bb"), "user.dir"))
	r.write("between", "x")                            // created, renamed, deleted
	r.must(os.Rename(r.p("between"), r.p("between2"))) //
	r.must(os.Remove(r.p("between2")))                 //
	r.write("fresh", "new file")                       // and a plain create
	var st unix.Stat_t
	r.must(unix.Lstat(r.p("same-second"), &st))
	r.write("same-second", "bbbb") // same size, mtime put back: only the ctime tells
	r.must(unix.UtimesNano(r.p("same-second"), []unix.Timespec{st.Atim, st.Mtim}))

	if byNames {
		p = r.syncDirs(changedNames(before, stamps(t, r.master)))
	} else {
		p = r.sync()
	}
	if got := slaveIno("a/f1.renamed"); got != inoF1 {
		t.Errorf("renamed file changed inode on the slave: %d -> %d", inoF1, got)
	}
	if got := slaveIno("a/bb"); got != inoB {
		t.Errorf("renamed directory changed inode on the slave: %d -> %d", inoB, got)
	}
	for i, res := range r.lastResolution {
		if res == pb.Resolution_RESOLUTION_RECREATED {
			t.Errorf("entry %v was recreated instead of moved", describeAll(p.Entries[i:i+1]))
		}
	}
	ops := map[pb.EntryOp]int{}
	for _, e := range p.Entries {
		ops[e.GetOp()]++
	}
	if ops[pb.EntryOp_ENTRY_OP_RENAME] < 8 || ops[pb.EntryOp_ENTRY_OP_RMDIR] < 3 || ops[pb.EntryOp_ENTRY_OP_LINK] != 1 {
		t.Errorf("second wave ops = %v, want renames, rmdirs and one link", ops)
	}
	swaps := 0
	for _, e := range p.Entries {
		if bytes.HasPrefix(e.GetNewName(), []byte(SwapPrefix)) {
			swaps++
		}
	}
	if swaps != 2 {
		t.Errorf("%d moves through a temporary name, want 2 (the file and the directory swaps)", swaps)
	}
}

func TestIgnoreDeletes(t *testing.T) {
	r := newRig(t)
	r.write("keep", "k")
	r.must(os.Mkdir(r.p("dir"), 0o755))
	r.write("dir/x", "x")
	r.sync()
	r.opts.IgnoreDeletes = true
	r.must(os.RemoveAll(r.p("dir")))
	r.must(os.Remove(r.p("keep")))
	r.write("new", "n")
	p, err := r.plan()
	r.must(err)
	for _, e := range p.Entries {
		if op := e.GetOp(); op == pb.EntryOp_ENTRY_OP_UNLINK || op == pb.EntryOp_ENTRY_OP_RMDIR {
			t.Errorf("IgnoreDeletes plan has %v", describeAll([]*pb.Entry{e}))
		}
	}
	r.apply(p)
	r.must(r.db.Update(p.Commit))
	for _, rel := range []string{"keep", "dir/x", "new"} {
		if _, err := os.Lstat(filepath.Join(r.slave, rel)); err != nil {
			t.Errorf("slave lost %s: %v", rel, err)
		}
	}
}

func TestGuards(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(r *rig)
		allow   bool
	}{
		{"emptied root", func(r *rig) {
			r.must(os.RemoveAll(r.p("a")))
			r.must(os.Remove(r.p("f")))
		}, false},
		{"emptied root confirmed", func(r *rig) {
			r.must(os.RemoveAll(r.p("a")))
			r.must(os.Remove(r.p("f")))
		}, true},
		{"root replaced by another directory", func(r *rig) {
			r.must(os.Rename(r.master, r.master+".old"))
			r.must(os.Mkdir(r.master, 0o755))
			r.write("f", "f")
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.must(os.Mkdir(r.p("a"), 0o755))
			r.write("a/x", "x")
			r.write("f", "f")
			r.sync()
			tc.breakIt(r)
			r.opts.AllowMassDelete = tc.allow
			p, err := r.plan()
			if tc.allow {
				if err != nil {
					t.Fatalf("confirmed plan: %v", err)
				}
				r.apply(p)
				compareTrees(t, r.master, r.slave)
				return
			}
			if !errors.Is(err, ErrGuard) || p != nil {
				t.Fatalf("plan = %v, %v; want an ErrGuard refusal and no plan", p, err)
			}
			if _, err := os.Stat(filepath.Join(r.slave, "a/x")); err != nil {
				t.Errorf("slave lost data: %v", err)
			}
		})
	}
}

func TestCascadedGFIDIsKept(t *testing.T) {
	r := newRig(t)
	want := gfid.New()
	r.write("f", "cascade")
	r.must(unix.Lsetxattr(r.p("f"), "trusted.georep.gfid", want.Bytes(), 0))
	r.write("copy", "copied with its xattrs")
	r.must(unix.Lsetxattr(r.p("copy"), "trusted.georep.gfid", want.Bytes(), 0))
	p := r.sync()
	var gotF, gotCopy gfid.GFID
	for _, e := range p.Entries {
		switch string(e.GetName()) {
		case "f":
			gotF = gfid.GFID(e.GetGfid())
		case "copy":
			gotCopy = gfid.GFID(e.GetGfid())
		}
	}
	if gotF != want && gotCopy != want {
		t.Errorf("neither object kept the cascaded gfid %s (f %s, copy %s)", want, gotF, gotCopy)
	}
	if gotF == gotCopy {
		t.Errorf("two objects got the same gfid %s", gotF)
	}
}

// TestCascadedNewContentKeepsGFID: a slave tree used as a master gets new
// content as a new inode under the same GFID (the slave's rename
// install). The next crawl must continue the object — data, no CREATE, the
// same GFID — while a live second object with a copied GFID still gets its
// own.
func TestCascadedNewContentKeepsGFID(t *testing.T) {
	r := newRig(t)
	want := gfid.New()
	r.write("f", "version 1")
	r.must(unix.Lsetxattr(r.p("f"), "trusted.georep.gfid", want.Bytes(), 0))
	r.sync()

	// New content as the slave installs it: a new inode, same xattr,
	// renamed over the name.
	r.write("f.new", "version 2, longer")
	r.must(unix.Lsetxattr(r.p("f.new"), "trusted.georep.gfid", want.Bytes(), 0))
	r.must(os.Rename(r.p("f.new"), r.p("f")))
	p := r.sync()
	for _, e := range p.Entries {
		t.Errorf("new content of a cascaded file planned an entry: %v", describeAll([]*pb.Entry{e}))
	}
	if len(p.Data) != 1 || p.Data[0].GFID != want {
		t.Errorf("data = %+v, want one item for %s", p.Data, want)
	}

	// A copy carrying the same GFID beside the live original is a new object.
	r.write("copy", "copied")
	r.must(unix.Lsetxattr(r.p("copy"), "trusted.georep.gfid", want.Bytes(), 0))
	p = r.sync()
	for _, e := range p.Entries {
		if string(e.GetName()) == "copy" && gfid.GFID(e.GetGfid()) == want {
			t.Errorf("the copy took the live original's gfid %s", want)
		}
	}
}

// TestLinkInMovedDirectoryIsKept: a file with a second name inside a
// directory, renamed while the directory is renamed, and nothing else
// changing inside it. Only the file's first name and the directory's move
// are seen; the second name must stay, although the index's path of its
// directory no longer exists. (Dropping it unlinked a/bb/hard on the
// slave: the continuous e2e waves caught it.)
func TestLinkInMovedDirectoryIsKept(t *testing.T) {
	for _, byNames := range []bool{false, true} {
		t.Run(map[bool]string{false: "listed whole", true: "by names"}[byNames], func(t *testing.T) {
			r := newRig(t)
			r.must(os.MkdirAll(r.p("a/b"), 0o755))
			r.write("a/f1", "shared")
			r.must(os.Link(r.p("a/f1"), r.p("a/b/hard")))
			r.write("a/b/other", "x")
			r.sync()

			r.must(os.Rename(r.p("a/b"), r.p("a/bb")))
			r.must(os.Rename(r.p("a/f1"), r.p("a/f1.renamed")))
			dirty := scan.Dirty{Path: "a"}
			if byNames {
				dirty.Names = []string{"b", "bb", "f1", "f1.renamed"}
			}
			p := r.syncDirs([]scan.Dirty{dirty})
			for _, e := range p.Entries {
				if e.GetOp() == pb.EntryOp_ENTRY_OP_UNLINK {
					t.Errorf("the plan unlinks %q", e.GetName())
				}
			}
		})
	}
}
