// Package scan is the Hybrid Crawl's tree walk: a parallel, fd-relative scan
// of a set of directories of the master tree that reports every object it
// sees (kernel handle key, attributes, where it was seen, symlink target,
// GFID xattr, user xattrs) without ever following a symlink and without
// writing anything to the tree.
//
// Every path is opened beneath the root with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS (internal/dirfd), so a directory
// swapped for a symlink mid-scan fails instead of leading outside the root.
// Results are streamed to one consumer; the scanner itself keeps only the
// queue of directories still to list.
package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/zeebo/xxh3"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/syncer/index"
)

// ReservedDir is the directory at the master root that is never replicated:
// a cascaded master's root is a slave root, whose .georep/ holds the
// slave's state.
const ReservedDir = ".georep"

// GFID xattrs a cascaded slave tree carries (privileged and unprivileged
// slave layouts).
const (
	trustedGFIDAttr = "trusted.georep.gfid"
	userGFIDAttr    = "user.georep.gfid"
	userPrefix      = "user."
	reservedPrefix  = "user.georep."
)

// Dirty is a directory to scan, relative to the root ("." is the root).
type Dirty struct {
	// Path is slash-separated, relative to the root.
	Path string
	// Recursive scans the whole subtree; otherwise only the directory's
	// children are listed, and a child directory is entered only when
	// Options.Descend says so.
	Recursive bool
	// Names, when set (and Recursive is not), limits the listing to these
	// children: the ones a change detector saw change. Each is looked up
	// whether or not it still exists; the directory is not Listed, its
	// Looked names are.
	Names []string
}

// All is the Dirty set of a full crawl.
var All = []Dirty{{Path: ".", Recursive: true}}

// Stat is the part of an lstat the master needs, times in ns.
type Stat struct {
	Mode     uint32
	UID, GID uint32
	Nlink    uint64
	Rdev     uint64
	Ino, Dev uint64
	Size     int64
	AtimeNs  int64
	MtimeNs  int64
	CtimeNs  int64
}

// IsDir reports whether s is a directory.
func (s *Stat) IsDir() bool { return s.Mode&unix.S_IFMT == unix.S_IFDIR }

// Xattr is one user.* extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Entry is one object as the scan saw it.
type Entry struct {
	Key index.Key
	// Path is where the object was seen, relative to the root ("." for the
	// root itself); Name is its last component ("" for the root).
	Path string
	Name string
	// ParentKey is the key of the directory holding Name ("" for the root).
	ParentKey index.Key
	Stat      Stat
	Target    []byte // symlink target
	// XattrsRead says GFID, Xattrs and XattrDigest were read: the object
	// was unknown or its ctime differed from the index's.
	XattrsRead  bool
	GFID        gfid.GFID // from a GFID xattr (a cascaded slave tree); zero if none
	Xattrs      []Xattr   // user.* except user.georep.*, sorted by name
	XattrDigest uint64
}

// Matcher decides which paths are excluded. path is split into components.
type Matcher interface {
	Match(path []string, isDir bool) bool
}

// NewExclude compiles gitignore-style patterns (as --exclude takes them).
// go-git's matcher is used because it is maintained and implements
// directory-only ("dir/") and anchored patterns and "**" as git does.
func NewExclude(patterns []string) Matcher {
	ps := make([]gitignore.Pattern, 0, len(patterns))
	for _, p := range patterns {
		if strings.TrimSpace(p) == "" || strings.HasPrefix(p, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(p, nil))
	}
	return gitignore.NewMatcher(ps)
}

// Options configures Scan.
type Options struct {
	// Workers bounds the directories listed at once; 0 means GOMAXPROCS*2.
	Workers int
	// Exclude, when set, drops matching paths (and whole matching
	// directories) from the scan.
	Exclude Matcher
	// Known returns the indexed ctime of a key, so xattrs are read only for
	// objects that are new or whose ctime changed. Called concurrently.
	// Nil reads xattrs of every object.
	Known func(index.Key) (ctimeNs int64, known bool, err error)
	// Descend decides whether a child directory of a non-recursive Dirty
	// directory is entered (for instance: it is not in the index, so it
	// was moved in from outside with its contents). Called concurrently.
	Descend func(*Entry) bool
	// Logger receives skipped objects; nil discards.
	Logger *slog.Logger
}

// Summary is what a scan did.
type Summary struct {
	// Listed holds the directories whose children were all reported: only
	// in those may a missing child be taken as deleted.
	Listed map[index.Key]bool
	// Entries counts the objects reported.
	Entries int
	// Vanished counts objects that disappeared between listing and stat.
	Vanished int
	// OtherFS counts objects skipped for being on another filesystem.
	OtherFS int
	// Unlisted holds the directories that could not be listed, with why.
	Unlisted map[string]error
	// Looked holds, for each directory scanned by names (Dirty.Names), the
	// names looked up in it: one of them that was not reported is gone
	// from it, as if it had been listed.
	Looked map[index.Key][]string
}

