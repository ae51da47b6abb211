package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/testproxy"
	"github.com/georep/georep/internal/testsshd"
	pb "github.com/georep/georep/proto/georep/v1"
)

// TestSessionFinishSkipsTheGoodbye: Finish ends an ssh session whose calls
// are all answered without waiting for the remote side's goodbye (the
// slave's exit status, a round trip), which Close waits for. The replies
// are black-holed once the last call is answered, so a wait for the
// goodbye lasts until Close gives up on it (3s). Either way ssh is reaped
// and the slave ends in order: its stdin closes and it says so.
func TestSessionFinishSkipsTheGoodbye(t *testing.T) {
	for _, tc := range []struct {
		name    string
		finish  bool
		quicker bool
	}{
		{name: "Finish", finish: true, quicker: true},
		{name: "Close", finish: false, quicker: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			slaveLog := filepath.Join(t.TempDir(), "slave.log")
			sshd := testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: fmt.Sprintf(
				`restrict,command="%s slave --stdio --root %s --log-file %s"`, georepBin, root, slaveLog)})
			proxy := testproxy.Start(t, fmt.Sprintf("%s:%d", sshd.Host, sshd.Port))
			u, sshCmd := sshThroughProxy(t, sshd, proxy, root)
			s := NewSession(func(ctx context.Context) (*Conn, error) {
				return Dial(ctx, u, Options{SSHCommand: sshCmd, StateDir: t.TempDir()})
			}, SessionOptions{Master: masterMark("finish-master")})
			defer s.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := s.Connect(ctx)
			if err != nil {
				t.Fatalf("connect: %v\nsshd log:\n%s", err, sshd.Log())
			}
			if _, err := c.Slave.VolumeInfo(ctx, &pb.VolumeInfoRequest{}); err != nil {
				t.Fatalf("last call before the end: %v", err)
			}
			proxy.BlackholeReplies(t)

			start := time.Now()
			end := s.Close
			if tc.finish {
				end = s.Finish
			}
			if err := end(); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			took := time.Since(start)
			// Finish signals ssh and reaps it: milliseconds. Close waits
			// 3s for a goodbye that the black hole keeps.
			const line = 2 * time.Second
			if tc.quicker && took >= line {
				t.Errorf("Finish took %v: it waited for the slave's goodbye", took)
			}
			if !tc.quicker && took < line {
				t.Errorf("Close took %v with the replies black-holed: the test no longer holds the goodbye back", took)
			}
			if !isDone(c.proc.exited) {
				t.Errorf("%s returned with ssh still running", tc.name)
			}
			if st, _ := s.State(); st != StateStopped {
				t.Errorf("session state %s after %s, want Stopped", st, tc.name)
			}
			pollUntil(t, 15*time.Second, "the slave to end its session", func() bool {
				b, _ := os.ReadFile(slaveLog)
				return strings.Contains(string(b), "the master closed the connection")
			})
		})
	}
}
