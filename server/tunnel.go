package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/rsyncd"
	"github.com/georep/georep/internal/tailbuf"
	pb "github.com/georep/georep/proto/georep/v1"
)

const (
	// MaxRsyncTunnels bounds the RsyncTunnel calls one Service runs at
	// once: each is an rsync daemon process on the slave.
	MaxRsyncTunnels = 8
	// tunnelChunk is the most daemon output one response carries.
	tunnelChunk = 256 << 10
	// tunnelStderrTail is how much of the daemon's stderr RsyncExit keeps
	// (the end, where rsync says why it stopped).
	tunnelStderrTail = 64 << 10
	// tunnelKillGrace is how long a daemon has to exit after SIGTERM when
	// its stream is cancelled before it gets SIGKILL. SIGTERM first lets
	// rsync reap its own forked receiver: a child orphaned by SIGKILL would
	// be left to an init that may never reap it.
	tunnelKillGrace = 3 * time.Second
)

// RsyncTunnel runs the slave's confined rsync daemon (its only module is
// the staging area) and relays the stream to it: request data to its stdin
// (eof, or the master half-closing, closes stdin), its stdout to responses,
// and last an RsyncExit with its exit code and the tail of its stderr. When
// the stream is cancelled the daemon's process group is terminated and
// reaped. The call returns once the daemon is reaped and the master has
// half-closed, so nothing it started outlives it.
func (s *Service) RsyncTunnel(stream pb.Slave_RsyncTunnelServer) error {
	if n := s.tunnels.Add(1); n > MaxRsyncTunnels {
		s.tunnels.Add(-1)
		return status.Errorf(codes.ResourceExhausted,
			"this slave already runs %d rsync tunnels, its limit (each is an rsync daemon); retry when one ends", MaxRsyncTunnels)
	}
	defer s.tunnels.Add(-1)
	if s.backend == nil {
		return status.Error(codes.FailedPrecondition, "this slave has no root to run an rsync daemon for")
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	// The daemon's life is managed here (terminate the group, then reap),
	// not by exec's context kill, which would SIGKILL the leader alone.
	cmd, err := rsyncd.Command(context.WithoutCancel(ctx), s.backend.Root())
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "start the rsync daemon: %v", err)
	}
	d, err := startDaemon(cmd)
	if err != nil {
		return status.Errorf(codes.Internal, "start the rsync daemon: %v", err)
	}
	s.logger.Debug("rsync tunnel opened", "pid", d.cmd.Process.Pid)

	var wg sync.WaitGroup
	defer wg.Wait()
	// The watcher ends the daemon when the stream is cancelled.
	wg.Go(func() { d.killOnCancel(ctx) })
	// The pump owns stream.Send: stdout, then the exit.
	pumpErr := make(chan error, 1)
	wg.Go(func() { pumpErr <- d.pump(stream) })

	recvErr := d.feed(stream)
	if recvErr != nil {
		cancel()
	}
	err = <-pumpErr
	cancel()
	// The slave's operator sees why a master's rsync failed, too.
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		s.logger.Warn("rsync daemon of a tunnel failed", "pid", d.cmd.Process.Pid, "exit_code", code,
			"stream_cancelled", ctx.Err() != nil && recvErr != nil, "stderr", d.stderr.String())
	}
	if recvErr != nil {
		s.logger.Debug("rsync tunnel broken", "pid", d.cmd.Process.Pid, "err", recvErr)
		return recvErr
	}
	return err
}

// RsyncTunnel routes the stream to the named volume's Service.
func (v *Volumes) RsyncTunnel(stream pb.Slave_RsyncTunnelServer) error {
	svc, err := v.Service(stream.Context())
	if err != nil {
		return err
	}
	return svc.RsyncTunnel(stream)
}

