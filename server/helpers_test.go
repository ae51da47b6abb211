package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/pipeconn"
	"github.com/georep/georep/internal/testbuf"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// transport is how a test reaches its slave: both are real connections.
type transport string

const (
	overTCP  transport = "tcp"  // a 127.0.0.1 listener, as mTLS will use
	overPipe transport = "pipe" // two OS pipes, as `georep slave --stdio` uses
)

// transports lists every transport a slave test runs over.
func transports() []transport { return []transport{overTCP, overPipe} }

// openBackend opens a real backend on a fresh directory.
func openBackend(t testing.TB) (*backend.Backend, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := backend.Open(dir, backend.Options{})
	if err != nil {
		t.Fatalf("open backend at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	return b, dir
}

// testLogger writes to the test's output and to buf (when not nil), at debug.
func testLogger(t testing.TB, buf *testbuf.Buffer) *slog.Logger {
	t.Helper()
	var w io.Writer = t.Output()
	if buf != nil {
		w = buf
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// serve runs svc on a real gRPC server reached over tr and returns a client
// configured as a master should be (raised message limits). Everything is
// stopped when the test ends.
func serve(t testing.TB, svc *Service, tr transport, logger *slog.Logger, opts ...grpc.ServerOption) pb.SlaveClient {
	t.Helper()
	return pb.NewSlaveClient(dial(t, svc, tr, logger, opts...))
}

// dial is serve returning the raw connection, for the health and reflection
// clients.
func dial(t testing.TB, svc *Service, tr transport, logger *slog.Logger, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	// Stop must wait for handlers: a stream handler logging to t after
	// the test returned is a data race the race detector reports.
	gs := NewGRPCServer(svc, logger, append([]grpc.ServerOption{grpc.WaitForHandlers(true)}, opts...)...)

	var lis net.Listener
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageSize), grpc.MaxCallRecvMsgSize(MaxMessageSize)),
	}
	target := ""
	switch tr {
	case overTCP:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen on 127.0.0.1: %v", err)
		}
		lis, target = l, l.Addr().String()
	case overPipe:
		toServerR, toServerW, err := os.Pipe()
		if err != nil {
			t.Fatalf("create pipe: %v", err)
		}
		toClientR, toClientW, err := os.Pipe()
		if err != nil {
			t.Fatalf("create pipe: %v", err)
		}
		serverEnd := pipeconn.New(toServerR, toClientW)
		clientEnd := pipeconn.New(toClientR, toServerW)
		lis, target = pipeconn.NewListener(serverEnd), "passthrough:///slave"
		var once sync.Once
		dialOpts = append(dialOpts, grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			var c net.Conn
			once.Do(func() { c = clientEnd })
			if c == nil {
				return nil, errors.New("the pipe to the slave is gone; a pipe cannot be redialled")
			}
			return c, nil
		}))
		t.Cleanup(func() { clientEnd.Close() })
	default:
		t.Fatalf("unknown transport %q", tr)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	cc, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		t.Fatalf("new client for %s: %v", target, err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-serveErr; err != nil {
			t.Errorf("Serve over %s: %v", tr, err)
		}
	})
	return cc
}

// callCtx is the deadline every test RPC runs under.
func callCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus fails unless err is a gRPC status with code and a message
// containing every one of parts.
func wantStatus(t testing.TB, err error, code codes.Code, parts ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), code)
	}
	for _, p := range parts {
		if !strings.Contains(st.Message(), p) {
			t.Fatalf("message %q does not contain %q", st.Message(), p)
		}
	}
}

// testClock is a settable clock for foreign-mark expiry.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// regStat is the stat of a regular file the master wants created.
func regStat(perm uint32) *pb.Stat {
	return &pb.Stat{Mode: 0o100000 | perm, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
}

// dirStat is the stat of a directory the master wants created.
func dirStat(perm uint32) *pb.Stat {
	return &pb.Stat{Mode: 0o040000 | perm, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
}
