package backend

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func openBackend(t testing.TB, dir string, opts Options) *Backend {
	t.Helper()
	b, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newBackend(t testing.TB) (*Backend, string) {
	t.Helper()
	dir := t.TempDir()
	return openBackend(t, dir, Options{}), dir
}

func st(mode uint32) *pb.Stat { return &pb.Stat{Mode: mode} }

func stOwned(mode, uid, gid uint32) *pb.Stat { return &pb.Stat{Mode: mode, Uid: uid, Gid: gid} }

func mk(op pb.EntryOp, x, p gfid.GFID, name string, s *pb.Stat) *pb.Entry {
	return &pb.Entry{Op: op, Gfid: x.Bytes(), ParentGfid: p.Bytes(), Name: []byte(name), Stat: s}
}

func create(x, p gfid.GFID, name string) *pb.Entry {
	return mk(pb.EntryOp_ENTRY_OP_CREATE, x, p, name, st(unix.S_IFREG|0o644))
}

func mkdir(x, p gfid.GFID, name string) *pb.Entry {
	return mk(pb.EntryOp_ENTRY_OP_MKDIR, x, p, name, st(unix.S_IFDIR|0o755))
}

func symlink(x, p gfid.GFID, name, target string) *pb.Entry {
	e := mk(pb.EntryOp_ENTRY_OP_SYMLINK, x, p, name, st(unix.S_IFLNK|0o777))
	e.LinkTarget = []byte(target)
	return e
}

func link(x, p gfid.GFID, name string, s *pb.Stat) *pb.Entry {
	return mk(pb.EntryOp_ENTRY_OP_LINK, x, p, name, s)
}

func rename(x, p gfid.GFID, name string, p2 gfid.GFID, name2 string) *pb.Entry {
	e := mk(pb.EntryOp_ENTRY_OP_RENAME, x, p, name, nil)
	e.NewParentGfid = p2.Bytes()
	e.NewName = []byte(name2)
	return e
}

func unlink(x, p gfid.GFID, name string) *pb.Entry {
	return mk(pb.EntryOp_ENTRY_OP_UNLINK, x, p, name, nil)
}

func rmdir(x, p gfid.GFID, name string) *pb.Entry {
	return mk(pb.EntryOp_ENTRY_OP_RMDIR, x, p, name, nil)
}

// apply runs entries and checks every result has errno 0.
func apply(t testing.TB, b *Backend, entries ...*pb.Entry) []*pb.EntryResult {
	t.Helper()
	rs := b.EntryOps(context.Background(), entries)
	if len(rs) != len(entries) {
		t.Fatalf("EntryOps returned %d results for %d entries", len(rs), len(entries))
	}
	for i, r := range rs {
		if r.GetErrno() != 0 {
			t.Fatalf("entry %d (%s): %s %s", i, describe(entries[i]), r.GetCode(), r.GetMessage())
		}
	}
	return rs
}

// apply1 runs one entry and returns its result, whatever it is.
func apply1(t testing.TB, b *Backend, e *pb.Entry) *pb.EntryResult {
	t.Helper()
	return b.EntryOps(context.Background(), []*pb.Entry{e})[0]
}

func wantResult(t testing.TB, what string, r *pb.EntryResult, errno unix.Errno, res pb.Resolution) {
	t.Helper()
	if unix.Errno(r.GetErrno()) != errno || r.GetResolution() != res {
		t.Errorf("%s: got errno %d (%s) resolution %s message %q; want errno %d resolution %s",
			what, r.GetErrno(), r.GetCode(), r.GetResolution(), r.GetMessage(), errno, res)
	}
	if errno != 0 && r.GetCode() != unix.ErrnoName(errno) {
		t.Errorf("%s: code %q, want %q", what, r.GetCode(), unix.ErrnoName(errno))
	}
}

func meta(t testing.TB, b *Backend, entries ...*pb.MetaEntry) []*pb.EntryResult {
	t.Helper()
	return b.MetaOps(context.Background(), entries)
}

// treeNode is everything replication must reproduce about one object.
type treeNode struct {
	Type   uint32
	Mode   uint32
	UID    uint32
	GID    uint32
	Mtime  unix.Timespec
	Target string
	GFID   string
	Size   int64
	Rdev   uint64
	Nlink  uint64
	Xattrs map[string]string
}

// walkTree records the replica under root, without .georep.
func walkTree(t testing.TB, b *Backend) map[string]treeNode {
	t.Helper()
	root := b.Root()
	out := map[string]treeNode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == ReservedDir {
			return filepath.SkipDir
		}
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		n := treeNode{Type: s.Mode & unix.S_IFMT, Mode: s.Mode & 0o7777, UID: s.Uid, GID: s.Gid, Rdev: s.Rdev}
		if n.Type != unix.S_IFDIR {
			n.Mtime, n.Size, n.Nlink = s.Mtim, s.Size, uint64(s.Nlink)
		}
		if n.Type == unix.S_IFLNK {
			n.Target, _ = os.Readlink(p)
		}
		buf := make([]byte, 64)
		if k, err := unix.Lgetxattr(p, b.gfidAttr, buf); err == nil && k == 16 {
			n.GFID = gfid.GFID(buf[:16]).String()
		}
		n.Xattrs = userXattrs(t, p)
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func userXattrs(t testing.TB, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 65536)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, name := range splitNames(buf[:n]) {
		if len(name) < 5 || name[:5] != "user." || name == "user.georep.gfid" {
			continue
		}
		v := make([]byte, 65536)
		k, err := unix.Lgetxattr(p, name, v)
		if err == nil {
			m[name] = string(v[:k])
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

func splitNames(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

func diffTrees(t testing.TB, what string, want, got map[string]treeNode) {
	t.Helper()
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("%s: trees differ (-want +got):\n%s", what, d)
	}
}

func lstatPath(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return s
}

func wantMissing(t testing.TB, p string) {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); !errors.Is(err, unix.ENOENT) {
		t.Errorf("%s: lstat = %v, want ENOENT", p, err)
	}
}

func gfidOfPath(t testing.TB, b *Backend, p string) gfid.GFID {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, b.gfidAttr, buf)
	if err != nil || n != 16 {
		t.Fatalf("gfid xattr of %s: %d bytes, %v", p, n, err)
	}
	return gfid.GFID(buf[:16])
}

// indexed reports whether g has a live index entry.
func indexed(t testing.TB, b *Backend, g gfid.GFID) bool {
	t.Helper()
	_, err := b.LstatGFID(g)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		t.Fatalf("LstatGFID(%s): %v", g, err)
	}
	return err == nil
}

// indexEntries counts the entries under .georep/gfid.
func indexEntries(t testing.TB, b *Backend) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(b.Root(), ReservedDir, indexDirName), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func dirEmpty(t testing.TB, p string) {
	t.Helper()
	ents, err := os.ReadDir(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%s holds %d entries, want none", p, len(ents))
	}
}
