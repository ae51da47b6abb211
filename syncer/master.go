package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/atomicfile"
	"github.com/georep/georep/internal/checkpoint"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/status"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/changelog"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/plan"
	"github.com/georep/georep/syncer/scan"
	"github.com/georep/georep/syncer/transfer"
)

// Change detectors (--change-detector).
const (
	// DetectorChangelog is the live Changelog Crawl (fanotify, or inotify
	// where fanotify is not allowed), with a Hybrid Crawl at start.
	DetectorChangelog = "changelog"
	// DetectorXsync is gsyncd's xsync: Hybrid Crawls only, one per change
	// interval.
	DetectorXsync = "xsync"
)

// DefaultChangeInterval is how long live changes gather into one batch.
// A change waits up to one interval before it is planned, so this bounds
// the propagation latency from below; 500 ms keeps the p99 under a second
// at 200 changes/s (BENCHMARKS.md) while batching bursts.
const DefaultChangeInterval = 500 * time.Millisecond

// DefaultChangeSettle is how long live changes must pause before their
// batch is cut ahead of the interval (--change-settle): a burst goes out
// when it ends, while a steady stream of changes still batches by
// interval.
const DefaultChangeSettle = 50 * time.Millisecond

// Config is everything a master session is configured with.
type Config struct {
	// Root is the master tree.
	Root string
	// StateDir holds the session's index, journal, status and ssh socket.
	StateDir string
	// Slave is where the replica lives.
	Slave client.SlaveURL
	// Dial configures the transport (ssh command, remote georep, TLS files).
	Dial client.Options
	// Once brings the slave to the master's state as of start-up and returns.
	Once bool
	// Detector is DetectorChangelog or DetectorXsync.
	Detector string
	// ChangeInterval cuts live changes into batches (changelog) or spaces
	// Hybrid Crawls (xsync); 0 means DefaultChangeInterval.
	ChangeInterval time.Duration
	// ChangeSettle cuts a batch of live changes early, once none came for
	// this long (changelog); 0 cuts only at ChangeInterval.
	ChangeSettle time.Duration
	// SyncJobs is how many data streams run in parallel.
	SyncJobs int
	// SSHDataChannels is how many extra ssh connections a native transfer
	// opens over a long round trip (see extraWanted); 0 means none.
	SSHDataChannels int
	// SyncMode is how file data moves: SyncNative (default) or SyncRsync.
	SyncMode string
	// BwLimit caps the data plane's bandwidth in bytes per second; 0 means
	// no cap.
	BwLimit int64
	// Compress is CompressAuto (default), CompressZstd or CompressNone.
	Compress string
	// IgnoreDeletes does not propagate deletions.
	IgnoreDeletes bool
	// AllowMassDelete confirms that an emptied or replaced master root is
	// meant to empty the replica.
	AllowMassDelete bool
	// Force takes over a slave root held by another master.
	Force bool
	// Excludes are gitignore-style patterns never replicated.
	Excludes []string
	// Retries is how many times a failing entry, meta or data item is
	// retried before it is recorded as a failure; 0 means 3.
	Retries int
	// KeepAliveInterval is the keep-alive period; 0 means 10s.
	KeepAliveInterval time.Duration
	// GiveUpAfter, with Once, is how long the slave may stay unreachable
	// (every connection attempt failing) before Run gives up and returns
	// the last failure; 0 means OnceGiveUpAfter. A continuous session
	// never gives up: it reports Faulty and keeps trying.
	GiveUpAfter time.Duration
	// Logger receives the session's logs; nil discards.
	Logger *slog.Logger
	// Observer is told what the session does (metrics, progress); nil
	// tells nobody.
	Observer Observer

	// maxDirty, set by tests, bounds a change batch's directories (0: the
	// detector's default); past it a batch becomes an overflow.
	maxDirty int
	// afterSetStime, set by tests, replaces SetStime's outcome once the
	// call is made (a lost answer, say).
	afterSetStime func(error) error
	// extraChannels, set by tests, opens this many extra data connections
	// for every native transfer, whatever the link (0: when worth it).
	extraChannels int
	// beforeData, set by tests, runs after a batch's entry ops and before
	// its file data (given) is sent: the master tree changing in between.
	beforeData func([]plan.DataItem)
}

// batchSize bounds the entries or meta entries of one RPC.
const batchSize = 1000

// ErrFailures is returned by a --once run that could not sync everything.
var ErrFailures = errors.New("some changes could not be replicated")

// master is one running session.
type master struct {
	cfg  Config
	log  *slog.Logger
	obs  Observer
	db   *index.DB
	root *os.File
	sess *client.Session
	id   gfid.GFID

	mu   sync.Mutex
	st   status.Status
	ckpt *checkpoint.Watcher // made by the first publish, under mu

	// dialled is closed when the first connection attempt, started with
	// the session, has ended; see awaitDial.
	dialled chan struct{}
	// bg runs the closing of extra data connections and the calls of
	// ahead; Run waits for it.
	bg sync.WaitGroup
	// ahead asks for a batch's block sums during a Handshake; nil in
	// rsync mode.
	ahead *sumsAhead
}

