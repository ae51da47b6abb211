// Package testsshd starts a real OpenSSH sshd on 127.0.0.1 for tests: its
// own host key, a user key for the client, and an authorized_keys file whose
// lines the test chooses (for example a forced command pinning a slave root).
// Nothing is mocked: the ssh client and server are the system's OpenSSH.
package testsshd

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/testfs"
)

// Server is a running sshd owned by a test; it stops when the test ends.
type Server struct {
	// Host is the 127.0.0.1 address of the daemon.
	Host string
	// Port is the TCP port the daemon listens on.
	Port int
	// User is the login name clients use (the user running the test).
	User string
	// IdentityFile is the client's private key.
	IdentityFile string
	// KnownHostsFile pins the server's host key for the client.
	KnownHostsFile string
	// Dir holds the daemon's files.
	Dir string

	authorizedKeys string
	pubKey         string
	cmd            *exec.Cmd
	log            *testbuf.Buffer
}

// Options configures Start.
type Options struct {
	// AuthorizedKeysOptions prefix the client key's authorized_keys line,
	// for example `restrict,command="georep slave --stdio --root /x"`.
	AuthorizedKeysOptions string
	// Path, when set, is the PATH sshd gives the commands it runs.
	Path string
	// Ciphers, when set, is the only ciphers sshd accepts (sshd_config's
	// Ciphers).
	Ciphers string
}

// Start runs sshd on a free 127.0.0.1 port and waits until it accepts
// connections. It fails the test when sshd or ssh-keygen is missing.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			t.Fatalf("OpenSSH sshd is required (apt-get install openssh-server): %v", err)
		}
	}
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatalf("ssh-keygen is required (apt-get install openssh-client): %v", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	// sshd insists on its privilege-separation directory existing.
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("create /run/sshd: %v", err)
		}
	}
	dir := t.TempDir()
	// Its keys go with an interrupted test too, as the daemon does.
	testfs.RemoveOnSignal(t, dir)
	s := &Server{Host: "127.0.0.1", User: u.Username, Dir: dir, log: &testbuf.Buffer{}}
	hostKey := filepath.Join(dir, "host_ed25519")
	s.IdentityFile = filepath.Join(dir, "client_ed25519")
	for _, k := range []string{hostKey, s.IdentityFile} {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen %s: %v: %s", k, err, out)
		}
	}
	pub, err := os.ReadFile(s.IdentityFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.pubKey = strings.TrimSpace(string(pub))
	s.authorizedKeys = filepath.Join(dir, "authorized_keys")
	s.SetAuthorizedKeyOptions(t, opts.AuthorizedKeysOptions)

	s.Port = FreePort(t)
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.KnownHostsFile = filepath.Join(dir, "known_hosts")
	kh := fmt.Sprintf("[%s]:%d %s\n", s.Host, s.Port, strings.TrimSpace(string(hostPub)))
	if err := os.WriteFile(s.KnownHostsFile, []byte(kh), 0o600); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"ListenAddress " + s.Host + ":" + strconv.Itoa(s.Port),
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + s.authorizedKeys,
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"PermitRootLogin prohibit-password",
		"AllowTcpForwarding no",
		"X11Forwarding no",
		"PrintMotd no",
		"LogLevel VERBOSE",
		"MaxStartups 100",
		"MaxSessions 100",
		"Subsystem sftp internal-sftp",
	}, "\n") + "\n"
	if opts.Path != "" {
		config += "SetEnv PATH=" + opts.Path + "\n"
	}
	if opts.Ciphers != "" {
		config += "Ciphers " + opts.Ciphers + "\n"
	}
	cfgFile := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sshd, "-t", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t rejected the test configuration: %v: %s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cmd = exec.CommandContext(ctx, sshd, "-D", "-e", "-f", cfgFile)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	// A test process killed outright (an interrupted make bench) runs no
	// cleanup; the daemon must not outlive it, listening. Pdeathsig is
	// sent when the thread that started it exits: Go keeps its threads for
	// the process's life unless a goroutine locked to one ends, and this
	// one locks none.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start sshd: %v", err)
	}
	waited := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		cancel()
		<-waited
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-waited:
			t.Fatalf("sshd exited at start: %s", s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not accept connections within 10s: %v\n%s", err, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// SetAuthorizedKeyOptions rewrites authorized_keys so the client key carries
// options (empty for none). sshd reads the file on every login.
func (s *Server) SetAuthorizedKeyOptions(t testing.TB, options string) {
	t.Helper()
	line := s.pubKey
	if options != "" {
		line = options + " " + line
	}
	if err := os.WriteFile(s.authorizedKeys, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// SSHArgs returns the ssh client arguments (before the remote command) that
// reach this server non-interactively with the test's key.
func (s *Server) SSHArgs() []string {
	return []string{
		"-i", s.IdentityFile,
		"-p", strconv.Itoa(s.Port),
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + s.KnownHostsFile,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR",
		"-l", s.User,
	}
}

// SSHCommand returns a complete ssh command line (program and options) as
// one string, the form --ssh-command takes.
func (s *Server) SSHCommand() string {
	return "ssh " + strings.Join(s.SSHArgs(), " ")
}

// Log returns what sshd has logged so far.
func (s *Server) Log() string { return s.log.String() }

// FreePort returns a TCP port of 127.0.0.1 that nothing listens on (it
// was free a moment ago): for sshd, or for a test that needs a connection
// refused.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// RevokeKey empties authorized_keys, so the client key is refused.
func (s *Server) RevokeKey(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(s.authorizedKeys, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}
