// Package backend is the slave's replica tree: an identity-addressed view of
// a directory (the slave root) in which every object is found by its GFID,
// every name from the wire is resolved fd-relative beneath the root, and the
// reserved directory .georep/ holds the GFID index and the slave's state.
//
// Layout of .georep/:
//
//	gfid/<hex0-1>/<hex2-3>/<gfid>  the GFID index: a hard link to a
//	                               non-directory, a symlink "<parent>/<name>"
//	                               (read, never followed) for a directory
//	tmp/                           new objects get identity here, then are
//	                               renamed into place
//	trash/                         removals land here and are checked before
//	                               being purged
//	volume-id                      the root's native volume uuid
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// ReservedDir is the name of the slave's state directory at the root. It is
// never reachable through the API.
const ReservedDir = ".georep"

const (
	indexDirName = "gfid"
	tmpDirName   = "tmp"
	trashDirName = "trash"
	volumeIDName = "volume-id"

	// dirCacheMax bounds the cached directory fds (by GFID).
	dirCacheMax = 4096
	// maxDepth bounds a directory's chain of parents in the index, so a
	// corrupt (cyclic) index cannot loop forever.
	maxDepth = 4096
)

// Options configures a Backend.
type Options struct {
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
	// UserXattrs stores identities and marks in user.* extended attributes
	// even when running as root (for roots on filesystems without trusted.*
	// support, and for tests of the unprivileged layout).
	UserXattrs bool
}

// Backend is one slave root. Its methods are safe for concurrent use.
type Backend struct {
	root string
	log  *slog.Logger

	rootDir *dirfd.Dir
	state   *dirfd.Dir // .georep
	index   *dirfd.Dir // .georep/gfid
	tmp     *dirfd.Dir // .georep/tmp
	trash   *dirfd.Dir // .georep/trash
	// top holds the index's buckets open, once used, for the backend's
	// life: every index access goes through one.
	topMu sync.Mutex
	top   [256]*dirfd.Dir

	priv     bool   // identities in trusted.*
	canChown bool   // euid 0: chown to any owner
	ns       string // "trusted" or "user"
	gfidAttr string
	native   *pb.VolumeMark
	// tmpfile: this filesystem makes unnamed files (O_TMPFILE) and we may
	// link them (see unnamedTemp); probed at Open.
	tmpfile bool

	// mu serialises every mutating call (Lock); read-only calls share it
	// (RLock). closed is guarded by mu.
	mu     sync.RWMutex
	closed bool

	dirs fdCache // directory fds by GFID
}

// Open opens (and on first use initialises) the slave root at dir.
func Open(dir string, opts Options) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve slave root %q: %w", dir, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	b := &Backend{
		root:     abs,
		log:      log,
		canChown: os.Geteuid() == 0,
		dirs:     fdCache{max: dirCacheMax},
	}
	b.priv = b.canChown && !opts.UserXattrs
	b.ns = "user"
	if b.priv {
		b.ns = "trusted"
	}
	b.gfidAttr = b.ns + ".georep.gfid"

	successful := false
	defer func() {
		if !successful {
			b.closeFds()
		}
	}()
	if b.rootDir, err = dirfd.Open(abs); err != nil {
		return nil, fmt.Errorf("open slave root: %w", err)
	}
	if b.state, err = mkdirOpen(b.rootDir, ReservedDir); err != nil {
		return nil, fmt.Errorf("prepare state directory %s/%s: %w", abs, ReservedDir, err)
	}
	for _, d := range []struct {
		name string
		dst  **dirfd.Dir
	}{{indexDirName, &b.index}, {tmpDirName, &b.tmp}, {trashDirName, &b.trash}} {
		if *d.dst, err = mkdirOpen(b.state, d.name); err != nil {
			return nil, fmt.Errorf("prepare %s/%s/%s: %w", abs, ReservedDir, d.name, err)
		}
	}
	if err := b.markRoot(); err != nil {
		return nil, err
	}
	// Crash leftovers: half-made objects in tmp, unpurged removals in trash.
	// Another slave process may hold this root with temps and removals in
	// flight (a master's new session while its old one ends, a second
	// master about to be refused): only a process that finds itself alone
	// clears them. Every process holds a shared flock of the state
	// directory until it closes; the sole one took it exclusive first.
	sole, err := b.lockState()
	if err != nil {
		return nil, err
	}
	if sole {
		s := &scope{write: true}
		for _, d := range []*dirfd.Dir{b.tmp, b.trash} {
			if _, err := b.emptyDir(s, d); err != nil {
				s.done()
				return nil, fmt.Errorf("clear crash leftovers in %s: %w", ReservedDir, err)
			}
		}
		s.done()
	} else {
		b.log.Info("another slave process has this root open; crash leftovers in " + ReservedDir + " are left for the last one to clear")
	}
	if err := unix.Flock(b.state.Fd(), unix.LOCK_SH); err != nil {
		return nil, fmt.Errorf("lock %s/%s: %w", abs, ReservedDir, err)
	}
	b.tmpfile = b.probeTmpfile()
	if b.native, err = b.loadNativeMark(); err != nil {
		return nil, err
	}
	successful = true
	b.log.Info("slave root opened", "root", abs, "privileged", b.priv,
		"volume", uuidString(b.native.GetUuid()))
	return b, nil
}

