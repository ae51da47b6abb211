package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/georep/georep/internal/pipeconn"
	"github.com/georep/georep/internal/tailbuf"
)

// stderrKeep is how much of a child's stderr is kept for error reports:
// the last 1 MiB, like gsyncd's ring buffer.
const stderrKeep = 1 << 20

// procConn is a net.Conn over a child process's stdin and stdout: the
// process is ssh (running georep slave --stdio remotely) or a local
// georep slave --stdio. Closing it shuts the child down politely, then
// firmly: close stdin, wait, SIGTERM, wait, SIGKILL.
type procConn struct {
	*pipeconn.Conn
	cmd    *exec.Cmd
	stderr *tailbuf.Buffer
	exited chan struct{}
	// waitErr is written before exited is closed.
	waitErr error
	// hangUp, set by finish, has Close end the child at once instead of
	// waiting for it to exit on its own.
	hangUp atomic.Bool

	closeOnce sync.Once
}

// startProc starts argv and returns a connection over its stdio.
func startProc(argv []string, env []string) (*procConn, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if env != nil {
		cmd.Env = env
	}
	// A process group of its own, so a terminal's Ctrl-C reaches the
	// master first and the master shuts the child down in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe for %s: %w", argv[0], err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe for %s: %w", argv[0], err)
	}
	p := &procConn{cmd: cmd, stderr: tailbuf.New(stderrKeep), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p.Conn = pipeconn.New(stdout, stdin)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Close ends the child: stdin closed first (the slave exits when its
// master goes away), then SIGTERM, then SIGKILL. After finish, SIGTERM
// comes at once. It is idempotent, since gRPC may close a transport twice.
func (p *procConn) Close() error {
	p.closeOnce.Do(func() {
		_ = p.Conn.Close()
		steps := []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{0, 3 * time.Second}, {syscall.SIGTERM, 2 * time.Second}, {syscall.SIGKILL, 5 * time.Second}}
		if p.hangUp.Load() {
			steps = steps[1:]
		}
		for _, s := range steps {
			if s.sig != 0 {
				_ = p.cmd.Process.Signal(s.sig)
			}
			select {
			case <-p.exited:
				return
			case <-time.After(s.wait):
			}
		}
	})
	return nil
}

// finish marks a child whose work is all acknowledged: Close need not
// wait for it to exit on its own. For ssh that wait is a round trip (ssh
// exits once the remote side has sent the slave's exit status and closed
// the channel); ended by SIGTERM, ssh drops the TCP connection, and sshd
// closes the slave's stdin, which ends the slave as a master's goodbye
// does.
func (p *procConn) finish() {
	p.hangUp.Store(true)
}

// Kill ends the child at once (used by tests of a broken connection).
func (p *procConn) Kill() {
	_ = p.cmd.Process.Kill()
}

// exitStatus waits up to d for the child to exit and describes how it ended.
func (p *procConn) exitStatus(d time.Duration) (exited bool, code int, err error) {
	select {
	case <-p.exited:
	case <-time.After(d):
		return false, 0, nil
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		return true, ee.ExitCode(), p.waitErr
	}
	return true, 0, p.waitErr
}

// procDialer hands gRPC the connection over one child process. A second
// dial (gRPC reconnecting after the process died) is refused with what the
// process said, so the caller's session loop starts a fresh process and
// handshakes again instead of gRPC silently talking to a new slave.
type procDialer struct {
	mu      sync.Mutex
	conn    *procConn
	dialed  bool
	explain func(*procConn) error
}

func (d *procDialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dialed {
		return nil, d.explain(d.conn)
	}
	d.dialed = true
	return d.conn, nil
}

// lastLines returns the last n non-empty lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var keep []string
	for i := len(lines) - 1; i >= 0 && len(keep) < n; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			keep = append([]string{lines[i]}, keep...)
		}
	}
	return strings.Join(keep, "\n")
}
