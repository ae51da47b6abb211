package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/testproxy"
	"github.com/georep/georep/internal/treecmp"
)

// TestExtraSSHChannelsOverWAN: across a link with a 30 ms round trip (a
// latency proxy in front of sshd), a batch of more than 64 MiB gets extra
// ssh channels for its data on its own: the master times its Handshake,
// dials two more sessions through the ControlMaster (the forced command
// starts a slave process for each on the same root) and spreads the
// streams over them; the replica is exact. --ssh-data-channels 0 keeps
// to one channel.
func TestExtraSSHChannelsOverWAN(t *testing.T) {
	base := t.TempDir()
	master := filepath.Join(base, "master")
	if err := os.MkdirAll(filepath.Join(master, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{5})
	buf := make([]byte, 2<<20)
	for i := range 36 { // 72 MiB
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(master, "big", fmt.Sprintf("f%02d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name  string
		extra []string
		want  bool
	}{
		{"default", nil, true},
		{"turned off", []string{"--ssh-data-channels", "0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSession(t, master, filepath.Join(t.TempDir(), "slave"))
			p := testproxy.Start(t, fmt.Sprintf("%s:%d", s.sshd.Host, s.sshd.Port))
			p.AddLatency(t, 15*time.Millisecond)
			var ssh []string
			sa := s.sshd.SSHArgs()
			for i := 0; i < len(sa); i++ {
				if sa[i] == "-p" {
					i++ // the URL names the proxy's port
					continue
				}
				ssh = append(ssh, sa[i])
			}
			// As the default ssh command does: a ControlMaster, which the
			// extra sessions ride on. Its socket's path must fit a Unix
			// socket address, which a test's temp dir does not.
			cm, err := os.MkdirTemp("", "cm")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(cm) })
			ssh = append(ssh, "-o", fmt.Sprintf("HostKeyAlias=[%s]:%d", s.sshd.Host, s.sshd.Port),
				"-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(cm, "%C"), "-o", "ControlPersist=no")
			url := fmt.Sprintf("ssh://%s@%s:%d%s", s.sshd.User, p.Host, p.Port, s.slave)
			args := append([]string{"master", "--once", "--root", master, "--slave", url, "--state", s.state,
				"--ssh-command", "ssh " + strings.Join(ssh, " "), "--log-level", "debug", "--progress=false"}, tc.extra...)
			ctx, cancel := context.WithTimeout(context.Background(), onceTimeout)
			defer cancel()
			b, err := exec.CommandContext(ctx, georepBin, args...).CombinedOutput()
			out := string(b)
			if err != nil {
				t.Fatalf("georep master --once through a 30 ms link: %v\n%s\nsshd:\n%s", err, tail(out, 8000), s.sshd.Log())
			}
			opened := strings.Contains(out, "opening extra data channels")
			joined := strings.Contains(out, "another connection to the slave joins the transfer")
			if opened != tc.want || joined != tc.want {
				t.Errorf("extra channels opened %v, joined %v; want %v\n%s", opened, joined, tc.want, tail(out, 8000))
			}
			if !treecmp.Compare(t, master, s.slave, treecmp.Options{}) {
				t.Fatal("the slave differs from the master")
			}
		})
	}
}
