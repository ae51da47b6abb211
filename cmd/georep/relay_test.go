package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/client"
)

// rsyncAppends is what rsync adds after the -e command for a daemon over a
// remote shell, with and without a user name.
var rsyncAppends = [][]string{
	{"127.0.0.1", "rsync", "--server", "--daemon", "."},
	{"-l", "bob", "slave.example", "rsync", "--server", "--daemon", "."},
}

// TestRsyncRelayCopiesBothWays: the relay joins its stdio to the socket,
// passes each side's end on (stdin EOF becomes the socket's half-close) and
// ignores the words rsync appends.
func TestRsyncRelayCopiesBothWays(t *testing.T) {
	bin := buildGeorep(t)
	for _, appended := range rsyncAppends {
		t.Run(strings.Join(appended, " "), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "relay.sock")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			args := append([]string{client.RsyncRelayCommand, "--socket", sock, "--"}, appended...)
			cmd := exec.CommandContext(ctx, bin, args...)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The master's side: read what rsync sent up to its EOF, then
			// answer and half-close, as the bridge does at the daemon's exit.
			if err := ln.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
				t.Fatal(err)
			}
			conn, err := ln.AcceptUnix()
			if err != nil {
				t.Fatalf("accept the relay: %v (relay stderr: %s)", err, stderr.String())
			}
			defer conn.Close()
			if _, err := io.WriteString(stdin, "@RSYNCD: 31.0\ngeorep\n"); err != nil {
				t.Fatal(err)
			}
			stdin.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			up, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("read from the relay: %v", err)
			}
			if string(up) != "@RSYNCD: 31.0\ngeorep\n" {
				t.Errorf("the socket got %q, want what rsync wrote", up)
			}
			if _, err := conn.Write([]byte("@RSYNCD: OK\n")); err != nil {
				t.Fatal(err)
			}
			if err := conn.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("relay: %v; stderr: %s", err, stderr.String())
			}
			if stdout.String() != "@RSYNCD: OK\n" {
				t.Errorf("the relay's stdout got %q, want what the socket sent", stdout.String())
			}
		})
	}
}

// TestRsyncRelayRefusesWithoutSocket: a relay whose master has ended its
// rsync session (the socket is gone) exits 1 saying so; one run by hand
// without --socket is a usage error.
func TestRsyncRelayRefusesWithoutSocket(t *testing.T) {
	bin := buildGeorep(t)
	gone := filepath.Join(t.TempDir(), "relay.sock")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"socket gone", append([]string{client.RsyncRelayCommand, "--socket", gone, "--"}, rsyncAppends[0]...), 1,
			"has ended its rsync session"},
		{"no socket flag", []string{client.RsyncRelayCommand}, 1, `required flag(s) "socket" not set`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("relay: %v, stderr %q; want exit %d saying %q", err, stderr.String(), tc.wantCode, tc.wantErr)
			}
		})
	}
}
