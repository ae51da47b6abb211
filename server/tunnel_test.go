package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/georep/georep/internal/testbuf"
	pb "github.com/georep/georep/proto/georep/v1"
)

// openTunnel opens an RsyncTunnel and reads the daemon's greeting, which
// proves the daemon runs.
func openTunnel(t *testing.T, ctx context.Context, c pb.SlaveClient) pb.Slave_RsyncTunnelClient {
	t.Helper()
	stream, err := c.RsyncTunnel(ctx)
	if err != nil {
		t.Fatalf("open RsyncTunnel: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("read the daemon's greeting: %v", err)
	}
	if !bytes.HasPrefix(resp.GetData(), []byte("@RSYNCD: ")) {
		t.Fatalf("first response %v, want the daemon's @RSYNCD greeting", resp)
	}
	return stream
}

// drainTunnel reads a tunnel to its end, returning the daemon's output and
// exit, and checks the exit is the last response.
func drainTunnel(t *testing.T, stream pb.Slave_RsyncTunnelClient) (string, *pb.RsyncExit) {
	t.Helper()
	var out bytes.Buffer
	var exit *pb.RsyncExit
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.String(), exit
		}
		if err != nil {
			t.Fatalf("tunnel: %v (output so far %q)", err, out.String())
		}
		if exit != nil {
			t.Fatalf("response %v after the exit", resp)
		}
		out.Write(resp.GetData())
		exit = resp.GetExit()
		if exit != nil {
			// The master half-closes once it has the exit; the call ends then.
			if err := stream.CloseSend(); err != nil {
				t.Fatalf("close send: %v", err)
			}
		}
	}
}

// rsyncChildren returns the rsync processes this test process started
// (the daemons of in-process tunnels), by pid.
func rsyncChildren(t *testing.T) []int {
	t.Helper()
	var pids []int
	for _, st := range procStats(t) {
		if st.ppid == os.Getpid() && st.comm == "rsync" {
			pids = append(pids, st.pid)
		}
	}
	return pids
}

type procStat struct {
	pid, ppid, pgrp int
	comm            string
	state           string
}

// procStats reads every process's /proc/PID/stat.
func procStats(t *testing.T) []procStat {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var out []procStat
	for _, p := range dirs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // it exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 3 {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(s[:open]))
		ppid, _ := strconv.Atoi(f[1])
		pgrp, _ := strconv.Atoi(f[2])
		out = append(out, procStat{pid: pid, ppid: ppid, pgrp: pgrp, comm: s[open+1 : close], state: f[0]})
	}
	return out
}

// inGroups lists the processes (zombies too) left in the process groups.
func inGroups(t *testing.T, pgids []int) []procStat {
	t.Helper()
	var left []procStat
	for _, st := range procStats(t) {
		for _, g := range pgids {
			if st.pgrp == g {
				left = append(left, st)
			}
		}
	}
	return left
}

// pollUntil polls cond every 20ms, failing the test after within.
func pollUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRsyncTunnelDaemonExit: what the daemon says and how it exits reach
// the master, the exit last.
func TestRsyncTunnelDaemonExit(t *testing.T) {
	tests := []struct {
		name       string
		send       string
		wantOut    string
		wantCode   int32
		wantStderr string
	}{
		{"unknown module", "@RSYNCD: 31.0\nnomodule\n", "@ERROR: Unknown module 'nomodule'", 255, "unknown module 'nomodule'"},
		{"master hangs up at once", "", "", 255, ""},
	}
	for _, tr := range transports() {
		for _, tc := range tests {
			t.Run(string(tr)+"/"+tc.name, func(t *testing.T) {
				b, _ := openBackend(t)
				slaveLog := &testbuf.Buffer{}
				svc := New(b, Options{Logger: testLogger(t, slaveLog)})
				c := serve(t, svc, tr, testLogger(t, nil))
				stream := openTunnel(t, callCtx(t), c)
				if err := stream.Send(&pb.RsyncTunnelRequest{Data: []byte(tc.send), Eof: true}); err != nil {
					t.Fatalf("send: %v", err)
				}
				out, exit := drainTunnel(t, stream)
				if exit == nil {
					t.Fatalf("no RsyncExit; output %q", out)
				}
				if !strings.Contains(out, tc.wantOut) || exit.GetCode() != tc.wantCode || !strings.Contains(exit.GetStderr(), tc.wantStderr) {
					t.Errorf("output %q, exit %d, stderr %q; want output with %q, exit %d, stderr with %q",
						out, exit.GetCode(), exit.GetStderr(), tc.wantOut, tc.wantCode, tc.wantStderr)
				}
				pollUntil(t, 10*time.Second, "the tunnel call ends", func() bool { return svc.tunnels.Load() == 0 })
				if got := slaveLog.String(); !strings.Contains(got, "rsync daemon of a tunnel failed") || !strings.Contains(got, "exit_code=255") {
					t.Errorf("the slave's log does not report the failed daemon:\n%s", got)
				}
			})
		}
	}
}

// TestRsyncTunnelCancelReapsDaemon: a master that goes away mid-session
// takes the daemon with it; nothing is left in its process group, not even
// a zombie.
func TestRsyncTunnelCancelReapsDaemon(t *testing.T) {
	tests := []struct {
		name string
		send string // what the master said before going away
	}{
		{"at the greeting", ""},
		{"after choosing the module", "@RSYNCD: 31.0\ngeorep\n"},
		{"halfway through the arguments", "@RSYNCD: 31.0\ngeorep\n--server\x00-logDtpre.iLsfxCIvu\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := openBackend(t)
			svc := New(b, Options{})
			c := serve(t, svc, overTCP, testLogger(t, nil))
			ctx, cancel := context.WithCancel(callCtx(t))
			defer cancel()
			stream := openTunnel(t, ctx, c)
			if tc.send != "" {
				if err := stream.Send(&pb.RsyncTunnelRequest{Data: []byte(tc.send)}); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			daemons := rsyncChildren(t)
			if len(daemons) != 1 {
				t.Fatalf("rsync children of this process: %v, want the tunnel's daemon alone", daemons)
			}
			cancel()
			pollUntil(t, 10*time.Second, "the daemon's process group is gone", func() bool {
				return len(inGroups(t, daemons)) == 0
			})
			pollUntil(t, 10*time.Second, "the tunnel call ends", func() bool { return svc.tunnels.Load() == 0 })
		})
	}
}

// TestRsyncTunnelLimit: the ninth tunnel at once is refused with a reason,
// and a slot frees when a tunnel ends.
func TestRsyncTunnelLimit(t *testing.T) {
	b, _ := openBackend(t)
	svc := New(b, Options{})
	c := serve(t, svc, overTCP, testLogger(t, nil))
	cancels := make([]context.CancelFunc, MaxRsyncTunnels)
	for i := range MaxRsyncTunnels {
		ctx, cancel := context.WithCancel(callCtx(t))
		t.Cleanup(cancel)
		cancels[i] = cancel
		openTunnel(t, ctx, c)
	}
	refused := func() error {
		stream, err := c.RsyncTunnel(callCtx(t))
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	wantStatus(t, refused(), codes.ResourceExhausted, "already runs 8 rsync tunnels")

	cancels[0]()
	pollUntil(t, 10*time.Second, "a slot frees", func() bool { return svc.tunnels.Load() < MaxRsyncTunnels })
	openTunnel(t, callCtx(t), c)
}