// Run runs a master session until ctx ends (continuous) or, with
// cfg.Once, until the slave holds the master's state as of start-up.
func Run(ctx context.Context, cfg Config) (err error) {
	defer func() {
		// Whichever call first needed the connection ("send meta ops: ...")
		// is no news to an operator whose slave stayed unreachable.
		var gaveUp *client.GaveUpError
		if errors.As(err, &gaveUp) {
			err = gaveUp
		}
	}()
	if cfg.ChangeInterval <= 0 {
		cfg.ChangeInterval = DefaultChangeInterval
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 3
	}
	if cfg.Detector == "" {
		cfg.Detector = DetectorChangelog
	}
	if cfg.Detector != DetectorChangelog && cfg.Detector != DetectorXsync {
		return fmt.Errorf("change detector %q: accepted values are %s and %s", cfg.Detector, DetectorChangelog, DetectorXsync)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	m := &master{cfg: cfg, log: log, obs: cfg.Observer}
	m.st = status.Status{Master: cfg.Root, Slave: cfg.Slave.String(), State: status.Initializing,
		Crawl: status.HybridCrawl, PID: os.Getpid()}

	// Check the master root before anything is written anywhere.
	if m.root, err = os.Open(cfg.Root); err != nil {
		return fmt.Errorf("open master root: %w", err)
	}
	defer m.root.Close()
	if fi, err := m.root.Stat(); err != nil || !fi.IsDir() {
		return fmt.Errorf("master root %s is not a directory", cfg.Root)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory %s: %w", cfg.StateDir, err)
	}
	if m.id, err = masterID(cfg.StateDir); err != nil {
		return err
	}
	if m.db, err = index.Open(filepath.Join(cfg.StateDir, index.FileName), index.Options{}); err != nil {
		return err
	}
	defer m.db.Close()
	m.db.View(func(tx *index.Tx) error {
		if ns, ok := tx.Stime(); ok {
			m.st.LastSynced = time.Unix(0, ns)
		}
		return nil
	})
	m.publish(nil)
	defer func() {
		// Stopped on request (SIGINT/SIGTERM): whatever a call cut short
		// said (gRPC reports Canceled its own way) is no fault. A --once
		// run stopped early did not finish, and says so.
		if ctx.Err() != nil {
			err = nil
			if cfg.Once {
				err = fmt.Errorf("stopped before the slave was in sync: %w", ctx.Err())
			}
		}
		m.publish(func(s *status.Status) {
			s.State = status.Stopped
			s.PID = 0
			if err != nil && ctx.Err() == nil {
				s.State = status.Faulty
				s.Reason = err.Error()
			}
		})
	}()

	mark := &pb.VolumeMark{Uuid: m.id.Bytes(), Version: &pb.Version{Major: 1},
		Mark: &pb.Timestamp{Sec: time.Now().Unix()}, Holder: hostname() + ":" + cfg.Root}
	dialOpts := cfg.Dial
	dialOpts.Master = mark
	if dialOpts.StateDir == "" {
		dialOpts.StateDir = cfg.StateDir
	}
	if cfg.SyncMode != SyncRsync {
		m.ahead = newSumsAhead(ctx, &m.bg)
		dialOpts.Alongside = m.ahead.start
	}
	m.sess = client.NewSession(func(ctx context.Context) (*client.Conn, error) {
		opts := dialOpts
		opts.Claim = m.sess.Claim()
		return client.Dial(ctx, cfg.Slave, opts)
	}, client.SessionOptions{Master: mark, Force: cfg.Force, KeepAliveInterval: cfg.KeepAliveInterval,
		GiveUpAfter: giveUpAfter(cfg), Logger: log, OnState: m.onSessionState})
	defer func() {
		// A --once run that brought the slave in sync has nothing more to
		// hear from it: its end is not worth a round trip.
		if cfg.Once && err == nil && ctx.Err() == nil {
			m.sess.Finish()
			return
		}
		m.sess.Close()
	}()
	// Extra data connections still closing are waited for first.
	defer m.bg.Wait()

	// Dial now, while the index is read and the first crawl runs: ssh, the
	// remote georep's start and the handshake otherwise wait for the plan
	// (a tenth of a second and more: a --once run of a 1% change is not
	// much longer than that). The session dials one connection at a time
	// only if asked one at a time, so every use of it awaits this first.
	dialCtx, stopDial := context.WithCancel(ctx)
	m.dialled = make(chan struct{})
	go func() {
		defer close(m.dialled)
		// An error is the first Do's to report: it dials again.
		_, _ = m.sess.Connect(dialCtx)
	}()
	defer func() { stopDial(); <-m.dialled }()

	if err := m.recoverIntents(ctx); err != nil {
		return err
	}
	if cfg.Once {
		return m.runOnce(ctx)
	}
	if cfg.Detector == DetectorXsync {
		return m.runXsync(ctx)
	}
	return m.runChangelog(ctx)
}

// OnceGiveUpAfter is how long a --once run waits for an unreachable slave
// before it fails: a run from cron or a script must end, and a slave down
// this long will not be synced by this run anyway.
const OnceGiveUpAfter = 2 * time.Minute

// giveUpAfter is the session's GiveUpAfter for cfg.
func giveUpAfter(cfg Config) time.Duration {
	switch {
	case !cfg.Once:
		return 0
	case cfg.GiveUpAfter > 0:
		return cfg.GiveUpAfter
	}
	return OnceGiveUpAfter
}

// onSessionState mirrors the connection's health into the status file.
func (m *master) onSessionState(st client.State, err error) {
	m.obs.StateChanged(st, m.sess.Reconnects())
	m.publish(func(s *status.Status) {
		s.State = st
		s.Reason = ""
		if err != nil {
			s.Reason = err.Error()
		}
		s.Reconnects = int64(m.sess.Reconnects())
	})
}

func (m *master) runOnce(ctx context.Context) error {
	start := time.Now()
	failed, deferrals, err := m.crawl(ctx, scan.All, status.HybridCrawl, start)
	// Data that moved while it was being sent is found again by another
	// pass; a tree that never stops moving is reported, not chased forever.
	for pass := 2; err == nil && deferrals > 0 && pass <= 5; pass++ {
		m.log.Info("files moved during the crawl; crawling again", "files", deferrals, "pass", pass)
		var f int
		f, deferrals, err = m.crawl(ctx, scan.All, status.HybridCrawl, time.Now())
		failed += f
	}
	if err != nil {
		return err
	}
	if deferrals > 0 {
		failed += deferrals
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d item(s) failed after %d attempts; see georep status --state %s --detail",
			ErrFailures, failed, m.cfg.Retries, m.cfg.StateDir)
	}
	m.log.Info("slave in sync", "stime", start.UTC().Format(time.RFC3339Nano), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (m *master) runXsync(ctx context.Context) error {
	for {
		start := time.Now()
		if _, _, err := m.crawl(ctx, scan.All, status.HybridCrawl, start); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(start.Add(m.cfg.ChangeInterval))):
		}
	}
}

