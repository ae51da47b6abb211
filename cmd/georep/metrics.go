package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/georep/georep/internal/metrics"
	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/syncer"
)

// metricsShutdownGrace bounds how long a scrape in flight may hold up the
// master's exit.
const metricsShutdownGrace = 5 * time.Second

// checkMetricsAddr refuses a --metrics-addr that is not HOST:PORT before
// anything is started.
func checkMetricsAddr(addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--metrics-addr %q: want HOST:PORT, such as 127.0.0.1:9464 or :9464: %w", addr, err)
	}
	return nil
}

// startMetrics serves a fresh metrics.Session at http://addr/metrics until
// ctx ends or stop is called; stop returns once the server is down. With
// no addr there is nothing to serve and the Observer is nil.
func startMetrics(ctx context.Context, addr string, log *slog.Logger) (obs syncer.Observer, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, nil, fmt.Errorf("--metrics-addr %s: the address is already in use; choose a free port (or port 0 for any) or stop what listens there: %w", addr, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr %s: cannot listen there: %w", addr, err)
	}
	m := metrics.New(nil)
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// The bound address is logged as such because port 0 picks one.
	log.Info("metrics listening on "+ln.Addr().String(), "url", "http://"+ln.Addr().String()+"/metrics")

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped; /metrics is no longer served", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, done := context.WithTimeout(context.WithoutCancel(ctx), metricsShutdownGrace)
		defer done()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	return m, func() { cancel(); wg.Wait() }, nil
}

// multiObserver tells each non-nil observer of obs every event, so the
// progress bar and the metrics watch the same session; nil when none is
// left, which the syncer takes as nobody.
func multiObserver(obs ...syncer.Observer) syncer.Observer {
	var set observers
	for _, o := range obs {
		if o != nil {
			set = append(set, o)
		}
	}
	switch len(set) {
	case 0:
		return nil
	case 1:
		return set[0]
	}
	return set
}

// observers is several Observers told the same events in order.
type observers []syncer.Observer

func (all observers) CrawlPlanned(c status.Crawl, entries, meta, files int, bytes int64, took time.Duration) {
	for _, o := range all {
		o.CrawlPlanned(c, entries, meta, files, bytes, took)
	}
}

func (all observers) EntriesApplied(n int) {
	for _, o := range all {
		o.EntriesApplied(n)
	}
}

func (all observers) MetaApplied(n int) {
	for _, o := range all {
		o.MetaApplied(n)
	}
}

func (all observers) FileSent(bytes int64) {
	for _, o := range all {
		o.FileSent(bytes)
	}
}

func (all observers) Failed(kind string, n int) {
	for _, o := range all {
		o.Failed(kind, n)
	}
}

func (all observers) Committed(stime time.Time) {
	for _, o := range all {
		o.Committed(stime)
	}
}

func (all observers) StateChanged(st status.State, reconnects int) {
	for _, o := range all {
		o.StateChanged(st, reconnects)
	}
}
