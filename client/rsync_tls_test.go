package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/rsyncd"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/testsshd"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/internal/treegen"
)

// tunnelSlave is a `georep slave --listen` over mTLS and a master's
// connection to it, with the stage area of the slave root it writes.
type tunnelSlave struct {
	conn  *Conn
	stage string // <root>/.georep/stage, the daemon's module
	log   *testbuf.Buffer
	slave *listenSlave
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
	return tunnelSlave{conn: c, stage: filepath.Join(root, ".georep", "stage"), log: d.stderr, slave: d}
}

// openRelay opens the mTLS rsync shell with the built georep as the relay,
// logging to the returned buffer, and closes it when the test ends.
func openRelay(t *testing.T, c *Conn) (*RsyncShell, *testbuf.Buffer) {
	t.Helper()
	logs := &testbuf.Buffer{}
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
	args := append([]string{"-rlptgo", "-e", strings.Join(shell.Command, " ")}, extra...)
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

// procStatus is one process's pid, parent and process group, from /proc.
type procStatus struct{ pid, ppid, pgrp int }

// allProcs reads /proc/PID/stat of every process (zombies included).
func allProcs(t *testing.T) []procStatus {
	t.Helper()
	paths, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []procStatus
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // it exited meanwhile
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:]) // state ppid pgrp ...
		if len(f) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(s[:open]))
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, procStatus{pid, ppid, pgrp})
	}
	return out
}

// TestRsyncTunnelCutKillsDaemon: when the master's connection goes away in
// the middle of a transfer, the slave kills the daemon and its forked
// receiver and reaps them (no process, not even a zombie, is left in the
// daemon's group), and the master's rsync fails.
func TestRsyncTunnelCutKillsDaemon(t *testing.T) {
	s := startTunnelSlave(t, "")
	shell, _ := openRelay(t, s.conn)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "slow.bin"), treegen.Random(11, 32<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	go func() {
		// 1 MiB/s: the transfer is still running when the connection is cut.
		cmd := exec.CommandContext(ctx, "rsync", "-rlptgo", "--bwlimit=1024", "-e", strings.Join(shell.Command, " "),
			src+"/", shell.Host+"::georep/s1/")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			done <- result{0, string(out)}
		case errors.As(err, &ee):
			done <- result{ee.ExitCode(), string(out)}
		default:
			done <- result{-1, err.Error()}
		}
	}()
	// The receiver has forked when its temp file appears in the stage.
	var groups []int
	mtlsPoll(t, 30*time.Second, "rsync's temp file appears in the stage area", func() bool {
		m, _ := filepath.Glob(filepath.Join(s.stage, "s1", ".slow.bin.*"))
		return len(m) > 0
	})
	slavePid := s.slave.cmd.Process.Pid
	var inGroup []int
	for _, p := range allProcs(t) {
		if p.ppid == slavePid {
			groups = append(groups, p.pgrp)
		}
	}
	for _, p := range allProcs(t) {
		if slices.Contains(groups, p.pgrp) {
			inGroup = append(inGroup, p.pid)
		}
	}
	if len(groups) != 1 || len(inGroup) < 2 {
		t.Fatalf("daemon groups %v holding %v: want one daemon with its forked receiver", groups, inGroup)
	}

	if err := s.conn.Close(); err != nil {
		t.Fatalf("close the master's connection: %v", err)
	}
	mtlsPoll(t, 15*time.Second, "every process of the daemon's group is gone", func() bool {
		for _, p := range allProcs(t) {
			if slices.Contains(groups, p.pgrp) {
				return false
			}
		}
		return true
	})
	select {
	case r := <-done:
		if r.code == 0 {
			t.Errorf("the master's rsync succeeded after its tunnel was cut:\n%s", r.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the master's rsync still runs 30s after its tunnel was cut")
	}
}

// TestRsyncTunnelThroughput moves 64 MiB with rsync -a (a whole file, as on
// a first sync) to the same slave's confined rsync daemon through the mTLS
// tunnel and over ssh (daemon over ssh, as the ssh transport runs it), and
// logs both rates: the tunnel's cost is gRPC framing and TLS instead of ssh.
func TestRsyncTunnelThroughput(t *testing.T) {
	const size = 64 << 20
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "big.bin"), treegen.Random(5, size), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startTunnelSlave(t, "")
	shell, _ := openRelay(t, ts.conn)

	sshd := testsshd.Start(t, testsshd.Options{})
	sshStage := filepath.Join(t.TempDir(), ".georep", "stage")
	if err := os.MkdirAll(sshStage, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "rsyncd.conf")
	if err := os.WriteFile(conf, []byte(rsyncd.Config(sshStage, os.Getuid(), os.Getgid())), 0o600); err != nil {
		t.Fatal(err)
	}
	overSSH := &RsyncShell{Command: append([]string{"ssh"}, sshd.SSHArgs()...), Host: sshd.Host}

	tests := []struct {
		name  string
		shell *RsyncShell
		stage string
		extra []string
	}{
		{"mtls tunnel", shell, ts.stage, nil},
		{"daemon over ssh", overSSH, sshStage, []string{"--rsync-path", "rsync --config=" + conf}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var times []time.Duration
			for i := range 3 {
				dest := fmt.Sprintf("run%d", i)
				start := time.Now()
				code, out := runRsync(t, tc.shell, src+"/", "georep/"+dest+"/", tc.extra...)
				times = append(times, time.Since(start))
				if code != 0 {
					t.Fatalf("rsync exited %d:\n%s", code, out)
				}
				if !treecmp.Compare(t, src, filepath.Join(tc.stage, dest), treecmp.Options{}) {
					t.Fatalf("run %d: the stage differs from the source", i)
				}
			}
			slices.Sort(times)
			med := times[len(times)/2]
			t.Logf("%s: 64 MiB in %v (median of 3; all %v), %.0f MiB/s", tc.name, med.Round(time.Millisecond), times,
				float64(size)/(1<<20)/med.Seconds())
		})
	}
}

