package backend

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
)

// The GFID index (.georep/gfid/aa/<gfid>, see IndexPath) is the only way from an
// identity to an object. A non-directory's entry is a hard link to it, so
// "X exists" means its entry has a second link; a directory's entry is a
// symlink "<parent gfid>/<name>" that is only ever read, and every step of
// that chain is checked against the directory's identity xattr.

// kind is what the index knows about an identity.
type kind int

const (
	absent kind = iota
	nondir
	isDir
)

// object is an identity looked up in the index.
type object struct {
	kind   kind
	st     unix.Stat_t // nondir: the object's inode (through its index link); dir: fstat
	dir    *dirfd.Dir  // dir: open, owned by a cache or the scope
	bucket *dirfd.Dir  // nondir: the index bucket holding the link
}

// IndexPath is where the index entry of g lies, relative to the slave
// root: .georep/gfid/<first byte in hex>/<canonical gfid>. A
// non-directory's entry is a hard link to it, so the data plane can
// address a file by identity through this path (gsyncd's aux-gfid mount).
func IndexPath(g gfid.GFID) string {
	return ReservedDir + "/" + indexDirName + "/" + bucketName(g[0]) + "/" + g.String()
}

// bucketName names bucket i. One level of 256 buckets: a second level
// (GlusterFS's aa/bb) costs a mkdir for most of the first 65,536 objects,
// which on ext4 is slower than the rest of a CREATE together, while one
// ext4 htree directory holds millions of entries without trouble.
func bucketName(i byte) string { return fmt.Sprintf("%02x", i) }

// tempName is a fresh name for .georep/tmp, .georep/trash and index updates.
func tempName() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}

// bucket returns g's index bucket, opening it (and with create in a write
// scope, making it) on first use; once open it stays open for the
// backend's life. Missing without create: ENOENT.
func (b *Backend) bucket(s *scope, g gfid.GFID, create bool) (*dirfd.Dir, error) {
	b.topMu.Lock()
	defer b.topMu.Unlock()
	if d := b.top[g[0]]; d != nil {
		return d, nil
	}
	name := bucketName(g[0])
	var d *dirfd.Dir
	var err error
	if create && s.write {
		d, err = mkdirOpen(b.index, name)
	} else {
		d, err = b.index.OpenDir(name)
	}
	if err != nil {
		return nil, fmt.Errorf("open index bucket %s: %w", name, err)
	}
	b.top[g[0]] = d
	return d, nil
}

// lookup finds identity g. A non-directory whose index link is the last
// link (the object was removed behind our back) is absent; a write scope
// removes that stale link.
func (b *Backend) lookup(s *scope, g gfid.GFID) (object, error) {
	if g == gfid.Root {
		return b.dirObject(b.rootDir)
	}
	if b.dirs.get(dirKey(g)) != nil {
		d, err := b.resolveDir(s, g, 0)
		if err == nil {
			return b.dirObject(d)
		}
		if !errors.Is(err, unix.ENOENT) {
			return object{}, err
		}
	}
	bd, err := b.bucket(s, g, false)
	if errors.Is(err, unix.ENOENT) {
		return object{}, nil
	}
	if err != nil {
		return object{}, fmt.Errorf("look up %s in the index: %w", g, err)
	}
	name := g.String()
	st, err := bd.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return object{}, nil
	}
	if err != nil {
		return object{}, fmt.Errorf("look up %s in the index: %w", g, err)
	}
	if st.Nlink >= 2 {
		return object{kind: nondir, st: st, bucket: bd}, nil
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// A directory's entry (or a stale symlink's): resolve and check.
		d, err := b.resolveDir(s, g, 0)
		if err == nil {
			return b.dirObject(d)
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EINVAL) {
			return object{}, nil
		}
		return object{}, err
	}
	if s.write {
		if err := bd.Unlink(name); err != nil && !errors.Is(err, unix.ENOENT) {
			return object{}, fmt.Errorf("drop stale index entry of %s: %w", g, err)
		}
	}
	return object{}, nil
}

func (b *Backend) dirObject(d *dirfd.Dir) (object, error) {
	st, err := d.Stat()
	if err != nil {
		return object{}, err
	}
	return object{kind: isDir, st: st, dir: d}, nil
}

func dirKey(g gfid.GFID) string { return string(g[:]) }

// dirTarget is the index symlink target of a directory named name in parent.
func dirTarget(parent gfid.GFID, name string) string { return parent.String() + "/" + name }

