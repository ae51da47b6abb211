package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testsshd"
	pb "github.com/georep/georep/proto/georep/v1"
)

func masterMark(holder string) *pb.VolumeMark {
	return &pb.VolumeMark{Uuid: gfid.New().Bytes(), Version: &pb.Version{Major: 1},
		Mark: &pb.Timestamp{Sec: time.Now().Unix()}, Holder: holder}
}

// replayWithFault sends batches of MKDIRs through s, cutting the
// connection with cut after a third of them, and checks every directory
// arrived: the session must reconnect and finish with nothing lost.
func replayWithFault(t *testing.T, s *Session, root string, cut func(c *Conn)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const batches, perBatch = 30, 20
	for b := 0; b < batches; b++ {
		var entries []*pb.Entry
		for i := 0; i < perBatch; i++ {
			entries = append(entries, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid.New().Bytes(),
				ParentGfid: gfid.Root.Bytes(), Name: []byte(fmt.Sprintf("b%02d-%02d", b, i)), Stat: &pb.Stat{Mode: 0o40755}})
		}
		if b == batches/3 {
			c, err := s.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cut(c)
		}
		err := s.Do(ctx, func(ctx context.Context, c *Conn) error {
			resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: entries})
			if err != nil {
				return err
			}
			for i, r := range resp.GetResults() {
				if r.GetErrno() != 0 {
					return fmt.Errorf("entry %d: %s", i, r.GetMessage())
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
	}
	names, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range names {
		if strings.HasPrefix(e.Name(), "b") {
			n++
		}
	}
	if n != batches*perBatch {
		t.Fatalf("slave has %d directories, want %d", n, batches*perBatch)
	}
	if s.Reconnects() < 1 {
		t.Fatalf("session did not reconnect after the cut")
	}
	if st, _ := s.State(); st != StateActive {
		t.Fatalf("session state %s after recovery, want Active", st)
	}
}

func TestSessionReconnectsAfterSSHKilled(t *testing.T) {
	root := t.TempDir()
	sshd := testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root)})
	u := sshURL(t, sshd, root)
	var mu sync.Mutex
	var states []State
	s := NewSession(func(ctx context.Context) (*Conn, error) {
		return Dial(ctx, u, Options{SSHCommand: sshd.SSHCommand()})
	}, SessionOptions{Master: masterMark("test-master"), BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		OnState: func(st State, _ error) { mu.Lock(); states = append(states, st); mu.Unlock() }})
	defer s.Close()
	replayWithFault(t, s, root, func(c *Conn) {
		// kill -9 the ssh client: the remote slave sees its stdin close.
		if err := c.Process().Kill(); err != nil {
			t.Fatal(err)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	if !containsState(states, StateFaulty) {
		t.Errorf("states %v never showed Faulty", states)
	}
}

func TestSessionReconnectsAfterLocalSlaveKilled(t *testing.T) {
	root := t.TempDir()
	u, err := ParseSlaveURL(root)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSession(func(ctx context.Context) (*Conn, error) {
		return Dial(ctx, u, Options{LocalGeorep: georepBin})
	}, SessionOptions{Master: masterMark("test-master"), BackoffMin: 50 * time.Millisecond})
	defer s.Close()
	replayWithFault(t, s, root, func(c *Conn) { c.Process().Kill() })
}

func containsState(states []State, want State) bool {
	for _, s := range states {
		if s == want {
			return true
		}
	}
	return false
}

// TestOneMasterPerSlaveRoot: a second master is refused while the first's
// mark is valid, with the holder and expiry named; --force takes over. Both
// ways of claiming the root are checked: in the Handshake, and with
// VolumeInfo then KeepAlive as a master that does not ask the Handshake
// does (and as every master does with a slave that does not know claims).
func TestOneMasterPerSlaveRoot(t *testing.T) {
	for _, inHandshake := range []bool{true, false} {
		t.Run(fmt.Sprintf("claim_in_handshake=%v", inHandshake), func(t *testing.T) {
			root := t.TempDir()
			u, err := ParseSlaveURL(root)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			session := func(holder string, opts SessionOptions) *Session {
				opts.Master = masterMark(holder)
				var s *Session
				s = NewSession(func(ctx context.Context) (*Conn, error) {
					o := Options{LocalGeorep: georepBin}
					if inHandshake {
						o.Master, o.Claim = opts.Master, s.Claim()
					}
					return Dial(ctx, u, o)
				}, opts)
				return s
			}

			first := session("master-a:/data", SessionOptions{KeepAliveInterval: time.Hour})
			defer first.Close()
			c, err := first.Connect(ctx)
			if err != nil {
				t.Fatalf("first master: %v", err)
			}
			if got := c.Info.GetClaim().GetClaimed(); got != inHandshake {
				t.Errorf("the Handshake claimed the root: %v, want %v", got, inHandshake)
			}

			second := session("master-b:/data", SessionOptions{})
			_, err = second.Connect(ctx)
			var held *HeldError
			if !errors.As(err, &held) {
				t.Fatalf("second master: %v, want a HeldError", err)
			}
			for _, w := range []string{"master-a:/data", "--force", "until"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not mention %q", err, w)
				}
			}
			second.Close()

			forced := session("master-b:/data", SessionOptions{Force: true})
			defer forced.Close()
			if _, err := forced.Connect(ctx); err != nil {
				t.Fatalf("--force: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, ".georep")); err != nil {
				t.Fatalf("slave root not initialised: %v", err)
			}
			// A force takes over without wiping the root's other marks: a
			// third master is still refused.
			third := session("master-c:/data", SessionOptions{})
			defer third.Close()
			if _, err := third.Connect(ctx); !errors.As(err, &held) {
				t.Fatalf("third master after the takeover: %v, want a HeldError", err)
			}
		})
	}
}

// TestSessionGivesUp: with GiveUpAfter, a slave that stays unreachable
// (ssh to a port of 127.0.0.1 nothing listens on: a real "connection
// refused" each attempt) ends Connect with the last failure once that
// long has passed, after several attempts and not much later; a Connect
// after that tries once more, and gives up at once. Without it, Connect
// retries until its context ends.
func TestSessionGivesUp(t *testing.T) {
	u, err := ParseSlaveURL(fmt.Sprintf("ssh://nobody@127.0.0.1:%d/srv", testsshd.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		giveUp  time.Duration
		ctxTime time.Duration
		want    string // in the error
	}{
		{name: "gives up", giveUp: time.Second, ctxTime: time.Minute, want: "unreachable for 1s, giving up"},
		{name: "retries until the context ends", giveUp: 0, ctxTime: 1500 * time.Millisecond, want: "context deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var attempts atomic.Int32
			s := NewSession(func(ctx context.Context) (*Conn, error) {
				attempts.Add(1)
				return Dial(ctx, u, Options{SSHCommand: "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"})
			}, SessionOptions{Master: masterMark("test-master"), BackoffMin: 100 * time.Millisecond, BackoffMax: 400 * time.Millisecond,
				GiveUpAfter: tc.giveUp})
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctxTime)
			defer cancel()
			start := time.Now()
			_, err := s.Connect(ctx)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Connect: %v; want an error saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "cannot reach sshd") {
				t.Errorf("Connect: %v; want the last attempt's reason", err)
			}
			if n := attempts.Load(); n < 3 {
				t.Errorf("%d attempts in %v; want several", n, took)
			}
			limit := tc.ctxTime
			if tc.giveUp > 0 {
				limit = tc.giveUp
			}
			if took < limit || took > limit+5*time.Second {
				t.Errorf("Connect returned after %v; want just after %v", took, limit)
			}
			if tc.giveUp == 0 {
				return
			}
			before := attempts.Load()
			if _, err := s.Connect(context.Background()); err == nil || !strings.Contains(err.Error(), "giving up") {
				t.Fatalf("a later Connect: %v; want it to give up", err)
			}
			if n := attempts.Load() - before; n != 1 {
				t.Errorf("a later Connect made %d attempts; want one", n)
			}
		})
	}
}
