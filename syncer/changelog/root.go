package changelog

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

// ReservedDir is the directory at the root that georep keeps for itself and
// never replicates; its changes are never reported.
const ReservedDir = ".georep"

// rootDir is the replicated root held open, so the detector keeps watching
// the directory it was started on even if its path is later reused.
type rootDir struct {
	fd   int    // O_RDONLY|O_DIRECTORY
	path string // the kernel's path for fd, no symlinks
	key  index.Key
	// ignore holds root-relative paths whose subtrees are never reported:
	// the reserved directory and the state directory when it lies inside.
	ignore []string
}

func openRoot(path, stateDir string) (*rootDir, error) {
	// Not O_PATH: fanotify_mark and open_by_handle_at refuse O_PATH fds.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("unable to open the master root %s: %w", path, err)
	}
	r := &rootDir{fd: fd, ignore: []string{ReservedDir}}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if r.path, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil {
		return nil, fmt.Errorf("unable to read the canonical path of the master root %s (is /proc mounted?): %w", path, err)
	}
	if r.key, err = keyOfFD(fd); err != nil {
		return nil, fmt.Errorf("unable to identify the master root %s: %w", path, err)
	}
	if stateDir != "" {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, fmt.Errorf("unable to resolve the state directory %s: %w", stateDir, err)
		}
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		if rel, under := r.relOf(abs); under {
			if rel == "" {
				return nil, fmt.Errorf("the state directory %s is the master root itself: choose a directory outside the root or in its %s", stateDir, ReservedDir)
			}
			r.ignore = append(r.ignore, rel)
		}
	}
	ok = true
	return r, nil
}

func (r *rootDir) close() error { return unix.Close(r.fd) }

// relOf returns path relative to the root, and whether it lies beneath it
// (the root itself included, as "").
func (r *rootDir) relOf(path string) (string, bool) {
	if path == r.path {
		return "", true
	}
	prefix := r.path + "/"
	if r.path == "/" {
		prefix = "/"
	}
	if rel, ok := strings.CutPrefix(path, prefix); ok {
		return rel, true
	}
	return "", false
}

// ignored reports whether entry name of the directory at rel ("" for the
// directory itself) lies in a subtree that is never reported.
func (r *rootDir) ignored(rel, name string) bool {
	full := rel
	if name != "" {
		if rel == "" {
			full = name
		} else {
			full = rel + "/" + name
		}
	}
	for _, p := range r.ignore {
		if full == p || strings.HasPrefix(full, p+"/") {
			return true
		}
	}
	return false
}