func parseDirTarget(t string) (gfid.GFID, string, error) {
	const n = 36
	if len(t) < n+2 || t[n] != '/' {
		return gfid.GFID{}, "", fmt.Errorf("index entry %q is not <parent-gfid>/<name>: %w", t, unix.EINVAL)
	}
	p, err := gfid.Parse(t[:n])
	if err != nil {
		return gfid.GFID{}, "", fmt.Errorf("index entry %q: %v: %w", t, err, unix.EINVAL)
	}
	name := t[n+1:]
	if err := dirfd.ValidName(name); err != nil {
		return gfid.GFID{}, "", fmt.Errorf("index entry %q: %w", t, err)
	}
	if p == gfid.Root && name == ReservedDir {
		return gfid.GFID{}, "", fmt.Errorf("index entry %q names the reserved directory: %w", t, unix.EINVAL)
	}
	return p, name, nil
}

// dirLocation reads where the index says directory g lives. Not a
// directory's entry: ENOTDIR; no entry: ENOENT.
func (b *Backend) dirLocation(s *scope, g gfid.GFID) (gfid.GFID, string, error) {
	bd, err := b.bucket(s, g, false)
	if err != nil {
		return gfid.GFID{}, "", err
	}
	name := g.String()
	st, err := bd.Lstat(name)
	if err != nil {
		return gfid.GFID{}, "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != 1 {
		return gfid.GFID{}, "", fmt.Errorf("%s is not a directory: %w", g, unix.ENOTDIR)
	}
	t, err := bd.Readlink(name)
	if err != nil {
		return gfid.GFID{}, "", err
	}
	return parseDirTarget(t)
}

// resolveDir opens directory g by walking its index chain towards the
// root, opening each component beneath its parent and checking its
// identity. Missing or stale: ENOENT; not a directory: ENOTDIR.
func (b *Backend) resolveDir(s *scope, g gfid.GFID, depth int) (*dirfd.Dir, error) {
	if g == gfid.Root {
		return b.rootDir, nil
	}
	if d := b.dirs.get(dirKey(g)); d != nil {
		// An fd follows its directory anywhere, even into oblivion: one
		// removed behind our back (nlink 0) is no longer the replica's.
		var st unix.Stat_t
		if err := unix.Fstat(d.Fd(), &st); err == nil && st.Nlink > 0 {
			return d, nil
		}
		if s.write {
			b.dirs.drop(s, dirKey(g))
		}
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("directory %s is more than %d levels deep in the index: %w", g, maxDepth, unix.ELOOP)
	}
	parent, name, err := b.dirLocation(s, g)
	if err != nil {
		return nil, err
	}
	pd, err := b.resolveDir(s, parent, depth+1)
	if err != nil {
		return nil, err
	}
	d, err := pd.OpenDir(name)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			// A symlink where the directory should be: not our directory.
			return nil, fmt.Errorf("directory %s: %w", g, unix.ENOENT)
		}
		return nil, err
	}
	v, err := d.GetXattrSelf(b.gfidAttr)
	if err != nil || len(v) != gfid.Size || gfid.GFID(v) != g {
		d.Close()
		return nil, fmt.Errorf("directory %s: index entry is stale: %w", g, unix.ENOENT)
	}
	b.dirs.put(s, dirKey(g), d)
	return d, nil
}

// isAncestor reports whether dir a is dir d or one of its ancestors.
func (b *Backend) isAncestor(s *scope, a, d gfid.GFID) (bool, error) {
	for range maxDepth {
		if d == a {
			return true, nil
		}
		if d == gfid.Root {
			return false, nil
		}
		p, _, err := b.dirLocation(s, d)
		if err != nil {
			return false, err
		}
		d = p
	}
	return false, fmt.Errorf("directory chain deeper than %d: %w", maxDepth, unix.ELOOP)
}

// setDirIndex points directory g's index entry at (parent, name),
// atomically: a symlink at a temporary name renamed over the entry.
func (b *Backend) setDirIndex(s *scope, g, parent gfid.GFID, name string) error {
	bd, err := b.bucket(s, g, true)
	if err != nil {
		return fmt.Errorf("index directory %s: %w", g, err)
	}
	t := "." + tempName()
	if err := bd.Symlink(dirTarget(parent, name), t); err != nil {
		return fmt.Errorf("index directory %s: %w", g, err)
	}
	if err := bd.Rename(t, bd, g.String(), dirfd.RenameReplace); err != nil {
		bd.Unlink(t)
		return fmt.Errorf("index directory %s: %w", g, err)
	}
	return nil
}

// linkIndex makes name in d the index link of non-directory g, replacing a
// stale entry.
func (b *Backend) linkIndex(s *scope, g gfid.GFID, d *dirfd.Dir, name string) error {
	bd, err := b.bucket(s, g, true)
	if err != nil {
		return fmt.Errorf("index %s: %w", g, err)
	}
	err = d.Link(name, bd, g.String())
	if errors.Is(err, unix.EEXIST) {
		st, serr := bd.Lstat(g.String())
		if serr == nil && st.Nlink == 1 {
			if uerr := bd.Unlink(g.String()); uerr == nil {
				err = d.Link(name, bd, g.String())
			}
		}
	}
	if err != nil {
		return fmt.Errorf("index %s: %w", g, err)
	}
	return nil
}

