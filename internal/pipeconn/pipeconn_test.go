package pipeconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"golang.org/x/sys/unix"
)

// pipePair returns two Conns joined by two real OS pipes: what a writes, b
// reads, and the other way round, as a master and its ssh child would be.
func pipePair(t *testing.T) (a, b *Conn) {
	t.Helper()
	abR, abW, err := os.Pipe()
	if err != nil {
		t.Fatalf("create pipe: %v", err)
	}
	baR, baW, err := os.Pipe()
	if err != nil {
		t.Fatalf("create pipe: %v", err)
	}
	a = New(baR, abW)
	b = New(abR, baW)
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// within runs f and fails the test if it does not return before d.
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}

func TestConnReadWrite(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
	}{
		{"one byte", []byte{0}},
		{"text", []byte("hello slave")},
		{"larger than a pipe buffer", bytes.Repeat([]byte("0123456789abcdef"), 64<<10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := pipePair(t)
			writeErr := make(chan error, 1)
			go func() {
				_, err := a.Write(tc.payload)
				writeErr <- err
			}()
			got := make([]byte, len(tc.payload))
			if _, err := io.ReadFull(b, got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, tc.payload) {
				t.Fatalf("read %d bytes that differ from the %d written", len(got), len(tc.payload))
			}
		})
	}
}

func TestConnClose(t *testing.T) {
	a, b := pipePair(t)

	first := a.Close()
	if first != nil {
		t.Fatalf("first Close: %v", first)
	}
	if second := a.Close(); second != first {
		t.Fatalf("second Close = %v, want the first call's result %v", second, first)
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	select {
	case <-b.Done():
		t.Fatal("peer's Done closed although only our side closed")
	default:
	}

	// The peer sees EOF on its input once we close our output.
	var n int
	var err error
	within(t, 5*time.Second, "peer read after close", func() { n, err = b.Read(make([]byte, 8)) })
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("peer read = %d, %v; want 0, EOF", n, err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close = %v, want net.ErrClosed", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close = %v, want net.ErrClosed", err)
	}
}

func TestConnCloseUnblocksRead(t *testing.T) {
	a, _ := pipePair(t)
	readErr := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		readErr <- err
	}()
	// Whether or not the reader has blocked yet, Close makes its Read fail,
	// so the assertion holds either way.
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock a pending Read")
	}
}

func TestConnAddrAndDeadlines(t *testing.T) {
	a, _ := pipePair(t)
	for _, ad := range []net.Addr{a.LocalAddr(), a.RemoteAddr()} {
		if ad.Network() != Network || ad.String() != Network {
			t.Errorf("addr = %s/%s, want %s/%s", ad.Network(), ad.String(), Network, Network)
		}
	}
	now := time.Now()
	tests := []struct {
		name string
		set  func(time.Time) error
	}{
		{"SetDeadline", a.SetDeadline},
		{"SetReadDeadline", a.SetReadDeadline},
		{"SetWriteDeadline", a.SetWriteDeadline},
	}
	for _, tc := range tests {
		if err := tc.set(now); err != nil {
			t.Errorf("%s = %v, want nil", tc.name, err)
		}
	}
}

func TestListenerAcceptsOnce(t *testing.T) {
	a, _ := pipePair(t)
	l := NewListener(a)

	c, err := l.Accept()
	if err != nil {
		t.Fatalf("first Accept: %v", err)
	}
	if c != a {
		t.Fatalf("first Accept returned %v, want the listener's conn", c)
	}

	acceptErr := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		acceptErr <- err
	}()
	// Addr must answer while Accept is blocked (grpc-go #5571).
	within(t, 5*time.Second, "Addr during a blocked Accept", func() {
		if got := l.Addr().String(); got != Network {
			t.Errorf("Addr = %q, want %q", got, Network)
		}
	})
	select {
	case err := <-acceptErr:
		t.Fatalf("second Accept returned early with %v", err)
	default:
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-a.Done():
		t.Fatal("closing the listener closed the connection it had handed out")
	default:
	}
}

func TestListenerCloseBeforeAccept(t *testing.T) {
	a, _ := pipePair(t)
	l := NewListener(a)
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close = %v, want net.ErrClosed", err)
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("a connection never accepted was left open by Close")
	}
}

// TestGRPCOverPipes runs a real grpc.Server on one end of two OS pipes and a
// real client on the other, the way `georep slave --stdio` and its master do.
func TestGRPCOverPipes(t *testing.T) {
	clientEnd, serverEnd := pipePair(t)

	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(NewListener(serverEnd)) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	var dialed sync.Once
	cc, err := grpc.NewClient("passthrough:///pipe",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			var c net.Conn
			dialed.Do(func() { c = clientEnd })
			if c == nil {
				return nil, errors.New("the pipe connection was already used")
			}
			return c, nil
		}))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	for i := range 3 {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check %d: %v", i, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health check %d = %v, want SERVING", i, resp.GetStatus())
		}
	}

	// The client hanging up is how the slave learns its master went away:
	// gRPC closes the server end, and Done fires.
	if err := cc.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}
	select {
	case <-serverEnd.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server end not closed after the client hung up")
	}
}

// TestNewGrowsPipes: both pipes of a connection are grown to PipeSize, so
// a 256 KiB transport write fits at once; a non-pipe is left alone.
func TestNewGrowsPipes(t *testing.T) {
	r1, w1, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	defer r2.Close()
	c := New(r1, w2)
	defer c.Close()
	for name, f := range map[string]*os.File{"read pipe": r1, "write pipe": w2} {
		rc, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var size int
		var serr error
		if err := rc.Control(func(fd uintptr) { size, serr = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0) }); err != nil {
			t.Fatal(err)
		}
		if serr != nil || size != PipeSize {
			t.Errorf("%s holds %d bytes (%v), want %d", name, size, serr, PipeSize)
		}
	}
	// A regular file is no pipe: New must not fail on it or change it.
	f, err := os.CreateTemp(t.TempDir(), "notpipe")
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	New(g, f).Close()
}