type job struct {
	path      string // relative, "." for the root
	key       index.Key
	recursive bool
	names     []string // only these children (Dirty.Names); nil: all
}

type scanner struct {
	ctx     context.Context
	root    *dirfd.Dir
	rootDev uint64
	opts    Options
	log     *slog.Logger
	out     chan *Entry

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []job
	active   int
	done     bool
	err      error
	listed   map[index.Key]bool
	looked   map[index.Key][]string
	unlisted map[string]error
	vanished int
	otherFS  int
}

// Scan walks dirs beneath rootDir and calls emit for each object seen,
// from one goroutine at a time. It returns when every directory was listed,
// ctx was cancelled, or emit failed.
func Scan(ctx context.Context, rootDir string, dirs []Dirty, opts Options, emit func(*Entry) error) (Summary, error) {
	root, err := dirfd.Open(rootDir)
	if err != nil {
		return Summary{}, fmt.Errorf("open master root: %w", err)
	}
	defer root.Close()
	rst, err := root.Stat()
	if err != nil {
		return Summary{}, fmt.Errorf("stat master root %s: %w", rootDir, err)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0) * 2
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &scanner{
		ctx: ctx, root: root, rootDev: rst.Dev, opts: opts, log: log,
		out:      make(chan *Entry, 256),
		listed:   map[index.Key]bool{},
		looked:   map[index.Key][]string{},
		unlisted: map[string]error{},
	}
	s.cond = sync.NewCond(&s.mu)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.ctx = ctx
	// Wake idle workers on cancellation.
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.done = true
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()

	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(s.out)
		if err := s.seed(dirs); err != nil {
			s.fail(err)
			return
		}
		var workers sync.WaitGroup
		for range opts.Workers {
			workers.Go(s.work)
		}
		workers.Wait()
	})
	n := 0
	var emitErr error
	for e := range s.out {
		if emitErr != nil {
			continue // drain so producers finish
		}
		if err := emit(e); err != nil {
			emitErr = err
			cancel()
			continue
		}
		n++
	}
	wg.Wait()
	sum := Summary{Listed: s.listed, Looked: s.looked, Entries: n, Vanished: s.vanished, OtherFS: s.otherFS, Unlisted: s.unlisted}
	switch {
	case emitErr != nil:
		return sum, emitErr
	case s.err != nil:
		return sum, s.err
	case ctx.Err() != nil:
		return sum, fmt.Errorf("scan of %s interrupted: %w", rootDir, context.Cause(ctx))
	}
	return sum, nil
}

func (s *scanner) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.done = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

