package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func timestamp(t unix.Timespec) *pb.Timestamp {
	return &pb.Timestamp{Sec: t.Sec, Nsec: uint32(t.Nsec)}
}

// statOf converts st; indexed says a non-directory's index link is among
// its links and must not be counted.
func statOf(st unix.Stat_t, indexed bool) *pb.Stat {
	nlink := uint32(st.Nlink)
	if indexed && st.Mode&unix.S_IFMT != unix.S_IFDIR && nlink > 0 {
		nlink--
	}
	return &pb.Stat{
		Mode:  st.Mode,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Rdev:  st.Rdev,
		Size:  st.Size,
		Atime: timestamp(st.Atim),
		Mtime: timestamp(st.Mtim),
		Ctime: timestamp(st.Ctim),
		Nlink: nlink,
		Ino:   st.Ino,
	}
}

// indexedAs reports whether g's index link is the inode st.
func (b *Backend) indexedAs(s *scope, g gfid.GFID, st unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return false
	}
	bd, err := b.bucket(s, g, false)
	if err != nil {
		return false
	}
	ist, err := bd.Lstat(g.String())
	return err == nil && ist.Dev == st.Dev && ist.Ino == st.Ino
}

// parentAndName resolves a (parent, name) pair from the wire.
func (b *Backend) parentAndName(s *scope, parent gfid.GFID, name []byte) (*dirfd.Dir, string, error) {
	if err := dirfd.ValidName(name); err != nil {
		return nil, "", err
	}
	n := string(name)
	if parent == gfid.Root && n == ReservedDir {
		return nil, "", fmt.Errorf("%q is a reserved name: %w", ReservedDir, unix.EPERM)
	}
	pd, err := b.resolveDir(s, parent, 0)
	if err != nil {
		return nil, "", fmt.Errorf("directory %s not found: %w", parent, err)
	}
	return pd, n, nil
}

// describeAt builds the attributes of name in d.
func (b *Backend) describeAt(s *scope, d *dirfd.Dir, name string, st unix.Stat_t) (g gfid.GFID, ok bool, stat *pb.Stat, target []byte, err error) {
	g, ok, err = b.gfidAt(d, name, st)
	if err != nil {
		return g, false, nil, nil, err
	}
	stat = statOf(st, ok && b.indexedAs(s, g, st))
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		t, err := d.Readlink(name)
		if err != nil {
			return g, ok, nil, nil, err
		}
		target = []byte(t)
	}
	return g, ok, stat, target, nil
}

func (b *Backend) entries(ctx context.Context, s *scope, dir gfid.GFID) ([]*pb.DirEntry, error) {
	d, err := b.resolveDir(s, dir, 0)
	if err != nil {
		return nil, fmt.Errorf("list directory %s: %w", dir, err)
	}
	names, err := d.ReadDirNames()
	if err != nil {
		return nil, fmt.Errorf("list directory %s: %w", dir, err)
	}
	sort.Strings(names)
	out := make([]*pb.DirEntry, 0, len(names))
	for i, n := range names {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("list directory %s: %w", dir, err)
			}
		}
		if dir == gfid.Root && n == ReservedDir {
			continue
		}
		st, err := d.Lstat(n)
		if errors.Is(err, unix.ENOENT) {
			continue // removed while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("list directory %s: %w", dir, err)
		}
		g, ok, stat, target, err := b.describeAt(s, d, n, st)
		if err != nil {
			return nil, fmt.Errorf("list directory %s: %q: %w", dir, n, err)
		}
		de := &pb.DirEntry{Name: []byte(n), Stat: stat, LinkTarget: target}
		if ok {
			de.Gfid = g.Bytes()
		}
		out = append(out, de)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Name, out[j].Name) < 0 })
	return out, nil
}

func (b *Backend) lstatGFID(s *scope, g gfid.GFID) (*pb.LstatResponse, error) {
	o, err := b.lookup(s, g)
	if err != nil {
		return nil, fmt.Errorf("lstat %s: %w", g, err)
	}
	switch o.kind {
	case isDir:
		return &pb.LstatResponse{Gfid: g.Bytes(), Stat: statOf(o.st, false)}, nil
	case nondir:
		r := &pb.LstatResponse{Gfid: g.Bytes(), Stat: statOf(o.st, true)}
		if o.st.Mode&unix.S_IFMT == unix.S_IFLNK {
			t, err := o.bucket.Readlink(g.String())
			if err != nil {
				return nil, fmt.Errorf("lstat %s: %w", g, err)
			}
			r.LinkTarget = []byte(t)
		}
		return r, nil
	}
	return nil, fmt.Errorf("lstat %s: no such gfid: %w", g, unix.ENOENT)
}

func (b *Backend) lstatName(s *scope, parent gfid.GFID, name []byte) (*pb.LstatResponse, error) {
	pd, n, err := b.parentAndName(s, parent, name)
	if err != nil {
		return nil, fmt.Errorf("lstat %q in %s: %w", name, parent, err)
	}
	st, err := pd.Lstat(n)
	if err != nil {
		return nil, fmt.Errorf("lstat %q in %s: %w", name, parent, err)
	}
	g, ok, stat, target, err := b.describeAt(s, pd, n, st)
	if err != nil {
		return nil, fmt.Errorf("lstat %q in %s: %w", name, parent, err)
	}
	r := &pb.LstatResponse{Stat: stat, LinkTarget: target}
	if ok {
		r.Gfid = g.Bytes()
	}
	return r, nil
}
