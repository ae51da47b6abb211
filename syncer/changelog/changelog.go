package changelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Detector names a change detector.
type Detector int

const (
	// DetectorAuto uses fanotify where permitted, else inotify.
	DetectorAuto Detector = iota
	// DetectorFanotify marks the root's whole filesystem (needs CAP_SYS_ADMIN).
	DetectorFanotify
	// DetectorInotify watches each directory beneath the root.
	DetectorInotify
)

func (d Detector) String() string {
	switch d {
	case DetectorAuto:
		return "auto"
	case DetectorFanotify:
		return "fanotify"
	case DetectorInotify:
		return "inotify"
	}
	return fmt.Sprintf("Detector(%d)", int(d))
}

// Bounds of the change interval: short enough for the latency goal (a
// change reaches a batch within one interval), long enough to coalesce.
const (
	DefaultInterval = time.Second
	MinInterval     = 10 * time.Millisecond
	MaxInterval     = time.Minute
	// DefaultMaxDirty is how many directories a batch holds before it turns
	// into an Overflow: past that a Hybrid Crawl is cheaper than the list,
	// and memory stays bounded.
	DefaultMaxDirty = 1 << 16
)

// Options configure a Changelog.
type Options struct {
	Root     string // the master root
	StateDir string // the journal lives at StateDir/journal.db
	Detector Detector
	Interval time.Duration // 0: DefaultInterval
	// Settle cuts a batch early, once no change came for this long: a
	// burst of changes goes out when it ends, not up to an Interval
	// later. 0 cuts only at Interval; at or above Interval it changes
	// nothing.
	Settle   time.Duration
	MaxDirty int          // 0: DefaultMaxDirty
	Logger   *slog.Logger // nil: slog.Default()
}

// Batch is the work the detector hands out: every journal record from First
// to Last merged.
type Batch struct {
	First, Last uint64 // journal sequence numbers; Ack(Last) once applied
	Dirty       DirtySet
	// Overflow means changes were lost (the kernel queue overflowed, a watch
	// could not be added, or the batch outgrew MaxDirty): Dirty is then
	// incomplete and the caller must run a Hybrid Crawl.
	Overflow bool
	// History marks a batch holding records journaled before this Run
	// (the History Crawl): they were never acknowledged.
	History bool
	CutAt   time.Time
}

func (b *Batch) add(seq uint64, dirty DirtySet, overflow bool) {
	if b.First == 0 {
		b.First = seq
	}
	b.Last = seq
	b.Dirty.merge(dirty)
	b.Overflow = b.Overflow || overflow
}

// absorb appends the later batch o to b.
func (b *Batch) absorb(o *Batch) {
	if b.First == 0 {
		b.First = o.First
	}
	b.Last = o.Last
	b.Dirty.merge(o.Dirty)
	b.Overflow = b.Overflow || o.Overflow
	b.History = b.History || o.History
	b.CutAt = o.CutAt
}

// source is a running change detector.
type source interface {
	kind() Detector
	// run reads events until ctx ends (then it returns nil), handing each
	// read's dirty directories to emit.
	run(ctx context.Context, emit func(DirtySet, bool)) error
	close() error
}

// Changelog is the Changelog Crawl: a detector, watching from Open, feeding
// a journal, cut into batches by Run.
type Changelog struct {
	opts    Options
	log     *slog.Logger
	root    *rootDir
	src     source
	journal *Journal
	batches chan Batch
	wake    chan struct{}

	mu              sync.Mutex
	pending         DirtySet
	pendingOverflow bool
	running, ran    bool
	closed          bool
	srcClosed       bool
}

