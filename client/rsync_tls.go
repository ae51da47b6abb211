package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	pb "github.com/georep/georep/proto/georep/v1"
)

// RsyncRelayCommand is the hidden georep subcommand rsync runs as its
// remote shell over mTLS: it connects its stdin and stdout to the master's
// relay socket, which bridges them to an RsyncTunnel stream.
const RsyncRelayCommand = "rsync-relay"

// relayChunk is the most socket data one RsyncTunnel request carries.
const relayChunk = 256 << 10

// relayDrainGrace is how long Close lets bridges finish on their own (the
// last RsyncExit on its way) before cancelling them.
const relayDrainGrace = 5 * time.Second

// tlsRsyncShell relays rsync through RsyncTunnel streams: rsync runs this
// georep executable as `georep rsync-relay --socket S -- <host> rsync
// --server --daemon .`, which connects to a socket this master listens on,
// and each connection is bridged to one stream.
//
// A Unix socket rather than a descriptor inherited through rsync: rsync
// starts its remote shell itself, and what it passes on besides stdio is
// not promised, while a socket in a 0700 directory is reachable by this
// user only and its path survives any exec.
func (c *Conn) tlsRsyncShell(ctx context.Context) (*RsyncShell, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("rsync over mTLS: find this georep executable to run as rsync's relay: %w", err)
	}
	// The bridge's failures go where the rest of this connection's events
	// go (the master's logger), not to the process-wide default.
	logger := c.opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return c.relayShell(ctx, exe, logger)
}

// relayShell is tlsRsyncShell with the georep program rsync runs as its
// relay (tests pass a built georep; the master is georep itself).
func (c *Conn) relayShell(ctx context.Context, georep string, logger *slog.Logger) (*RsyncShell, error) {
	dir, err := os.MkdirTemp("", "georep-rsync-relay-")
	if err != nil {
		return nil, fmt.Errorf("rsync over mTLS: make the relay socket's directory: %w", err)
	}
	// MkdirTemp makes it 0700; say so in case a umask or library changes.
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("rsync over mTLS: restrict the relay socket's directory: %w", err)
	}
	sock := filepath.Join(dir, "relay.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("rsync over mTLS: listen on the relay socket %s: %w", sock, err)
	}
	bctx, cancel := context.WithCancel(ctx)
	r := &relay{conn: c, ln: ln, dir: dir, ctx: bctx, cancel: cancel, logger: logger}
	r.wg.Go(r.accept)
	// A cancelled ctx ends the shell as Close would; stopping the
	// AfterFunc in Close keeps it from outliving the shell.
	r.stopOnCtx = context.AfterFunc(ctx, func() { ln.Close() })
	return &RsyncShell{
		Command: []string{georep, RsyncRelayCommand, "--socket", sock, "--"},
		Host:    c.url.Host,
		Close:   r.close,
	}, nil
}

// relay is the master's end of tlsRsyncShell: a listener whose connections
// are each bridged to an RsyncTunnel stream.
type relay struct {
	conn      *Conn
	ln        *net.UnixListener
	dir       string
	ctx       context.Context
	cancel    context.CancelFunc
	logger    *slog.Logger
	stopOnCtx func() bool

	wg        sync.WaitGroup // the accept loop and every bridge
	closeOnce sync.Once
	closeErr  error
}

func (r *relay) accept() {
	for {
		nc, err := r.ln.AcceptUnix()
		if err != nil {
			// Closed by Close or by the shell's context: no more relays.
			return
		}
		r.wg.Go(func() {
			if err := r.bridge(nc); err != nil {
				r.logger.Warn("rsync tunnel to the slave failed", "slave", r.conn.url.String(), "err", err)
			}
		})
	}
}

// close stops accepting, lets running bridges finish for a moment, then
// cancels the rest and waits for them; it removes the socket directory.
func (r *relay) close() error {
	r.closeOnce.Do(func() {
		r.stopOnCtx()
		r.ln.Close()
		done := make(chan struct{})
		go func() {
			r.wg.Wait()
			close(done)
		}()
		timer := time.NewTimer(relayDrainGrace)
		select {
		case <-done:
		case <-timer.C:
			r.cancel()
			<-done
		}
		timer.Stop()
		r.cancel()
		if err := os.RemoveAll(r.dir); err != nil {
			r.closeErr = fmt.Errorf("remove the rsync relay socket directory: %w", err)
		}
	})
	return r.closeErr
}

