package client

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/georep/georep/internal/testsshd"
)

// TestSSHCipherChoice: on a CPU with AES instructions a session's ssh
// negotiates AES-GCM, unless the operator's ssh command or configuration,
// or the server, chose otherwise; every choice still connects.
func TestSSHCipherChoice(t *testing.T) {
	const chacha = "chacha20-poly1305@openssh.com" // ssh's default
	fast := chacha
	if hasAESGCM() {
		fast = "aes256-gcm@openssh.com"
	}
	config := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(config, []byte("Ciphers aes192-ctr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, server, extra, want string
		reordered                 bool
	}{
		{name: "nothing chosen", want: fast, reordered: hasAESGCM()},
		{name: "operator's -c", extra: "-c aes128-ctr", want: "aes128-ctr"},
		{name: "operator's -o Ciphers", extra: "-o Ciphers=" + chacha, want: chacha},
		{name: "operator's config file", extra: "-F " + config, want: "aes192-ctr"},
		{name: "server without AES-GCM", server: chacha, want: chacha, reordered: hasAESGCM()},
	}
	negotiated := regexp.MustCompile(`kex: client->server cipher: (\S+)`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			s := testsshd.Start(t, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root), Ciphers: tc.server})
			log := filepath.Join(t.TempDir(), "ssh.log")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := s.SSHCommand() + " -v -E " + log + " " + tc.extra
			c, err := Dial(ctx, sshURL(t, s, root), Options{SSHCommand: cmd, StateDir: t.TempDir()})
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			out, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			m := negotiated.FindSubmatch(out)
			if m == nil {
				t.Fatalf("ssh -v logged no cipher:\n%s", out)
			}
			if string(m[1]) != tc.want {
				t.Errorf("negotiated %s, want %s", m[1], tc.want)
			}
			if got := len(c.sshOpts) > 0; got != tc.reordered {
				t.Errorf("ssh options added: %q, want them: %v", c.sshOpts, tc.reordered)
			}
			// rsync's own ssh, should it log in, makes the same choice.
			sh, err := c.sshRsyncShell(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range c.sshOpts {
				if !slices.Contains(sh.Command, o) {
					t.Errorf("rsync's ssh command %q lacks %q", sh.Command, o)
				}
			}
		})
	}
}

func TestCipherOptionLeavesOthersAlone(t *testing.T) {
	ctx := context.Background()
	for _, argv := range [][]string{
		{"/usr/local/bin/ssh-wrapper", "-o", "BatchMode=yes", "--", "host", "georep slave"},
		{"ssh", "-o", "BatchMode=yes"},
		{"ssh", "-o", "BatchMode=yes", "--"},
	} {
		if got := cipherOption(ctx, argv); got != nil {
			t.Errorf("cipherOption(%q) = %q, want nothing", argv, got)
		}
	}
}