func (m *master) runChangelog(ctx context.Context) error {
	cl, err := changelog.Open(changelog.Options{Root: m.cfg.Root, StateDir: m.cfg.StateDir,
		Interval: m.cfg.ChangeInterval, Settle: m.cfg.ChangeSettle, MaxDirty: m.cfg.maxDirty, Logger: m.log})
	if err != nil {
		return fmt.Errorf("start the change detector: %w", err)
	}
	defer cl.Close()
	// The detector watches from Open: whatever changes during the first
	// Hybrid Crawl is also in the journal.
	var retry retryTimer
	failed, deferrals, err := m.crawl(ctx, scan.All, status.HybridCrawl, time.Now())
	if err != nil {
		return err
	}
	retry.after(failed, deferrals)
	m.publish(func(s *status.Status) { s.Crawl = status.ChangelogCrawl })
	clCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- cl.Run(clCtx) }()
	defer func() { stop(); <-runErr }()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry.C():
			failed, deferrals, err := m.crawl(ctx, scan.All, status.HybridCrawl, time.Now())
			if err != nil {
				return err
			}
			retry.after(failed, deferrals)
			// A retry crawl is a one-off: the session is back to live changes.
			m.publish(func(s *status.Status) { s.Crawl = status.ChangelogCrawl })
		case err := <-runErr:
			runErr <- err
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("change detector stopped: %w", err)
		case b := <-cl.Batches():
			crawl := status.ChangelogCrawl
			if b.History {
				crawl = status.HistoryCrawl
			}
			dirs := scan.All
			if b.Overflow {
				m.log.Warn("change journal overflowed; running a Hybrid Crawl")
				crawl = status.HybridCrawl
			} else if dirs, err = m.dirtyPaths(b.Dirty); err != nil {
				return err
			}
			failed, deferrals, err := m.crawl(ctx, dirs, crawl, b.CutAt)
			if err != nil {
				return err
			}
			if crawl != status.ChangelogCrawl {
				// An overflow's Hybrid Crawl or a History Crawl is done:
				// say so, or the status shows it until the next change.
				m.publish(func(s *status.Status) { s.Crawl = status.ChangelogCrawl })
			}
			if failed+deferrals > 0 {
				retry.after(failed, deferrals)
			}
			if err := cl.Ack(b.Last); err != nil {
				return fmt.Errorf("acknowledge journal records up to %d: %w", b.Last, err)
			}
		}
	}
}

// retryTimer schedules a Hybrid Crawl after a batch left items behind:
// soon for deferred data (a file that moved), with a backoff that doubles
// up to five minutes while items keep failing.
type retryTimer struct {
	wait time.Duration
	c    <-chan time.Time
}

func (r *retryTimer) C() <-chan time.Time { return r.c }

func (r *retryTimer) after(failed, deferrals int) {
	switch {
	case failed > 0:
		r.wait = min(max(2*r.wait, 5*time.Second), 5*time.Minute)
	case deferrals > 0:
		r.wait = time.Second
	default:
		r.wait, r.c = 0, nil
		return
	}
	r.c = time.After(r.wait)
}

// dirtyPaths turns the detector's dirty directories into scan paths. A
// directory is looked at by the names its events named (not recursed into;
// directories new to the index are entered whole), or listed whole when
// the detector kept no names for it; a directory whose own attributes
// changed is looked up in its parent. The root is always listed whole: the
// guard against replicating an emptied root needs its every entry.
func (m *master) dirtyPaths(set changelog.DirtySet) ([]scan.Dirty, error) {
	var dirs []scan.Dirty
	err := m.db.View(func(tx *index.Tx) error {
		for key, d := range set {
			// The detector resolved the directory's path when the change
			// happened; the index only knows where it was at the last
			// commit, which is wrong for a directory renamed in this
			// very batch.
			p := d.Rel
			if p == "" {
				if ip, ok := pathOf(tx, key); ok {
					p = ip
				}
			}
			if p == "" {
				p = "."
			}
			dir := scan.Dirty{Path: p}
			// A nil Names lists the directory whole.
			if !d.Whole && p != "." && (len(d.Names) > 0 || d.Self) {
				dir.Names = slices.Collect(maps.Keys(d.Names))
				if dir.Names == nil {
					dir.Names = []string{}
				}
			}
			dirs = append(dirs, dir)
			if d.Self && p != "." {
				parent := scan.Dirty{Path: path.Dir(p)}
				if parent.Path != "." {
					parent.Names = []string{path.Base(p)}
				}
				dirs = append(dirs, parent)
			}
		}
		return nil
	})
	return scan.Normalise(dirs), err
}

// pathOf walks an indexed directory's links up to the root.
func pathOf(tx *index.Tx, key index.Key) (string, bool) {
	var parts []string
	for depth := 0; depth < 4096; depth++ {
		o, ok, err := tx.Get(key)
		if err != nil || !ok {
			return "", false
		}
		if o.GFID == gfid.Root {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
			if len(parts) == 0 {
				return ".", true
			}
			return strings.Join(parts, "/"), true
		}
		if len(o.Links) == 0 {
			return "", false
		}
		parts = append(parts, o.Links[0].Name)
		if key, ok = tx.ByGFID(o.Links[0].Parent); !ok {
			return "", false
		}
	}
	return "", false
}