// bridge carries one relay connection over one RsyncTunnel stream until
// both directions end: socket EOF becomes an eof request, the RsyncExit
// closes the socket's write side. A non-zero exit is returned with the
// daemon's stderr, so rsync's own error message is explained.
func (r *relay) bridge(nc *net.UnixConn) error {
	defer nc.Close()
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	// The stream goes over the Conn's gRPC connection, so its interceptors
	// add the volume metadata as for every other call.
	stream, err := r.conn.Slave.RsyncTunnel(ctx)
	if err != nil {
		return fmt.Errorf("open an rsync tunnel: %w", err)
	}
	// A cancelled bridge must also unblock the socket read below.
	stopClose := context.AfterFunc(ctx, func() { nc.Close() })
	defer stopClose()

	upErr := make(chan error, 1)
	go func() {
		err := sendSocket(stream, nc)
		if errors.Is(err, errRelayRead) {
			// rsync's side broke: the daemon will never get its input.
			cancel()
		}
		upErr <- err
	}()

	exit, downErr := recvStream(stream, nc)
	if downErr != nil {
		cancel() // ends sendSocket: the socket closes, the stream is cancelled
	}
	uerr := <-upErr
	switch {
	case downErr != nil:
		return downErr
	case exit == nil:
		if uerr != nil {
			return uerr
		}
		return errors.New("the rsync tunnel ended without the daemon's exit status")
	case exit.GetCode() != 0:
		return fmt.Errorf("the slave's rsync daemon exited with code %d: %s", exit.GetCode(), exit.GetStderr())
	}
	return nil
}

// errRelayRead marks a failed read of the relay connection, as opposed to
// a failed Send, whose reason the stream's Recv reports.
var errRelayRead = errors.New("read the rsync relay connection")

// sendSocket sends what the relay writes to the stream, then eof.
func sendSocket(stream pb.Slave_RsyncTunnelClient, nc *net.UnixConn) error {
	buf := make([]byte, relayChunk)
	for {
		n, err := nc.Read(buf)
		if n > 0 {
			// A fresh slice per message: gRPC may still hold the last one.
			if serr := stream.Send(&pb.RsyncTunnelRequest{Data: append([]byte(nil), buf[:n]...)}); serr != nil {
				// The real reason arrives on Recv; stop reading.
				return fmt.Errorf("send to the rsync tunnel: %w", serr)
			}
		}
		if errors.Is(err, io.EOF) {
			if serr := stream.Send(&pb.RsyncTunnelRequest{Eof: true}); serr != nil {
				return fmt.Errorf("send eof to the rsync tunnel: %w", serr)
			}
			return stream.CloseSend()
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errRelayRead, err)
		}
	}
}

// recvStream writes the daemon's output to the socket until the stream
// ends, closing the socket's write side at the RsyncExit, which it returns.
func recvStream(stream pb.Slave_RsyncTunnelClient, nc *net.UnixConn) (*pb.RsyncExit, error) {
	var exit *pb.RsyncExit
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return exit, nil
		}
		if err != nil {
			return exit, fmt.Errorf("rsync tunnel: %w", err)
		}
		if d := resp.GetData(); len(d) > 0 {
			if _, err := nc.Write(d); err != nil {
				return exit, fmt.Errorf("write to the rsync relay connection (did rsync exit?): %w", err)
			}
		}
		if e := resp.GetExit(); e != nil {
			exit = e
			if err := nc.CloseWrite(); err != nil {
				return exit, fmt.Errorf("close the rsync relay connection's write side: %w", err)
			}
		}
	}
}

// RunRsyncRelay is the rsync-relay subcommand: it connects to the master's
// relay socket and copies in to the socket and the socket to out, until
// the socket's side ends (the slave's daemon has exited).
func RunRsyncRelay(ctx context.Context, socket string, in io.Reader, out io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("connect to the master's rsync relay socket %s: %w (the georep master that ran this rsync has ended its rsync session; rsync-relay is run by rsync -e, not by hand)", socket, err)
	}
	nc := c.(*net.UnixConn)
	defer nc.Close()
	upDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(nc, in)
		if cerr := nc.CloseWrite(); err == nil {
			err = cerr
		}
		upDone <- err
	}()
	_, err = io.Copy(out, nc)
	if err != nil {
		return fmt.Errorf("relay the slave's rsync output: %w", err)
	}
	// The daemon is done. Wait for rsync's side only if it can be
	// interrupted; otherwise it ends with this process.
	if dl, ok := in.(interface{ SetReadDeadline(time.Time) error }); ok && dl.SetReadDeadline(time.Now()) == nil {
		<-upDone
	}
	return nil
}
