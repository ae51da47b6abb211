// Package status is a session's published state: what a running (or
// stopped) `georep master` writes into its state directory and what
// `georep status` reads, with gsyncd's columns. The file is JSON whose
// field names are a stable schema: scripts read it with --json.
package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/georep/georep/internal/atomicfile"
)

// FileName is the status file inside a session's state directory.
const FileName = "status.json"

// SchemaVersion is bumped when a field changes meaning or is removed.
const SchemaVersion = 1

// State is a session's health, with gsyncd's names.
type State string

// The session states.
const (
	Initializing State = "Initializing"
	Active       State = "Active"
	Faulty       State = "Faulty"
	Stopped      State = "Stopped"
)

// Crawl is how changes are being found.
type Crawl string

// The crawl statuses.
const (
	HybridCrawl    Crawl = "Hybrid Crawl"
	HistoryCrawl   Crawl = "History Crawl"
	ChangelogCrawl Crawl = "Changelog Crawl"
)

// Failure is one entry, meta or data item the master gave up on after its
// retries; it stays listed until the item syncs.
type Failure struct {
	// Kind is "entry", "meta" or "data".
	Kind string `json:"kind"`
	// Op is the entry op (CREATE, RENAME, ...) or the data/meta action.
	Op string `json:"op"`
	// Path is the master path of the object, relative to the master root.
	Path string `json:"path"`
	// GFID is the object's identity.
	GFID string `json:"gfid"`
	// Code is the errno name (ENOSPC, ...).
	Code string `json:"code"`
	// Message says what went wrong, in words.
	Message string `json:"message"`
	// Attempts is how many times it was tried.
	Attempts int `json:"attempts"`
	// At is when it last failed.
	At time.Time `json:"at"`
}

// Pending counts work found but not yet applied on the slave.
type Pending struct {
	Entry int64 `json:"entry"`
	Data  int64 `json:"data"`
	Meta  int64 `json:"meta"`
}

// Checkpoint is an operator's "tell me when everything up to T is on the
// slave": it completes when stime passes Time.
type Checkpoint struct {
	// Time is the checkpoint; zero when none is set.
	Time time.Time `json:"time"`
	// Completed says whether stime has passed it.
	Completed bool `json:"completed"`
	// CompletedAt is when the master saw stime pass it.
	CompletedAt time.Time `json:"completed_at"`
}

// Status is one session's published state.
type Status struct {
	Schema int `json:"schema"`
	// Master is the master root.
	Master string `json:"master"`
	// Slave is the slave URL.
	Slave string `json:"slave"`
	// State is Initializing, Active, Faulty or Stopped.
	State State `json:"status"`
	// Reason says why the session is Faulty (or how it stopped).
	Reason string `json:"reason,omitempty"`
	// Crawl is the crawl in progress or last done.
	Crawl Crawl `json:"crawl_status"`
	// LastSynced is the stime: everything changed before it is on the slave.
	LastSynced time.Time `json:"last_synced"`
	// Pending is the work found but not yet applied.
	Pending Pending `json:"pending"`
	// OldestPending is when the oldest change not yet applied was seen;
	// zero when nothing is pending.
	OldestPending time.Time `json:"oldest_pending"`
	// Failures counts items given up on, cumulatively for this session.
	Failures int64 `json:"failures"`
	// RecentFailures lists the latest failures with paths and reasons.
	RecentFailures []Failure `json:"recent_failures,omitempty"`
	// Checkpoint is the operator's checkpoint, if set.
	Checkpoint Checkpoint `json:"checkpoint"`
	// Reconnects counts how often the session reconnected to the slave.
	Reconnects int64 `json:"reconnects"`
	// PID is the master process, while it runs.
	PID int `json:"pid"`
	// Updated is when the master last wrote this file.
	Updated time.Time `json:"updated"`
}

// Lag is now minus the stime: how far behind the slave may be. It is zero
// until a first sync completes.
func (s *Status) Lag(now time.Time) time.Duration {
	if s.LastSynced.IsZero() {
		return 0
	}
	return now.Sub(s.LastSynced)
}

// Write atomically replaces the status file in dir: readers see the old or
// the new file whole, never a torn one.
func Write(dir string, s *Status) error {
	s.Schema = SchemaVersion
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode session status: %w", err)
	}
	// Not synced: the master rewrites it at every change, and a status
	// lost in a crash is rewritten at the next start.
	if err := atomicfile.Write(dir, FileName, append(data, '\n'), 0o644, false); err != nil {
		return fmt.Errorf("publish session status: %w", err)
	}
	return nil
}

// ErrNoSession reports a state directory no master has written to.
var ErrNoSession = errors.New("no georep session has run with this state directory")

// Read loads the status file in dir.
func Read(dir string) (*Status, error) {
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (no %s)", dir, ErrNoSession, FileName)
	}
	if err != nil {
		return nil, fmt.Errorf("read session status: %w", err)
	}
	var s Status
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read session status %s: %w", filepath.Join(dir, FileName), err)
	}
	if s.Schema > SchemaVersion {
		return nil, fmt.Errorf("session status %s has schema %d; this georep reads up to %d: upgrade georep",
			filepath.Join(dir, FileName), s.Schema, SchemaVersion)
	}
	return &s, nil
}

// Running reports whether the master that wrote s still runs.
func (s *Status) Running() bool {
	if s.PID <= 0 {
		return false
	}
	p, err := os.FindProcess(s.PID)
	if err != nil {
		return false
	}
	return p.Signal(syscall.Signal(0)) == nil
}