// crawl scans dirs, applies what changed and commits it with stime cutAt.
// It returns how many items were given up on.
func (m *master) crawl(ctx context.Context, dirs []scan.Dirty, crawl status.Crawl, cutAt time.Time) (failures, deferrals int, err error) {
	m.publish(func(s *status.Status) { s.Crawl = crawl })
	began := time.Now()
	p, err := plan.Crawl(ctx, m.db, m.cfg.Root, dirs,
		scan.Options{Exclude: scan.NewExclude(m.cfg.Excludes), Logger: m.log},
		plan.Options{IgnoreDeletes: m.cfg.IgnoreDeletes, AllowMassDelete: m.cfg.AllowMassDelete,
			FuseCreates: true})
	if err != nil {
		if errors.Is(err, plan.ErrGuard) {
			err = fmt.Errorf("%w; the slave is left as it is: if the master root really was emptied or replaced on purpose, rerun with --allow-mass-delete", err)
		}
		m.publish(func(s *status.Status) { s.State = status.Faulty; s.Reason = err.Error() })
		return 0, 0, err
	}
	var dataBytes int64
	// A fused create is an entry as well as data: it is counted as both,
	// so status, metrics and the progress bar show new files as entries
	// whichever way the slave makes them.
	entries := len(p.Entries)
	for _, d := range p.Data {
		dataBytes += d.Size
		if d.Create != nil {
			entries++
		}
	}
	var ph phaseTimes
	ph.plan = time.Since(began)
	m.obs.CrawlPlanned(crawl, entries, len(p.Meta), len(p.Data), dataBytes, ph.plan)
	pending := status.Pending{Entry: int64(entries), Data: int64(len(p.Data)), Meta: int64(len(p.Meta))}
	m.publish(func(s *status.Status) {
		s.Pending = pending
		if !p.Empty() {
			s.OldestPending = cutAt
		}
	})
	if m.ahead != nil {
		m.ahead.want(p.Data)
		defer m.ahead.drop()
	}
	t := time.Now()
	if err := m.recordIntents(p); err != nil {
		return 0, 0, err
	}
	ph.intents = time.Since(t)
	failed, err := m.apply(ctx, p, &ph)
	if err != nil {
		return 0, 0, err
	}
	if err := m.commit(ctx, p, failed, cutAt, &ph); err != nil {
		return 0, 0, err
	}
	if !p.Empty() {
		m.log.Debug("batch phases", "plan", ph.plan.Round(time.Millisecond), "intents", ph.intents.Round(time.Millisecond),
			"entries", ph.entries.Round(time.Millisecond), "data", ph.data.Round(time.Millisecond),
			"meta", ph.meta.Round(time.Millisecond), "stime", ph.stime.Round(time.Millisecond),
			"index", ph.index.Round(time.Millisecond))
	}
	failures, deferrals = counts(failed)
	if !p.Empty() {
		m.log.Info("batch applied", "crawl", string(crawl), "entries", entries, "data", len(p.Data),
			"meta", len(p.Meta), "failed", failures, "deferred", deferrals, "took", time.Since(began).Round(time.Millisecond))
	}
	return failures, deferrals, nil
}

