// Package metrics owns a master session's Prometheus collectors (georep_*):
// operations applied, bytes sent, failures, pending work, lag, crawl
// durations, reconnects and session state. Each process builds its own
// Registry (there is no global one), fed through the syncer.Observer
// events and served by Handler in the standard exposition format.
package metrics

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/georep/georep/internal/status"
)

// The work kinds, as labels of ops, failures and pending.
const (
	KindEntry = "entry"
	KindData  = "data"
	KindMeta  = "meta"
)

// The metric names, listed for documentation and tests.
const (
	NameOps           = "georep_ops_total"
	NameBytesSent     = "georep_bytes_sent_total"
	NameFailures      = "georep_failures_total"
	NamePending       = "georep_pending"
	NameLag           = "georep_lag_seconds"
	NameStime         = "georep_stime_seconds"
	NameOldestPending = "georep_oldest_pending_seconds"
	NameCrawlDuration = "georep_crawl_duration_seconds"
	NameReconnects    = "georep_reconnects_total"
	NameSessionState  = "georep_session_state"
)

// states are every session state, so the one-hot gauge always shows all
// of them (a series that appears only once set breaks absent() alerts).
var states = [...]status.State{status.Initializing, status.Active, status.Faulty, status.Stopped}

// Session is a master session's collectors on their own registry. It
// implements syncer.Observer; its methods are safe from several
// goroutines and never block for long.
type Session struct {
	reg *prometheus.Registry
	now func() time.Time

	ops        *prometheus.CounterVec
	bytesSent  prometheus.Counter
	failures   *prometheus.CounterVec
	pending    *prometheus.GaugeVec
	crawl      *prometheus.HistogramVec
	reconnects prometheus.Counter
	state      *prometheus.GaugeVec

	mu sync.Mutex
	// stime is the last committed stime; zero until a first commit.
	stime time.Time
	// pendingSince is when the oldest work not yet committed was found
	// (the start of the crawl that found it); zero when none is pending.
	pendingSince time.Time
	// left is the pending work of the batch in flight, kept here so a
	// decrement never takes a gauge below zero.
	left map[string]int64
	// reconnectsSeen is the session's reconnect count when last told,
	// since StateChanged reports a running total and the counter wants
	// increments.
	reconnectsSeen int
}

// New builds a Session with its collectors registered, plus the Go runtime
// and process collectors every Prometheus target is expected to expose.
// now is the clock the lag is read against (time.Now when nil).
func New(now func() time.Time) *Session {
	if now == nil {
		now = time.Now
	}
	s := &Session{
		reg:  prometheus.NewRegistry(),
		now:  now,
		left: map[string]int64{},
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameOps, Help: "Operations the slave applied, by kind: entry (create, rename, unlink...), meta (attributes) and data (files installed).",
		}, []string{"kind"}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameBytesSent, Help: "File content bytes sent to the slave.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameFailures, Help: "Items given up on after their retries, by kind (entry, data, meta); georep status lists them.",
		}, []string{"kind"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NamePending, Help: "Work planned by the current crawl and not yet applied, by kind (entry, data, meta).",
		}, []string{"kind"}),
		crawl: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: NameCrawlDuration, Help: "Time a crawl took to find and plan the changes, by crawl status (hybrid, history, changelog).",
			// From a few-file changelog batch to a full crawl of millions.
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}, []string{"crawl_status"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameReconnects, Help: "Times the session reconnected to the slave.",
		}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameSessionState, Help: "1 for the session's current state (Initializing, Active, Faulty, Stopped), 0 for the others.",
		}, []string{"state"}),
	}
	lag := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: NameLag, Help: "Seconds between now and the stime (everything changed before the stime is on the slave); 0 until a first sync commits.",
	}, s.lag)
	stime := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: NameStime, Help: "The stime as a Unix time: everything changed on the master before it is on the slave; 0 until a first sync commits.",
	}, s.stimeSeconds)
	for _, k := range []string{KindEntry, KindData, KindMeta} {
		// Zero series from the start, so rate() and alerts see them.
		s.ops.WithLabelValues(k)
		s.failures.WithLabelValues(k)
		s.pending.WithLabelValues(k)
	}
	for _, c := range []status.Crawl{status.HybridCrawl, status.HistoryCrawl, status.ChangelogCrawl} {
		s.crawl.WithLabelValues(crawlLabel(c))
	}
	for _, st := range states {
		s.state.WithLabelValues(string(st))
	}
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: NameOldestPending, Help: "Seconds since the oldest change not yet on the slave was found (from the start of the crawl that found it); 0 when nothing is pending.",
	}, s.oldestPending)
	s.reg.MustRegister(oldest)
	s.reg.MustRegister(s.ops, s.bytesSent, s.failures, s.pending, s.crawl, s.reconnects, s.state, lag, stime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// Registry is the session's registry, for a caller that serves or gathers
// it some other way.
func (s *Session) Registry() *prometheus.Registry { return s.reg }

// Handler serves the registry at a scrape endpoint.
func (s *Session) Handler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
}

