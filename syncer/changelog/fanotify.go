package changelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

// fanotifyMask is every change that can alter what the slave must hold.
// FAN_Q_OVERFLOW is not markable: the kernel always reports it.
const fanotifyMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_MODIFY | unix.FAN_ATTRIB | unix.FAN_CLOSE_WRITE | unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF |
	unix.FAN_ONDIR

// maxResolveCache bounds the handle → placement cache; it is dropped whole
// when full (and on every directory move), which only costs lookups.
const maxResolveCache = 1 << 16

// readBufSize holds hundreds of events per read(2).
const readBufSize = 256 << 10

// placement is where a directory handle resolved: beneath the root (at rel) or not.
type placement struct {
	under bool
	rel   string
}

// fanotifySource watches the whole filesystem of the root with one
// filesystem mark and keeps the events whose directory lies beneath the root.
type fanotifySource struct {
	f        *os.File
	root     *rootDir
	fsid     [2]int32
	cache    map[string]placement
	scratch  []byte
	log      *slog.Logger
	resolves int // open_by_handle_at calls, for tests and logs
}

func openFanotify(root *rootDir, log *slog.Logger) (*fanotifySource, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_DFID_NAME|unix.FAN_REPORT_FID|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("unable to create a fanotify group: %w", err)
	}
	// Mark through the root fd's magic link so the mark lands on the very
	// filesystem the root fd is on, whatever happened to the path since
	// (an O_PATH fd itself is refused as the mark's dirfd).
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, fanotifyMask, unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(root.fd)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unable to mark the filesystem of %s for fanotify: %w", root.path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(root.fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unable to read the filesystem id of %s: %w", root.path, err)
	}
	// A nonblocking fd in os.File goes through the runtime poller, so a
	// read deadline can interrupt a blocked Read on cancel.
	return &fanotifySource{
		f:     os.NewFile(uintptr(fd), "fanotify"),
		root:  root,
		fsid:  st.Fsid.Val,
		cache: make(map[string]placement),
		log:   log,
	}, nil
}

func (s *fanotifySource) kind() Detector { return DetectorFanotify }

func (s *fanotifySource) close() error { return s.f.Close() }

func (s *fanotifySource) run(ctx context.Context, emit func(DirtySet, bool)) error {
	stop := context.AfterFunc(ctx, func() { s.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, readBufSize)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("unable to read fanotify events: %w", err)
		}
		set, overflow := DirtySet{}, false
		if err := ParseEvents(buf[:n], func(ev *Event) { s.handle(ev, set, &overflow) }); err != nil {
			s.log.Error("unreadable fanotify events; treating them as lost (a Hybrid Crawl follows)", "err", err)
			overflow = true
		}
		if len(set) > 0 || overflow {
			emit(set, overflow)
		}
	}
}

// handle turns one event into dirty directories beneath the root.
func (s *fanotifySource) handle(ev *Event, set DirtySet, overflow *bool) {
	if ev.Fd >= 0 {
		unix.Close(int(ev.Fd)) // not sent with FID reporting; never leak one
	}
	if ev.Overflow() {
		*overflow = true
		return
	}
	for i := range ev.Records {
		rec := &ev.Records[i]
		if rec.Fsid != s.fsid {
			continue
		}
		s.scratch = appendKey(s.scratch[:0], rec.HandleType, rec.Handle)
		if rec.Type == unix.FAN_EVENT_INFO_TYPE_FID {
			// The object itself: only the root needs it, because the root's
			// own changes are otherwise reported in its parent, outside.
			if string(s.scratch) == string(s.root.key) {
				set.add(s.root.key, "", "")
			}
			continue
		}
		p := s.resolve(rec)
		if !p.under {
			continue
		}
		if d := set[index.Key(s.scratch)]; d != nil && rec.Name != nil && string(rec.Name) != "." {
			if _, ok := d.Names[string(rec.Name)]; ok {
				continue // already listed: skip the allocations (hot on write floods)
			}
		}
		name := string(rec.Name)
		if name == "." {
			name = ""
		}
		if s.root.ignored(p.rel, name) {
			continue
		}
		set.add(index.Key(s.scratch), p.rel, name)
	}
	// A moved directory takes its whole subtree into or out of the root:
	// every cached placement may be wrong now.
	if ev.Mask&unix.FAN_ONDIR != 0 && ev.Mask&(unix.FAN_MOVED_FROM|unix.FAN_MOVED_TO|unix.FAN_MOVE_SELF) != 0 {
		clear(s.cache)
	}
}

// resolve tells whether the directory in rec lies beneath the root, from
// the cache or by opening the handle and reading the path the kernel gives
// the open file. A handle that no longer opens (the directory is gone) is
// not beneath the root: its parent's own event covers the removal.
func (s *fanotifySource) resolve(rec *Record) placement {
	if p, ok := s.cache[string(s.scratch)]; ok {
		return p
	}
	s.resolves++
	p, cacheable := s.lookup(rec)
	if cacheable {
		if len(s.cache) >= maxResolveCache {
			clear(s.cache)
		}
		s.cache[string(s.scratch)] = p
	}
	return p
}

func (s *fanotifySource) lookup(rec *Record) (placement, bool) {
	fd, err := unix.OpenByHandleAt(s.root.fd, unix.NewFileHandle(rec.HandleType, rec.Handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		// ESTALE: deleted, and a handle never comes back to life.
		if errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT) {
			return placement{}, true
		}
		s.log.Debug("unable to open a directory handle from fanotify; ignoring its event", "err", err)
		return placement{}, false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err == nil && st.Nlink == 0 {
		return placement{}, true // removed while we looked
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		s.log.Debug("unable to read the path of a directory handle from fanotify; ignoring its event", "err", err)
		return placement{}, false
	}
	rel, ok := s.root.relOf(path)
	return placement{under: ok, rel: rel}, true
}
