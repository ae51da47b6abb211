package backend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func TestCreateOps(t *testing.T) {
	b, root := newBackend(t)
	dev := uint64(unix.Mkdev(1, 3))
	tests := []struct {
		name   string
		entry  *pb.Entry
		typ    uint32
		mode   uint32
		target string
		rdev   uint64
	}{
		{"file", mk(pb.EntryOp_ENTRY_OP_CREATE, gfid.New(), gfid.Root, "f", stOwned(unix.S_IFREG|0o4750, 1234, 5678)), unix.S_IFREG, 0o4750, "", 0},
		{"file-type-0", mk(pb.EntryOp_ENTRY_OP_CREATE, gfid.New(), gfid.Root, "f0", st(0o600)), unix.S_IFREG, 0o600, "", 0},
		{"dir", mk(pb.EntryOp_ENTRY_OP_MKDIR, gfid.New(), gfid.Root, "d", stOwned(unix.S_IFDIR|0o1777, 42, 43)), unix.S_IFDIR, 0o1777, "", 0},
		{"fifo", mk(pb.EntryOp_ENTRY_OP_MKNOD, gfid.New(), gfid.Root, "p", st(unix.S_IFIFO|0o640)), unix.S_IFIFO, 0o640, "", 0},
		{"chardev", &pb.Entry{Op: pb.EntryOp_ENTRY_OP_MKNOD, Gfid: gfid.New().Bytes(), ParentGfid: gfid.Root.Bytes(),
			Name: []byte("null"), Stat: &pb.Stat{Mode: unix.S_IFCHR | 0o666, Rdev: dev}}, unix.S_IFCHR, 0o666, "", dev},
		{"symlink-abs", symlink(gfid.New(), gfid.Root, "sa", "/etc/passwd"), unix.S_IFLNK, 0o777, "/etc/passwd", 0},
		{"symlink-rel", symlink(gfid.New(), gfid.Root, "sr", "../../outside/x"), unix.S_IFLNK, 0o777, "../../outside/x", 0},
		{"symlink-dangling", symlink(gfid.New(), gfid.Root, "sd", "no/such/\xff"), unix.S_IFLNK, 0o777, "no/such/\xff", 0},
		{"name-with-odd-bytes", mk(pb.EntryOp_ENTRY_OP_CREATE, gfid.New(), gfid.Root, "a\nb\xfe ..", st(unix.S_IFREG|0o644)), unix.S_IFREG, 0o644, "", 0},
	}
	old := unix.Umask(0o077) // the umask must not matter
	defer unix.Umask(old)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantResult(t, "first", apply1(t, b, tt.entry), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
			p := filepath.Join(root, string(tt.entry.Name))
			s := lstatPath(t, p)
			if s.Mode&unix.S_IFMT != tt.typ {
				t.Errorf("type %#o, want %#o", s.Mode&unix.S_IFMT, tt.typ)
			}
			if tt.typ != unix.S_IFLNK && s.Mode&0o7777 != tt.mode {
				t.Errorf("mode %#o, want %#o", s.Mode&0o7777, tt.mode)
			}
			if s.Uid != tt.entry.Stat.Uid || s.Gid != tt.entry.Stat.Gid {
				t.Errorf("owner %d:%d, want %d:%d", s.Uid, s.Gid, tt.entry.Stat.Uid, tt.entry.Stat.Gid)
			}
			if tt.rdev != 0 && s.Rdev != tt.rdev {
				t.Errorf("rdev %#x, want %#x", s.Rdev, tt.rdev)
			}
			if tt.target != "" {
				if got, _ := os.Readlink(p); got != tt.target {
					t.Errorf("target %q, want %q", got, tt.target)
				}
			}
			if g := gfidOfPath(t, b, p); g != gfid.GFID(tt.entry.Gfid) {
				t.Errorf("gfid %s, want %x", g, tt.entry.Gfid)
			}
			r, err := b.LstatGFID(gfid.GFID(tt.entry.Gfid))
			if err != nil {
				t.Fatalf("LstatGFID: %v", err)
			}
			if r.Stat.Ino != s.Ino || string(r.LinkTarget) != tt.target {
				t.Errorf("LstatGFID ino %d target %q, want %d %q", r.Stat.Ino, r.LinkTarget, s.Ino, tt.target)
			}
			if tt.typ != unix.S_IFDIR && r.Stat.Nlink != 1 {
				t.Errorf("LstatGFID nlink %d, want 1 (index link excluded)", r.Stat.Nlink)
			}
			wantResult(t, "replay", apply1(t, b, tt.entry), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
		})
	}
	// Nothing was left behind in tmp or trash.
	dirEmpty(t, filepath.Join(root, ReservedDir, tmpDirName))
	dirEmpty(t, filepath.Join(root, ReservedDir, trashDirName))
}