// tunnelDaemon is one started rsync daemon and this process's ends of its
// stdin and stdout.
type tunnelDaemon struct {
	cmd    *exec.Cmd
	stdin  *os.File
	stdout *os.File
	stderr *tailbuf.Buffer
	// exited is closed once Wait has returned.
	exited chan struct{}
}

// startDaemon starts cmd in its own process group with its stdin and stdout
// on pipes and its stderr kept in a tail buffer.
func startDaemon(cmd *exec.Cmd) (*tunnelDaemon, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("make its stdin pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("make its stdout pipe: %w", err)
	}
	d := &tunnelDaemon{cmd: cmd, stdin: inW, stdout: outR, stderr: tailbuf.New(tunnelStderrTail), exited: make(chan struct{})}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, d.stderr
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// A group of its own, so the forked receiver is signalled with it.
	cmd.SysProcAttr.Setpgid = true
	err = cmd.Start()
	// The child has its copies; ours would keep its pipes open (no EOF)
	// and leak the config memfd.
	inR.Close()
	outW.Close()
	for _, f := range cmd.ExtraFiles {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	return d, nil
}

// feed copies the master's data to the daemon's stdin until the master
// half-closes. It returns nil then, or the stream's error. Data that
// arrives after the daemon stopped reading is dropped: the exit explains.
func (d *tunnelDaemon) feed(stream pb.Slave_RsyncTunnelServer) error {
	defer d.closeStdin()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.stdin != nil && len(req.GetData()) > 0 {
			if _, err := d.stdin.Write(req.GetData()); err != nil {
				// EPIPE: the daemon has exited or closed its stdin.
				d.closeStdin()
			}
		}
		if req.GetEof() {
			d.closeStdin()
		}
	}
}

func (d *tunnelDaemon) closeStdin() {
	if d.stdin != nil {
		d.stdin.Close()
		d.stdin = nil
	}
}

// pump sends the daemon's stdout in chunks until it ends, reaps the daemon
// and sends its RsyncExit.
func (d *tunnelDaemon) pump(stream pb.Slave_RsyncTunnelServer) error {
	sendErr := d.sendOutput(stream)
	d.stdout.Close()
	waitErr := d.cmd.Wait()
	close(d.exited)
	if sendErr != nil {
		return sendErr
	}
	if waitErr != nil && d.cmd.ProcessState == nil {
		return status.Errorf(codes.Internal, "wait for the rsync daemon: %v", waitErr)
	}
	// -1 when a signal ended it, as RsyncExit documents.
	code := int32(d.cmd.ProcessState.ExitCode())
	return stream.Send(&pb.RsyncTunnelResponse{Exit: &pb.RsyncExit{Code: code, Stderr: d.stderr.String()}})
}

// sendOutput relays stdout until EOF. After a failed Send it keeps reading
// (and drops) the output, so the daemon is never stuck on a full pipe
// while the watcher ends it.
func (d *tunnelDaemon) sendOutput(stream pb.Slave_RsyncTunnelServer) error {
	buf := make([]byte, tunnelChunk)
	var sendErr error
	for {
		n, err := d.stdout.Read(buf)
		if n > 0 && sendErr == nil {
			// A fresh slice per message: gRPC may still hold the last one.
			sendErr = stream.Send(&pb.RsyncTunnelResponse{Data: bytes.Clone(buf[:n])})
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return sendErr
			}
			if sendErr == nil {
				sendErr = status.Errorf(codes.Internal, "read the rsync daemon's output: %v", err)
			}
			return sendErr
		}
	}
}

// killOnCancel terminates the daemon's process group when ctx ends before
// the daemon exits: SIGTERM, then SIGKILL after tunnelKillGrace.
func (d *tunnelDaemon) killOnCancel(ctx context.Context) {
	select {
	case <-d.exited:
		return
	case <-ctx.Done():
	}
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	timer := time.NewTimer(tunnelKillGrace)
	defer timer.Stop()
	select {
	case <-d.exited:
	case <-timer.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}
