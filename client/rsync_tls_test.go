package client

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/internal/treegen"
)

// tunnelSlave is a `georep slave --listen` over mTLS and a master's
// connection to it, with the stage area of the slave root it writes.
type tunnelSlave struct {
	conn  *Conn
	stage string // <root>/.georep/stage, the daemon's module
	log   *mtlsStderr
}

// startTunnelSlave serves root over mTLS, as one unnamed root or as volume
// (when not empty) beside another, and dials it as master m1.
func startTunnelSlave(t *testing.T, volume string) tunnelSlave {
	t.Helper()
	pki := newMTLSPKI(t)
	root := t.TempDir()
	args := append(pki.serverArgs(), "--allow", "m1")
	if volume == "" {
		args = append(args, "--root", root)
	} else {
		args = append(args, "--volume", volume+"="+root, "--volume", "other="+t.TempDir())
	}
	d := startListenSlave(t, "127.0.0.1:0", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialTLS(ctx, d.url(t, volume), pki.clientOptions("m1"))
	if err != nil {
		t.Fatalf("dial mTLS slave: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return tunnelSlave{conn: c, stage: filepath.Join(root, ".georep", "stage"), log: d.stderr}
}

// openRelay opens the mTLS rsync shell with the built georep as the relay,
// logging to the returned buffer, and closes it when the test ends.
func openRelay(t *testing.T, c *Conn) (*RsyncShell, *mtlsStderr) {
	t.Helper()
	logs := &mtlsStderr{}
	shell, err := c.relayShell(context.Background(), georepBin, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("open the rsync relay: %v", err)
	}
	t.Cleanup(func() {
		if err := shell.Close(); err != nil {
			t.Errorf("close the rsync relay: %v", err)
		}
	})
	return shell, logs
}

// runRsync runs rsync through shell to dest (a daemon path such as
// georep/s1/) and returns its exit code and combined output.
func runRsync(t *testing.T, shell *RsyncShell, src, dest string, extra ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"-a", "-e", strings.Join(shell.Command, " ")}, extra...)
	args = append(args, src, shell.Host+"::"+dest)
	cmd := exec.CommandContext(ctx, "rsync", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("run rsync: %v\n%s", err, out)
	}
	return 0, string(out)
}

func TestRsyncTunnelDeliversFiles(t *testing.T) {
	tests := []struct {
		name   string
		volume string
	}{
		{"unnamed root", ""},
		{"named volume", "v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startTunnelSlave(t, tc.volume)
			shell, logs := openRelay(t, s.conn)
			// What the stage area takes: files and directories (the daemon
			// refuses xattrs and munges symlinks; the master sends data only).
			src := t.TempDir()
			files := map[string]int{"a/small": 10, "a/b/empty": 0, "c d/ünï": 4096, "big.bin": 5 << 20}
			for rel, size := range files {
				p := filepath.Join(src, rel)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, treegen.Random(uint64(size), size), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			// Twice: the second run goes through a new tunnel and finds
			// everything there (the relay serves more than one rsync).
			for round := range 2 {
				code, out := runRsync(t, shell, src+"/", "georep/s1/")
				if code != 0 {
					t.Fatalf("round %d: rsync exited %d:\n%s\nrelay log:\n%s\nslave log:\n%s", round, code, out, logs, s.log)
				}
			}
			if !treecmp.Compare(t, src, filepath.Join(s.stage, "s1"), treecmp.Options{}) {
				t.Errorf("the stage area differs from the source")
			}
			if got := logs.String(); got != "" {
				t.Errorf("relay logged on success: %s", got)
			}
		})
	}
}

func TestRsyncTunnelReportsDaemonFailure(t *testing.T) {
	// Before the daemon multiplexes its output, its errors go to its stderr
	// only (with ssh they would reach rsync's stderr): the master's log
	// carries them.
	tests := []struct {
		name     string
		dest     string
		extra    []string
		wantOut  string // in rsync's own output
		wantCode int    // rsync's exit code
		wantLog  string // in the master's log of the daemon's exit
	}{
		{"unknown module", "nomodule/x/", nil, "Unknown module 'nomodule'", 5, "code 255: "},
		{"refused option", "georep/x/", []string{"--delete"}, "", 4, "configured to refuse --delete"},
	}
	s := startTunnelSlave(t, "")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			shell, logs := openRelay(t, s.conn)
			code, out := runRsync(t, shell, src+"/", tc.dest, tc.extra...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
				t.Errorf("rsync exited %d with:\n%s\nwant exit %d and %q", code, out, tc.wantCode, tc.wantOut)
			}
			// The daemon's exit reaches the master's log with its stderr.
			mtlsPoll(t, 10*time.Second, "the relay logs the daemon's exit", func() bool {
				return strings.Contains(logs.String(), "the slave's rsync daemon exited with code") &&
					strings.Contains(logs.String(), tc.wantLog)
			})
		})
	}
}

// TestRsyncRelayClosed: once the shell is closed, its socket is gone and
// an rsync through it fails at once, saying why.
func TestRsyncRelayClosed(t *testing.T) {
	s := startTunnelSlave(t, "")
	shell, err := s.conn.relayShell(context.Background(), georepBin, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sock := shell.Command[3]
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("relay socket directory: %v, mode %v; want 0700", err, fi.Mode())
	}
	for range 2 { // Close is idempotent
		if err := shell.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
		t.Errorf("relay socket directory still there after Close: %v", err)
	}
	src := t.TempDir()
	code, out := runRsync(t, shell, src+"/", "georep/s1/")
	if code == 0 || !strings.Contains(out, "ended its rsync session") {
		t.Errorf("rsync through a closed relay exited %d with:\n%s\nwant a failure naming the ended session", code, out)
	}
}

// TestRsyncRelayShellContext: cancelling the context the shell was opened
// with stops its listener, as Close would.
func TestRsyncRelayShellContext(t *testing.T) {
	s := startTunnelSlave(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	shell, err := s.conn.relayShell(ctx, georepBin, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer shell.Close()
	cancel()
	sock := shell.Command[3]
	mtlsPoll(t, 5*time.Second, "the relay socket is removed", func() bool {
		_, err := os.Stat(sock)
		return os.IsNotExist(err)
	})
}
