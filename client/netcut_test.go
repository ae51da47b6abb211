package client

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testproxy"
	"github.com/georep/georep/internal/testsshd"
	pb "github.com/georep/georep/proto/georep/v1"
)

// sshThroughProxy returns a slave URL and ssh command that reach sshd
// through p. The ssh options make a dead path show within a few seconds:
// ServerAlive probes every second (three unanswered end ssh), and a
// connection that stalls before the ssh handshake gives up after 3s.
func sshThroughProxy(t testing.TB, sshd *testsshd.Server, p *testproxy.Proxy, path string) (SlaveURL, string) {
	t.Helper()
	var args []string
	sa := sshd.SSHArgs()
	for i := 0; i < len(sa); i++ {
		if sa[i] == "-p" {
			i++ // the URL carries the proxy's port instead
			continue
		}
		args = append(args, sa[i])
	}
	args = append(args,
		// known_hosts names sshd's own address; the proxy's differs.
		"-o", fmt.Sprintf("HostKeyAlias=[%s]:%d", sshd.Host, sshd.Port),
		"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=3")
	u, err := ParseSlaveURL(fmt.Sprintf("ssh://%s@%s:%d%s", sshd.User, p.Host, p.Port, path))
	if err != nil {
		t.Fatal(err)
	}
	return u, "ssh " + strings.Join(args, " ")
}

// pollUntil waits for cond, failing the test with what after deadline.
func pollUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamer sends numbered batches of MKDIRs through a session from its own
// goroutine, pausing before batch pauseAt until release is closed so some
// work is left for after the fault.
type streamer struct {
	sent atomic.Int32
	err  error
	done chan struct{}
}

const netcutBatches, netcutPerBatch = 30, 20

func startStreamer(ctx context.Context, s *Session, pauseAt int, release <-chan struct{}) *streamer {
	st := &streamer{done: make(chan struct{})}
	go func() {
		defer close(st.done)
		for b := 0; b < netcutBatches; b++ {
			if b == pauseAt {
				select {
				case <-release:
				case <-ctx.Done():
					st.err = ctx.Err()
					return
				}
			}
			var entries []*pb.Entry
			for i := 0; i < netcutPerBatch; i++ {
				entries = append(entries, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid.New().Bytes(),
					ParentGfid: gfid.Root.Bytes(), Name: []byte(fmt.Sprintf("n%02d-%02d", b, i)), Stat: &pb.Stat{Mode: 0o40755}})
			}
			err := s.Do(ctx, func(ctx context.Context, c *Conn) error {
				resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: entries})
				if err != nil {
					return err
				}
				for i, r := range resp.GetResults() {
					if r.GetErrno() != 0 {
						return fmt.Errorf("entry %d: %s", i, r.GetMessage())
					}
				}
				return nil
			})
			if err != nil {
				st.err = fmt.Errorf("batch %d: %w", b, err)
				return
			}
			st.sent.Add(1)
		}
	}()
	return st
}

// netcutTransport starts a slave serving root and says how to reach it
// through a proxy in front of it.
type netcutTransport struct {
	name string
	// start returns the slave's address (the proxy's upstream) and a
	// dialer factory for the proxy's address.
	start func(t *testing.T, root string) (upstream string, through func(p *testproxy.Proxy) Dialer)
	// faults are the network failures this transport is tested against.
	faults []string
}

func netcutSSH(t *testing.T, root string) (string, func(p *testproxy.Proxy) Dialer) {
	sshd := testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root)})
	return fmt.Sprintf("%s:%d", sshd.Host, sshd.Port), func(p *testproxy.Proxy) Dialer {
		u, sshCmd := sshThroughProxy(t, sshd, p, root)
		return func(ctx context.Context) (*Conn, error) { return Dial(ctx, u, Options{SSHCommand: sshCmd}) }
	}
}

