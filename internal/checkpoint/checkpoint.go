// Package checkpoint owns a session's checkpoint request: the small file
// `georep checkpoint` writes into the state directory, the accepted time
// formats, and how a master (Watcher) or `georep status` (Merge) turns the
// request plus the stime into status.Checkpoint. The request lives in its
// own file, not in status.json, so it can be set or cleared whether or not
// a master runs, without racing the master's status writes.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/georep/georep/internal/atomicfile"
	"github.com/georep/georep/internal/status"
)

// FileName is the checkpoint request inside a session's state directory.
const FileName = "checkpoint.json"

// Formats names the accepted TIME forms, for error messages and help.
const Formats = `RFC 3339 ("2006-01-02T15:04:05Z07:00") or local "2006-01-02 15:04:05"`

// request is the file's schema.
type request struct {
	Time time.Time `json:"time"`
}

// ParseTime reads a checkpoint time in one of the accepted Formats; the
// form without a zone is in loc.
func ParseTime(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateTime, s, loc); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("checkpoint time %q: accepted formats are %s", s, Formats)
}

// Set atomically records a checkpoint at t in the state directory dir,
// which must exist: a mistyped --state is an error, not a new session.
func Set(dir string, t time.Time) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	data, err := json.MarshalIndent(request{Time: t.Round(0)}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	// Synced: an operator's request must survive a crash whole.
	if err := atomicfile.Write(dir, FileName, append(data, '\n'), 0o644, true); err != nil {
		return fmt.Errorf("record checkpoint: %w", err)
	}
	return nil
}

// Clear removes the checkpoint in dir; clearing none is not an error.
func Clear(dir string) error {
	if err := checkDir(dir); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(dir, FileName))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear checkpoint: %w", err)
	}
	return nil
}

// Read returns the checkpoint set in dir; ok is false when none is.
func Read(dir string) (t time.Time, ok bool, err error) {
	p := filepath.Join(dir, FileName)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read checkpoint: %w", err)
	}
	var r request
	if err := json.Unmarshal(data, &r); err != nil {
		return time.Time{}, false, fmt.Errorf("read checkpoint %s: %w (set it again with georep checkpoint set)", p, err)
	}
	if r.Time.IsZero() {
		return time.Time{}, false, nil
	}
	return r.Time, true, nil
}

func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state directory %s does not exist: give the --state of a session georep master uses", dir)
	}
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", dir)
	}
	return nil
}

// reached reports whether stime has passed the checkpoint at t.
func reached(stime, t time.Time) bool {
	return !stime.IsZero() && !stime.Before(t)
}

// Merge folds the checkpoint request (t, ok from Read) into a status a
// master wrote, for `georep status`: a checkpoint set or cleared since the
// master last published (or while none runs) shows as requested. A newly
// seen checkpoint that the stime already passed is Completed with no
// CompletedAt: when stime passed it, no master was watching.
func Merge(st *status.Status, t time.Time, ok bool) {
	switch {
	case !ok:
		st.Checkpoint = status.Checkpoint{}
	case !st.Checkpoint.Time.Equal(t):
		st.Checkpoint = status.Checkpoint{Time: t, Completed: reached(st.LastSynced, t)}
	}
}

// Watcher follows the checkpoint request on behalf of a running master.
// It re-reads the file only when a stat shows it changed, so a master can
// ask at every commit. It is not safe for concurrent use; the master
// calls it under its status lock.
type Watcher struct {
	dir     string
	fi      os.FileInfo // the request file last read; nil when absent
	seeded  bool
	current status.Checkpoint
}

// NewWatcher follows the checkpoint request in the state directory dir.
func NewWatcher(dir string) *Watcher {
	return &Watcher{dir: dir}
}

// Update returns the checkpoint to publish for the given stime at now.
// Completion is recorded once, at the first update whose stime passed the
// checkpoint, and kept until the checkpoint changes.
//
// The first call carries over a completion the previous master recorded
// in status.json, so a restart does not move CompletedAt; it must come
// before the master's first status write.
func (w *Watcher) Update(stime, now time.Time) (status.Checkpoint, error) {
	if !w.seeded {
		w.seeded = true
		if prev, err := status.Read(w.dir); err == nil {
			w.current = prev.Checkpoint
		}
	}
	var err error
	fi, statErr := os.Stat(filepath.Join(w.dir, FileName))
	switch {
	case errors.Is(statErr, fs.ErrNotExist):
		w.fi = nil
		w.current = status.Checkpoint{}
	case statErr != nil:
		err = fmt.Errorf("check checkpoint: %w", statErr)
	case w.fi == nil || !os.SameFile(w.fi, fi) || !w.fi.ModTime().Equal(fi.ModTime()) || w.fi.Size() != fi.Size():
		t, ok, rerr := Read(w.dir)
		if rerr != nil {
			// Keep the last good checkpoint; the next update tries again.
			err = rerr
			break
		}
		w.fi = fi
		if !ok {
			w.current = status.Checkpoint{}
		} else if !w.current.Time.Equal(t) {
			w.current = status.Checkpoint{Time: t}
		}
	}
	if !w.current.Time.IsZero() && !w.current.Completed && reached(stime, w.current.Time) {
		w.current.Completed = true
		w.current.CompletedAt = now
	}
	return w.current, err
}
