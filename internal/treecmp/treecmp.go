// Package treecmp compares a master tree with its replica the way the
// acceptance tests judge georep: types, names, contents, modes, owners,
// file mtimes in ns, symlink targets, hard-link groups and user xattrs,
// leaving out the slave's reserved .georep directory. It also reads the
// identities tests check on the slave: inodes and GFID xattrs.
package treecmp

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
)

// ReservedDir is the directory at a root that georep keeps for itself; it
// is never replicated, so it is left out on both sides.
const ReservedDir = ".georep"

// GFIDXattr is the identity xattr a root-run slave puts on every object.
const GFIDXattr = "trusted.georep.gfid"

// maxReported bounds the differences Compare prints; the count is always given.
const maxReported = 60

// Options tunes what Snapshot records.
type Options struct {
	// Skip, when set, leaves out a path (relative to the root, with '/')
	// and everything under it, on both sides: for example what --exclude
	// keeps off the slave.
	Skip func(rel string) bool
	// DirMtimes compares directory mtimes too (never the root's: the
	// slave root also holds .georep). Off by default because the
	// acceptance criteria ask for file mtimes.
	DirMtimes bool
}

// Node is what is compared of one object.
type Node struct {
	Type    string
	Perm    uint32
	UID     uint32
	GID     uint32
	Rdev    uint64
	Size    int64
	MtimeNs int64
	Target  string
	SHA256  string
	Xattrs  map[string]string
	// Group is the object's hard-link group: its sorted paths joined by
	// '|' when it has more than one name in the tree, else empty.
	Group string
}

// Tree maps a path relative to the root ("." for the root) to its object.
type Tree map[string]Node

// Snapshot records root's tree. It never follows symlinks.
func Snapshot(root string, opts Options) (Tree, error) {
	out := Tree{}
	groups := map[uint64][]string{}
	inoOf := map[string]uint64{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ReservedDir || (rel != "." && opts.Skip != nil && opts.Skip(rel)) {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		n, ino, err := node(path, rel == ".", opts)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if n.Type != "dir" {
			groups[ino] = append(groups[ino], rel)
			inoOf[rel] = ino
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", root, err)
	}
	for rel, ino := range inoOf {
		if g := groups[ino]; len(g) > 1 {
			g = slices.Clone(g)
			sort.Strings(g)
			n := out[rel]
			n.Group = strings.Join(g, "|")
			out[rel] = n
		}
	}
	return out, nil
}

func node(path string, isRoot bool, opts Options) (Node, uint64, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return Node{}, 0, err
	}
	n := Node{Perm: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano()}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		n.Type = "dir"
		if isRoot || !opts.DirMtimes {
			n.MtimeNs = 0
		}
	case unix.S_IFLNK:
		n.Type = "symlink"
		n.Perm = 0 // Linux ignores a symlink's mode
		tgt, err := os.Readlink(path)
		if err != nil {
			return Node{}, 0, err
		}
		n.Target = tgt
	case unix.S_IFREG:
		n.Type = "file"
		n.Size = st.Size
		h, err := hashFile(path)
		if err != nil {
			return Node{}, 0, err
		}
		n.SHA256 = h
	case unix.S_IFIFO:
		n.Type = "fifo"
	case unix.S_IFCHR, unix.S_IFBLK:
		n.Type = "device"
		n.Rdev = st.Rdev
	case unix.S_IFSOCK:
		n.Type = "socket"
	}
	x, err := userXattrs(path)
	if err != nil {
		return Node{}, 0, err
	}
	n.Xattrs = x
	return n, st.Ino, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// userXattrs reads the user.* xattrs, leaving out user.georep.*, where a
// slave not run as root keeps identities.
func userXattrs(path string) (map[string]string, error) {
	names, err := listXattr(path)
	if err != nil {
		return nil, err
	}
	var out map[string]string
	for _, name := range names {
		if !strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "user.georep.") {
			continue
		}
		v, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed while we looked
		}
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(v)
	}
	return out, nil
}

func listXattr(path string) ([]string, error) {
	for {
		sz, err := unix.Llistxattr(path, nil)
		if err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				return nil, nil
			}
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		if sz == 0 {
			return nil, nil
		}
		buf := make([]byte, sz)
		sz, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew in between
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		var names []string
		for _, n := range strings.Split(string(buf[:sz]), "\x00") {
			if n != "" {
				names = append(names, n)
			}
		}
		return names, nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	for {
		sz, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, sz)
		sz, err = unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:sz], nil
	}
}