// dropIndexIfOrphan removes non-directory g's index link when it is the
// last link to inode ino.
func (b *Backend) dropIndexIfOrphan(s *scope, g gfid.GFID, ino uint64) {
	bd, err := b.bucket(s, g, false)
	if err != nil {
		return
	}
	st, err := bd.Lstat(g.String())
	if err != nil || st.Ino != ino || st.Nlink != 1 {
		return
	}
	if err := bd.Unlink(g.String()); err != nil && !errors.Is(err, unix.ENOENT) {
		b.log.Warn("cannot drop index entry of a removed object", "gfid", g, "err", err)
	}
}

// dropDirIndex removes directory g's index entry (its directory is gone).
func (b *Backend) dropDirIndex(s *scope, g gfid.GFID) {
	bd, err := b.bucket(s, g, false)
	if err != nil {
		return
	}
	st, err := bd.Lstat(g.String())
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != 1 {
		return
	}
	if err := bd.Unlink(g.String()); err != nil && !errors.Is(err, unix.ENOENT) {
		b.log.Warn("cannot drop index entry of a removed directory", "gfid", g, "err", err)
	}
}

// canCarryXattr reports whether an object of mode can hold our identity
// xattr: user.* only sticks to regular files and directories.
func (b *Backend) canCarryXattr(mode uint32) bool {
	if b.priv {
		return true
	}
	t := mode & unix.S_IFMT
	return t == unix.S_IFREG || t == unix.S_IFDIR
}

// gfidAt reads the identity of name in d (lstat'd as st), never following.
func (b *Backend) gfidAt(d *dirfd.Dir, name string, st unix.Stat_t) (gfid.GFID, bool, error) {
	if !b.canCarryXattr(st.Mode) {
		return gfid.GFID{}, false, nil
	}
	v, err := d.GetXattr(name, b.gfidAttr)
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
		return gfid.GFID{}, false, nil
	}
	if err != nil {
		return gfid.GFID{}, false, err
	}
	g, err := gfid.FromBytes(v)
	if err != nil {
		return gfid.GFID{}, false, nil
	}
	return g, true, nil
}

// holds reports whether the object at name in d (lstat'd as st) is x,
// whose lookup is xo: by inode when x is indexed, else by identity xattr.
func (b *Backend) holds(d *dirfd.Dir, name string, st unix.Stat_t, x gfid.GFID, xo object) bool {
	if xo.kind != absent {
		return st.Dev == xo.st.Dev && st.Ino == xo.st.Ino
	}
	g, ok, err := b.gfidAt(d, name, st)
	return err == nil && ok && g == x
}

// node is an object reached by identity for attribute work: a directory
// through its fd, a non-directory through its index link (the same inode).
type node struct {
	dir  *dirfd.Dir
	at   *dirfd.Dir
	name string
	st   unix.Stat_t
}

func (b *Backend) node(s *scope, g gfid.GFID) (node, error) {
	o, err := b.lookup(s, g)
	if err != nil {
		return node{}, err
	}
	switch o.kind {
	case isDir:
		return node{dir: o.dir, st: o.st}, nil
	case nondir:
		return node{at: o.bucket, name: g.String(), st: o.st}, nil
	}
	return node{}, fmt.Errorf("no object with gfid %s: %w", g, unix.ENOENT)
}

func (n node) isSymlink() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFLNK }

func (n node) chmod(mode uint32) error {
	if n.dir != nil {
		return n.dir.ChmodSelf(mode)
	}
	return n.at.Chmod(n.name, mode)
}

func (n node) chown(uid, gid int) error {
	if n.dir != nil {
		return n.dir.ChownSelf(uid, gid)
	}
	return n.at.Chown(n.name, uid, gid)
}

func (n node) utimes(a, m unix.Timespec) error {
	if n.dir != nil {
		return n.dir.UtimesSelf(a, m)
	}
	return n.at.Utimes(n.name, a, m)
}

func (n node) getXattr(attr string) ([]byte, error) {
	if n.dir != nil {
		return n.dir.GetXattrSelf(attr)
	}
	return n.at.GetXattr(n.name, attr)
}

func (n node) setXattr(attr string, v []byte) error {
	if n.dir != nil {
		return n.dir.SetXattrSelf(attr, v, 0)
	}
	return n.at.SetXattr(n.name, attr, v, 0)
}

func (n node) removeXattr(attr string) error {
	if n.dir != nil {
		return n.dir.RemoveXattrSelf(attr)
	}
	return n.at.RemoveXattr(n.name, attr)
}

func (n node) listXattr() ([]string, error) {
	if n.dir != nil {
		return n.dir.ListXattrSelf()
	}
	return n.at.ListXattr(n.name)
}
