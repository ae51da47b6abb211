package testsshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/testbin"
)

func TestSSHRunsCommands(t *testing.T) {
	s := Start(t, Options{})
	out, err := exec.Command("ssh", append(s.SSHArgs(), s.Host, "echo", "hello")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s\nsshd: %s", err, out, s.Log())
	}
	if got := strings.TrimSpace(string(out)); got != "hello" {
		t.Fatalf("ssh echo printed %q, want hello", got)
	}

	// A forced command replaces whatever the client asks for.
	s.SetAuthorizedKeyOptions(t, `restrict,command="echo forced"`)
	out, err = exec.Command("ssh", append(s.SSHArgs(), s.Host, "echo", "asked")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "forced" {
		t.Fatalf("forced command printed %q, want forced", got)
	}
}

// holdEnv makes TestSSHDDiesWithItsTest's child: it starts a daemon, says
// where, and waits to be killed.
const holdEnv = "GEOREP_TESTSSHD_HOLD"

// TestSSHDDiesWithItsTest: a test process killed outright runs no
// cleanup, and its sshd still goes with it instead of listening on; one
// interrupted (SIGINT, SIGTERM) also takes the daemon's directory and
// keys with it.
func TestSSHDDiesWithItsTest(t *testing.T) {
	if os.Getenv(holdEnv) != "" {
		s := Start(t, Options{})
		fmt.Printf("SSHD %s %d\n", s.Dir, s.Port)
		time.Sleep(time.Minute)
		t.Fatal("not killed within a minute")
	}
	tests := []struct {
		name    string
		sig     syscall.Signal
		dirGone bool
	}{
		{name: "SIGKILL", sig: syscall.SIGKILL},
		{name: "SIGTERM", sig: syscall.SIGTERM, dirGone: true},
		{name: "SIGINT", sig: syscall.SIGINT, dirGone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			child := testbin.StartChild(ctx, t, "TestSSHDDiesWithItsTest", holdEnv+"=1", "SSHD")
			cmd := child.Cmd
			var dir string
			var port int
			if len(child.Fields) == 2 {
				dir = child.Fields[0]
				port, _ = strconv.Atoi(child.Fields[1])
			}
			if dir == "" || port == 0 {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("the child reported %q, want its sshd's directory and port", child.Fields)
			}
			defer os.RemoveAll(filepath.Dir(dir))
			// sshd writes its pid file a moment after it listens.
			var pid int
			for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
				if b, err := os.ReadFile(filepath.Join(dir, "sshd.pid")); err == nil {
					pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				}
				if pid == 0 && time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatalf("no pid file in %s", dir)
				}
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != tc.sig {
				t.Errorf("the child ended with %v, not killed by %v:\n%s", cmd.ProcessState, tc.sig, child.Stderr.String())
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				// Gone, or a zombie: no longer sshd either way.
				stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				if errors.Is(err, os.ErrNotExist) || strings.Contains(string(stat), ") Z ") {
					break
				}
				if time.Now().After(deadline) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("sshd (pid %d) still runs 10s after its test process was killed", pid)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := os.Stat(dir); tc.dirGone && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the daemon's directory %s (keys included) is still there: %v", dir, err)
			}
			if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
				c.Close()
				t.Errorf("something still listens on the dead sshd's port %d", port)
			}
		})
	}
}
