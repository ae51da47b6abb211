package changelog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

var detectors = []Detector{DetectorFanotify, DetectorInotify}

const testInterval = 50 * time.Millisecond

// harness runs a Changelog on a fresh root and gathers what it hands out.
type harness struct {
	root, outside, state string
	cl                   *Changelog
	cancel               context.CancelFunc
	done                 chan error
	seen                 DirtySet // every batch so far, merged
	batches              []Batch
}

func newHarness(t *testing.T, det Detector, setup func(root, outside string)) *harness {
	t.Helper()
	base := t.TempDir()
	h := &harness{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside"), state: filepath.Join(base, "state")}
	for _, d := range []string{h.root, h.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if setup != nil {
		setup(h.root, h.outside)
	}
	h.open(t, det)
	return h
}

func (h *harness) open(t *testing.T, det Detector) {
	t.Helper()
	cl, err := Open(Options{Root: h.root, StateDir: h.state, Detector: det, Interval: testInterval})
	if err != nil {
		t.Fatalf("Open(%v): %v", det, err)
	}
	if cl.Detector() != det {
		t.Fatalf("detector %v, want %v", cl.Detector(), det)
	}
	h.cl, h.seen, h.batches = cl, DirtySet{}, nil
	t.Cleanup(func() { h.stop(t) })
}

func (h *harness) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.cl.Run(ctx) }()
}

// stop cancels Run, checks it returns within a second, and closes.
func (h *harness) stop(t *testing.T) {
	t.Helper()
	if h.cl == nil {
		return
	}
	if h.cancel != nil {
		h.cancel()
		select {
		case err := <-h.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Run did not return within a second of cancel")
		}
		h.cancel = nil
	}
	if err := h.cl.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	h.cl = nil
}

// want is one expected dirty entry: the directory at rel (relative to the
// root) and a name in it ("" for the directory itself).
type want struct{ dir, name string }

// expect resolves each want to the directory's key now (before the step
// may delete the directory).
func (h *harness) keys(t *testing.T, ws []want) map[want]index.Key {
	t.Helper()
	m := map[want]index.Key{}
	for _, w := range ws {
		m[w] = keyOf(t, filepath.Join(h.root, w.dir))
	}
	return m
}

func has(s DirtySet, k index.Key, name string) bool {
	d := s[k]
	if d == nil {
		return false
	}
	if name == "" {
		return d.Self
	}
	_, ok := d.Names[name]
	return ok || d.Whole
}

// waitFor takes batches (acknowledging each) until every wanted entry was
// seen, within the deadline.
func (h *harness) waitFor(t *testing.T, keys map[want]index.Key) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		missing := []want{}
		for w, k := range keys {
			if !has(h.seen, k, w.name) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case b, ok := <-h.cl.Batches():
			if !ok {
				t.Fatalf("batches closed while waiting for %v", missing)
			}
			h.take(t, b)
		case <-deadline:
			t.Fatalf("dirty entries %v not reported within 10s; seen %s", missing, describe(h.seen))
		}
	}
}

