// Package pipeconn carries a network protocol (gRPC) over a pair of pipes:
// the slave's own stdin/stdout when an ssh forced command starts it, or a
// child process's pipes on the master side. It provides a net.Conn over the
// two streams and a net.Listener that hands out that one connection.
package pipeconn

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Network is the network name of every pipe address.
const Network = "pipe"

// addr is the fixed address of both ends of a pipe connection; a pipe has no
// meaningful address, but gRPC logs and channelz want one.
type addr struct{}

func (addr) Network() string { return Network }
func (addr) String() string  { return Network }

var _ net.Addr = addr{}

// Conn is a net.Conn over a reader (the peer's output) and a writer (the
// peer's input). Deadlines are not supported by plain pipes in general, so
// they are accepted and ignored; gRPC does not need them because it runs its
// own keep-alive and closes the connection to unblock I/O.
type Conn struct {
	r io.ReadCloser
	w io.WriteCloser

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

var _ net.Conn = (*Conn)(nil)

// New returns a connection reading from r and writing to w. The Conn owns
// both: Close closes them. Pipes among them are grown to PipeSize.
func New(r io.ReadCloser, w io.WriteCloser) *Conn {
	grow(r)
	grow(w)
	return &Conn{r: r, w: w, done: make(chan struct{})}
}

// PipeSize is the capacity New asks for each pipe: Linux's default 64 KiB
// takes a quarter of one gRPC transport write (256 KiB), so a nonblocking
// writer met EAGAIN and a poller round trip for most writes, and ssh read
// the stream 64 KiB at a time. 1 MiB is what an unprivileged process may
// ask (/proc/sys/fs/pipe-max-size).
const PipeSize = 1 << 20

// grow sets v's pipe capacity to PipeSize when v is a pipe; anything else,
// or a refusal (the user's pipe quota), leaves it as it is: only speed
// depends on it.
func grow(v any) {
	sc, ok := v.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO {
			_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, PipeSize)
		}
	})
}

// Read reads from the peer's output.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && c.isClosed() && !errors.Is(err, io.EOF) {
		// After our own Close the reader reports "file already closed";
		// net.ErrClosed is what callers of a net.Conn test for.
		return n, net.ErrClosed
	}
	return n, err
}

// Write writes to the peer's input.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && c.isClosed() {
		return n, net.ErrClosed
	}
	return n, err
}

// Close closes both streams. It is idempotent, because gRPC may close a
// transport's connection more than once; every call returns the first
// call's result.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		// Mark closed first, so a Read or Write that fails because of this
		// Close reports net.ErrClosed.
		close(c.done)
		// Close the writer first so the peer sees EOF on its input even if
		// closing our reader fails.
		werr := c.w.Close()
		rerr := c.r.Close()
		c.closeErr = errors.Join(werr, rerr)
	})
	return c.closeErr
}

// Done is closed once Close has been called, by us or by gRPC after it saw
// the peer hang up. A stdio slave waits on it to learn that its master went
// away.
func (c *Conn) Done() <-chan struct{} { return c.done }

func (c *Conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// LocalAddr returns the fixed pipe address.
func (c *Conn) LocalAddr() net.Addr { return addr{} }

// RemoteAddr returns the fixed pipe address.
func (c *Conn) RemoteAddr() net.Addr { return addr{} }

// SetDeadline is accepted and ignored (see Conn).
func (c *Conn) SetDeadline(time.Time) error { return nil }

// SetReadDeadline is accepted and ignored (see Conn).
func (c *Conn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline is accepted and ignored (see Conn).
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Listener is a net.Listener that accepts exactly one connection, the one it
// was made with. A second Accept blocks until the listener is closed and
// then returns net.ErrClosed, which is how grpc.Server.Serve learns to stop
// rather than spinning on an error.
type Listener struct {
	conns     chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

var _ net.Listener = (*Listener)(nil)

// NewListener returns a listener whose first Accept returns c.
func NewListener(c net.Conn) *Listener {
	l := &Listener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conns <- c
	return l
}

// Accept returns the connection once, then blocks until Close.
func (l *Listener) Accept() (net.Conn, error) {
	// Prefer the closed state: a closed listener must not hand out a
	// connection even when it still holds one.
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close unblocks Accept. An accepted connection belongs to whoever accepted
// it and stays open; one never accepted is closed here, since nobody else
// will. Close is idempotent.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		select {
		case c := <-l.conns:
			err = c.Close()
		default:
		}
	})
	return err
}

// Addr returns the fixed pipe address; it never blocks (grpc-go calls it
// from Serve while Accept may be blocked, see grpc-go #5571).
func (l *Listener) Addr() net.Addr { return addr{} }