func (s *Session) lag() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stime.IsZero() {
		return 0
	}
	return s.now().Sub(s.stime).Seconds()
}

func (s *Session) oldestPending() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pendingSince.IsZero() {
		return 0
	}
	return s.now().Sub(s.pendingSince).Seconds()
}

func (s *Session) stimeSeconds() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stime.IsZero() {
		return 0
	}
	return float64(s.stime.UnixNano()) / 1e9
}

// crawlLabel turns "Hybrid Crawl" into "hybrid": label values are matched
// in queries, where spaces and capitals only get in the way.
func crawlLabel(c status.Crawl) string {
	return strings.ToLower(strings.TrimSuffix(string(c), " Crawl"))
}

// CrawlPlanned records the crawl's duration and sets the pending work to
// what it planned.
func (s *Session) CrawlPlanned(crawl status.Crawl, entries, meta, files int, _ int64, took time.Duration) {
	s.crawl.WithLabelValues(crawlLabel(crawl)).Observe(took.Seconds())
	s.mu.Lock()
	defer s.mu.Unlock()
	if entries+meta+files > 0 && s.pendingSince.IsZero() {
		s.pendingSince = s.now().Add(-took)
	}
	s.setLeft(KindEntry, int64(entries))
	s.setLeft(KindMeta, int64(meta))
	s.setLeft(KindData, int64(files))
}

// setLeft sets one kind's pending work, at least zero. s.mu is held.
func (s *Session) setLeft(kind string, n int64) {
	n = max(n, 0)
	s.left[kind] = n
	s.pending.WithLabelValues(kind).Set(float64(n))
}

// applied counts n ops of kind and takes them off the pending work.
func (s *Session) applied(kind string, n int) {
	if n <= 0 {
		return
	}
	s.ops.WithLabelValues(kind).Add(float64(n))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLeft(kind, s.left[kind]-int64(n))
}

// EntriesApplied counts entry ops the slave took.
func (s *Session) EntriesApplied(n int) { s.applied(KindEntry, n) }

// MetaApplied counts meta ops the slave took.
func (s *Session) MetaApplied(n int) { s.applied(KindMeta, n) }

// FileSent counts one installed file and its bytes.
func (s *Session) FileSent(bytes int64) {
	if bytes > 0 {
		s.bytesSent.Add(float64(bytes))
	}
	s.applied(KindData, 1)
}

// Failed counts n items of kind given up on; they are no longer pending.
func (s *Session) Failed(kind string, n int) {
	if n <= 0 {
		return
	}
	s.failures.WithLabelValues(kind).Add(float64(n))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.left[kind]; ok {
		s.setLeft(kind, s.left[kind]-int64(n))
	}
}

// Committed records the stime and clears the pending work: a committed
// batch leaves none behind (what failed is counted in failures).
func (s *Session) Committed(stime time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A batch that committed nothing new keeps the stime it had.
	if !stime.IsZero() {
		s.stime = stime
	}
	for _, k := range []string{KindEntry, KindData, KindMeta} {
		s.setLeft(k, 0)
	}
	s.pendingSince = time.Time{}
}

// StateChanged makes st the one state set and counts new reconnects.
func (s *Session) StateChanged(st status.State, reconnects int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, other := range states {
		v := 0.0
		if other == st {
			v = 1
		}
		s.state.WithLabelValues(string(other)).Set(v)
	}
	if reconnects > s.reconnectsSeen {
		s.reconnects.Add(float64(reconnects - s.reconnectsSeen))
	}
	s.reconnectsSeen = reconnects
}
