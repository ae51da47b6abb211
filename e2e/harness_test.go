package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/testsshd"
	"github.com/georep/georep/internal/treecmp"
)

// inCI shrinks counts so the package stays quick on a shared runner.
func inCI() bool { return os.Getenv("CI") == "true" }

// onceTimeout bounds one `georep master --once`.
const onceTimeout = 2 * time.Minute

// session is one master → slave pair over its own sshd.
type session struct {
	master, slave, state string
	sshd                 *testsshd.Server
}

// newSession starts an sshd whose key is pinned to `georep slave --stdio
// --root slave`, and a state directory for the master.
func newSession(t *testing.T, master, slave string) *session {
	t.Helper()
	for _, d := range []string{master, slave} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	forced := fmt.Sprintf(`restrict,command="%s slave --stdio --root %s"`, georepBin, slave)
	return &session{
		master: master,
		slave:  slave,
		state:  t.TempDir(),
		sshd:   testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: forced}),
	}
}

func (s *session) url() string {
	return fmt.Sprintf("ssh://%s@%s:%d%s", s.sshd.User, s.sshd.Host, s.sshd.Port, s.slave)
}

func (s *session) args(extra ...string) []string {
	return append([]string{"master", "--root", s.master, "--slave", s.url(), "--state", s.state,
		"--ssh-command", s.sshd.SSHCommand()}, extra...)
}

// once runs `georep master --once` and returns its combined output and
// its error (an *exec.ExitError for a non-zero exit).
func (s *session) once(t *testing.T, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), onceTimeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, georepBin, s.args(append([]string{"--once"}, extra...)...)...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("georep master --once %s did not finish within %v:\n%s", strings.Join(extra, " "), onceTimeout, out)
	}
	t.Logf("georep master --once %s: %v in %v", strings.Join(extra, " "), err, time.Since(start).Round(time.Millisecond))
	return string(out), err
}

// mustOnce runs --once and fails the test unless it exits 0.
func (s *session) mustOnce(t *testing.T, extra ...string) {
	t.Helper()
	if out, err := s.once(t, extra...); err != nil {
		t.Fatalf("georep master --once %s: %v\n%s\nsshd:\n%s", strings.Join(extra, " "), err, out, s.sshd.Log())
	}
}

// proc is a continuous `georep master` running in the background. The
// test owns it; a cleanup kills it if the test did not stop it.
type proc struct {
	cmd  *exec.Cmd
	out  *testbuf.Buffer
	done chan struct{}
	err  error // set before done closes
}

func (s *session) start(t *testing.T, extra ...string) *proc {
	t.Helper()
	p := &proc{out: &testbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(georepBin, s.args(extra...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start georep master: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("georep master (pid %d) output:\n%s", p.cmd.Process.Pid, tail(p.out.String(), 8000))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to within for the master to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		t.Fatalf("signal the master: %v", err)
	}
	select {
	case <-p.done:
		return time.Since(start), p.err
	case <-time.After(within):
		t.Fatalf("the master did not exit within %v of %v; output:\n%s", within, sig, tail(p.out.String(), 4000))
		return 0, nil
	}
}

// kill9 kills the master at once, as a crash would, and reaps it.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil && !p.exited() {
		t.Fatalf("kill -9 the master: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the master did not die within 10s of SIGKILL")
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

// waitEqual polls until the slave equals the master, failing the test with
// the remaining differences at the deadline. A master that exits fails it
// at once.
func waitEqual(t *testing.T, p *proc, master, slave string, opts treecmp.Options, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	var last []string
	for {
		diffs, err := treecmp.Differences(master, slave, opts)
		// A tree changing under the walk makes transient errors; only the
		// deadline turns them into a failure.
		if err == nil && len(diffs) == 0 {
			return time.Since(start)
		}
		if err != nil {
			last = []string{err.Error()}
		} else {
			last = diffs
		}
		if p != nil && p.exited() {
			t.Fatalf("the master exited (%v) before the slave converged; still:\n%s", p.err, treecmp.Format(last))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slave did not converge within %v; still %d differences:\n%s", within, len(last), treecmp.Format(last))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitStatus polls the session's status.json until ok accepts it.
func waitStatus(t *testing.T, state string, within time.Duration, what string, ok func(*status.Status) bool) *status.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	var last *status.Status
	var lastErr error
	for {
		st, err := status.Read(state)
		if err == nil && ok(st) {
			return st
		}
		if err == nil {
			last = st
		}
		lastErr = err
		if time.Now().After(deadline) {
			t.Fatalf("status never showed %s within %v; last %+v (read error %v)", what, within, last, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pollStatus polls the session's status.json until ok accepts it or within
// passes; it returns the last status read (zero if none) and whether ok did.
func pollStatus(state string, within time.Duration, ok func(*status.Status) bool) (status.Status, bool) {
	deadline := time.Now().Add(within)
	var last status.Status
	for {
		if st, err := status.Read(state); err == nil {
			last = *st
			if ok(st) {
				return last, true
			}
		}
		if time.Now().After(deadline) {
			return last, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exitCode is the process exit status in err, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// slaveInodes records the slave inodes of the moves' sources.
func slaveInodes(t *testing.T, slave string, rels []string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, r := range rels {
		out[r] = treecmp.Inode(t, filepath.Join(slave, r))
	}
	return out
}