func TestCreateValidation(t *testing.T) {
	b, root := newBackend(t)
	x := gfid.New()
	withTarget := func(e *pb.Entry, t string) *pb.Entry { e.LinkTarget = []byte(t); return e }
	tests := []struct {
		name  string
		entry *pb.Entry
		errno unix.Errno
	}{
		{"no op", mk(pb.EntryOp_ENTRY_OP_UNSPECIFIED, x, gfid.Root, "a", st(0)), unix.EINVAL},
		{"short gfid", &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: []byte{1, 2}, ParentGfid: gfid.Root.Bytes(), Name: []byte("a"), Stat: st(0)}, unix.EINVAL},
		{"zero gfid", mk(pb.EntryOp_ENTRY_OP_CREATE, gfid.GFID{}, gfid.Root, "a", st(0)), unix.EINVAL},
		{"root gfid", mk(pb.EntryOp_ENTRY_OP_MKDIR, gfid.Root, gfid.Root, "a", st(unix.S_IFDIR)), unix.EINVAL},
		{"dotdot", create(x, gfid.Root, ".."), unix.EINVAL},
		{"slash", create(x, gfid.Root, "a/b"), unix.EINVAL},
		{"reserved", create(x, gfid.Root, ReservedDir), unix.EPERM},
		{"no stat", mk(pb.EntryOp_ENTRY_OP_CREATE, x, gfid.Root, "a", nil), unix.EINVAL},
		{"create dir type", mk(pb.EntryOp_ENTRY_OP_CREATE, x, gfid.Root, "a", st(unix.S_IFDIR)), unix.EINVAL},
		{"mkdir file type", mk(pb.EntryOp_ENTRY_OP_MKDIR, x, gfid.Root, "a", st(unix.S_IFREG)), unix.EINVAL},
		{"mknod dir type", mk(pb.EntryOp_ENTRY_OP_MKNOD, x, gfid.Root, "a", st(unix.S_IFDIR)), unix.EINVAL},
		{"symlink no target", symlink(x, gfid.Root, "a", ""), unix.EINVAL},
		{"symlink NUL", symlink(x, gfid.Root, "a", "x\x00y"), unix.EINVAL},
		{"symlink too long", withTarget(symlink(x, gfid.Root, "a", ""), string(make([]byte, 5000))), unix.ENAMETOOLONG},
		{"parent missing", create(x, gfid.New(), "a"), unix.ENOENT},
		{"parent is a file", create(x, x, "a"), unix.ENOENT},
		{"bad nsec", mk(pb.EntryOp_ENTRY_OP_CREATE, x, gfid.Root, "a", &pb.Stat{Mtime: &pb.Timestamp{Nsec: 1e9}}), unix.EINVAL},
	}
	for _, tt := range tests {
		r := apply1(t, b, tt.entry)
		wantResult(t, tt.name, r, tt.errno, pb.Resolution_RESOLUTION_UNSPECIFIED)
	}
	ents, err := os.ReadDir(root)
	if err != nil || len(ents) != 1 {
		t.Errorf("root holds %v after invalid entries, want only %s", ents, ReservedDir)
	}
}

