package changelog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

const inotifyMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CLOSE_WRITE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// watch is one watched directory, placed in the tree of watches by its
// parent and name so its root-relative path follows renames.
type watch struct {
	wd       int32
	parent   *watch // nil for the root
	name     string
	key      index.Key
	children map[string]*watch
}

func (w *watch) rel() string {
	if w.parent == nil {
		return ""
	}
	if p := w.parent.rel(); p != "" {
		return p + "/" + w.name
	}
	return w.name
}

// inotifySource watches every directory beneath the root, one inotify watch
// each, adding watches as directories appear. For hosts where fanotify is
// not permitted (it needs CAP_SYS_ADMIN for a filesystem mark).
type inotifySource struct {
	f       *os.File
	fd      int
	root    *rootDir
	watches map[int32]*watch
	log     *slog.Logger
}

// moveFrom is a directory's IN_MOVED_FROM waiting for its IN_MOVED_TO.
type moveFrom struct {
	w    *watch
	name string
}

func openInotify(root *rootDir, log *slog.Logger) (*inotifySource, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("unable to create an inotify instance (see fs.inotify.max_user_instances): %w", err)
	}
	s := &inotifySource{fd: fd, root: root, watches: make(map[int32]*watch), log: log}
	if err := s.addTree(nil, "", nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unable to watch %s with inotify: %w", root.path, err)
	}
	s.f = os.NewFile(uintptr(fd), "inotify")
	return s, nil
}

func (s *inotifySource) kind() Detector { return DetectorInotify }

func (s *inotifySource) close() error { return s.f.Close() }

// addTree watches the directory name in parent (nil parent: the root) and
// every directory beneath it. Into set (when not nil) it marks each newly
// watched directory Whole: entries made in it before its watch existed were
// seen by no one.
func (s *inotifySource) addTree(parent *watch, name string, set DirtySet) error {
	var fd int
	var err error
	if parent == nil {
		fd, err = unix.Openat(s.root.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		rel := name
		if p := parent.rel(); p != "" {
			rel = p + "/" + name
		}
		if s.root.ignored(rel, "") {
			return nil
		}
		fd, err = openBeneath(s.root.fd, rel)
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil // gone or replaced since the event: its parent's events cover it
		}
		return err
	}
	return s.addDir(fd, parent, name, set)
}

// openBeneath opens the directory rel beneath dirfd, following no symlink
// and never leaving dirfd's subtree.
func openBeneath(dirfd int, rel string) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if errors.Is(err, unix.EAGAIN) {
			continue // a rename raced the lookup
		}
		return fd, err
	}
}

// addDir watches the directory open at fd (taking ownership of fd) and
// recurses into its subdirectories.
func (s *inotifySource) addDir(fd int, parent *watch, name string, set DirtySet) error {
	// One owner for fd: the File (its finalizer would otherwise close a
	// number we may have reused). The path is for ReadDir's lstat fallback.
	dir := os.NewFile(uintptr(fd), "/proc/self/fd/"+strconv.Itoa(fd))
	defer dir.Close()
	// The magic link names exactly the inode we opened without following
	// symlinks, so the watch cannot land elsewhere if the path changed.
	wd, err := unix.InotifyAddWatch(s.fd, "/proc/self/fd/"+strconv.Itoa(fd), inotifyMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("inotify watch limit reached (raise sysctl fs.inotify.max_user_watches, or run as root so fanotify is used): %w", err)
		}
		return fmt.Errorf("unable to add an inotify watch: %w", err)
	}
	w := s.watches[int32(wd)]
	if w != nil {
		// Already watched: it moved in a way we did not pair up.
		s.place(w, parent, name)
	} else {
		key, err := keyOfFD(fd)
		if err != nil {
			unix.InotifyRmWatch(s.fd, uint32(wd))
			return err
		}
		w = &watch{wd: int32(wd), key: key}
		s.watches[w.wd] = w
		s.place(w, parent, name)
	}
	if set != nil {
		d := set.dir(w.key, w.rel())
		d.Whole, d.Names = true, nil
	}
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("unable to list %q to watch its subdirectories: %w", w.rel(), err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if s.root.ignored(w.rel(), e.Name()) {
			continue
		}
		cfd, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				continue
			}
			return fmt.Errorf("unable to open %q to watch it: %w", e.Name(), err)
		}
		if err := s.addDir(cfd, w, e.Name(), set); err != nil {
			return err
		}
	}
	return nil
}

// place links w under parent as name, unlinking it from its old place.
func (s *inotifySource) place(w, parent *watch, name string) {
	if w.parent != nil && w.parent.children[w.name] == w {
		delete(w.parent.children, w.name)
	}
	w.parent, w.name = parent, name
	if parent != nil {
		if parent.children == nil {
			parent.children = make(map[string]*watch)
		}
		parent.children[name] = w
	}
}

