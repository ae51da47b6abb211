package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// relayEnv names the file a relay appends its byte counts to. When it is
// set, the test binary is not a test but ssh's ProxyCommand: it joins its
// stdio to a TCP address and counts what crosses, so both tools' bytes on
// the wire are counted at the same place (the ssh transport, encrypted).
const relayEnv = "GEOREP_BENCH_RELAY_COUNTS"

// relaySnapshotEnv, when set, makes a relay also keep its running totals
// in COUNTS.live.PID, rewritten as they change (at most every 10 ms): a
// running session's relays never end while it is measured.
const relaySnapshotEnv = "GEOREP_BENCH_RELAY_SNAPSHOT"

// runRelay copies stdin to addr and addr to stdout until both directions
// end or ssh hangs up on it (ssh ends its ProxyCommand with SIGHUP), then
// appends "end UP DOWN" to the counts file. A "start" line is written
// first, so the harness can wait until every relay has reported.
func runRelay(counts, addr string) int {
	// Bytes sshd sends after ssh has gone (ssh ended at once by a --once
	// run that is done) must not kill the relay by SIGPIPE before it
	// reports: a write to the closed pipe fails with EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	if err := appendLine(counts, "start"); err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		return 1
	}
	var up, down atomic.Int64
	snapshot := func() {}
	if os.Getenv(relaySnapshotEnv) != "" {
		path := fmt.Sprintf("%s.live.%d", counts, os.Getpid())
		var mu sync.Mutex // the ticker and the final report both write
		var last int64 = -1
		snapshot = func() {
			mu.Lock()
			defer mu.Unlock()
			u, d := up.Load(), down.Load()
			if u+d == last {
				return
			}
			last = u + d
			// Renamed into place: the harness never reads half a file.
			tmp := fmt.Sprintf("%s.tmp.%d", counts, os.Getpid())
			if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", u, d), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
			} else if err := os.Rename(tmp, path); err != nil {
				fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
			}
		}
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-tick.C:
					snapshot()
				case <-stop:
					return
				}
			}
		}()
	}
	report := sync.OnceFunc(func() {
		snapshot()
		if err := appendLine(counts, fmt.Sprintf("end %d %d", up.Load(), down.Load())); err != nil {
			fmt.Fprintf(os.Stderr, "bench relay: %v\n", err)
		}
	})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		report()
		os.Exit(0)
	}()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench relay: connect to %s: %v\n", addr, err)
		report()
		return 1
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(countingWriter{conn, &up}, os.Stdin)
		_ = n
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(countingWriter{os.Stdout, &down}, conn)
		_ = os.Stdout.Close()
	}()
	wg.Wait()
	report()
	return 0
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// appendLine appends one line with O_APPEND, so concurrent relays' lines
// never interleave.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open relay counts %s: %w", path, err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("write relay counts %s: %w", path, err)
	}
	return f.Close()
}

// relayTotals reads a counts file: relays started, relays ended, and the
// bytes they carried both ways.
// liveTotal sums the running totals of every relay that kept them for
// the counts file path (see relaySnapshotEnv).
func liveTotal(path string) (int64, error) {
	files, err := filepath.Glob(path + ".live.*")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, fmt.Errorf("read relay totals: %w", err)
		}
		for _, s := range strings.Fields(string(data)) {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("relay totals %s %q: %w", f, data, err)
			}
			total += v
		}
	}
	return total, nil
}

func relayTotals(path string) (started, ended int, bytes int64, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return 0, 0, 0, nil
		}
		return 0, 0, 0, fmt.Errorf("read relay counts: %w", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && f[0] == "start":
			started++
		case len(f) == 3 && f[0] == "end":
			ended++
			for _, s := range f[1:] {
				v, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return 0, 0, 0, fmt.Errorf("relay counts line %q: %w", line, err)
				}
				bytes += v
			}
		}
	}
	return started, ended, bytes, nil
}

// TestRelayOutlivesItsReader: ssh ended at once (a --once run that is
// done) leaves the relay's stdout without a reader while sshd's last
// bytes still arrive. The relay must still report its totals and exit,
// not die by SIGPIPE. The relay is this test binary, as ssh runs it.
func TestRelayOutlivesItsReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	wrote := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			wrote <- err
			return
		}
		defer c.Close()
		time.Sleep(200 * time.Millisecond) // the reader is gone by now
		_, err = c.Write(make([]byte, 64<<10))
		wrote <- err
	}()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	counts := filepath.Join(t.TempDir(), "counts")
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, ln.Addr().String())
	cmd.Env = append(os.Environ(), relayEnv+"="+counts)
	cmd.Stdin, cmd.Stdout = stdinR, stdoutW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdinR.Close()
	stdoutW.Close()
	stdoutR.Close() // ssh has gone: nobody reads what the relay writes
	if err := <-wrote; err != nil {
		t.Fatalf("the server's write: %v", err)
	}
	stdinW.Close()
	if err := cmd.Wait(); err != nil {
		t.Errorf("relay: %v (want it to end by itself, having reported)", err)
	}
	started, ended, _, err := relayTotals(counts)
	if err != nil {
		t.Fatal(err)
	}
	if started != 1 || ended != 1 {
		t.Errorf("relay reported %d starts and %d ends, want 1 and 1", started, ended)
	}
}