func TestCreateConflicts(t *testing.T) {
	b, root := newBackend(t)
	y, x, d, z := gfid.New(), gfid.New(), gfid.New(), gfid.New()
	apply(t, b, create(y, gfid.Root, "name"), mkdir(d, gfid.Root, "dirname"), create(z, d, "inside"))

	// A file of another identity: replaced in the master's favour.
	r := apply1(t, b, create(x, gfid.Root, "name"))
	wantResult(t, "file over file", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if gfid.GFID(r.ReplacedGfid) != y {
		t.Errorf("replaced_gfid %x, want %s", r.ReplacedGfid, y)
	}
	if g := gfidOfPath(t, b, filepath.Join(root, "name")); g != x {
		t.Errorf("name holds %s, want %s", g, x)
	}
	if indexed(t, b, y) {
		t.Errorf("displaced %s is still indexed", y)
	}

	// A directory with contents where a file must go: the whole subtree goes.
	f := gfid.New()
	r = apply1(t, b, create(f, gfid.Root, "dirname"))
	wantResult(t, "file over dir", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if gfid.GFID(r.ReplacedGfid) != d || indexed(t, b, d) || indexed(t, b, z) {
		t.Errorf("replaced %x; d indexed %v z indexed %v", r.ReplacedGfid, indexed(t, b, d), indexed(t, b, z))
	}

	// An object with no identity (not made by georep).
	if err := os.WriteFile(filepath.Join(root, "foreign"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := gfid.New()
	r = apply1(t, b, mkdir(n, gfid.Root, "foreign"))
	wantResult(t, "dir over foreign file", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if len(r.ReplacedGfid) != 0 {
		t.Errorf("replaced_gfid %x for an object without identity", r.ReplacedGfid)
	}
	if s := lstatPath(t, filepath.Join(root, "foreign")); s.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("foreign is %#o, want a directory", s.Mode)
	}

	// X exists elsewhere: left for a later RENAME/LINK.
	r = apply1(t, b, create(x, gfid.Root, "elsewhere"))
	wantResult(t, "exists elsewhere", r, 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
	wantMissing(t, filepath.Join(root, "elsewhere"))
	dirEmpty(t, filepath.Join(root, ReservedDir, trashDirName))
}

func TestRenameOverExistingFile(t *testing.T) {
	b, root := newBackend(t)
	a, c := gfid.New(), gfid.New()
	apply(t, b, create(a, gfid.Root, "a"), create(c, gfid.Root, "c"))
	ino := lstatPath(t, filepath.Join(root, "a")).Ino
	r := apply1(t, b, rename(a, gfid.Root, "a", gfid.Root, "c"))
	wantResult(t, "rename over file", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if gfid.GFID(r.ReplacedGfid) != c {
		t.Errorf("replaced %x, want %s", r.ReplacedGfid, c)
	}
	wantMissing(t, filepath.Join(root, "a"))
	if s := lstatPath(t, filepath.Join(root, "c")); s.Ino != ino {
		t.Errorf("c has inode %d, want a's %d", s.Ino, ino)
	}
	if indexed(t, b, c) {
		t.Errorf("replaced %s still indexed", c)
	}
	wantResult(t, "replay", apply1(t, b, rename(a, gfid.Root, "a", gfid.Root, "c")), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
}

func TestRenameDirectoryWithContents(t *testing.T) {
	b, root := newBackend(t)
	d, sub, f, other := gfid.New(), gfid.New(), gfid.New(), gfid.New()
	apply(t, b,
		mkdir(d, gfid.Root, "d"), mkdir(sub, d, "sub"), create(f, sub, "f"),
		mkdir(other, gfid.Root, "other"),
	)
	ino := lstatPath(t, filepath.Join(root, "d")).Ino
	// Warm the fd cache so the test also covers cached fds following a rename.
	if _, err := b.LstatGFID(sub); err != nil {
		t.Fatal(err)
	}
	wantResult(t, "rename dir", apply1(t, b, rename(d, gfid.Root, "d", other, "moved")), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
	moved := filepath.Join(root, "other", "moved")
	if s := lstatPath(t, moved); s.Ino != ino {
		t.Errorf("moved dir inode %d, want %d", s.Ino, ino)
	}
	lstatPath(t, filepath.Join(moved, "sub", "f"))
	wantMissing(t, filepath.Join(root, "d"))

	// Children are reachable by GFID, and work under the moved dir goes there.
	for _, g := range []gfid.GFID{d, sub, f} {
		if !indexed(t, b, g) {
			t.Errorf("%s not reachable after the rename", g)
		}
	}
	ents, err := b.Entries(context.Background(), sub)
	if err != nil || len(ents) != 1 || string(ents[0].Name) != "f" {
		t.Errorf("Entries(sub) = %v, %v", ents, err)
	}
	n := gfid.New()
	apply(t, b, create(n, sub, "new"))
	lstatPath(t, filepath.Join(moved, "sub", "new"))
	mode := uint32(0o711)
	if rs := meta(t, b, &pb.MetaEntry{Gfid: sub.Bytes(), Mode: &mode}); rs[0].Errno != 0 {
		t.Fatalf("meta on moved subdir: %s", rs[0].Message)
	}
	if s := lstatPath(t, filepath.Join(moved, "sub")); s.Mode&0o7777 != 0o711 {
		t.Errorf("sub mode %#o", s.Mode&0o7777)
	}

	wantResult(t, "replay", apply1(t, b, rename(d, gfid.Root, "d", other, "moved")), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)

	// Into itself (or a descendant): refused.
	wantResult(t, "into itself", apply1(t, b, rename(d, other, "moved", sub, "loop")), unix.EINVAL, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantResult(t, "onto itself", apply1(t, b, rename(d, other, "moved", d, "loop")), unix.EINVAL, pb.Resolution_RESOLUTION_UNSPECIFIED)

	// Over a non-empty directory of another identity: replaced.
	y, yc := gfid.New(), gfid.New()
	apply(t, b, mkdir(y, gfid.Root, "target"), create(yc, y, "child"))
	r := apply1(t, b, rename(d, other, "moved", gfid.Root, "target"))
	wantResult(t, "over dir", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if gfid.GFID(r.ReplacedGfid) != y || indexed(t, b, y) || indexed(t, b, yc) {
		t.Errorf("replaced %x, y indexed %v, yc indexed %v", r.ReplacedGfid, indexed(t, b, y), indexed(t, b, yc))
	}
	lstatPath(t, filepath.Join(root, "target", "sub", "new"))
	if !indexed(t, b, f) {
		t.Error("f lost after the second move")
	}
}

func TestRenameSourceGone(t *testing.T) {
	b, root := newBackend(t)
	x := gfid.New()
	apply(t, b, create(x, gfid.Root, "a"))
	// The source name is gone but the object lives on (another name).
	apply(t, b, link(x, gfid.Root, "b", nil), unlink(x, gfid.Root, "a"))
	r := apply1(t, b, rename(x, gfid.Root, "a", gfid.Root, "c"))
	wantResult(t, "linked from index", r, 0, pb.Resolution_RESOLUTION_LINKED_FROM_INDEX)
	if lstatPath(t, filepath.Join(root, "c")).Ino != lstatPath(t, filepath.Join(root, "b")).Ino {
		t.Error("c is not a link of x")
	}

	// Entirely absent: recreated from stat, or ENOENT without one.
	gone := gfid.New()
	wantResult(t, "no stat", apply1(t, b, rename(gone, gfid.Root, "x", gfid.Root, "y")), unix.ENOENT, pb.Resolution_RESOLUTION_UNSPECIFIED)
	e := rename(gone, gfid.Root, "x", gfid.Root, "y")
	e.Stat = st(unix.S_IFREG | 0o640)
	wantResult(t, "recreated", apply1(t, b, e), 0, pb.Resolution_RESOLUTION_RECREATED)
	if s := lstatPath(t, filepath.Join(root, "y")); s.Mode != unix.S_IFREG|0o640 || gfidOfPath(t, b, filepath.Join(root, "y")) != gone {
		t.Errorf("y mode %#o", s.Mode)
	}
	gd := gfid.New()
	e = rename(gd, gfid.Root, "x", gfid.Root, "ydir")
	e.Stat = st(unix.S_IFDIR | 0o750)
	wantResult(t, "recreated dir", apply1(t, b, e), 0, pb.Resolution_RESOLUTION_RECREATED)
	apply(t, b, create(gfid.New(), gd, "child"))
	lstatPath(t, filepath.Join(root, "ydir", "child"))
}

func TestRenameHardLinkOntoItsOtherName(t *testing.T) {
	b, root := newBackend(t)
	x := gfid.New()
	apply(t, b, create(x, gfid.Root, "a"), link(x, gfid.Root, "b", nil))
	// rename(2) of one link onto another is a no-op; the source must still go.
	wantResult(t, "rename a->b", apply1(t, b, rename(x, gfid.Root, "a", gfid.Root, "b")), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantMissing(t, filepath.Join(root, "a"))
	if r, err := b.LstatGFID(x); err != nil || r.Stat.Nlink != 1 {
		t.Errorf("LstatGFID = %v, %v; want nlink 1", r, err)
	}
}

func TestLink(t *testing.T) {
	b, root := newBackend(t)
	x, d := gfid.New(), gfid.New()
	apply(t, b, create(x, gfid.Root, "a"), mkdir(d, gfid.Root, "d"))
	wantResult(t, "link", apply1(t, b, link(x, d, "b", nil)), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
	if lstatPath(t, filepath.Join(root, "d", "b")).Ino != lstatPath(t, filepath.Join(root, "a")).Ino {
		t.Error("d/b is not a link of a")
	}
	if r, err := b.LstatGFID(x); err != nil || r.Stat.Nlink != 2 {
		t.Errorf("nlink = %v, %v; want 2", r.GetStat().GetNlink(), err)
	}
	wantResult(t, "replay", apply1(t, b, link(x, d, "b", nil)), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
	wantResult(t, "dir", apply1(t, b, link(d, gfid.Root, "dl", nil)), unix.EPERM, pb.Resolution_RESOLUTION_UNSPECIFIED)

	// Over a file of another identity.
	y := gfid.New()
	apply(t, b, create(y, gfid.Root, "c"))
	r := apply1(t, b, link(x, gfid.Root, "c", nil))
	wantResult(t, "over other", r, 0, pb.Resolution_RESOLUTION_REPLACED_CONFLICT)
	if gfid.GFID(r.ReplacedGfid) != y {
		t.Errorf("replaced %x", r.ReplacedGfid)
	}
}

func TestLinkSourceGoneRecreated(t *testing.T) {
	b, root := newBackend(t)
	x := gfid.New()
	apply(t, b, create(x, gfid.Root, "a"), unlink(x, gfid.Root, "a"))
	if indexed(t, b, x) {
		t.Fatal("x still indexed after its last unlink")
	}
	wantResult(t, "no stat", apply1(t, b, link(x, gfid.Root, "b", nil)), unix.ENOENT, pb.Resolution_RESOLUTION_UNSPECIFIED)
	r := apply1(t, b, link(x, gfid.Root, "b", stOwned(unix.S_IFREG|0o600, 7, 8)))
	wantResult(t, "recreated", r, 0, pb.Resolution_RESOLUTION_RECREATED)
	s := lstatPath(t, filepath.Join(root, "b"))
	if s.Mode != unix.S_IFREG|0o600 || s.Uid != 7 || gfidOfPath(t, b, filepath.Join(root, "b")) != x {
		t.Errorf("recreated b: mode %#o uid %d", s.Mode, s.Uid)
	}
	e := link(gfid.New(), gfid.Root, "fifo", st(unix.S_IFIFO|0o600))
	wantResult(t, "recreated fifo", apply1(t, b, e), 0, pb.Resolution_RESOLUTION_RECREATED)
	if s := lstatPath(t, filepath.Join(root, "fifo")); s.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo type %#o", s.Mode)
	}
}

func TestUnlink(t *testing.T) {
	b, root := newBackend(t)
	x, y, d := gfid.New(), gfid.New(), gfid.New()
	apply(t, b, create(x, gfid.Root, "a"), create(y, gfid.Root, "b"), mkdir(d, gfid.Root, "d"))

	r := apply1(t, b, unlink(x, gfid.Root, "b"))
	wantResult(t, "mismatch", r, 0, pb.Resolution_RESOLUTION_GFID_MISMATCH_KEPT)
	lstatPath(t, filepath.Join(root, "b"))
	if !indexed(t, b, y) || !indexed(t, b, x) {
		t.Error("a mismatched unlink removed something")
	}
	wantResult(t, "dir", apply1(t, b, unlink(d, gfid.Root, "d")), unix.EISDIR, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantResult(t, "unlink", apply1(t, b, unlink(x, gfid.Root, "a")), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantMissing(t, filepath.Join(root, "a"))
	if indexed(t, b, x) {
		t.Error("x still indexed")
	}
	wantResult(t, "replay", apply1(t, b, unlink(x, gfid.Root, "a")), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
	wantResult(t, "parent gone", apply1(t, b, unlink(x, gfid.New(), "a")), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)

	// A file with two names keeps its index entry until the last goes.
	l := gfid.New()
	apply(t, b, create(l, gfid.Root, "l1"), link(l, gfid.Root, "l2", nil), unlink(l, gfid.Root, "l1"))
	if !indexed(t, b, l) {
		t.Error("l lost its index entry with a name left")
	}
	apply(t, b, unlink(l, gfid.Root, "l2"))
	if indexed(t, b, l) {
		t.Error("l still indexed with no name left")
	}
	if n := indexEntries(t, b); n != 2 { // y and d
		t.Errorf("index holds %d entries, want 2", n)
	}
}

func TestRmdirNonEmpty(t *testing.T) {
	b, root := newBackend(t)
	d, s1, f1, f2, l1 := gfid.New(), gfid.New(), gfid.New(), gfid.New(), gfid.New()
	keep := gfid.New()
	apply(t, b,
		mkdir(d, gfid.Root, "d"), mkdir(s1, d, "s"), create(f1, s1, "f"), create(f2, d, "g"),
		symlink(l1, s1, "l", "/"), create(keep, gfid.Root, "keep"), link(keep, s1, "keeplink", nil),
	)
	wantResult(t, "not a dir", apply1(t, b, rmdir(f2, d, "g")), unix.ENOTDIR, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantResult(t, "mismatch", apply1(t, b, rmdir(s1, gfid.Root, "d")), 0, pb.Resolution_RESOLUTION_GFID_MISMATCH_KEPT)
	wantResult(t, "rmdir", apply1(t, b, rmdir(d, gfid.Root, "d")), 0, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantMissing(t, filepath.Join(root, "d"))
	for _, g := range []gfid.GFID{d, s1, f1, f2, l1} {
		if indexed(t, b, g) {
			t.Errorf("%s still indexed", g)
		}
	}
	if r, err := b.LstatGFID(keep); err != nil || r.Stat.Nlink != 1 {
		t.Errorf("keep: %v, %v; want nlink 1", r, err)
	}
	wantResult(t, "replay", apply1(t, b, rmdir(d, gfid.Root, "d")), 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
	dirEmpty(t, filepath.Join(root, ReservedDir, trashDirName))
	if n := indexEntries(t, b); n != 1 {
		t.Errorf("index holds %d entries, want 1 (keep)", n)
	}
}

func TestSymlinksNeverFollowed(t *testing.T) {
	b, root := newBackend(t)
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("v"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := lstatPath(t, victim)
	ls := []struct {
		name, target string
	}{{"abs", victim}, {"rel", "../" + filepath.Base(outside) + "/victim"}, {"dangling", "nowhere"}, {"dir", outside}}
	var gs []gfid.GFID
	for _, l := range ls {
		g := gfid.New()
		gs = append(gs, g)
		apply(t, b, symlink(g, gfid.Root, l.name, l.target))
	}
	uid, gid, mode := uint32(999), uint32(998), uint32(0o600)
	for i, g := range gs {
		rs := meta(t, b, &pb.MetaEntry{Gfid: g.Bytes(), Uid: &uid, Gid: &gid, Mode: &mode,
			Atime: &pb.Timestamp{Sec: 100, Nsec: 5}, Mtime: &pb.Timestamp{Sec: 200, Nsec: 123456789}})
		if rs[0].Errno != 0 {
			t.Errorf("meta on symlink %s: %s", ls[i].name, rs[0].Message)
		}
		s := lstatPath(t, filepath.Join(root, ls[i].name))
		if s.Uid != uid || s.Gid != gid || s.Mtim != (unix.Timespec{Sec: 200, Nsec: 123456789}) {
			t.Errorf("symlink %s itself: uid %d gid %d mtime %v", ls[i].name, s.Uid, s.Gid, s.Mtim)
		}
		if got, _ := os.Readlink(filepath.Join(root, ls[i].name)); got != ls[i].target {
			t.Errorf("target %q, want %q", got, ls[i].target)
		}
	}
	after := lstatPath(t, victim)
	if after.Uid != before.Uid || after.Mode != before.Mode || after.Mtim != before.Mtim {
		t.Errorf("the symlinks' target changed: %+v -> %+v", before, after)
	}
	// A create "under" a symlink to a directory is not possible: its
	// identity is not a directory's.
	wantResult(t, "create under symlink", apply1(t, b, create(gfid.New(), gs[3], "x")), unix.ENOTDIR, pb.Resolution_RESOLUTION_UNSPECIFIED)
	wantMissing(t, filepath.Join(outside, "x"))
}

func TestMetaOps(t *testing.T) {
	b, root := newBackend(t)
	f, d := gfid.New(), gfid.New()
	apply(t, b, create(f, gfid.Root, "f"), mkdir(d, gfid.Root, "d"))
	u32 := func(v uint32) *uint32 { return &v }
	tests := []struct {
		name  string
		g     gfid.GFID
		path  string
		entry *pb.MetaEntry
		errno unix.Errno
		check func(s unix.Stat_t, x map[string]string) string
	}{
		{"file mode", f, "f", &pb.MetaEntry{Mode: u32(0o2751)}, 0,
			func(s unix.Stat_t, _ map[string]string) string {
				return want(s.Mode&0o7777 == 0o2751, "mode %#o", s.Mode)
			}},
		{"file owner", f, "f", &pb.MetaEntry{Uid: u32(11), Gid: u32(12)}, 0,
			func(s unix.Stat_t, _ map[string]string) string {
				return want(s.Uid == 11 && s.Gid == 12, "owner %d:%d", s.Uid, s.Gid)
			}},
		{"file times ns", f, "f", &pb.MetaEntry{Atime: &pb.Timestamp{Sec: 1, Nsec: 2}, Mtime: &pb.Timestamp{Sec: 1_700_000_000, Nsec: 999_999_999}}, 0,
			func(s unix.Stat_t, _ map[string]string) string {
				return want(s.Atim == unix.Timespec{Sec: 1, Nsec: 2} && s.Mtim == unix.Timespec{Sec: 1_700_000_000, Nsec: 999_999_999}, "times %v %v", s.Atim, s.Mtim)
			}},
		{"mtime only keeps atime", f, "f", &pb.MetaEntry{Mtime: &pb.Timestamp{Sec: 5}}, 0,
			func(s unix.Stat_t, _ map[string]string) string {
				return want(s.Atim == unix.Timespec{Sec: 1, Nsec: 2} && s.Mtim.Sec == 5, "times %v %v", s.Atim, s.Mtim)
			}},
		{"set xattrs", f, "f", &pb.MetaEntry{SetXattrs: []*pb.Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b", Value: make([]byte, 3000)}}}, 0,
			func(_ unix.Stat_t, x map[string]string) string {
				// ext4 keeps values within one block, so not the full 64 KiB.
				return want(x["user.a"] == "1" && len(x["user.b"]) == 3000, "xattrs %d", len(x))
			}},
		{"remove xattr", f, "f", &pb.MetaEntry{RemoveXattrs: []string{"user.a", "user.absent"}}, 0,
			func(_ unix.Stat_t, x map[string]string) string {
				_, ok := x["user.a"]
				return want(!ok && len(x) == 1, "xattrs %v", len(x))
			}},
		{"replace xattrs", f, "f", &pb.MetaEntry{ReplaceXattrs: true, SetXattrs: []*pb.Xattr{{Name: "user.c", Value: []byte("3")}}}, 0,
			func(_ unix.Stat_t, x map[string]string) string {
				return want(len(x) == 1 && x["user.c"] == "3", "xattrs %v", x)
			}},
		{"dir mode and xattr", d, "d", &pb.MetaEntry{Mode: u32(0o700), SetXattrs: []*pb.Xattr{{Name: "user.d", Value: []byte("dd")}}}, 0,
			func(s unix.Stat_t, x map[string]string) string {
				return want(s.Mode&0o7777 == 0o700 && x["user.d"] == "dd", "mode %#o xattrs %v", s.Mode, x)
			}},
		{"root times", gfid.Root, ".", &pb.MetaEntry{Mtime: &pb.Timestamp{Sec: 77}}, 0,
			func(s unix.Stat_t, _ map[string]string) string { return want(s.Mtim.Sec == 77, "mtime %v", s.Mtim) }},
		{"trusted refused", f, "f", &pb.MetaEntry{SetXattrs: []*pb.Xattr{{Name: "trusted.x", Value: []byte("1")}}}, unix.EINVAL, nil},
		{"reserved refused", f, "f", &pb.MetaEntry{RemoveXattrs: []string{"user.georep.gfid"}}, unix.EPERM, nil},
		{"too big", f, "f", &pb.MetaEntry{SetXattrs: []*pb.Xattr{{Name: "user.big", Value: make([]byte, 65537)}}}, unix.E2BIG, nil},
		{"unknown gfid", gfid.New(), "", &pb.MetaEntry{Mode: u32(0o600)}, unix.ENOENT, nil},
		// Validation comes first: an invalid entry changes nothing, even its valid parts.
		{"invalid changes nothing", f, "f", &pb.MetaEntry{Mode: u32(0o600), SetXattrs: []*pb.Xattr{{Name: "security.x"}}}, unix.EINVAL,
			func(s unix.Stat_t, _ map[string]string) string {
				return want(s.Mode&0o777 == 0o751, "mode %#o", s.Mode)
			}},
	}
	for _, tt := range tests {
		tt.entry.Gfid = tt.g.Bytes()
		r := meta(t, b, tt.entry)[0]
		wantResult(t, tt.name, r, tt.errno, pb.Resolution_RESOLUTION_UNSPECIFIED)
		if tt.check != nil {
			p := filepath.Join(root, tt.path)
			if msg := tt.check(lstatPath(t, p), userXattrs(t, p)); msg != "" {
				t.Errorf("%s: %s", tt.name, msg)
			}
		}
	}
}

func want(ok bool, format string, args ...any) string {
	if ok {
		return ""
	}
	return fmt.Sprintf(format, args...)
}

// A batch applied twice leaves the same tree.
func TestBatchTwiceSameTree(t *testing.T) {
	b, _ := newBackend(t)
	d1, d2, d3 := gfid.New(), gfid.New(), gfid.New()
	f1, f2, f3, f4, l1, p1 := gfid.New(), gfid.New(), gfid.New(), gfid.New(), gfid.New(), gfid.New()
	withTimes := func(e *pb.Entry) *pb.Entry {
		e.Stat.Mtime = &pb.Timestamp{Sec: 1_600_000_000, Nsec: 42}
		e.Stat.Atime = &pb.Timestamp{Sec: 1_600_000_001}
		return e
	}
	batch := []*pb.Entry{
		mkdir(d1, gfid.Root, "d1"),
		mkdir(d2, d1, "d2"),
		withTimes(create(f1, d2, "f1")),
		withTimes(create(f2, gfid.Root, "f2")),
		link(f2, d1, "f2link", nil),
		symlink(l1, d2, "l1", "../f2link"),
		mk(pb.EntryOp_ENTRY_OP_MKNOD, p1, d1, "pipe", stOwned(unix.S_IFIFO|0o620, 3, 4)),
		rename(f1, d2, "f1", gfid.Root, "f1-moved"),
		create(f3, gfid.Root, "tmpfile"),
		rename(f3, gfid.Root, "tmpfile", gfid.Root, "f2"), // over f2's first name
		mkdir(d3, gfid.Root, "d3"),
		rename(d2, d1, "d2", d3, "d2-moved"),
		create(f4, d3, "gone"),
		unlink(f4, d3, "gone"),
		rmdir(d1, gfid.Root, "d1-absent"),
	}
	apply(t, b, batch...)
	first := walkTree(t, b)
	rs := apply(t, b, batch...)
	second := walkTree(t, b)
	diffTrees(t, "after replay", first, second)
	for i, r := range rs {
		if r.Resolution == pb.Resolution_RESOLUTION_REPLACED_CONFLICT {
			t.Errorf("replay of entry %d (%s) replaced something: %s", i, describe(batch[i]), r.Message)
		}
	}
	if _, ok := first["d1/f2link"]; !ok {
		t.Errorf("tree lacks d1/f2link: %v", first)
	}
	if first["f2"].GFID != f3.String() || first["d3/d2-moved/l1"].Target != "../f2link" {
		t.Errorf("unexpected tree: f2=%+v l1=%+v", first["f2"], first["d3/d2-moved/l1"])
	}
}

func TestBatchWithOneBadEntry(t *testing.T) {
	b, root := newBackend(t)
	entries := make([]*pb.Entry, 1000)
	for i := range entries {
		entries[i] = create(gfid.New(), gfid.Root, fmt.Sprintf("f%04d", i))
	}
	entries[500].Name = []byte("bad/name")
	rs := b.EntryOps(context.Background(), entries)
	failed := 0
	for i, r := range rs {
		if r.Errno != 0 {
			failed++
			if i != 500 || unix.Errno(r.Errno) != unix.EINVAL {
				t.Errorf("entry %d failed: %s %s", i, r.Code, r.Message)
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d entries failed, want 1", failed)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1000 { // 999 files + .georep
		t.Errorf("root holds %d entries, want 1000", len(ents))
	}
}

func TestBatchCancelled(t *testing.T) {
	b, _ := newBackend(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rs := b.EntryOps(ctx, []*pb.Entry{create(gfid.New(), gfid.Root, "a")})
	wantResult(t, "cancelled", rs[0], unix.ECANCELED, pb.Resolution_RESOLUTION_UNSPECIFIED)
}

func TestStimeXtime(t *testing.T) {
	dir := t.TempDir()
	b := openBackend(t, dir, Options{})
	master, other := gfid.New(), gfid.New()
	f := gfid.New()
	apply(t, b, create(f, gfid.Root, "f"))
	if _, found, err := b.Stime(master); found || err != nil {
		t.Fatalf("Stime before set: found %v, %v", found, err)
	}
	ts := &pb.Timestamp{Sec: 1_700_000_123, Nsec: 456}
	if err := b.SetStime(master, ts); err != nil {
		t.Fatal(err)
	}
	if err := b.SetStime(master, &pb.Timestamp{Nsec: 1e9}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("SetStime bad nsec = %v", err)
	}
	if err := b.SetXtime(master, f, &pb.Timestamp{Sec: 9, Nsec: 8}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetXtime(master, gfid.Root, &pb.Timestamp{Sec: 7}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetXtime(master, gfid.New(), &pb.Timestamp{Sec: 7}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("SetXtime unknown gfid = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Stime(master); !errors.Is(err, unix.EBADF) {
		t.Errorf("Stime after Close = %v", err)
	}
	b = openBackend(t, dir, Options{})
	got, found, err := b.Stime(master)
	if err != nil || !found || got.Sec != ts.Sec || got.Nsec != ts.Nsec {
		t.Errorf("Stime after reopen = %v %v %v", got, found, err)
	}
	if _, found, _ := b.Stime(other); found {
		t.Error("another master's stime found")
	}
	x, found, err := b.Xtime(master, f)
	if err != nil || !found || x.Sec != 9 || x.Nsec != 8 {
		t.Errorf("Xtime = %v %v %v", x, found, err)
	}
	if _, found, err := b.Xtime(other, f); found || err != nil {
		t.Errorf("Xtime other master = %v %v", found, err)
	}
	if x, found, err := b.Xtime(master, gfid.Root); err != nil || !found || x.Sec != 7 {
		t.Errorf("Xtime root = %v %v %v", x, found, err)
	}
}

func TestNativeMarkStable(t *testing.T) {
	dir := t.TempDir()
	b := openBackend(t, dir, Options{})
	m1 := b.NativeMark()
	if len(m1.Uuid) != 16 || m1.Version.GetMajor() != 1 || m1.Mark.GetSec() == 0 {
		t.Fatalf("native mark %v", m1)
	}
	b.Close()
	// Two opens at once agree on one identity.
	b2 := openBackend(t, dir, Options{})
	b3 := openBackend(t, dir, Options{})
	for _, m := range []*pb.VolumeMark{b2.NativeMark(), b3.NativeMark()} {
		if string(m.Uuid) != string(m1.Uuid) || m.Mark.GetSec() != m1.Mark.GetSec() {
			t.Errorf("native mark changed: %v -> %v", m1, m)
		}
	}
	if other := openBackend(t, t.TempDir(), Options{}).NativeMark(); string(other.Uuid) == string(m1.Uuid) {
		t.Error("two roots share a volume uuid")
	}
}

func TestNativeMarkRacingCreators(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	marks := make(chan []byte, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			b, err := Open(dir, Options{})
			if err != nil {
				errs <- err
				return
			}
			marks <- b.NativeMark().Uuid
			errs <- b.Close()
		}()
	}
	var first []byte
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		m := <-marks
		if first == nil {
			first = m
		} else if string(m) != string(first) {
			t.Errorf("racing opens disagree: %x vs %x", m, first)
		}
	}
}

func TestForeignMarksExpire(t *testing.T) {
	dir := t.TempDir()
	b := openBackend(t, dir, Options{})
	now := time.Unix(1_800_000_000, 0)
	live, dead := gfid.New(), gfid.New()
	mark := func(u gfid.GFID, exp time.Time) *pb.VolumeMark {
		return &pb.VolumeMark{Uuid: u.Bytes(), Version: &pb.Version{Major: 1}, Mark: &pb.Timestamp{Sec: now.Unix()},
			Expires: &pb.Timestamp{Sec: exp.Unix()}, Holder: "host:/m"}
	}
	if err := b.SetForeignMark(mark(live, now.Add(time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := b.SetForeignMark(mark(dead, now.Add(-time.Second))); err != nil {
		t.Fatal(err)
	}
	if err := b.SetForeignMark(&pb.VolumeMark{Uuid: gfid.New().Bytes()}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("mark without expiry = %v, want EINVAL", err)
	}
	b.Close()
	b = openBackend(t, dir, Options{})
	ms, err := b.ForeignMarks(now)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || string(ms[0].Uuid) != string(live[:]) || ms[0].Holder != "host:/m" {
		t.Fatalf("ForeignMarks = %v, want only the live one", ms)
	}
	// The expired one was removed, not just hidden.
	buf := make([]byte, 256)
	if _, err := unix.Getxattr(dir, b.ns+".georep.mark."+dead.String(), buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("expired mark still stored: %v", err)
	}
	if ms, _ := b.ForeignMarks(now.Add(2 * time.Minute)); len(ms) != 0 {
		t.Errorf("ForeignMarks later = %v, want none", ms)
	}
}

func TestEntriesLstatGFID(t *testing.T) {
	b, _ := newBackend(t)
	d, f, l := gfid.New(), gfid.New(), gfid.New()
	apply(t, b, mkdir(d, gfid.Root, "d"), create(f, d, "b"), symlink(l, d, "a", "tgt"))
	ents, err := b.Entries(context.Background(), gfid.Root)
	if err != nil || len(ents) != 1 || string(ents[0].Name) != "d" || gfid.GFID(ents[0].Gfid) != d {
		t.Fatalf("Entries(root) = %v, %v (reserved dir must be hidden)", ents, err)
	}
	ents, err = b.Entries(context.Background(), d)
	if err != nil || len(ents) != 2 || string(ents[0].Name) != "a" || string(ents[0].LinkTarget) != "tgt" ||
		gfid.GFID(ents[1].Gfid) != f || ents[1].Stat.Nlink != 1 {
		t.Fatalf("Entries(d) = %v, %v", ents, err)
	}
	if _, err := b.Entries(context.Background(), f); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("Entries(file) = %v, want ENOTDIR", err)
	}
	if _, err := b.Entries(context.Background(), gfid.New()); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Entries(unknown) = %v, want ENOENT", err)
	}
	r, err := b.LstatName(d, []byte("b"))
	if err != nil || gfid.GFID(r.Gfid) != f || r.Stat.Nlink != 1 {
		t.Errorf("LstatName = %v, %v", r, err)
	}
	if _, err := b.LstatName(gfid.Root, []byte(ReservedDir)); !errors.Is(err, unix.EPERM) {
		t.Errorf("LstatName(.georep) = %v, want EPERM", err)
	}
	if _, err := b.LstatName(gfid.Root, []byte("..")); !errors.Is(err, unix.EINVAL) {
		t.Errorf("LstatName(..) = %v, want EINVAL", err)
	}
	if g, ok, err := b.GFID(d, []byte("a")); err != nil || !ok || g != l {
		t.Errorf("GFID(d/a) = %s %v %v", g, ok, err)
	}
	if _, _, err := b.GFID(d, []byte("nope")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("GFID(missing) = %v", err)
	}
	if r, err := b.LstatGFID(gfid.Root); err != nil || r.Stat.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("LstatGFID(root) = %v, %v", r, err)
	}
}

func TestPurge(t *testing.T) {
	b, root := newBackend(t)
	d, s1, f1, f2 := gfid.New(), gfid.New(), gfid.New(), gfid.New()
	apply(t, b, mkdir(d, gfid.Root, "d"), mkdir(s1, d, "s"), create(f1, s1, "f"), create(f2, gfid.Root, "g"))
	if err := os.WriteFile(filepath.Join(root, "foreign"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := b.Purge(context.Background(), gfid.Root, [][]byte{[]byte("d"), []byte("missing")})
	if err != nil || n != 3 {
		t.Errorf("Purge(d) = %d, %v; want 3", n, err)
	}
	if indexed(t, b, s1) || indexed(t, b, f1) {
		t.Error("purged objects still indexed")
	}
	if _, err := b.Purge(context.Background(), gfid.Root, [][]byte{[]byte(ReservedDir)}); !errors.Is(err, unix.EPERM) {
		t.Errorf("Purge(.georep) = %v", err)
	}
	n, err = b.Purge(context.Background(), gfid.Root, nil)
	if err != nil || n != 2 {
		t.Errorf("Purge(all) = %d, %v; want 2", n, err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 || ents[0].Name() != ReservedDir {
		t.Errorf("root after purge: %v", ents)
	}
	if n := indexEntries(t, b); n != 0 {
		t.Errorf("index holds %d entries after purging everything", n)
	}
}

func TestCrashLeftoversCleared(t *testing.T) {
	dir := t.TempDir()
	b := openBackend(t, dir, Options{})
	x := gfid.New()
	apply(t, b, create(x, gfid.Root, "f"))
	b.Close()
	// Simulate a crash: a half-made object in tmp (indexed) and an unpurged
	// directory in trash.
	state := filepath.Join(dir, ReservedDir)
	half := gfid.New()
	tmpObj := filepath.Join(state, tmpDirName, "half")
	if err := os.WriteFile(tmpObj, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tmpObj, "trusted.georep.gfid", half[:], 0); err != nil {
		t.Fatal(err)
	}
	idx := filepath.Dir(filepath.Join(dir, IndexPath(half)))
	if err := os.MkdirAll(idx, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tmpObj, filepath.Join(idx, half.String())); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(state, trashDirName, "old", "deep"), 0o700); err != nil {
		t.Fatal(err)
	}
	b = openBackend(t, dir, Options{})
	dirEmpty(t, filepath.Join(state, tmpDirName))
	dirEmpty(t, filepath.Join(state, trashDirName))
	if indexed(t, b, half) {
		t.Error("half-made object still indexed")
	}
	if !indexed(t, b, x) {
		t.Error("a placed object lost")
	}
}

func TestConcurrentReadersAndWriters(t *testing.T) {
	b, _ := newBackend(t)
	d := gfid.New()
	apply(t, b, mkdir(d, gfid.Root, "d"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for i := range 300 {
			x := gfid.New()
			rs := b.EntryOps(ctx, []*pb.Entry{create(x, d, fmt.Sprint(i)), rename(x, d, fmt.Sprint(i), gfid.Root, fmt.Sprint(i))})
			for _, r := range rs {
				if r.Errno != 0 {
					done <- fmt.Errorf("entry: %s", r.Message)
					return
				}
			}
		}
		done <- nil
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			ents, err := b.Entries(ctx, gfid.Root)
			if err != nil || len(ents) != 301 {
				t.Fatalf("root has %d entries, %v; want 301", len(ents), err)
			}
			return
		default:
		}
		if _, err := b.Entries(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := b.LstatGFID(d); err != nil {
			t.Fatal(err)
		}
	}
}

// The unprivileged layout (user.* identities) cannot put an identity on a
// symlink or device; those are known by their index link alone.
func TestUnprivilegedLayout(t *testing.T) {
	dir := t.TempDir()
	b := openBackend(t, dir, Options{UserXattrs: true})
	if b.Privileged() {
		t.Fatal("UserXattrs backend reports privileged")
	}
	d, f, l, p := gfid.New(), gfid.New(), gfid.New(), gfid.New()
	batch := []*pb.Entry{
		mkdir(d, gfid.Root, "d"), create(f, d, "f"), symlink(l, d, "l", "/abs/target"),
		mk(pb.EntryOp_ENTRY_OP_MKNOD, p, d, "p", st(unix.S_IFIFO|0o600)),
	}
	apply(t, b, batch...)
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "d", "f"), "user.georep.gfid", buf); err != nil || n != 16 {
		t.Errorf("file identity in user.*: %d, %v", n, err)
	}
	for _, g := range []gfid.GFID{d, f, l, p} {
		if !indexed(t, b, g) {
			t.Errorf("%s not reachable by gfid", g)
		}
	}
	first := walkTree(t, b)
	rs := apply(t, b, batch...)
	for i, r := range rs {
		wantResult(t, fmt.Sprintf("replay %d", i), r, 0, pb.Resolution_RESOLUTION_ALREADY_APPLIED)
	}
	diffTrees(t, "unprivileged replay", first, walkTree(t, b))
	apply(t, b, rename(l, d, "l", gfid.Root, "l2"), unlink(p, d, "p"))
	lstatPath(t, filepath.Join(dir, "l2"))
	if indexed(t, b, p) {
		t.Error("unlinked fifo still indexed")
	}
	// Stime lives in user.* too, and a xtime on a symlink is an error there.
	if err := b.SetStime(gfid.New(), &pb.Timestamp{Sec: 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetXtime(gfid.New(), l, &pb.Timestamp{Sec: 1}); err == nil {
		t.Error("xtime on a symlink with user.* xattrs succeeded")
	}
	if r := meta(t, b, &pb.MetaEntry{Gfid: f.Bytes(), SetXattrs: []*pb.Xattr{{Name: "user.georep.gfid", Value: make([]byte, 16)}}})[0]; r.Errno == 0 {
		t.Error("a meta op overwrote the identity xattr")
	}
}