// probeTmpfile reports whether an unnamed file can be made and linked in
// .georep/tmp; the link is removed again.
func (b *Backend) probeTmpfile() bool {
	f, err := b.tmp.OpenTmpfile(0o600)
	if err != nil {
		b.log.Debug("new files' temps go in "+ReservedDir+"/"+tmpDirName+": no O_TMPFILE here", "err", err)
		return false
	}
	defer f.Close()
	name := tempName()
	if err := b.tmp.LinkFile(f, name); err != nil {
		b.log.Debug("new files' temps go in "+ReservedDir+"/"+tmpDirName+": an unnamed file cannot be linked", "err", err)
		return false
	}
	if err := b.tmp.Unlink(name); err != nil {
		b.log.Warn("cannot remove a probe file; the next open removes it", "tmp", name, "err", err)
	}
	return true
}

// markRoot gives the root its fixed identity, and proves the filesystem
// takes our extended attributes before anything is replicated.
func (b *Backend) markRoot() error {
	v, err := b.rootDir.GetXattrSelf(b.gfidAttr)
	switch {
	case err == nil:
		if g, ferr := gfid.FromBytes(v); ferr != nil || g != gfid.Root {
			return fmt.Errorf("slave root %s carries identity %x in %s, not the root GFID: is it part of another replica? %w",
				b.root, v, b.gfidAttr, unix.EINVAL)
		}
		return nil
	case errors.Is(err, unix.ENODATA):
		if err := b.rootDir.SetXattrSelf(b.gfidAttr, gfid.Root.Bytes(), 0); err != nil {
			return fmt.Errorf("mark slave root %s (does the filesystem support %s.* extended attributes?): %w", b.root, b.ns, err)
		}
		return nil
	default:
		return fmt.Errorf("read slave root identity (does the filesystem support %s.* extended attributes?): %w", b.ns, err)
	}
}

func mkdirOpen(parent *dirfd.Dir, name string) (*dirfd.Dir, error) {
	if err := parent.Mkdir(name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, err
	}
	return parent.OpenDir(name)
}

// Close releases the root's file descriptors.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return b.closeFds()
}

// Free returns the bytes an unprivileged write may still take on the
// root's filesystem (statfs's available blocks).
func (b *Backend) Free() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(b.rootDir.Fd(), &st); err != nil {
		return 0, fmt.Errorf("statfs of the slave root: %w", err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// lockState tries to take the state directory's flock exclusively,
// reporting whether it did: no other slave process has the root open.
func (b *Backend) lockState() (sole bool, err error) {
	switch err := unix.Flock(b.state.Fd(), unix.LOCK_EX|unix.LOCK_NB); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return false, nil
	default:
		return false, fmt.Errorf("lock %s/%s: %w", b.root, ReservedDir, err)
	}
}

func (b *Backend) closeFds() error {
	var errs []error
	errs = append(errs, b.dirs.closeAll())
	for _, d := range b.top {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	for _, d := range []*dirfd.Dir{b.trash, b.tmp, b.index, b.state, b.rootDir} {
		if d != nil {
			errs = append(errs, d.Close())
		}
	}
	return errors.Join(errs...)
}

// Root returns the absolute path of the slave root.
func (b *Backend) Root() string { return b.root }

// Privileged reports whether identities live in trusted.* (running as root)
// rather than user.* extended attributes.
func (b *Backend) Privileged() bool { return b.priv }

var errClosed = fmt.Errorf("slave backend is closed: %w", unix.EBADF)

// lock takes the exclusive lock for a mutating call.
func (b *Backend) lock() (*scope, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errClosed
	}
	return &scope{write: true}, nil
}

func (b *Backend) unlock(s *scope) {
	s.done()
	b.mu.Unlock()
}

// rlock takes the shared lock for a read-only call.
func (b *Backend) rlock() (*scope, error) {
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return nil, errClosed
	}
	return &scope{}, nil
}