func (s *scanner) send(e *Entry) bool {
	select {
	case s.out <- e:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// seed reports each dirty directory itself and queues its listing.
func (s *scanner) seed(dirs []Dirty) error {
	for _, d := range Normalise(dirs) {
		e, err := s.self(d.Path)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			// Gone since it was marked dirty: its parent's listing (or a
			// later batch) accounts for it.
			s.log.Debug("dirty directory vanished", "path", d.Path, "err", err)
			continue
		}
		if err != nil {
			return err
		}
		if e == nil {
			continue
		}
		if !s.send(e) {
			return nil
		}
		if e.Stat.IsDir() {
			s.push(job{path: d.Path, key: e.Key, recursive: d.Recursive, names: d.Names})
		}
	}
	return nil
}

// Normalise cleans paths, merges duplicates (a whole listing absorbs a
// listing by names, names are merged and sorted), drops directories inside
// a recursive one, and orders parents first: the scan Scan makes of dirs.
func Normalise(dirs []Dirty) []Dirty {
	type want struct {
		recursive, whole bool
		names            map[string]bool
	}
	m := map[string]*want{}
	for _, d := range dirs {
		p := path.Clean("/" + d.Path)[1:]
		if p == "" {
			p = "."
		}
		w := m[p]
		if w == nil {
			w = &want{names: map[string]bool{}}
			m[p] = w
		}
		w.recursive = w.recursive || d.Recursive
		w.whole = w.whole || d.Names == nil
		for _, n := range d.Names {
			w.names[n] = true
		}
	}
	keys := make([]string, 0, len(m))
	for p := range m {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	var out []Dirty
	var recs []string
	for _, p := range keys {
		covered := false
		for _, r := range recs {
			if r == "." || strings.HasPrefix(p, r+"/") {
				covered = true
				break
			}
		}
		if covered {
			continue
		}
		w := m[p]
		d := Dirty{Path: p, Recursive: w.recursive}
		if !w.recursive && !w.whole {
			// Never nil: a nil Names lists the directory whole.
			d.Names = append(make([]string, 0, len(w.names)), slices.Sorted(maps.Keys(w.names))...)
		}
		out = append(out, d)
		if w.recursive {
			recs = append(recs, p)
		}
	}
	return out
}

// self stats the object at the relative path p itself.
func (s *scanner) self(p string) (*Entry, error) {
	if p == "." {
		st, err := s.root.Stat()
		if err != nil {
			return nil, err
		}
		k, err := index.KeyOf(s.root.Fd(), "", &st)
		if err != nil {
			return nil, fmt.Errorf("identify master root: %w", err)
		}
		e := &Entry{Key: k, Path: ".", Stat: statOf(&st)}
		if err := s.readXattrs(s.root, "", e); err != nil {
			return nil, err
		}
		return e, nil
	}
	parent, name := path.Split(p)
	parent = strings.TrimSuffix(parent, "/")
	if s.excluded(p, true) {
		return nil, nil
	}
	var pd *dirfd.Dir
	if parent == "" {
		parent = "."
		pd = s.root
	} else {
		d, err := s.root.OpenBeneath(parent)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		pd = d
	}
	pst, err := pd.Stat()
	if err != nil {
		return nil, err
	}
	pk, err := index.KeyOf(pd.Fd(), "", &pst)
	if err != nil {
		return nil, err
	}
	e, err := s.child(pd, parent, pk, name)
	if e == nil && err == nil {
		return nil, fmt.Errorf("dirty directory %s: %w", p, unix.ENOENT)
	}
	return e, err
}

func (s *scanner) excluded(p string, isDir bool) bool {
	if s.opts.Exclude == nil {
		return false
	}
	return s.opts.Exclude.Match(strings.Split(p, "/"), isDir)
}

func (s *scanner) push(j job) {
	s.mu.Lock()
	s.queue = append(s.queue, j)
	s.cond.Signal()
	s.mu.Unlock()
}

// work lists queued directories until the queue is empty and no worker can
// add more, or the scan stops.
func (s *scanner) work() {
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.done && s.active > 0 {
			s.cond.Wait()
		}
		if s.done || len(s.queue) == 0 {
			s.done = true
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		j := s.queue[len(s.queue)-1] // depth first keeps the queue short
		s.queue = s.queue[:len(s.queue)-1]
		if s.listed[j.key] {
			s.mu.Unlock()
			continue
		}
		s.active++
		s.mu.Unlock()

		ok, err := s.list(j)

		s.mu.Lock()
		s.active--
		switch {
		case ok && j.names != nil:
			s.looked[j.key] = append(append([]string{}, s.looked[j.key]...), j.names...)
		case ok:
			s.listed[j.key] = true
		}
		s.cond.Broadcast()
		s.mu.Unlock()
		if err != nil {
			s.fail(err)
			return
		}
	}
}

// list reports the children of j (those it names, if it names any). ok
// says every child (every named one) was reported or found gone. Errors
// that only concern this directory (it vanished, permission) are recorded
// in Unlisted; only a stopped scan returns an error.
func (s *scanner) list(j job) (ok bool, err error) {
	var d *dirfd.Dir
	if j.path == "." {
		d = s.root
	} else {
		d, err = s.root.OpenBeneath(j.path)
		if err != nil {
			s.unlist(j.path, err)
			return false, nil
		}
		defer d.Close()
		// The name may now hold another directory (renamed mid-scan).
		st, err := d.Stat()
		if err != nil {
			s.unlist(j.path, err)
			return false, nil
		}
		if k, err := index.KeyOf(d.Fd(), "", &st); err != nil || k != j.key {
			s.unlist(j.path, fmt.Errorf("directory was replaced during the scan: %w", unix.ESTALE))
			return false, nil
		}
	}
	names := j.names
	if names == nil {
		if names, err = d.ReadDirNames(); err != nil {
			s.unlist(j.path, err)
			return false, nil
		}
	}
	complete := true
	for _, name := range names {
		if s.ctx.Err() != nil {
			return false, nil
		}
		if j.path == "." && name == ReservedDir {
			continue
		}
		e, err := s.child(d, j.path, j.key, name)
		if err != nil {
			// Report the other children, but infer no deletions here.
			s.unlist(join(j.path, name), err)
			complete = false
			continue
		}
		if e == nil {
			continue
		}
		if !s.send(e) {
			return false, nil
		}
		if e.Stat.IsDir() && (j.recursive || (s.opts.Descend != nil && s.opts.Descend(e))) {
			s.push(job{path: e.Path, key: e.Key, recursive: true})
		}
	}
	return complete, nil
}

func (s *scanner) unlist(p string, err error) {
	s.log.Warn("cannot scan an object; deletions in its directory are not inferred this time", "path", p, "err", err)
	s.mu.Lock()
	s.unlisted[p] = err
	s.mu.Unlock()
}

func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// child stats name in d (at relative path dir, key dk). It returns nil,
// nil for an object to leave out (vanished, excluded, on another
// filesystem).
func (s *scanner) child(d *dirfd.Dir, dir string, dk index.Key, name string) (*Entry, error) {
	p := join(dir, name)
	st, err := d.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		s.mu.Lock()
		s.vanished++
		s.mu.Unlock()
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if s.excluded(p, st.Mode&unix.S_IFMT == unix.S_IFDIR) {
		return nil, nil
	}
	if st.Dev != s.rootDev {
		// Like rsync -x: a mount inside the root is another volume.
		s.log.Debug("skipping an object on another filesystem", "path", p)
		s.mu.Lock()
		s.otherFS++
		s.mu.Unlock()
		return nil, nil
	}
	k, err := index.KeyOf(d.Fd(), name, &st)
	if errors.Is(err, unix.ENOENT) {
		s.mu.Lock()
		s.vanished++
		s.mu.Unlock()
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e := &Entry{Key: k, Path: p, Name: p[len(p)-len(name):], ParentKey: dk, Stat: statOf(&st)}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		t, err := d.Readlink(name)
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read symlink %s: %w", p, err)
		}
		e.Target = []byte(t)
	}
	if err := s.readXattrs(d, name, e); err != nil {
		return nil, err
	}
	return e, nil
}

// readXattrs fills e's GFID and user xattrs when the object is unknown or
// its ctime changed (an xattr change always changes the ctime).
func (s *scanner) readXattrs(d *dirfd.Dir, name string, e *Entry) error {
	if s.opts.Known != nil {
		ct, known, err := s.opts.Known(e.Key)
		if err != nil {
			return fmt.Errorf("look up %s in the index: %w", e.Path, err)
		}
		if known && ct == e.Stat.CtimeNs {
			return nil
		}
	}
	list := d.ListXattr
	get := d.GetXattr
	if name == "" {
		list = func(string) ([]string, error) { return d.ListXattrSelf() }
		get = func(_, a string) ([]byte, error) { return d.GetXattrSelf(a) }
	}
	names, err := list(name)
	if errors.Is(err, unix.ENOTSUP) {
		e.XattrsRead = true
		return nil
	}
	if errors.Is(err, unix.ENOENT) {
		return nil // vanished; a later scan sees what replaced it
	}
	if err != nil {
		return fmt.Errorf("list xattrs of %s: %w", e.Path, err)
	}
	slices.Sort(names)
	var xs []Xattr
	for _, n := range names {
		isGFID := n == trustedGFIDAttr || n == userGFIDAttr
		if !isGFID && (!strings.HasPrefix(n, userPrefix) || strings.HasPrefix(n, reservedPrefix)) {
			continue
		}
		v, err := get(name, n)
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOENT) {
			continue // removed since the listing
		}
		if err != nil {
			return fmt.Errorf("read xattr %s of %s: %w", n, e.Path, err)
		}
		if isGFID {
			if g, err := gfid.FromBytes(v); err == nil && (e.GFID.IsZero() || n == trustedGFIDAttr) {
				e.GFID = g
			}
			continue
		}
		xs = append(xs, Xattr{Name: n, Value: v})
	}
	e.Xattrs = xs
	e.XattrDigest = XattrDigest(xs)
	e.XattrsRead = true
	return nil
}

// XattrDigest is xxh3 over xs sorted by name, each name and value
// length-prefixed so that no two different sets hash the same input. The
// empty set digests to 0.
func XattrDigest(xs []Xattr) uint64 {
	if len(xs) == 0 {
		return 0
	}
	sorted := slices.Clone(xs)
	slices.SortFunc(sorted, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	h := xxh3.New()
	var n [8]byte
	for _, x := range sorted {
		putLen(n[:], len(x.Name))
		h.Write(n[:])
		h.WriteString(x.Name)
		putLen(n[:], len(x.Value))
		h.Write(n[:])
		h.Write(x.Value)
	}
	return h.Sum64()
}

func putLen(b []byte, n int) {
	for i := range 8 {
		b[i] = byte(uint64(n) >> (8 * i))
	}
}

func statOf(st *unix.Stat_t) Stat {
	return Stat{
		Mode: st.Mode, UID: st.Uid, GID: st.Gid, Nlink: st.Nlink, Rdev: st.Rdev,
		Ino: st.Ino, Dev: st.Dev, Size: st.Size,
		AtimeNs: st.Atim.Nano(), MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
	}
}
