package syncer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testbuf"
)

// TestCrawlStatusAfterOverflow: a change batch that outgrows its bound
// becomes a Hybrid Crawl; once that crawl is done the status must say the
// session is back on live changes (Changelog Crawl), not keep showing the
// one-off crawl until some later change happens to arrive.
func TestCrawlStatusAfterOverflow(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t)
	master, slave, state := tr.master, tr.slave, tr.state
	var logs testbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cfg := tr.config(bin)
		cfg.Once, cfg.ChangeInterval, cfg.maxDirty = false, 50*time.Millisecond, 1
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		done <- Run(ctx, cfg)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitCrawl := func(want status.Crawl, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := status.Read(state)
			if err == nil && st.Crawl == want {
				return
			}
			if time.Now().After(deadline) {
				var got status.Crawl
				if st != nil {
					got = st.Crawl
				}
				t.Fatalf("%s: status crawl is %q (err %v), want %q\n%s", what, got, err, want, logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCrawl(status.ChangelogCrawl, "after the first crawl")
	// Three directories in one batch outgrow a bound of one.
	for i := range 3 {
		d := filepath.Join(master, fmt.Sprintf("d%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "running a Hybrid Crawl") {
		if time.Now().After(deadline) {
			t.Fatalf("no overflow within 30s\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 3 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(slave, fmt.Sprintf("d%d", i), "f")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("d%d/f not on the slave within 30s", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitCrawl(status.ChangelogCrawl, "after the overflow's Hybrid Crawl")
}