// removeTree drops the watches of w and everything beneath it: the subtree
// left the root.
func (s *inotifySource) removeTree(w *watch) {
	for _, c := range w.children {
		s.removeTree(c)
	}
	s.forget(w)
	unix.InotifyRmWatch(s.fd, uint32(w.wd))
}

func (s *inotifySource) forget(w *watch) {
	if w.parent != nil && w.parent.children[w.name] == w {
		delete(w.parent.children, w.name)
	}
	delete(s.watches, w.wd)
}

func (s *inotifySource) run(ctx context.Context, emit func(DirtySet, bool)) error {
	stop := context.AfterFunc(ctx, func() { s.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, readBufSize)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("unable to read inotify events: %w", err)
		}
		set, overflow := DirtySet{}, false
		from := map[uint32]moveFrom{}
		if err := parseInotify(buf[:n], func(wd int32, mask, cookie uint32, name []byte) {
			if err := s.handle(wd, mask, cookie, string(name), set, from); err != nil {
				s.log.Error("changes may be missed; a Hybrid Crawl follows", "err", err)
				overflow = true
			}
		}); err != nil {
			s.log.Error("unreadable inotify events; treating them as lost (a Hybrid Crawl follows)", "err", err)
			overflow = true
		}
		// A directory moved out with no IN_MOVED_TO left the root: stop
		// watching it. (If its IN_MOVED_TO comes in the next read after all,
		// that event adds it back as a new directory.)
		for _, m := range from {
			if c := m.w.children[m.name]; c != nil {
				s.removeTree(c)
			}
		}
		if len(set) > 0 || overflow {
			emit(set, overflow)
		}
	}
}

func (s *inotifySource) handle(wd int32, mask, cookie uint32, name string, set DirtySet, from map[uint32]moveFrom) error {
	if mask&unix.IN_Q_OVERFLOW != 0 {
		return errors.New("the inotify queue overflowed (see sysctl fs.inotify.max_queued_events)")
	}
	w := s.watches[wd]
	if w == nil {
		return nil // a watch already dropped
	}
	if mask&unix.IN_IGNORED != 0 {
		s.forget(w)
		return nil
	}
	if mask&unix.IN_UNMOUNT != 0 {
		return fmt.Errorf("the filesystem holding %q was unmounted", w.rel())
	}
	rel := w.rel()
	if name == "" {
		// An event on the watched directory itself. Its deletion and moves
		// are reported by its parent; only the root has no parent here.
		if mask&unix.IN_ATTRIB != 0 || w.parent == nil {
			set.add(w.key, rel, "")
		}
		return nil
	}
	if s.root.ignored(rel, name) {
		return nil
	}
	set.add(w.key, rel, name)
	if mask&unix.IN_ISDIR == 0 {
		return nil
	}
	switch {
	case mask&unix.IN_CREATE != 0:
		return s.addTree(w, name, set)
	case mask&unix.IN_MOVED_FROM != 0:
		from[cookie] = moveFrom{w: w, name: name}
	case mask&unix.IN_MOVED_TO != 0:
		if m, ok := from[cookie]; ok {
			delete(from, cookie)
			if c := m.w.children[m.name]; c != nil {
				s.place(c, w, name)
				return nil
			}
		}
		return s.addTree(w, name, set)
	}
	return nil
}

// parseInotify walks the bytes of one read(2) from an inotify fd, checking
// each record's name length against the bytes that hold it.
func parseInotify(buf []byte, fn func(wd int32, mask, cookie uint32, name []byte)) error {
	ne := binary.NativeEndian
	for off := 0; off < len(buf); {
		rest := buf[off:]
		if len(rest) < unix.SizeofInotifyEvent {
			return fmt.Errorf("%d stray bytes at offset %d of an inotify read", len(rest), off)
		}
		nameLen := uint64(ne.Uint32(rest[12:16]))
		if nameLen > uint64(len(rest)-unix.SizeofInotifyEvent) {
			return fmt.Errorf("inotify event at offset %d claims a %d-byte name with %d bytes left", off, nameLen, len(rest)-unix.SizeofInotifyEvent)
		}
		name := rest[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+nameLen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if bytes.IndexByte(name, '/') >= 0 || string(name) == "." || string(name) == ".." {
			return fmt.Errorf("inotify event at offset %d names %q, not one entry", off, name)
		}
		fn(int32(ne.Uint32(rest[0:4])), ne.Uint32(rest[4:8]), ne.Uint32(rest[8:12]), name)
		off += unix.SizeofInotifyEvent + int(nameLen)
	}
	return nil
}