// Open starts watching the root (changes from now on are caught, even
// before Run) and opens the journal in the state directory.
func Open(opts Options) (*Changelog, error) {
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Interval < MinInterval || opts.Interval > MaxInterval {
		return nil, fmt.Errorf("change interval %v is outside [%v, %v]", opts.Interval, MinInterval, MaxInterval)
	}
	if opts.Settle < 0 {
		return nil, fmt.Errorf("change settle time %v is negative", opts.Settle)
	}
	if opts.MaxDirty <= 0 {
		opts.MaxDirty = DefaultMaxDirty
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Root == "" || opts.StateDir == "" {
		return nil, errors.New("a changelog needs both the master root and a state directory")
	}
	c := &Changelog{
		opts:    opts,
		log:     opts.Logger.With("component", "changelog"),
		batches: make(chan Batch),
		wake:    make(chan struct{}, 1),
		pending: DirtySet{},
	}
	ok := false
	defer func() {
		if !ok {
			c.release()
		}
	}()
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("unable to create the state directory: %w", err)
	}
	var err error
	if c.root, err = openRoot(opts.Root, opts.StateDir); err != nil {
		return nil, err
	}
	if c.journal, err = OpenJournal(filepath.Join(opts.StateDir, JournalFile)); err != nil {
		return nil, err
	}
	src, err := c.openSource()
	if err != nil {
		return nil, err
	}
	c.src = src
	c.log.Info("change detector started", "detector", c.src.kind(), "root", c.root.path, "interval", opts.Interval, "settle", opts.Settle)
	ok = true
	return c, nil
}

func (c *Changelog) openSource() (source, error) {
	// Each case returns a nil interface on error, not a typed nil pointer.
	switch c.opts.Detector {
	case DetectorFanotify:
		if s, err := openFanotify(c.root, c.log); err == nil {
			return s, nil
		} else {
			return nil, err
		}
	case DetectorAuto:
		s, err := openFanotify(c.root, c.log)
		if err == nil {
			return s, nil
		}
		c.log.Info("fanotify is not available here; watching with inotify, one watch per directory", "reason", err)
		fallthrough
	case DetectorInotify:
		if s, err := openInotify(c.root, c.log); err == nil {
			return s, nil
		} else {
			return nil, err
		}
	}
	return nil, fmt.Errorf("unknown change detector %v", c.opts.Detector)
}

// Detector reports the detector in use.
func (c *Changelog) Detector() Detector { return c.src.kind() }

// Batches delivers the batches Run cuts; it is closed when Run returns.
func (c *Changelog) Batches() <-chan Batch { return c.batches }

// Ack records that the slave has applied every batch up to seq: their
// journal records are deleted and will not be replayed.
func (c *Changelog) Ack(seq uint64) error { return c.journal.Ack(seq) }