// TestRsyncModeOverMTLS is the whole path: `georep master --once
// --sync-mode rsync` to a `georep slave --listen` daemon, its file data
// through rsync-relay and RsyncTunnel, first a fresh tree and then a second
// wave of changes (renames, links, rewrites) on top of it.
func TestRsyncModeOverMTLS(t *testing.T) {
	tests := []struct {
		name   string
		volume string
	}{
		{"unnamed root", ""},
		{"named volume", "v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newMTLSPKI(t)
			master, slave, state := t.TempDir(), t.TempDir(), t.TempDir()
			args := append(pki.serverArgs(), "--allow", "m1")
			if tc.volume == "" {
				args = append(args, "--root", slave)
			} else {
				args = append(args, "--volume", tc.volume+"="+slave)
			}
			d := startListenSlave(t, "127.0.0.1:0", args...)
			opts := pki.clientOptions("m1")
			once := func(t *testing.T) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, georepBin, "master", "--once", "--sync-mode", "rsync",
					"--root", master, "--slave", d.url(t, tc.volume).String(), "--state", state,
					"--cert", opts.CertFile, "--key", opts.KeyFile, "--ca", opts.CAFile, "--progress=false")
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("georep master --once --sync-mode rsync: %v\n%s\nslave log:\n%s", err, out, d.stderr)
				}
			}
			treegen.First(t, master)
			once(t)
			treecmp.Compare(t, master, slave, treecmp.Options{})
			treegen.SecondWave(t, master)
			once(t)
			treecmp.Compare(t, master, slave, treecmp.Options{})
			if !strings.Contains(d.stderr.String(), "grpc.method=RsyncTunnel") {
				t.Errorf("the slave served no RsyncTunnel: the data did not go through the tunnel")
			}
		})
	}
}