// recordIntents durably notes, before anything is sent, the objects p
// creates, moves or links on the slave: a master killed before the commit
// finds them in recoverIntents.
//
// Only a record that gives the slave something the index cannot find is
// noted: a new object, a new GFID, a name the index does not have. A
// change of data or attributes alone, or a lost name, leaves the slave
// holding nothing beyond the index's names for that GFID; the index's
// older record already makes the next crawl redo it. A batch of 1% changed
// files so writes nothing, and makes no transaction (no fsync) at all.
func (m *master) recordIntents(p *plan.Plan) error {
	objs := make([]index.Object, 0, len(p.Changes))
	err := m.db.View(func(tx *index.Tx) error {
		for _, c := range p.Changes {
			if c.Object == nil {
				continue
			}
			old, known, err := tx.Get(c.Object.Key)
			if err != nil {
				return err
			}
			if !known || addsNames(&old, c.Object) {
				objs = append(objs, *c.Object)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the index before recording the batch's creations: %w", err)
	}
	if len(objs) == 0 {
		return nil
	}
	return m.db.Update(func(tx *index.Tx) error { return tx.PutIntents(objs) })
}

// addsNames reports whether the record n puts on the slave a GFID or a
// name that the indexed record old does not have.
func addsNames(old, n *index.Object) bool {
	if old.GFID != n.GFID {
		return true
	}
	for _, l := range n.Links {
		if !slices.Contains(old.Links, l) {
			return true
		}
	}
	return false
}

// recoverIntents runs before the first crawl. A killed master may have
// created, moved or linked objects on the slave that its index never
// learnt of; left so, a later delete on the master would never reach them.
// For each such object, every name it was meant to have and every name the
// index knows is checked on the slave, and the names that hold its GFID
// become its record, with times no file has so that the next crawl sends
// its data and attributes again (or deletes it, if the master no longer
// has it).
func (m *master) recoverIntents(ctx context.Context) error {
	var intents []index.Object
	if err := m.db.View(func(tx *index.Tx) (err error) {
		intents, err = tx.Intents()
		return err
	}); err != nil {
		return fmt.Errorf("read the index's pending creations: %w", err)
	}
	if len(intents) == 0 {
		return nil
	}
	if err := m.awaitDial(ctx); err != nil {
		return err
	}
	// The names the index knows for each intended object, checked too.
	known := map[index.Key][]index.Link{}
	if err := m.db.View(func(tx *index.Tx) error {
		for _, o := range intents {
			if old, ok, err := tx.Get(o.Key); err != nil {
				return err
			} else if ok {
				known[o.Key] = old.Links
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read the index: %w", err)
	}
	var adopt []index.Object
	err := m.sess.Do(ctx, func(ctx context.Context, c *client.Conn) error {
		adopt = adopt[:0]
		for _, o := range intents {
			var kept []index.Link
			candidates := append(append([]index.Link(nil), o.Links...), known[o.Key]...)
			seen := map[index.Link]bool{}
			for _, l := range candidates {
				if seen[l] {
					continue
				}
				seen[l] = true
				resp, err := c.Slave.Gfid(ctx, &pb.GfidRequest{ParentGfid: l.Parent.Bytes(), Name: []byte(l.Name)})
				if grpcstatus.Code(err) == codes.NotFound {
					continue
				}
				if err != nil {
					return err
				}
				if g, err := gfid.FromBytes(resp.GetGfid()); err == nil && g == o.GFID {
					kept = append(kept, l)
				}
			}
			if len(kept) > 0 {
				o.Links = kept
				poison(&o)
				adopt = append(adopt, o)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check the slave for creations of an interrupted batch: %w", err)
	}
	err = m.db.Update(func(tx *index.Tx) error {
		for _, o := range adopt {
			if k, taken := tx.ByGFID(o.GFID); taken && k != o.Key {
				continue
			}
			if err := tx.Put(o); err != nil {
				return err
			}
		}
		return tx.ClearIntents()
	})
	if err != nil {
		return fmt.Errorf("adopt creations of an interrupted batch: %w", err)
	}
	m.log.Info("recovered an interrupted batch", "intended", len(intents), "on_slave", len(adopt))
	return nil
}

// poison gives a record times and an xattr digest no object has, so the
// next crawl finds it changed and sends its data and all its attributes,
// xattrs included, again: for an object whose data or attributes may not
// have reached the slave.
func poison(o *index.Object) {
	o.MtimeNs, o.CtimeNs = -1, -1
	o.XattrDigest ^= 0x9e3779b97f4a7c15
}

// failure is an item not applied in a batch, by GFID: given up on after
// its retries, or (Kind deferred) left for the next crawl.
type failure = status.Failure

// deferred marks data that could not be read where the scan saw it (the
// file moved or went away, or never stopped changing): the next crawl
// sends it; it is no failure.
const deferred = "deferred"

// counts splits a batch's unapplied items into failures and deferrals.
func counts(failed map[gfid.GFID]failure) (failures, deferrals int) {
	for _, f := range failed {
		if f.Kind == deferred {
			deferrals++
		} else {
			failures++
		}
	}
	return failures, deferrals
}

// awaitDial waits for the dial started with the session to end, so that
// the session is not asked for a second connection while it makes the
// first. Every use of the session (recoverIntents, then apply, which comes
// before commit) waits here first.
func (m *master) awaitDial(ctx context.Context) error {
	select {
	case <-m.dialled:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// phaseTimes is how long each step of a batch took (the debug log's
// "batch phases"): where a slow batch spends its time.
type phaseTimes struct {
	plan, intents, entries, data, meta, stime, index time.Duration
}

// apply sends p's entries, retrying failing ones, and returns the GFIDs
// given up on. Data and meta go with the commit.
func (m *master) apply(ctx context.Context, p *plan.Plan, ph *phaseTimes) (map[gfid.GFID]failure, error) {
	if err := m.awaitDial(ctx); err != nil {
		return nil, err
	}
	failed := map[gfid.GFID]failure{}
	t := time.Now()
	if err := m.applyEntries(ctx, p.Entries, failed); err != nil {
		return nil, err
	}
	ph.entries = time.Since(t)
	return failed, nil
}

func (m *master) applyEntries(ctx context.Context, entries []*pb.Entry, failed map[gfid.GFID]failure) error {
	return sendBatches(ctx, m, entries, "entry ops",
		func(ctx context.Context, c *client.Conn, todo []*pb.Entry) ([]*pb.EntryResult, error) {
			resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: todo})
			return resp.GetResults(), err
		},
		m.obs.EntriesApplied,
		func(e *pb.Entry, r *pb.EntryResult, attempt int) {
			g, _ := gfid.FromBytes(e.GetGfid())
			failed[g] = failure{Kind: "entry", Op: strings.TrimPrefix(e.GetOp().String(), "ENTRY_OP_"),
				Path: string(e.GetName()), GFID: g.String(), Code: r.GetCode(), Message: r.GetMessage(),
				Attempts: attempt, At: time.Now()}
		})
}

// sendBatches sends items in batches of batchSize in order, re-sending
// the items whose result is an error up to m.cfg.Retries times with a
// growing pause; an item still failing then goes to giveUp. applied is
// told how many items of each attempt the slave took. An error is for a
// call that failed as a whole (after the session's own reconnects).
func sendBatches[T any](ctx context.Context, m *master, items []T, what string,
	call func(ctx context.Context, c *client.Conn, todo []T) ([]*pb.EntryResult, error),
	applied func(n int), giveUp func(it T, r *pb.EntryResult, attempt int)) error {
	for start := 0; start < len(items); start += batchSize {
		todo := items[start:min(start+batchSize, len(items))]
		for attempt := 1; len(todo) > 0; attempt++ {
			var results []*pb.EntryResult
			err := m.sess.Do(ctx, func(ctx context.Context, c *client.Conn) (err error) {
				results, err = call(ctx, c, todo)
				return err
			})
			if err != nil {
				return fmt.Errorf("send %s: %w", what, err)
			}
			if len(results) != len(todo) {
				return fmt.Errorf("send %s: the slave answered %d results for %d items", what, len(results), len(todo))
			}
			var again []T
			ok := 0
			for i, r := range results {
				switch {
				case r.GetErrno() == 0:
					ok++
				case attempt >= m.cfg.Retries:
					giveUp(todo[i], r, attempt)
				default:
					again = append(again, todo[i])
				}
			}
			applied(ok)
			todo = again
			if len(todo) > 0 {
				if err := sleepCtx(ctx, time.Duration(attempt)*200*time.Millisecond); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// applyData sends the data items not in failed; those it gives up on or
// defers are added to it. A file the slave lost is made again at the one
// name its item carries; when the master has more names for it, that one
// goes to relinks and the file is deferred, so that the commit records
// only that name and the next crawl links the others (nlinks says how
// many names the master has).
func (m *master) applyData(ctx context.Context, data []plan.DataItem, failed map[gfid.GFID]failure,
	relinks map[gfid.GFID]index.Link, nlinks func(gfid.GFID) int) error {
	var items []transfer.Item
	paths := map[gfid.GFID]string{}
	remade := map[gfid.GFID]index.Link{}
	defer func() {
		for g, l := range remade {
			if _, bad := failed[g]; bad {
				continue
			}
			if n := nlinks(g); n > 1 {
				relinks[g] = l
				failed[g] = failure{Kind: deferred, Op: "LINK", Path: paths[g], GFID: g.String(), At: time.Now(),
					Message: fmt.Sprintf("the slave had lost this file: made again at one of its %d names, the others follow on the next crawl", n)}
			}
		}
	}()
	for _, d := range data {
		if _, bad := failed[d.GFID]; bad {
			continue
		}
		it := transfer.Item{GFID: d.GFID, RelPath: d.RelPath, LinkParent: d.Parent, LinkName: []byte(d.Name), New: d.New, Size: d.Size,
			Key: d.Key, Dev: d.Dev}
		if d.Create != nil {
			// No entry op made this new file: its transfer does.
			it.Create, it.Stat = true, d.Create
		}
		items = append(items, it)
		paths[d.GFID] = d.RelPath
	}
	if m.ahead != nil {
		m.ahead.late()
	}
	for attempt := 1; len(items) > 0; attempt++ {
		var results []transfer.Result
		err := m.sess.Do(ctx, func(ctx context.Context, c *client.Conn) (err error) {
			if m.cfg.SyncMode == SyncRsync {
				results, err = m.sendRsync(ctx, c, items)
			} else {
				results, err = m.sendNative(ctx, c, items)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("send file data: %w", err)
		}
		var again []transfer.Item
		// uncreated are creates that did not happen: refused (fallback set)
		// or settled as a failure or deferral (f). Each is made with an
		// entry op first; then a refused one is sent again, and a settled
		// one is recorded as for any file whose entry op went through.
		type uncreated struct {
			it       transfer.Item
			fallback bool
			f        failure
		}
		var unmade []uncreated
		for i, r := range results {
			if r.Err == nil {
				continue
			}
			it := items[i]
			var f failure
			switch {
			case it.Create && refusedCreate(r.Err):
				// The name is taken or the GFID is elsewhere (or the parent
				// is missing): the entry op resolves it, then a plain
				// transfer follows, not counted as another attempt.
				unmade = append(unmade, uncreated{it: it, fallback: true})
				continue
			case slaveLost(r.Err) && !it.Create && len(it.LinkName) > 0:
				// The slave has no file with this GFID any more (removed
				// there behind georep's back): no crawl would ever see a
				// move to send it after. Make it again, as a new file by
				// this GFID at its name, content and all; a taken name or
				// a missing parent then takes the create's fallback.
				m.log.Warn("the slave has lost a file; creating it again", "path", paths[it.GFID], "gfid", it.GFID.String())
				remade[it.GFID] = index.Link{Parent: it.LinkParent, Name: string(it.LinkName)}
				it.Create, it.New = true, true
				if m.cfg.SyncMode != SyncRsync {
					again = append(again, it) // a fused create, stat taken as the file is read
					continue
				}
				// rsync mode's create takes the master file's attributes
				// from the item: read them now.
				st, err := statBeneath(int(m.root.Fd()), it.RelPath)
				if err != nil {
					failed[it.GFID] = failure{Kind: deferred, Op: "DATA", Path: paths[it.GFID], GFID: it.GFID.String(),
						Code: errCode(err), Message: err.Error(), Attempts: attempt, At: time.Now()}
					continue
				}
				it.Stat = st
				again = append(again, it)
				continue
			case errors.Is(r.Err, os.ErrNotExist) && !r.Retryable() && !slaveLost(r.Err) || errors.Is(r.Err, transfer.ErrChanged) && attempt >= 4*m.cfg.Retries:
				// Moved or removed since the scan, or written to without
				// pause: not a failure, but not on the slave either. The
				// next crawl (which sees the move or removal) sends it.
				f = failure{Kind: deferred, Op: "DATA", Path: paths[it.GFID], GFID: it.GFID.String(),
					Code: errCode(r.Err), Message: r.Err.Error(), Attempts: attempt, At: time.Now()}
			case attempt >= m.cfg.Retries && !errors.Is(r.Err, transfer.ErrChanged):
				f = failure{Kind: "data", Op: "DATA", Path: paths[it.GFID], GFID: it.GFID.String(),
					Code: errCode(r.Err), Message: r.Err.Error(), Attempts: attempt, At: time.Now()}
			default:
				again = append(again, it)
				continue
			}
			if it.Create {
				unmade = append(unmade, uncreated{it: it, f: f})
				continue
			}
			failed[it.GFID] = f
		}
		if len(unmade) > 0 {
			todo := make([]transfer.Item, len(unmade))
			for i, u := range unmade {
				todo[i] = u.it
			}
			if _, err := m.createEntries(ctx, todo, failed); err != nil {
				return fmt.Errorf("create new files the data plane did not: %w", err)
			}
			for _, u := range unmade {
				if _, bad := failed[u.it.GFID]; bad {
					continue // its entry op failed: recorded as such
				}
				u.it.Create = false
				if u.fallback {
					again = append(again, u.it)
				} else {
					failed[u.it.GFID] = u.f
				}
			}
		}
		items = again
		if len(items) > 0 {
			if err := sleepCtx(ctx, time.Duration(attempt)*100*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyMeta sends the meta ops of objects not in failed; those it gives
// up on are added to it. stime, when not nil and the ops fit one batch,
// rides with them: the slave records it only if every one applied, so it
// claims no more than SetStime would, and saves SetStime's round trip. It
// reports whether the slave recorded it.
func (m *master) applyMeta(ctx context.Context, meta []*pb.MetaEntry, failed map[gfid.GFID]failure, stime *pb.SetStimeRequest) (stimeSet bool, err error) {
	before := len(failed)
	// The attributes of an object whose entry or data failed are not sent:
	// the object is not (or not wholly) on the slave.
	var todo []*pb.MetaEntry
	for _, e := range meta {
		if g, err := gfid.FromBytes(e.GetGfid()); err == nil {
			if _, bad := failed[g]; bad {
				continue
			}
		}
		todo = append(todo, e)
	}
	if len(todo) == 0 || len(todo) > batchSize {
		stime = nil
	}
	err = sendBatches(ctx, m, todo, "meta ops",
		func(ctx context.Context, c *client.Conn, todo []*pb.MetaEntry) ([]*pb.EntryResult, error) {
			// Every attempt carries it: a retry holds all that is left.
			resp, err := c.Slave.MetaOps(ctx, &pb.MetaOpsRequest{Entries: todo, Stime: stime})
			stimeSet = resp.GetStimeSet()
			return resp.GetResults(), err
		},
		m.obs.MetaApplied,
		func(e *pb.MetaEntry, r *pb.EntryResult, attempt int) {
			g, _ := gfid.FromBytes(e.GetGfid())
			failed[g] = failure{Kind: "meta", Op: "SETATTR", GFID: g.String(), Code: r.GetCode(),
				Message: r.GetMessage(), Attempts: attempt, At: time.Now()}
		})
	return stimeSet && len(failed) == before, err
}

func timestamp(t time.Time) *pb.Timestamp {
	return &pb.Timestamp{Sec: t.Unix(), Nsec: uint32(t.Nanosecond())}
}

// commit sends the data and the meta ops, makes what the slave applied
// durable there (SetStime, or the meta ops carrying the stime, syncs the
// slave filesystem first), then records in one index transaction what the
// slave now holds — every change except those of items given up on, which
// stay different so the next crawl tries them again — and the new stime.
// In that order, a crash between the two re-sends idempotent work instead
// of believing in changes a slave crash could have lost.
//
// The transaction is built while the data and meta ops are on the wire,
// from the failures known before them (the entry ops'), as if everything
// will apply; it commits only once the slave holds it all and the stime.
// An item given up on in the meantime rolls it back: it is built again
// with every failure while a SetStime that claims no more is in flight.
//
// An item given up on holds the stime back: stime never passes work the
// slave does not have (gsyncd moved on and lost it silently). The lag then
// grows in the status until a later crawl gets the item through.
func (m *master) commit(ctx context.Context, p *plan.Plan, failed map[gfid.GFID]failure, cutAt time.Time, ph *phaseTimes) error {
	t := time.Now()
	// The sender owns failed until commitWith returns; the transaction
	// reads this copy.
	known := maps.Clone(failed)
	relinks := map[gfid.GFID]index.Link{}
	var sendErr error
	stime, flushed, err := m.commitWith(ctx, p, known, nil, cutAt, func(ctx context.Context, req *pb.SetStimeRequest) error {
		t := time.Now()
		if m.cfg.beforeData != nil && len(p.Data) > 0 {
			m.cfg.beforeData(p.Data)
		}
		if err := m.applyData(ctx, p.Data, failed, relinks, p.Links); err != nil {
			sendErr = err
			return err
		}
		ph.data, t = time.Since(t), time.Now()
		if changed(failed, known) {
			req = nil // computed from known, it claims too much
		}
		set, err := m.applyMeta(ctx, p.Meta, failed, req)
		ph.meta = time.Since(t)
		switch {
		case err != nil:
			sendErr = err
			return err
		case changed(failed, known):
			return errRedo
		case set:
			return nil
		}
		return m.setStime(ctx, req)
	})
	switch {
	case sendErr != nil:
		return sendErr
	case errors.Is(err, errRedo):
		stime, ph.stime, err = m.commitWith(ctx, p, failed, relinks, cutAt, m.setStime)
	default:
		ph.stime = max(0, flushed-ph.data-ph.meta)
	}
	if err != nil {
		return err
	}
	ph.index = max(0, time.Since(t)-ph.data-ph.meta-ph.stime)
	var recent []failure
	for _, f := range failed {
		if f.Kind != deferred {
			recent = append(recent, f)
			m.obs.Failed(f.Kind, 1)
		}
	}
	m.obs.Committed(stime)
	m.publish(func(s *status.Status) {
		s.LastSynced = stime
		s.Pending = status.Pending{}
		if len(failed) == 0 {
			s.OldestPending = time.Time{}
		}
		s.Failures += int64(len(recent))
		if len(recent) > 0 {
			s.RecentFailures = append(recent, s.RecentFailures...)
			if len(s.RecentFailures) > 50 {
				s.RecentFailures = s.RecentFailures[:50]
			}
		}
		if s.State != status.Faulty {
			s.State = status.Active
		}
	})
	return nil
}

// errRedo rolls back an index transaction built before an item was given
// up on.
var errRedo = errors.New("an item was given up on while the index transaction was built")

// changed reports whether failures were recorded (or changed) since known
// was copied from failed.
func changed(failed, known map[gfid.GFID]failure) bool {
	return !maps.EqualFunc(failed, known, func(a, b failure) bool { return a.Kind == b.Kind && a.Message == b.Message })
}

// commitWith builds and commits the index transaction for p given the
// failures in failed, while flush makes the slave durable up to the stime
// it returns (cutAt when nothing failed, else the last one). The
// transaction commits only if flush succeeded. It also returns how long
// flush took. A failed object in relinks is recorded at that one name
// (see applyData).
func (m *master) commitWith(ctx context.Context, p *plan.Plan, failed map[gfid.GFID]failure, relinks map[gfid.GFID]index.Link, cutAt time.Time,
	flush func(context.Context, *pb.SetStimeRequest) error) (stime time.Time, flushed time.Duration, err error) {
	t := time.Now()
	m.mu.Lock()
	stime = m.st.LastSynced
	m.mu.Unlock()
	if len(failed) == 0 {
		stime = cutAt
	}
	// The flush is also what syncs the slave before the index believes in
	// its changes, so it is sent even with no stime to advance to (a first
	// batch with items given up on): the epoch, which claims nothing.
	ts := &pb.Timestamp{}
	if !stime.IsZero() {
		ts = timestamp(stime)
	}
	stimeDone := make(chan error, 1)
	go func() {
		err := flush(ctx, &pb.SetStimeRequest{MasterUuid: m.id.Bytes(), Stime: ts})
		if m.cfg.afterSetStime != nil && !errors.Is(err, errRedo) {
			err = m.cfg.afterSetStime(err)
		}
		stimeDone <- err
	}()
	awaitStime := sync.OnceValue(func() error {
		err := <-stimeDone
		flushed = time.Since(t)
		return err
	})
	err = m.db.Update(func(tx *index.Tx) error {
		kept := *p
		kept.Changes = nil
		for _, c := range p.Changes {
			g := gfid.GFID{}
			if c.Object != nil {
				g = c.Object.GFID
			} else if o, ok, err := tx.Get(c.Key); err != nil {
				return err
			} else if ok {
				g = o.GFID
			}
			if f, bad := failed[g]; bad {
				if f.Kind != deferred {
					if err := tx.RecordFailure(g, f.Message); err != nil {
						return err
					}
				}
				if f.Kind == "entry" || c.Object == nil {
					// The slave did not take the namespace change: keep
					// the old record so the next crawl plans it again.
					continue
				}
				// The entry went through but not the data or attributes:
				// record the object (the slave has it, by this GFID, at
				// these names) with times no file has, so the next crawl
				// sends its data and attributes again.
				o := *c.Object
				poison(&o)
				if l, ok := relinks[g]; ok {
					o.Links = []index.Link{l}
				}
				kept.Changes = append(kept.Changes, plan.Change{Key: c.Key, Object: &o})
				continue
			}
			if err := tx.ClearFailure(g); err != nil {
				return err
			}
			kept.Changes = append(kept.Changes, c)
		}
		if err := kept.Commit(tx); err != nil {
			return err
		}
		if err := tx.ClearIntents(); err != nil {
			return err
		}
		if !stime.IsZero() {
			if err := tx.SetStime(stime.UnixNano()); err != nil {
				return err
			}
		}
		return awaitStime()
	})
	// Waits for the flush also when the transaction failed on its own.
	if serr := awaitStime(); serr != nil {
		if errors.Is(serr, errRedo) {
			return stime, flushed, serr
		}
		return stime, flushed, fmt.Errorf("record stime on the slave: %w", serr)
	}
	if err != nil {
		return stime, flushed, fmt.Errorf("commit the index: %w", err)
	}
	return stime, flushed, nil
}

// setStime records req on the slave, after syncing its filesystem.
func (m *master) setStime(ctx context.Context, req *pb.SetStimeRequest) error {
	return m.sess.Do(ctx, func(ctx context.Context, c *client.Conn) error {
		_, err := c.Slave.SetStime(ctx, req)
		return err
	})
}

// publish applies change to the status and writes it out.
func (m *master) publish(change func(*status.Status)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if change != nil {
		change(&m.st)
	}
	// The operator's checkpoint completes when the stime passes it; a
	// stat per publish notices one set or cleared meanwhile.
	if m.ckpt == nil {
		m.ckpt = checkpoint.NewWatcher(m.cfg.StateDir)
	}
	cp, err := m.ckpt.Update(m.st.LastSynced, time.Now())
	if err != nil {
		m.log.Warn("cannot read the checkpoint", "err", err)
	}
	m.st.Checkpoint = cp
	m.st.Updated = time.Now()
	if err := status.Write(m.cfg.StateDir, &m.st); err != nil {
		m.log.Warn("cannot write the session status", "err", err)
	}
}

// masterID is this master's volume uuid, made once per state directory.
func masterID(dir string) (gfid.GFID, error) {
	p := filepath.Join(dir, "master-id")
	if b, err := os.ReadFile(p); err == nil {
		return gfid.Parse(strings.TrimSpace(string(b)))
	} else if !errors.Is(err, os.ErrNotExist) {
		return gfid.GFID{}, fmt.Errorf("read master id: %w", err)
	}
	g := gfid.New()
	if err := atomicfile.Write(dir, "master-id", []byte(g.String()+"\n"), 0o600, true); err != nil {
		return gfid.GFID{}, fmt.Errorf("record master id: %w", err)
	}
	return g, nil
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	return h
}

func errCode(err error) string {
	var re *transfer.RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	if errors.Is(err, transfer.ErrChanged) {
		return "ECHANGED"
	}
	return "EIO"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
