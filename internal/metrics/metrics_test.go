package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/syncer"
)

// A Session is what a master session reports to.
var _ syncer.Observer = (*Session)(nil)

// value returns the value of the series name{labels} in s's registry, and
// whether it exists.
func value(t *testing.T, s *Session, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; !ok || want != lp.GetValue() {
					continue metric
				}
			}
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			return sampleValue(mf.GetType(), m), true
		}
	}
	return 0, false
}

func sampleValue(typ dto.MetricType, m *dto.Metric) float64 {
	switch typ {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	default:
		return m.GetGauge().GetValue()
	}
}

type series struct {
	name   string
	labels map[string]string
	want   float64
}

func kind(k string) map[string]string { return map[string]string{"kind": k} }

func TestSessionEvents(t *testing.T) {
	stime := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	now := stime.Add(90 * time.Second)
	tests := []struct {
		name   string
		events func(s *Session)
		want   []series
	}{
		{
			name:   "fresh session: every series at zero",
			events: func(*Session) {},
			want: []series{
				{NameOps, kind(KindEntry), 0}, {NameOps, kind(KindData), 0}, {NameOps, kind(KindMeta), 0},
				{NameFailures, kind(KindData), 0}, {NamePending, kind(KindMeta), 0},
				{NameBytesSent, nil, 0}, {NameReconnects, nil, 0}, {NameLag, nil, 0}, {NameStime, nil, 0},
				{NameSessionState, map[string]string{"state": "Active"}, 0},
				{NameSessionState, map[string]string{"state": "Faulty"}, 0},
			},
		},
		{
			name: "planned work is pending and shrinks as it is applied",
			events: func(s *Session) {
				s.CrawlPlanned(status.HybridCrawl, 10, 4, 6, 6000, 250*time.Millisecond)
				s.EntriesApplied(7)
				s.MetaApplied(1)
				s.FileSent(1000)
				s.FileSent(2000)
				s.Failed(KindData, 1)
			},
			want: []series{
				{NamePending, kind(KindEntry), 3}, {NamePending, kind(KindMeta), 3}, {NamePending, kind(KindData), 3},
				{NameOps, kind(KindEntry), 7}, {NameOps, kind(KindMeta), 1}, {NameOps, kind(KindData), 2},
				{NameBytesSent, nil, 3000}, {NameFailures, kind(KindData), 1}, {NameFailures, kind(KindEntry), 0},
				{NameCrawlDuration, map[string]string{"crawl_status": "hybrid"}, 1},
				{NameCrawlDuration, map[string]string{"crawl_status": "changelog"}, 0},
			},
		},
		{
			name: "a commit clears pending and sets the stime the lag is read against",
			events: func(s *Session) {
				s.CrawlPlanned(status.ChangelogCrawl, 5, 5, 5, 50, time.Millisecond)
				s.EntriesApplied(2)
				s.Committed(stime)
				s.Committed(time.Time{}) // nothing new: the stime stays
			},
			want: []series{
				{NamePending, kind(KindEntry), 0}, {NamePending, kind(KindData), 0}, {NamePending, kind(KindMeta), 0},
				{NameLag, nil, 90}, {NameStime, nil, float64(stime.Unix())},
				{NameCrawlDuration, map[string]string{"crawl_status": "changelog"}, 1},
			},
		},
		{
			name: "more applied than planned never takes pending below zero",
			events: func(s *Session) {
				s.CrawlPlanned(status.HistoryCrawl, 1, 0, 0, 0, time.Millisecond)
				s.EntriesApplied(3)
				s.Failed(KindMeta, 2)
			},
			want: []series{
				{NamePending, kind(KindEntry), 0}, {NamePending, kind(KindMeta), 0},
				{NameOps, kind(KindEntry), 3}, {NameFailures, kind(KindMeta), 2},
			},
		},
		{
			name: "state is one-hot and reconnects count the increments of a running total",
			events: func(s *Session) {
				s.StateChanged(status.Initializing, 0)
				s.StateChanged(status.Active, 0)
				s.StateChanged(status.Faulty, 1)
				s.StateChanged(status.Active, 3)
				s.StateChanged(status.Active, 3)
			},
			want: []series{
				{NameSessionState, map[string]string{"state": "Active"}, 1},
				{NameSessionState, map[string]string{"state": "Faulty"}, 0},
				{NameSessionState, map[string]string{"state": "Initializing"}, 0},
				{NameSessionState, map[string]string{"state": "Stopped"}, 0},
				{NameReconnects, nil, 3},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(func() time.Time { return now })
			tc.events(s)
			for _, w := range tc.want {
				got, ok := value(t, s, w.name, w.labels)
				if !ok {
					t.Errorf("%s%v: no such series", w.name, w.labels)
					continue
				}
				if got != w.want {
					t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.want)
				}
			}
		})
	}
}

// TestHandlerServesExposition scrapes the handler over a real HTTP
// connection: georep_* series and the Go runtime's are there.
func TestHandlerServesExposition(t *testing.T) {
	s := New(nil)
	s.FileSent(42)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read scrape: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape status %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{
		`georep_ops_total{kind="data"} 1`,
		`georep_bytes_sent_total 42`,
		`georep_session_state{state="Stopped"} 0`,
		`# TYPE georep_crawl_duration_seconds histogram`,
		`# TYPE georep_lag_seconds gauge`,
		`go_goroutines `,
		`process_open_fds `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// TestSessionsAreIndependent: two sessions in one process never share
// series (no global registry).
func TestSessionsAreIndependent(t *testing.T) {
	a, b := New(nil), New(nil)
	a.EntriesApplied(5)
	got, ok := value(t, b, NameOps, kind(KindEntry))
	if !ok || got != 0 {
		t.Errorf("second session's entry ops = %v (present %v), want 0", got, ok)
	}
	got, _ = value(t, a, NameOps, kind(KindEntry))
	if got != 5 {
		t.Errorf("first session's entry ops = %v, want 5", got)
	}
}

// TestOldestPendingAge: the age of the oldest change not yet on the slave
// grows while work is pending and drops to zero once it is committed.
func TestOldestPendingAge(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	s := New(func() time.Time { return now })
	if v, _ := value(t, s, NameOldestPending, nil); v != 0 {
		t.Fatalf("%s = %v before any work, want 0", NameOldestPending, v)
	}
	s.CrawlPlanned(status.ChangelogCrawl, 3, 1, 2, 100, 2*time.Second)
	now = now.Add(10 * time.Second)
	if v, _ := value(t, s, NameOldestPending, nil); v != 12 {
		t.Fatalf("%s = %v with work found 12 s ago (crawl of 2 s), want 12", NameOldestPending, v)
	}
	// A later batch does not make the oldest change younger.
	s.CrawlPlanned(status.ChangelogCrawl, 1, 0, 0, 0, 0)
	if v, _ := value(t, s, NameOldestPending, nil); v != 12 {
		t.Fatalf("%s = %v after a second batch, want 12", NameOldestPending, v)
	}
	s.Committed(now)
	if v, _ := value(t, s, NameOldestPending, nil); v != 0 {
		t.Fatalf("%s = %v after the commit, want 0", NameOldestPending, v)
	}
}