// take records a batch after checking it is in the journal already.
func (h *harness) take(t *testing.T, b Batch) {
	t.Helper()
	if b.First == 0 || b.Last < b.First {
		t.Fatalf("batch seq range [%d, %d]", b.First, b.Last)
	}
	if b.Overflow {
		t.Logf("batch [%d, %d] reports an overflow", b.First, b.Last)
	}
	journaled := DirtySet{}
	if err := h.cl.journal.Range(b.First-1, func(r JournalRecord) error {
		if r.Seq <= b.Last {
			journaled.merge(r.Dirty)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for k, d := range b.Dirty {
		if journaled[k] == nil || len(journaled[k].Names) != len(d.Names) {
			t.Fatalf("batch directory %q is not in the journal as handed out", d.Rel)
		}
	}
	h.seen.merge(b.Dirty)
	h.batches = append(h.batches, b)
	if err := h.cl.Ack(b.Last); err != nil {
		t.Fatal(err)
	}
}

func describe(s DirtySet) string {
	var parts []string
	for _, d := range s {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range d.Names {
				if !yield(n) {
					return
				}
			}
		})
		parts = append(parts, fmt.Sprintf("%q self=%v whole=%v %q", d.Rel, d.Self, d.Whole, names))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDetectsChanges runs the same steps against both detectors: each
// step's changes must show up as the same dirty directories and names.
func TestDetectsChanges(t *testing.T) {
	for _, det := range detectors {
		t.Run(det.String(), func(t *testing.T) {
			h := newHarness(t, det, func(root, outside string) {
				must(t, os.MkdirAll(filepath.Join(root, "a", "b"), 0o755))
				must(t, os.Mkdir(filepath.Join(root, "d2"), 0o755))
				for _, f := range []string{"f1", "f2", "f3"} {
					must(t, os.WriteFile(filepath.Join(root, "a", "b", f), []byte("one"), 0o644))
				}
				must(t, os.WriteFile(filepath.Join(root, "gone"), nil, 0o644))
				must(t, os.Mkdir(filepath.Join(outside, "in"), 0o755))
			})
			h.start(t)
			r := func(p ...string) string { return filepath.Join(append([]string{h.root}, p...)...) }
			steps := []struct {
				name string
				do   func() error
				want []want
			}{
				{"create file", func() error { return os.WriteFile(r("new.txt"), []byte("x"), 0o644) }, []want{{"", "new.txt"}}},
				{"append to file", func() error {
					f, err := os.OpenFile(r("a", "b", "f1"), os.O_APPEND|os.O_WRONLY, 0)
					if err != nil {
						return err
					}
					_, err = f.WriteString("more")
					return errors.Join(err, f.Close())
				}, []want{{"a/b", "f1"}}},
				{"chmod file", func() error { return os.Chmod(r("a", "b", "f2"), 0o600) }, []want{{"a/b", "f2"}}},
				{"touch file", func() error {
					return os.Chtimes(r("a", "b", "f3"), time.Unix(1e9, 0), time.Unix(1e9, 0))
				}, []want{{"a/b", "f3"}}},
				{"mkdir", func() error { return os.Mkdir(r("a", "sub"), 0o755) }, []want{{"a", "sub"}}},
				{"rename file across dirs", func() error { return os.Rename(r("a", "b", "f1"), r("a", "moved")) }, []want{{"a/b", "f1"}, {"a", "moved"}}},
				{"rename dir across dirs", func() error { return os.Rename(r("a", "sub"), r("d2", "sub2")) }, []want{{"a", "sub"}, {"d2", "sub2"}}},
				{"file in moved dir", func() error { return os.WriteFile(r("d2", "sub2", "inner"), nil, 0o644) }, []want{{"d2/sub2", "inner"}}},
				{"unlink", func() error { return os.Remove(r("gone")) }, []want{{"", "gone"}}},
				{"hard link", func() error { return os.Link(r("a", "moved"), r("d2", "link")) }, []want{{"d2", "link"}}},
				{"symlink", func() error { return os.Symlink("../nowhere", r("d2", "sym")) }, []want{{"d2", "sym"}}},
				{"chmod dir", func() error { return os.Chmod(r("d2"), 0o1777) }, []want{{"d2", ""}}},
				{"chmod root", func() error { return os.Chmod(h.root, 0o750) }, []want{{"", ""}}},
				{"rm -rf", func() error { return os.RemoveAll(r("d2", "sub2")) }, []want{{"d2", "sub2"}}},
				{"move dir in from outside", func() error { return os.Rename(filepath.Join(h.outside, "in"), r("in")) }, []want{{"", "in"}}},
				{"file in moved-in dir", func() error { return os.WriteFile(r("in", "z"), nil, 0o644) }, []want{{"in", "z"}}},
			}
			for _, st := range steps {
				keys := h.keys(t, st.want)
				h.seen = DirtySet{} // each step must be reported by its own batches
				start := time.Now()
				if err := st.do(); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				h.waitFor(t, keys)
				took := time.Since(start)
				t.Logf("%s: reported after %v", st.name, took.Round(time.Millisecond))
				// One interval plus room for the journal's fsync and a loaded
				// machine (-race, other tests on the same disk).
				if limit := testInterval + time.Second; took > limit {
					t.Errorf("%s: reported after %v, want within %v", st.name, took, limit)
				}
			}
		})
	}
}

// TestFiltersOutsideRoot checks that changes beside the root (same
// filesystem), in a directory moved out of the root, and in the reserved
// directory are never reported, using a marker change to know when the
// detector has caught up.
func TestFiltersOutsideRoot(t *testing.T) {
	for _, det := range detectors {
		t.Run(det.String(), func(t *testing.T) {
			h := newHarness(t, det, func(root, outside string) {
				must(t, os.Mkdir(filepath.Join(root, "leaving"), 0o755))
			})
			leaving := keyOf(t, filepath.Join(h.root, "leaving"))
			outsideKey := keyOf(t, h.outside)
			h.start(t)
			marker := 0
			sync := func() {
				t.Helper()
				marker++
				name := fmt.Sprintf("marker%d", marker)
				keys := h.keys(t, []want{{"", name}})
				must(t, os.WriteFile(filepath.Join(h.root, name), nil, 0o644))
				h.waitFor(t, keys)
			}
			must(t, os.WriteFile(filepath.Join(h.outside, "x"), []byte("x"), 0o644))
			must(t, os.Mkdir(filepath.Join(h.outside, "y"), 0o755))
			must(t, os.Mkdir(filepath.Join(h.root, ReservedDir), 0o755))
			must(t, os.WriteFile(filepath.Join(h.root, ReservedDir, "state"), []byte("s"), 0o644))
			sync()
			// Moved out: the root reports the name leaving; what happens in
			// the directory afterwards is outside.
			must(t, os.Rename(filepath.Join(h.root, "leaving"), filepath.Join(h.outside, "left")))
			sync()
			must(t, os.WriteFile(filepath.Join(h.outside, "left", "after"), nil, 0o644))
			sync()

			if d := h.seen[outsideKey]; d != nil {
				t.Errorf("the sibling directory was reported: %s", describe(DirtySet{outsideKey: d}))
			}
			if has(h.seen, leaving, "after") {
				t.Errorf("a change in a directory moved out of the root was reported")
			}
			if !has(h.seen, keyOf(t, h.root), "leaving") {
				t.Errorf("the move out of the root was not reported in the root")
			}
			for _, d := range h.seen {
				if d.Rel == ReservedDir || strings.HasPrefix(d.Rel, ReservedDir+"/") {
					t.Errorf("the reserved directory was reported: %s", describe(DirtySet{d.Key: d}))
				}
				if _, ok := d.Names[ReservedDir]; ok && d.Rel == "" {
					t.Errorf("the reserved directory was reported in the root")
				}
			}
		})
	}
}

// TestOverflow fills the kernel queue (16384 events by default) before Run
// reads anything: the batch must say Overflow, and so must the journal.
func TestOverflow(t *testing.T) {
	for _, det := range detectors {
		t.Run(det.String(), func(t *testing.T) {
			h := newHarness(t, det, func(root, _ string) {
				must(t, os.Mkdir(filepath.Join(root, "many"), 0o755))
			})
			dir := filepath.Join(h.root, "many")
			for i := range 20000 {
				fd, err := unix.Open(filepath.Join(dir, fmt.Sprintf("f%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				unix.Close(fd)
			}
			h.start(t)
			deadline := time.After(10 * time.Second)
			for {
				select {
				case b := <-h.cl.Batches():
					h.take(t, b)
					if b.Overflow {
						return
					}
				case <-deadline:
					t.Fatalf("no overflow reported after 40000 queued events; seen %d batches", len(h.batches))
				}
			}
		})
	}
}

// TestOverflowRecordHandled injects the kernel's overflow record through
// the parser into the fanotify event handling.
func TestOverflowRecordHandled(t *testing.T) {
	s := &fanotifySource{cache: map[string]placement{}, root: &rootDir{}}
	set, overflow := DirtySet{}, false
	if err := ParseEvents(encodeEvent(unix.FAN_Q_OVERFLOW), func(ev *Event) { s.handle(ev, set, &overflow) }); err != nil {
		t.Fatal(err)
	}
	if !overflow || len(set) != 0 {
		t.Fatalf("overflow = %v, dirty %d, want overflow and nothing dirty", overflow, len(set))
	}
}

// TestReplayUntilAck: a batch handed out but not acknowledged comes back as
// a History batch after Close and reopen; once acknowledged it does not.
func TestReplayUntilAck(t *testing.T) {
	for _, det := range detectors {
		t.Run(det.String(), func(t *testing.T) {
			h := newHarness(t, det, nil)
			h.start(t)
			keys := h.keys(t, []want{{"", "kept"}})
			must(t, os.WriteFile(filepath.Join(h.root, "kept"), nil, 0o644))
			var b Batch
			select {
			case b = <-h.cl.Batches(): // not acknowledged
			case <-time.After(10 * time.Second):
				t.Fatal("no batch")
			}
			if !has(b.Dirty, keys[want{"", "kept"}], "kept") {
				t.Fatalf("first batch lacks the change: %s", describe(b.Dirty))
			}
			h.stop(t)

			h.open(t, det)
			h.start(t)
			var hist Batch
			select {
			case hist = <-h.cl.Batches():
			case <-time.After(10 * time.Second):
				t.Fatal("no history batch after reopen")
			}
			if !hist.History || hist.First > b.First || hist.Last < b.Last || !has(hist.Dirty, keys[want{"", "kept"}], "kept") {
				t.Fatalf("after reopen got [%d, %d] history=%v %s, want the unacknowledged [%d, %d]", hist.First, hist.Last, hist.History, describe(hist.Dirty), b.First, b.Last)
			}
			must(t, h.cl.Ack(hist.Last))
			h.stop(t)

			j := openJournal(t, filepath.Join(h.state, JournalFile))
			defer closeJournal(t, j)
			if left := recordSeqs(t, j, 0); len(left) != 0 {
				t.Fatalf("records %v left after Ack(%d)", left, hist.Last)
			}
		})
	}
}

// TestRunReleasesEverything: after cancel and Close, no goroutine and no
// file descriptor of the changelog is left.
func TestRunReleasesEverything(t *testing.T) {
	for _, det := range detectors {
		t.Run(det.String(), func(t *testing.T) {
			fds0, g0 := countFDs(t), runtime.NumGoroutine()
			h := newHarness(t, det, nil)
			h.start(t)
			keys := h.keys(t, []want{{"", "one"}})
			must(t, os.WriteFile(filepath.Join(h.root, "one"), nil, 0o644))
			h.waitFor(t, keys)
			h.stop(t)
			deadline := time.Now().Add(5 * time.Second)
			for {
				fds, g := countFDs(t), runtime.NumGoroutine()
				if fds <= fds0 && g <= g0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("after Close: %d fds (was %d), %d goroutines (was %d)", fds, fds0, g, g0)
				}
				time.Sleep(10 * time.Millisecond) // polling with a deadline
			}
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestOpenRejectsBadOptions(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name string
		opts Options
	}{
		{"interval too short", Options{Root: root, StateDir: t.TempDir(), Interval: time.Millisecond}},
		{"interval too long", Options{Root: root, StateDir: t.TempDir(), Interval: time.Hour}},
		{"negative settle time", Options{Root: root, StateDir: t.TempDir(), Settle: -time.Second}},
		{"no state dir", Options{Root: root}},
		{"missing root", Options{Root: filepath.Join(root, "nope"), StateDir: t.TempDir()}},
		{"state dir is the root", Options{Root: root, StateDir: root}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := Open(tc.opts)
			if err == nil {
				cl.Close()
				t.Fatalf("Open(%+v) succeeded", tc.opts)
			}
		})
	}
}

// TestSettleCutsABurstEarly checks that a batch goes out once changes
// pause for the settle time, long before the interval, and that without a
// settle time it waits for the interval.
func TestSettleCutsABurstEarly(t *testing.T) {
	tests := []struct {
		name             string
		interval, settle time.Duration
		earliest, latest time.Duration // of the batch, after the last change
	}{
		{name: "settle", interval: 5 * time.Second, settle: 100 * time.Millisecond, earliest: 100 * time.Millisecond, latest: 2 * time.Second},
		{name: "interval only", interval: 1500 * time.Millisecond, earliest: time.Second, latest: 4 * time.Second},
		{name: "settle above the interval", interval: 1500 * time.Millisecond, settle: time.Minute, earliest: time.Second, latest: 4 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, state := t.TempDir(), t.TempDir()
			cl, err := Open(Options{Root: root, StateDir: state, Interval: tc.interval, Settle: tc.settle})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- cl.Run(ctx) }()
			defer func() { cancel(); <-done }()
			// A burst: ten files, one after the other.
			for i := range 10 {
				must(t, os.WriteFile(filepath.Join(root, fmt.Sprintf("f%d", i)), []byte("x"), 0o644))
			}
			last := time.Now()
			select {
			case b := <-cl.Batches():
				took := time.Since(last)
				if took < tc.earliest || took > tc.latest {
					t.Errorf("batch cut %v after the last change, want within [%v, %v]", took, tc.earliest, tc.latest)
				}
				names := 0
				for _, d := range b.Dirty {
					names += len(d.Names)
				}
				if names != 10 {
					t.Errorf("the batch names %d files, want the burst's 10", names)
				}
			case <-time.After(tc.latest + time.Second):
				t.Fatalf("no batch within %v of the last change", tc.latest+time.Second)
			}
		})
	}
}
