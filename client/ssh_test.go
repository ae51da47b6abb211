package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testsshd"
	pb "github.com/georep/georep/proto/georep/v1"
)

// forcedCommand is the authorized_keys option that pins a key to one slave
// root, as deploy/ documents it: whatever the master asks to run, sshd runs
// this.
func forcedCommand(bin, root string) string {
	return fmt.Sprintf(`restrict,command="%s slave --stdio --root %s"`, bin, root)
}

func sshURL(t *testing.T, s *testsshd.Server, path string) SlaveURL {
	t.Helper()
	u, err := ParseSlaveURL(fmt.Sprintf("ssh://%s@%s:%d%s", s.User, s.Host, s.Port, path))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// dialSSHForced reaches a slave through a real sshd whose authorized_keys
// line pins the root with a forced command.
func dialSSHForced(t *testing.T, root string) *Conn {
	t.Helper()
	s := testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The path the master asks for is ignored by the forced command.
	c, err := Dial(ctx, sshURL(t, s, "/somewhere/else"), Options{SSHCommand: s.SSHCommand(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("dial slave over ssh: %v\nsshd log:\n%s", err, s.Log())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSSHForcedCommandPinsRoot(t *testing.T) {
	root := t.TempDir()
	c := dialSSHForced(t, root)
	if c.Info.GetRoot() != root {
		t.Fatalf("slave serves %q, want the forced command's root %q", c.Info.GetRoot(), root)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{
		Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid.New().Bytes(), ParentGfid: gfid.Root.Bytes(),
		Name: []byte("pinned"), Stat: &pb.Stat{Mode: 0o40755},
	}}})
	if err != nil || resp.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("MKDIR over ssh: %v %v", resp, err)
	}
	if _, err := os.Stat(filepath.Join(root, "pinned")); err != nil {
		t.Fatalf("directory made over ssh is not under the pinned root: %v", err)
	}
}

// TestSSHFailuresAreExplained: what an operator sees when the remote end
// is not right must say what to do about it.
func TestSSHFailuresAreExplained(t *testing.T) {
	s := testsshd.Start(t, testsshd.Options{})
	missingRoot := filepath.Join(t.TempDir(), "does-not-exist")
	cases := []struct {
		name   string
		setup  func(t *testing.T)
		remote string
		path   string
		want   []string
	}{
		{
			name:   "georep not installed",
			setup:  func(t *testing.T) { s.SetAuthorizedKeyOptions(t, "") },
			remote: "/nonexistent/bin/georep",
			path:   t.TempDir(),
			want:   []string{"not installed", "georep slave install"},
		},
		{
			name:   "bad root",
			setup:  func(t *testing.T) { s.SetAuthorizedKeyOptions(t, "") },
			remote: georepBin,
			path:   missingRoot,
			want:   []string{"exited with status", missingRoot},
		},
		{
			name:   "key refused",
			setup:  func(t *testing.T) { s.RevokeKey(t) },
			remote: georepBin,
			path:   t.TempDir(),
			want:   []string{"refused the ssh key", "authorized_keys"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := Dial(ctx, sshURL(t, s, tc.path), Options{SSHCommand: s.SSHCommand(), RemoteGeorep: tc.remote})
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want an error")
			}
			t.Logf("operator sees: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestSSHArgvQuotesRemoteCommand(t *testing.T) {
	u := SlaveURL{Kind: KindSSH, User: "geo", Host: "slave1", Port: 2222, Path: "/data/it's here"}
	argv := SSHArgv(u, Options{SSHCommand: "ssh -i key", RemoteGeorep: "/opt/georep", SlaveTimeout: time.Minute})
	want := []string{"ssh", "-i", "key", "-p", "2222", "-l", "geo", "--", "slave1",
		`/opt/georep slave --stdio --root '/data/it'\''s here' --timeout 1m0s`}
	if strings.Join(argv, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("SSHArgv =\n%q\nwant\n%q", argv, want)
	}
	def := DefaultSSHCommand("/state")
	for _, w := range []string{"BatchMode=yes", "ServerAliveInterval=", "ControlMaster=auto", "ControlPath=/state/ssh-%C"} {
		if !strings.Contains(def, w) {
			t.Errorf("default ssh command %q lacks %q", def, w)
		}
	}
}

// TestDefaultSSHCommandControlPathFits: ssh refuses every connection whose
// ControlPath, expanded, does not fit a Unix socket address (108 bytes),
// so a long state dir gets a shorter socket name, and one too long for
// any gets no ControlMaster rather than no connection.
func TestDefaultSSHCommandControlPathFits(t *testing.T) {
	dir := func(n int) string { return "/" + strings.Repeat("s", n-1) }
	for _, tc := range []struct {
		name, state, want string
	}{
		{"short", "/var/lib/georep/a", "ControlPath=/var/lib/georep/a/ssh-%C"},
		{"longest with the hash", dir(62), "ControlPath=" + dir(62) + "/ssh-%C"},
		{"too long for the hash", dir(63), "ControlPath=" + dir(63) + "/ssh "},
		{"longest at all", dir(103), "ControlPath=" + dir(103) + "/ssh "},
		{"too long for any", dir(104), ""},
		{"with a space", "/var/lib/geo rep", ""},
	} {
		cmd := DefaultSSHCommand(tc.state) + " "
		if tc.want == "" {
			if strings.Contains(cmd, "Control") {
				t.Errorf("%s: %q sets a ControlMaster", tc.name, cmd)
			}
			continue
		}
		if !strings.Contains(cmd, tc.want) {
			t.Errorf("%s: %q lacks %q", tc.name, cmd, tc.want)
		}
		for _, w := range strings.Fields(cmd) {
			if p, ok := strings.CutPrefix(w, "ControlPath="); ok {
				if n := len(strings.Replace(p, "%C", strings.Repeat("h", 40), 1)); n >= 108 {
					t.Errorf("%s: the socket path takes %d bytes expanded, ssh refuses 108 or more", tc.name, n)
				}
			}
		}
	}
}