// netcutMTLS is a `georep slave --listen` daemon (mTLS) reached as master m1.
func netcutMTLS(t *testing.T, root string) (string, func(p *testproxy.Proxy) Dialer) {
	pki := newMTLSPKI(t)
	d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1", "--root", root)...)
	return d.addr, func(p *testproxy.Proxy) Dialer {
		// The slave's certificate names 127.0.0.1, the proxy's host too.
		u, err := ParseSlaveURL("grpcs://" + p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		opts := pki.clientOptions("m1")
		return func(ctx context.Context) (*Conn, error) { return DialTLS(ctx, u, opts) }
	}
}

// TestSessionSurvivesNetworkCut runs a session master → toxiproxy → slave
// and breaks the network mid-stream: "cut" closes every connection and
// refuses new ones; "blackhole" keeps them open but drops every byte, so
// only keep-alives (ssh's ServerAlive probes) can tell. While the network
// is down the session must turn Faulty and fail to redial; once it is back
// it must reconnect and deliver every entry.
func TestSessionSurvivesNetworkCut(t *testing.T) {
	faults := map[string]func(t *testing.T, p *testproxy.Proxy){
		"cut":       func(t *testing.T, p *testproxy.Proxy) { p.Cut() },
		"blackhole": func(t *testing.T, p *testproxy.Proxy) { p.Blackhole(t) },
	}
	transports := []netcutTransport{
		// The real sshd's forced command pins the root.
		{name: "ssh", start: netcutSSH, faults: []string{"cut", "blackhole"}},
		// A redial into a black hole stalls in the TLS handshake: the
		// session's DialTimeout must end each attempt.
		{name: "mtls", start: netcutMTLS, faults: []string{"cut", "blackhole"}},
	}
	for _, tr := range transports {
		for _, fault := range tr.faults {
			t.Run(tr.name+"/"+fault, func(t *testing.T) {
				root := t.TempDir()
				upstream, through := tr.start(t, root)
				proxy := testproxy.Start(t, upstream)
				testNetworkFault(t, root, through(proxy), func() { faults[fault](t, proxy) }, func() { proxy.Restore(t) })
			})
		}
	}
}

// testNetworkFault streams batches through a session made with dial,
// breaks the network with fault once a third are acknowledged, holds it
// broken until a redial has failed (2s at least), repairs it with restore,
// and checks that every entry arrived.
func testNetworkFault(t *testing.T, root string, dial Dialer, fault, restore func()) {
	t.Helper()
	var failedDials atomic.Int32
	var mu sync.Mutex
	var states []State
	s := NewSession(func(ctx context.Context) (*Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			failedDials.Add(1)
		}
		return c, err
	}, SessionOptions{Master: masterMark("netcut-master"), KeepAliveInterval: time.Second,
		DialTimeout: 2 * time.Second, BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
		OnState: func(st State, _ error) { mu.Lock(); states = append(states, st); mu.Unlock() }})
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	release := make(chan struct{})
	st := startStreamer(ctx, s, 2*netcutBatches/3, release)
	defer func() { cancel(); <-st.done }()

	pollUntil(t, 15*time.Second, "the first third of the batches", func() bool {
		return st.sent.Load() >= netcutBatches/3 || isDone(st.done)
	})
	if st.err != nil {
		t.Fatalf("before the fault: %v", st.err)
	}
	fault()
	cutAt := time.Now()
	before := failedDials.Load()
	close(release)
	pollUntil(t, 15*time.Second, "the session to report Faulty", func() bool {
		got, _ := s.State()
		return got == StateFaulty
	})
	detected := time.Since(cutAt)
	// Keep the network down until the session has tried to redial and
	// failed, and for two seconds at least.
	pollUntil(t, 15*time.Second, "a redial to fail while the network is down", func() bool {
		return failedDials.Load() > before && time.Since(cutAt) >= 2*time.Second
	})
	if got := st.sent.Load(); got >= netcutBatches {
		t.Fatalf("all %d batches were acknowledged while the network was down", got)
	}
	_, why := s.State()
	t.Logf("fault noticed after %v: %v", detected.Round(time.Millisecond), why)
	restore()
	restoredAt := time.Now()

	select {
	case <-st.done:
	case <-ctx.Done():
		t.Fatalf("batches not finished after the network came back (%d of %d sent)", st.sent.Load(), netcutBatches)
	}
	if st.err != nil {
		t.Fatal(st.err)
	}
	t.Logf("recovered and finished %v after the network came back", time.Since(restoredAt).Round(time.Millisecond))
	names, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range names {
		if strings.HasPrefix(e.Name(), "n") {
			n++
		}
	}
	if n != netcutBatches*netcutPerBatch {
		t.Fatalf("slave has %d directories, want %d", n, netcutBatches*netcutPerBatch)
	}
	if s.Reconnects() < 1 {
		t.Fatal("session did not reconnect after the network came back")
	}
	if got, err := s.State(); got != StateActive {
		t.Fatalf("session state %s (%v) after recovery, want Active", got, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !containsState(states, StateFaulty) {
		t.Errorf("states %v never showed Faulty", states)
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
