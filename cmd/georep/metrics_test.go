package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/testbuf"
)

var metricsAddrRE = regexp.MustCompile(`metrics listening on ([0-9.]+:[0-9]+)`)

// scrape fetches url and returns its samples keyed by series as written
// (name{labels}).
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: status %d: %s", url, resp.StatusCode, body)
	}
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: bad sample line %q: %v", url, line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read scrape %s: %v", url, err)
	}
	return samples
}

// masterProc is a running `georep master` child.
type masterProc struct {
	cmd    *exec.Cmd
	stderr *testbuf.Buffer
	exited chan struct{}
	err    error // Wait's result, valid once exited is closed
}

func startMaster(t *testing.T, bin string, args ...string) *masterProc {
	t.Helper()
	p := &masterProc{stderr: &testbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"master"}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start georep master: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("master stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

// TestMasterServesMetricsDuringSync runs a continuous master against a
// local slave with --metrics-addr 127.0.0.1:0 and scrapes it while files
// are being created: the georep_* series are there and the ops counters
// grow as the changes are replicated.
func TestMasterServesMetricsDuringSync(t *testing.T) {
	bin := buildGeorep(t)
	base := t.TempDir()
	master, slave, state := filepath.Join(base, "master"), filepath.Join(base, "slave"), filepath.Join(base, "state")
	for _, d := range []string{master, slave} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := startMaster(t, bin, "--root", master, "--slave", slave, "--state", state,
		"--metrics-addr", "127.0.0.1:0", "--change-interval", "50ms")

	var addr string
	deadline := time.Now().Add(30 * time.Second)
	for addr == "" {
		if m := metricsAddrRE.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("master exited before serving metrics: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no \"metrics listening on\" line within 30s")
		}
	}
	url := "http://" + addr + "/metrics"

	// Files keep arriving while the test scrapes; the writer is stopped
	// and waited for before the test ends.
	stopWriter := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	written := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ; ; written++ {
			select {
			case <-stopWriter:
				return
			case <-time.After(5 * time.Millisecond):
			}
			name := filepath.Join(master, fmt.Sprintf("f%05d", written))
			if err := os.WriteFile(name, []byte(strings.Repeat("x", 100+written)), 0o644); err != nil {
				writeErr = err
				return
			}
		}
	}()
	var stopOnce sync.Once
	stopWriting := func() {
		stopOnce.Do(func() {
			close(stopWriter)
			wg.Wait()
			if writeErr != nil {
				t.Errorf("write master files: %v", writeErr)
			}
		})
	}
	defer stopWriting()

	first := scrape(t, url)
	for _, series := range []string{
		`georep_ops_total{kind="entry"}`, `georep_ops_total{kind="data"}`, `georep_ops_total{kind="meta"}`,
		`georep_bytes_sent_total`,
		`georep_failures_total{kind="entry"}`, `georep_failures_total{kind="data"}`, `georep_failures_total{kind="meta"}`,
		`georep_pending{kind="entry"}`, `georep_pending{kind="data"}`, `georep_pending{kind="meta"}`,
		`georep_lag_seconds`, `georep_stime_seconds`,
		`georep_crawl_duration_seconds_count{crawl_status="hybrid"}`,
		`georep_crawl_duration_seconds_count{crawl_status="changelog"}`,
		`georep_reconnects_total`,
		`georep_session_state{state="Active"}`, `georep_session_state{state="Faulty"}`,
		`georep_session_state{state="Initializing"}`, `georep_session_state{state="Stopped"}`,
	} {
		if _, ok := first[series]; !ok {
			t.Errorf("first scrape lacks %s", series)
		}
	}

	// Poll until the counters have grown by many files past the first
	// scrape, with the writer still running.
	var last map[string]float64
	deadline = time.Now().Add(30 * time.Second)
	for {
		last = scrape(t, url)
		if last[`georep_ops_total{kind="entry"}`] >= first[`georep_ops_total{kind="entry"}`]+20 &&
			last[`georep_ops_total{kind="data"}`] >= first[`georep_ops_total{kind="data"}`]+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ops did not grow by 20 within 30s: first entry/data %v/%v, last %v/%v",
				first[`georep_ops_total{kind="entry"}`], first[`georep_ops_total{kind="data"}`],
				last[`georep_ops_total{kind="entry"}`], last[`georep_ops_total{kind="data"}`])
		}
		time.Sleep(50 * time.Millisecond)
	}
	checks := []struct {
		series string
		ok     func(v float64) bool
		want   string
	}{
		{`georep_bytes_sent_total`, func(v float64) bool { return v > first[`georep_bytes_sent_total`] }, "grown"},
		{`georep_session_state{state="Active"}`, func(v float64) bool { return v == 1 }, "1"},
		{`georep_session_state{state="Faulty"}`, func(v float64) bool { return v == 0 }, "0"},
		{`georep_stime_seconds`, func(v float64) bool { return v > 0 }, "> 0 (a batch committed)"},
		{`georep_crawl_duration_seconds_count{crawl_status="changelog"}`, func(v float64) bool { return v >= 1 }, ">= 1"},
		{`georep_failures_total{kind="data"}`, func(v float64) bool { return v == 0 }, "0"},
		{`go_goroutines`, func(v float64) bool { return v > 0 }, "> 0"},
	}
	for _, c := range checks {
		if v, ok := last[c.series]; !ok || !c.ok(v) {
			t.Errorf("%s = %v (present %v), want %s", c.series, v, ok, c.want)
		}
	}

	// Once the writing stops, everything written is replicated and
	// nothing stays pending.
	stopWriting()
	deadline = time.Now().Add(30 * time.Second)
	for {
		last = scrape(t, url)
		if last[`georep_ops_total{kind="data"}`] >= float64(written) && last[`georep_pending{kind="entry"}`] == 0 &&
			last[`georep_pending{kind="data"}`] == 0 && last[`georep_pending{kind="meta"}`] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d files written, data ops = %v and pending entry/data/meta = %v/%v/%v 30s later",
				written, last[`georep_ops_total{kind="data"}`], last[`georep_pending{kind="entry"}`],
				last[`georep_pending{kind="data"}`], last[`georep_pending{kind="meta"}`])
		}
		time.Sleep(50 * time.Millisecond)
	}

	// SIGTERM stops the idle session and the metrics server with it.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal master: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("master still running 30s after SIGTERM")
	}
	// A requested stop is a clean exit, even when it cuts a slave call short.
	if p.err != nil {
		t.Errorf("master exit after SIGTERM: %v, want status 0; stderr:\n%s", p.err, p.stderr.String())
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the master exited", addr)
	}
}

// TestMasterMetricsAddrRefused: an address that is taken or malformed is
// refused with words that say so, before any state is created.
func TestMasterMetricsAddrRefused(t *testing.T) {
	bin := buildGeorep(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { taken.Close() })
	base := t.TempDir()
	master, slave := filepath.Join(base, "master"), filepath.Join(base, "slave")
	for _, d := range []string{master, slave} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		addr string
		code int
		want string
	}{
		{"taken", taken.Addr().String(), 1, "the address is already in use"},
		{"no port", "localhost", 2, "want HOST:PORT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(base, "state-"+tc.name)
			cmd := exec.Command(bin, "master", "--root", master, "--slave", slave, "--state", state,
				"--metrics-addr", tc.addr)
			out, err := cmd.CombinedOutput()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("run: %v, want a non-zero exit; output:\n%s", err, out)
			}
			if exitErr.ExitCode() != tc.code {
				t.Errorf("exit code = %d, want %d; output:\n%s", exitErr.ExitCode(), tc.code, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("output = %q, want it to contain %q", out, tc.want)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused command created the state directory (%v)", err)
			}
		})
	}
}