func (b *Backend) runlock(s *scope) {
	s.done()
	b.mu.RUnlock()
}

// scope is one call's (or one entry's) claim on directory fds. Fds it owns
// are closed when it ends; fds evicted from a cache while it runs are handed
// to it, so nothing a call holds is closed under it. Only a write scope
// (exclusive lock) evicts, so readers never lose an fd they took from a cache.
type scope struct {
	write   bool
	owned   []*dirfd.Dir
	victims []string // names in trash to purge when the entry ends
}

func (s *scope) own(d *dirfd.Dir) { s.owned = append(s.owned, d) }

func (s *scope) done() {
	for _, d := range s.owned {
		d.Close()
	}
	s.owned = nil
}

// fdCache holds directory fds by key, cleared when full: an fd follows its
// directory across renames, so only removal makes an entry wrong, and
// removal flushes the cache.
type fdCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*dirfd.Dir
}

func (c *fdCache) get(k string) *dirfd.Dir {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// put caches d under k, or gives it to s when it cannot be cached.
func (c *fdCache) put(s *scope, k string, d *dirfd.Dir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*dirfd.Dir)
	}
	if _, dup := c.m[k]; dup {
		s.own(d) // another reader got there first
		return
	}
	if len(c.m) >= c.max {
		if !s.write {
			s.own(d)
			return
		}
		for _, old := range c.m {
			s.own(old)
		}
		clear(c.m)
	}
	c.m[k] = d
}

// drop removes k from the cache into s (a write scope).
func (c *fdCache) drop(s *scope, k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.m[k]; ok {
		s.own(d)
		delete(c.m, k)
	}
}

// flush empties the cache into s (a write scope).
func (c *fdCache) flush(s *scope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.m {
		s.own(d)
	}
	clear(c.m)
}

func (c *fdCache) closeAll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, d := range c.m {
		errs = append(errs, d.Close())
	}
	clear(c.m)
	return errors.Join(errs...)
}

// Stime returns the sync time recorded for master.
func (b *Backend) Stime(master gfid.GFID) (ts *pb.Timestamp, found bool, err error) {
	s, err := b.rlock()
	if err != nil {
		return nil, false, err
	}
	defer b.runlock(s)
	v, err := b.rootDir.GetXattrSelf(b.stimeAttr(master))
	if errors.Is(err, unix.ENODATA) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read stime of master %s: %w", master, err)
	}
	ts, err = decodeTimestamp(v)
	if err != nil {
		return nil, false, fmt.Errorf("read stime of master %s: %w", master, err)
	}
	return ts, true, nil
}

// SetStime durably records master's sync time.
func (b *Backend) SetStime(master gfid.GFID, ts *pb.Timestamp) error {
	v, err := encodeTimestamp(ts)
	if err != nil {
		return fmt.Errorf("set stime of master %s: %w", master, err)
	}
	s, err := b.lock()
	if err != nil {
		return err
	}
	defer b.unlock(s)
	// The commit point: everything applied before this stime must be on
	// disk before the stime itself is.
	if err := b.rootDir.Syncfs(); err != nil {
		return fmt.Errorf("set stime of master %s: flush applied changes: %w", master, err)
	}
	if err := b.rootDir.SetXattrSelf(b.stimeAttr(master), v, 0); err != nil {
		return fmt.Errorf("set stime of master %s: %w", master, err)
	}
	if err := b.rootDir.Fsync(); err != nil {
		return fmt.Errorf("set stime of master %s: %w", master, err)
	}
	return nil
}

// Xtime returns the change mark recorded for master on object obj.
func (b *Backend) Xtime(master, obj gfid.GFID) (ts *pb.Timestamp, found bool, err error) {
	s, err := b.rlock()
	if err != nil {
		return nil, false, err
	}
	defer b.runlock(s)
	n, err := b.node(s, obj)
	if err != nil {
		return nil, false, fmt.Errorf("read xtime of %s: %w", obj, err)
	}
	v, err := n.getXattr(b.xtimeAttr(master))
	if errors.Is(err, unix.ENODATA) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read xtime of %s: %w", obj, err)
	}
	ts, err = decodeTimestamp(v)
	if err != nil {
		return nil, false, fmt.Errorf("read xtime of %s: %w", obj, err)
	}
	return ts, true, nil
}

