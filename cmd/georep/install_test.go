package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/testsshd"
	"github.com/georep/georep/internal/treecmp"
)

// runBin runs the built georep binary (os.Executable must be georep itself,
// not the test binary, for `slave install` to install the right thing).
func runBin(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), out.String(), errb.String()
	}
	if err != nil {
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return 0, out.String(), errb.String()
}

// newKey makes an ed25519 key pair in dir and returns the private key's path.
func newKey(t *testing.T, dir, name string) string {
	t.Helper()
	k := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", k).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	return k
}

// countLines counts the lines of file equal to line.
func countLines(t *testing.T, file, line string) int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if l == line {
			n++
		}
	}
	return n
}

// TestSlaveInstallOverSSH installs the binary through a real sshd,
// authorizes a master's key with the printed forced command, and runs a
// real master --once through that key: the slave it reaches is the
// installed binary serving the pinned root.
func TestSlaveInstallOverSSH(t *testing.T) {
	bin := buildGeorep(t)
	s := testsshd.Start(t, testsshd.Options{})
	work := t.TempDir()
	dest := filepath.Join(work, "remote", "bin")
	replica := filepath.Join(work, "replica")
	if err := os.Mkdir(replica, 0o755); err != nil {
		t.Fatal(err)
	}
	masterKey := newKey(t, work, "master1")
	authKeys := filepath.Join(s.Dir, "authorized_keys") // the file this sshd reads
	install := []string{"slave", "install", s.User + "@" + s.Host, "--ssh-command", s.SSHCommand(),
		"--dest", dest, "--root", replica, "--authorize", masterKey + ".pub", "--authorized-keys", authKeys}

	code, stdout, stderr := runBin(t, bin, install...)
	if code != 0 {
		t.Fatalf("install exited %d: %s\nsshd: %s", code, stderr, s.Log())
	}
	pub, err := os.ReadFile(masterKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	lineRE := regexp.MustCompile(`^restrict,command="(` + regexp.QuoteMeta(dest) + `/georep-devel-[0-9a-f]{12}) slave --stdio --root ` +
		regexp.QuoteMeta(replica) + `" ` + regexp.QuoteMeta(strings.TrimSpace(string(pub))) + "\n$")
	m := lineRE.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("install printed %q, want one line matching %s", stdout, lineRE)
	}
	final, line := m[1], strings.TrimSuffix(stdout, "\n")
	fi, err := os.Stat(final)
	if err != nil {
		t.Fatalf("the installed binary is missing: %v", err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("installed binary mode %v, want 0755", fi.Mode().Perm())
	}
	want, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(final, "version").Output()
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("installed binary's version: %q (%v), want %q", got, err, want)
	}
	entries, err := os.ReadDir(dest)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("install left %d files in %s, want only the binary: %v", len(entries), dest, entries)
	}
	if n := countLines(t, authKeys, line); n != 1 {
		t.Fatalf("authorized_keys holds the line %d times after one install, want 1", n)
	}

	// Again: the same binary is not uploaded again, and the line is not added twice.
	inode := treecmp.Inode(t, final)
	code, stdout2, stderr := runBin(t, bin, install...)
	if code != 0 {
		t.Fatalf("second install exited %d: %s", code, stderr)
	}
	if stdout2 != stdout {
		t.Errorf("second install printed %q, first %q", stdout2, stdout)
	}
	if !strings.Contains(stderr, "not uploading") || !strings.Contains(stderr, "unchanged") {
		t.Errorf("second install should say it skipped the upload and left authorized_keys unchanged; stderr:\n%s", stderr)
	}
	if got := treecmp.Inode(t, final); got != inode {
		t.Errorf("second install replaced the binary (inode %d -> %d) though it was the same", inode, got)
	}
	if n := countLines(t, authKeys, line); n != 1 {
		t.Fatalf("authorized_keys holds the line %d times after two installs, want 1", n)
	}

	// A real master through the authorized key reaches the installed slave,
	// which serves the pinned root whatever path the URL names.
	master := filepath.Join(work, "master")
	if err := os.MkdirAll(filepath.Join(master, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"a.txt": "hello", "d/b.txt": strings.Repeat("x", 100000)} {
		if err := os.WriteFile(filepath.Join(master, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sshCmd := strings.Join([]string{"ssh", "-i", masterKey, "-p", strconv.Itoa(s.Port), "-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + s.KnownHostsFile, "-o", "StrictHostKeyChecking=yes",
		"-o", "LogLevel=ERROR"}, " ")
	code, _, stderr = runBin(t, bin, "master", "--once", "--root", master, "--state", filepath.Join(work, "state"),
		"--slave", "ssh://"+s.User+"@"+s.Host+"/not/the/pinned/root", "--ssh-command", sshCmd,
		"--remote-georep", "/nonexistent/georep")
	if code != 0 {
		t.Fatalf("master --once through the installed slave exited %d: %s\nsshd: %s", code, stderr, s.Log())
	}
	treecmp.Compare(t, master, replica, treecmp.Options{})
}

// TestSlaveInstallFailures: each way an install can fail exits non-zero
// with words that say what to fix, and usage mistakes exit 2 before
// anything is run.
func TestSlaveInstallFailures(t *testing.T) {
	bin := buildGeorep(t)
	s := testsshd.Start(t, testsshd.Options{})
	work := t.TempDir()
	aFile := filepath.Join(work, "file")
	if err := os.WriteFile(aFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := newKey(t, work, "k")
	target := s.User + "@" + s.Host
	tests := []struct {
		name     string
		args     []string
		revoke   bool
		wantCode int
		wantErr  string
	}{
		{"no host", []string{}, false, 2, "give exactly one [user@]host"},
		{"authorize without root", []string{target, "--authorize", key + ".pub"}, false, 2, "--authorize needs --root"},
		{"relative root", []string{target, "--root", "replica"}, false, 2, "must be an absolute path"},
		{"private key given", []string{target, "--add-key", key}, false, 2, "is a private key"},
		{"host like an option", []string{"-oProxyCommand=x"}, false, 2, ""},
		{"dest cannot be created", []string{target, "--dest", filepath.Join(aFile, "bin")}, false, 1, "cannot create the install directory"},
		{"ssh refused", []string{target, "--dest", filepath.Join(work, "bin")}, true, 1, "ssh to " + target + " failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.revoke {
				s.RevokeKey(t)
				defer s.SetAuthorizedKeyOptions(t, "")
			}
			args := append([]string{"slave", "install", "--ssh-command", s.SSHCommand()}, tc.args...)
			code, stdout, stderr := runBin(t, bin, args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.wantCode, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("stderr %q does not say %q", stderr, tc.wantErr)
			}
			if stdout != "" {
				t.Errorf("a failed install printed a line on stdout: %q", stdout)
			}
		})
	}
}

// TestSlaveInstallPlaceholders: without --root or a key the line is still
// printed, with placeholders to replace, and says so.
func TestSlaveInstallPlaceholders(t *testing.T) {
	bin := buildGeorep(t)
	s := testsshd.Start(t, testsshd.Options{})
	dest := filepath.Join(t.TempDir(), "bin")
	code, stdout, stderr := runBin(t, bin, "slave", "install", s.Host, "--ssh-command", s.SSHCommand(), "--dest", dest, "--timeout", "2m")
	if code != 0 {
		t.Fatalf("install exited %d: %s", code, stderr)
	}
	for _, want := range []string{"slave --stdio --root /path/to/replica --timeout 2m0s\" ", placeholderKey} {
		if !strings.Contains(stdout, want) {
			t.Errorf("line %q lacks %q", stdout, want)
		}
	}
	if !strings.Contains(stderr, "replace /path/to/replica") || !strings.Contains(stderr, "replace the placeholder key") {
		t.Errorf("stderr does not say what to replace: %s", stderr)
	}
}

func TestForcedCommandLine(t *testing.T) {
	tests := []struct {
		bin, root string
		timeout   time.Duration
		want      string
	}{
		{"/home/geo/.georep/bin/georep-v1.2.0", "/srv/replica", 0,
			`restrict,command="/home/geo/.georep/bin/georep-v1.2.0 slave --stdio --root /srv/replica" K`},
		{"/opt/g/georep-v1", "/srv/my replica", 2 * time.Minute,
			`restrict,command="/opt/g/georep-v1 slave --stdio --root '/srv/my replica' --timeout 2m0s" K`},
		{"/opt/g/georep-v1", `/srv/it's "x"`, 0,
			`restrict,command="/opt/g/georep-v1 slave --stdio --root '/srv/it'\\''s \"x\"'" K`},
	}
	for _, tc := range tests {
		if got := forcedCommandLine(tc.bin, tc.root, tc.timeout, "K"); got != tc.want {
			t.Errorf("forcedCommandLine(%q, %q, %v)\n got %s\nwant %s", tc.bin, tc.root, tc.timeout, got, tc.want)
		}
	}
}

func TestInstallName(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	tests := []struct{ version, want string }{
		{"devel", "georep-devel-abababababab"},
		{"", "georep-devel-abababababab"},
		{"v1.2.0", "georep-v1.2.0"},
		{"v1.2.0-3-gdeadbee+dirty", "georep-v1.2.0-3-gdeadbee+dirty"},
		{"v1/../x y", "georep-v1_.._x_y"},
	}
	for _, tc := range tests {
		if got := installName(tc.version, hash); got != tc.want {
			t.Errorf("installName(%q) = %q, want %q", tc.version, got, tc.want)
		}
	}
}

func TestMergeAuthorizedKey(t *testing.T) {
	const line = `restrict,command="/b/georep-v2 slave --stdio --root /r" ssh-ed25519 BLOB m1`
	tests := []struct {
		name, existing, want, action string
		replaced                     int
	}{
		{"empty file", "", line + "\n", "added", 0},
		{"other keys kept", "ssh-rsa OTHER admin\n", "ssh-rsa OTHER admin\n" + line + "\n", "added", 0},
		{"no final newline", "ssh-rsa OTHER admin", "ssh-rsa OTHER admin\n" + line + "\n", "added", 0},
		{"already there", "# c\n" + line + "\n", "# c\n" + line + "\n", "present", 0},
		{"older version replaced in place",
			"ssh-rsa OTHER a\n" + `restrict,command="/b/georep-v1 slave --stdio --root /r x" ssh-ed25519 BLOB m1` + "\nssh-rsa Z z\n",
			"ssh-rsa OTHER a\n" + line + "\nssh-rsa Z z\n", "replaced", 1},
		{"unrestricted line for the key replaced", "ssh-ed25519 BLOB m1\n", line + "\n", "replaced", 1},
		{"later duplicate dropped", line + "\nssh-ed25519 BLOB dup\n", line + "\n", "replaced", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, action, replaced := mergeAuthorizedKey([]byte(tc.existing), line, "BLOB")
			if string(out) != tc.want || action != tc.action || replaced != tc.replaced {
				t.Errorf("got %q %s %d, want %q %s %d", out, action, replaced, tc.want, tc.action, tc.replaced)
			}
		})
	}
}

func TestKeyBlob(t *testing.T) {
	tests := []struct{ line, want string }{
		{"ssh-ed25519 AAAA m1", "AAAA"},
		{`restrict,command="a b \"c d\"" ssh-ed25519 AAAA m1`, "AAAA"},
		{`from="10.0.0.1" ecdsa-sha2-nistp256 BBBB`, "BBBB"},
		{"# ssh-ed25519 AAAA", ""},
		{"", ""},
		{"garbage", ""},
	}
	for _, tc := range tests {
		if got := keyBlob(tc.line); got != tc.want {
			t.Errorf("keyBlob(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

func TestUnameMatches(t *testing.T) {
	tests := []struct {
		goos, goarch, sys, machine string
		want                       bool
	}{
		{"linux", "amd64", "Linux", "x86_64", true},
		{"linux", "arm64", "Linux", "aarch64", true},
		{"linux", "amd64", "Linux", "aarch64", false},
		{"linux", "amd64", "Darwin", "x86_64", false},
		{"darwin", "arm64", "Darwin", "arm64", true},
		{"linux", "mips", "Linux", "mips", true}, // unknown: the version check decides
	}
	for _, tc := range tests {
		if got := unameMatches(tc.goos, tc.goarch, tc.sys, tc.machine); got != tc.want {
			t.Errorf("unameMatches(%s/%s on %s %s) = %v, want %v", tc.goos, tc.goarch, tc.sys, tc.machine, got, tc.want)
		}
	}
}