// Diff lists every difference between a master and a slave snapshot, one
// line each, sorted by path.
func Diff(master, slave Tree) []string {
	paths := make([]string, 0, len(master)+len(slave))
	for p := range master {
		paths = append(paths, p)
	}
	for p := range slave {
		if _, ok := master[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var out []string
	for _, p := range paths {
		m, inM := master[p]
		s, inS := slave[p]
		switch {
		case !inS:
			out = append(out, fmt.Sprintf("%q: only on the master (%s)", p, m.Type))
		case !inM:
			out = append(out, fmt.Sprintf("%q: only on the slave (%s)", p, s.Type))
		default:
			for _, d := range nodeDiff(m, s) {
				out = append(out, fmt.Sprintf("%q: %s", p, d))
			}
		}
	}
	return out
}

func nodeDiff(m, s Node) []string {
	var out []string
	field := func(name string, mv, sv any) {
		out = append(out, fmt.Sprintf("%s %v on the master, %v on the slave", name, mv, sv))
	}
	if m.Type != s.Type {
		field("type", m.Type, s.Type)
		return out
	}
	if m.Perm != s.Perm {
		field("mode", fmt.Sprintf("%#o", m.Perm), fmt.Sprintf("%#o", s.Perm))
	}
	if m.UID != s.UID || m.GID != s.GID {
		field("owner", fmt.Sprintf("%d:%d", m.UID, m.GID), fmt.Sprintf("%d:%d", s.UID, s.GID))
	}
	if m.Rdev != s.Rdev {
		field("rdev", m.Rdev, s.Rdev)
	}
	if m.Size != s.Size {
		field("size", m.Size, s.Size)
	}
	if m.SHA256 != s.SHA256 && m.Size == s.Size {
		field("content sha256", short(m.SHA256), short(s.SHA256))
	}
	if m.MtimeNs != s.MtimeNs {
		field("mtime (ns)", m.MtimeNs, s.MtimeNs)
	}
	if m.Target != s.Target {
		field("symlink target", fmt.Sprintf("%q", m.Target), fmt.Sprintf("%q", s.Target))
	}
	if m.Group != s.Group {
		field("hard-link group", fmt.Sprintf("[%s]", m.Group), fmt.Sprintf("[%s]", s.Group))
	}
	keys := map[string]bool{}
	for k := range m.Xattrs {
		keys[k] = true
	}
	for k := range s.Xattrs {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		mv, inM := m.Xattrs[k]
		sv, inS := s.Xattrs[k]
		switch {
		case !inS:
			field("xattr "+k, fmt.Sprintf("%q", mv), "absent")
		case !inM:
			field("xattr "+k, "absent", fmt.Sprintf("%q", sv))
		case mv != sv:
			field("xattr "+k, fmt.Sprintf("%q", mv), fmt.Sprintf("%q", sv))
		}
	}
	return out
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Differences snapshots both roots and lists how the slave differs from
// the master; an empty list means they are equal. For polling loops.
func Differences(masterRoot, slaveRoot string, opts Options) ([]string, error) {
	m, err := Snapshot(masterRoot, opts)
	if err != nil {
		return nil, err
	}
	s, err := Snapshot(slaveRoot, opts)
	if err != nil {
		return nil, err
	}
	return Diff(m, s), nil
}

// Compare fails t, listing every difference (up to a bound, with the
// count), unless the slave tree equals the master tree. It reports whether
// they were equal.
func Compare(t testing.TB, masterRoot, slaveRoot string, opts Options) bool {
	t.Helper()
	diffs, err := Differences(masterRoot, slaveRoot, opts)
	if err != nil {
		t.Fatalf("compare trees: %v", err)
	}
	if len(diffs) == 0 {
		return true
	}
	t.Errorf("the slave %s differs from the master %s in %d ways:\n%s", slaveRoot, masterRoot, len(diffs), Format(diffs))
	return false
}

// Format joins differences for a message, bounded so a wholly missing tree
// stays readable.
func Format(diffs []string) string {
	if len(diffs) <= maxReported {
		return "  " + strings.Join(diffs, "\n  ")
	}
	return "  " + strings.Join(diffs[:maxReported], "\n  ") + fmt.Sprintf("\n  ... and %d more", len(diffs)-maxReported)
}

// Inode returns the inode number of path, not following a symlink: a
// renamed file or directory must keep it on the slave.
func Inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("inode of %s: %v", path, err)
	}
	return st.Ino
}

// GFIDs reads the identity xattr (GFIDXattr) of every object under root,
// .georep and Skip left out, keyed like Snapshot. An object without one is
// an error: on a root-run slave every object has its identity.
func GFIDs(root string, opts Options) (map[string]gfid.GFID, error) {
	out := map[string]gfid.GFID{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ReservedDir || (rel != "." && opts.Skip != nil && opts.Skip(rel)) {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		v, err := getXattr(path, GFIDXattr)
		if err != nil {
			return fmt.Errorf("%s: read %s: %w", rel, GFIDXattr, err)
		}
		g, err := gfid.FromBytes(v)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", rel, GFIDXattr, err)
		}
		out[rel] = g
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("gfids under %s: %w", root, err)
	}
	return out, nil
}

// Inodes maps every path under root (.georep and Skip left out) to its
// inode, so a test can record the slave before a wave of renames and
// check each moved object kept its inode after.
func Inodes(root string, opts Options) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ReservedDir || (rel != "." && opts.Skip != nil && opts.Skip(rel)) {
			if de.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		out[rel] = st.Ino
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inodes under %s: %w", root, err)
	}
	return out, nil
}