// emit is the detector's hand-off: it merges into pending and wakes the
// journal writer, which commits whatever gathered meanwhile in one write.
func (c *Changelog) emit(set DirtySet, overflow bool) {
	c.mu.Lock()
	c.pending.merge(set)
	c.pendingOverflow = c.pendingOverflow || overflow
	if len(c.pending) > c.opts.MaxDirty || c.pending.names() > 16*c.opts.MaxDirty {
		c.pending, c.pendingOverflow = DirtySet{}, true
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Changelog) takePending() (DirtySet, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	set, overflow := c.pending, c.pendingOverflow
	c.pending, c.pendingOverflow = DirtySet{}, false
	return set, overflow
}

// Run hands out batches until ctx ends: first the records left from before
// (History Crawl), then live ones, each cut one interval after its first
// change or, with a settle time, once changes paused that long. Every
// change is in the journal before it is in a batch. Run returns within a
// second of cancel, having stopped the detector and closed its
// descriptors; it can run once.
func (c *Changelog) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.ran || c.closed {
		c.mu.Unlock()
		return errors.New("changelog Run can be called once, before Close")
	}
	c.ran, c.running = true, true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
	}()
	defer close(c.batches)

	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.src.run(rctx, c.emit) }()
	defer func() {
		cancel()
		<-errc
		if err := c.src.close(); err != nil {
			c.log.Warn("closing the change detector", "err", err)
		}
	}()

	var ready, cur *Batch
	hist := &Batch{Dirty: DirtySet{}, History: true}
	if err := c.journal.Range(0, func(r JournalRecord) error {
		hist.add(r.Seq, r.Dirty, r.Overflow)
		return nil
	}); err != nil {
		return fmt.Errorf("unable to replay the change journal: %w", err)
	}
	if hist.First != 0 {
		hist.CutAt = time.Now()
		ready = hist
		c.log.Info("replaying unacknowledged changes (History Crawl)", "first", hist.First, "last", hist.Last, "dirs", len(hist.Dirty), "overflow", hist.Overflow)
	}

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	var cutC, settleC <-chan time.Time
	for {
		var out chan<- Batch
		var next Batch
		if ready != nil {
			out, next = c.batches, *ready
		}
		select {
		case <-ctx.Done():
			// Stop the reader, then keep what it saw but was not yet
			// journaled, for the next start.
			cancel()
			errc <- <-errc
			return c.commit(&cur)
		case err := <-errc:
			errc <- nil // for the deferred wait
			if cerr := c.commit(&cur); cerr != nil {
				c.log.Error("unable to journal the last changes", "err", cerr)
			}
			if err == nil {
				return nil
			}
			return fmt.Errorf("change detector stopped: %w", err)
		case <-c.wake:
			wasEmpty := cur == nil
			if err := c.commit(&cur); err != nil {
				return err
			}
			if wasEmpty && cur != nil {
				timer.Reset(c.opts.Interval)
				cutC = timer.C
			}
			if cur != nil && c.opts.Settle > 0 && c.opts.Settle < c.opts.Interval {
				settle.Reset(c.opts.Settle)
				settleC = settle.C
			}
		case <-settleC:
			settleC = nil
			if cur == nil {
				continue
			}
			timer.Stop()
			cutC = nil
			c.cut(&ready, &cur)
		case <-cutC:
			cutC = nil
			settle.Stop()
			settleC = nil
			c.cut(&ready, &cur)
		case out <- next:
			ready = nil
		}
	}
}

// cut ends the batch *cur and makes it ready, or adds it to the ready one
// the consumer has not taken yet.
func (c *Changelog) cut(ready, cur **Batch) {
	(*cur).CutAt = time.Now()
	if *ready == nil {
		*ready = *cur
	} else {
		(*ready).absorb(*cur) // the consumer is behind: hand out more at once
	}
	*cur = nil
	c.bound(*ready)
}

// commit journals the pending changes as one record and adds it to *cur.
func (c *Changelog) commit(cur **Batch) error {
	set, overflow := c.takePending()
	if len(set) == 0 && !overflow {
		return nil
	}
	seq, err := c.journal.Append(time.Now(), set, overflow)
	if err != nil {
		return err
	}
	if overflow {
		c.log.Warn("change events were lost; the next batch asks for a Hybrid Crawl", "seq", seq)
	}
	if *cur == nil {
		*cur = &Batch{Dirty: DirtySet{}}
	}
	(*cur).add(seq, set, overflow)
	c.bound(*cur)
	return nil
}

// bound turns a batch that outgrew MaxDirty into an Overflow.
func (c *Changelog) bound(b *Batch) {
	if len(b.Dirty) > c.opts.MaxDirty || b.Dirty.names() > 16*c.opts.MaxDirty {
		c.log.Warn("batch outgrew its bound; asking for a Hybrid Crawl instead", "dirs", len(b.Dirty), "max", c.opts.MaxDirty)
		b.Dirty, b.Overflow = DirtySet{}, true
	}
}

// Close releases the journal and the root (and the detector if Run never
// ran). Cancel Run's context and let it return first.
func (c *Changelog) Close() error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("changelog is still running: cancel Run's context and wait for it before Close")
	}
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	ran := c.ran
	c.mu.Unlock()
	if ran {
		c.srcClosed = true // Run closed it
	}
	return c.release()
}

func (c *Changelog) release() error {
	var errs []error
	if c.src != nil && !c.srcClosed {
		errs = append(errs, c.src.close())
	}
	if c.journal != nil {
		errs = append(errs, c.journal.Close())
	}
	if c.root != nil {
		errs = append(errs, c.root.close())
	}
	return errors.Join(errs...)
}