// SetXtime durably records master's change mark on object obj.
func (b *Backend) SetXtime(master, obj gfid.GFID, ts *pb.Timestamp) error {
	v, err := encodeTimestamp(ts)
	if err != nil {
		return fmt.Errorf("set xtime of %s: %w", obj, err)
	}
	s, err := b.lock()
	if err != nil {
		return err
	}
	defer b.unlock(s)
	n, err := b.node(s, obj)
	if err != nil {
		return fmt.Errorf("set xtime of %s: %w", obj, err)
	}
	if err := n.setXattr(b.xtimeAttr(master), v); err != nil {
		return fmt.Errorf("set xtime of %s: %w", obj, err)
	}
	if n.dir != nil {
		err = n.dir.Fsync()
	} else {
		// A non-directory (a symlink included) cannot be opened for fsync
		// safely; flush the filesystem instead. Xtimes are rare.
		err = b.rootDir.Syncfs()
	}
	if err != nil {
		return fmt.Errorf("set xtime of %s: %w", obj, err)
	}
	return nil
}

// NativeMark returns the root's native volume mark (made once per root).
func (b *Backend) NativeMark() *pb.VolumeMark { return cloneMark(b.native) }

// SetForeignMark durably records a master's volume mark; m.Expires says
// until when it is valid.
func (b *Backend) SetForeignMark(m *pb.VolumeMark) error {
	attr, v, err := b.encodeForeignMark(m)
	if err != nil {
		return err
	}
	s, err := b.lock()
	if err != nil {
		return err
	}
	defer b.unlock(s)
	if err := b.rootDir.SetXattrSelf(attr, v, 0); err != nil {
		return fmt.Errorf("record foreign mark: %w", err)
	}
	if err := b.rootDir.Fsync(); err != nil {
		return fmt.Errorf("record foreign mark: %w", err)
	}
	return nil
}

// ForeignMarks returns the foreign marks valid at now and removes expired ones.
func (b *Backend) ForeignMarks(now time.Time) ([]*pb.VolumeMark, error) {
	s, err := b.lock()
	if err != nil {
		return nil, err
	}
	defer b.unlock(s)
	return b.foreignMarks(now)
}

// EntryOps applies entries in order and returns one result per entry.
func (b *Backend) EntryOps(ctx context.Context, entries []*pb.Entry) []*pb.EntryResult {
	results := make([]*pb.EntryResult, len(entries))
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			results[i] = errnoResult(unix.ECANCELED, fmt.Sprintf("%s not applied: batch cancelled: %v", describe(e), err))
			continue
		}
		results[i] = b.applyEntry(e)
	}
	return results
}

// MetaOps applies meta entries in order and returns one result per entry.
func (b *Backend) MetaOps(ctx context.Context, entries []*pb.MetaEntry) []*pb.EntryResult {
	results := make([]*pb.EntryResult, len(entries))
	for i, e := range entries {
		if err := ctx.Err(); err != nil {
			results[i] = errnoResult(unix.ECANCELED, fmt.Sprintf("meta of %x not applied: batch cancelled: %v", e.GetGfid(), err))
			continue
		}
		results[i] = b.applyMeta(e)
	}
	return results
}

// Entries lists the directory dir, sorted by name, without .georep/.
func (b *Backend) Entries(ctx context.Context, dir gfid.GFID) ([]*pb.DirEntry, error) {
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	return b.entries(ctx, s, dir)
}

// LstatGFID returns the attributes of the object g.
func (b *Backend) LstatGFID(g gfid.GFID) (*pb.LstatResponse, error) {
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	return b.lstatGFID(s, g)
}

// LstatName returns the attributes of the object at (parent, name).
func (b *Backend) LstatName(parent gfid.GFID, name []byte) (*pb.LstatResponse, error) {
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	return b.lstatName(s, parent, name)
}

// GFID returns the identity at (parent, name); ok is false when the object
// carries none.
func (b *Backend) GFID(parent gfid.GFID, name []byte) (g gfid.GFID, ok bool, err error) {
	s, err := b.rlock()
	if err != nil {
		return g, false, err
	}
	defer b.runlock(s)
	pd, n, err := b.parentAndName(s, parent, name)
	if err != nil {
		return g, false, err
	}
	st, err := pd.Lstat(n)
	if err != nil {
		return g, false, fmt.Errorf("gfid of %q in %s: %w", name, parent, err)
	}
	g, ok, err = b.gfidAt(pd, n, st)
	if err != nil {
		return g, false, fmt.Errorf("gfid of %q in %s: %w", name, parent, err)
	}
	return g, ok, nil
}

// Purge force-removes the named children of parent (all children when names
// is empty) and returns how many objects were removed.
func (b *Backend) Purge(ctx context.Context, parent gfid.GFID, names [][]byte) (uint64, error) {
	s, err := b.lock()
	if err != nil {
		return 0, err
	}
	defer b.unlock(s)
	return b.purge(ctx, s, parent, names)
}
