package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// defaultInstallDest and defaultAuthorizedKeys are remote paths; a leading
// "~/" means the ssh user's home on the slave host.
const (
	defaultInstallDest    = "~/.georep/bin"
	defaultAuthorizedKeys = "~/.ssh/authorized_keys"
	defaultInstallSSH     = "ssh -o BatchMode=yes"
	// placeholderKey stands in for the master's public key in the printed
	// line when no key file is given.
	placeholderKey = "ssh-ed25519 AAAA...REPLACE-WITH-THE-MASTER-PUBLIC-KEY master"
)

// installConfig is everything `georep slave install` is configured with.
type installConfig struct {
	Target         string // [user@]host, the positional argument
	Root           string
	SSHCommand     string
	Dest           string
	AddKey         string
	Authorize      string
	AuthorizedKeys string
	Timeout        time.Duration
}

func (c *installConfig) bindFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.Root, "root", "", "the slave root (absolute, on the remote host) the printed authorized_keys line pins (required with --authorize)")
	fs.StringVar(&c.SSHCommand, "ssh-command", defaultInstallSSH, "ssh program and options used to reach the host, split on spaces (for example: ssh -p 2222 -i ~/.ssh/admin)")
	fs.StringVar(&c.Dest, "dest", defaultInstallDest, "remote directory the binary is installed in (~/ is the ssh user's home); it is created if missing")
	fs.StringVar(&c.AddKey, "add-key", "", "the master's ssh public key file (.pub) to put in the printed authorized_keys line (default: a placeholder)")
	fs.StringVar(&c.Authorize, "authorize", "", "the master's ssh public key file (.pub): print its line and also add it to the remote authorized_keys (replacing any older line for the same key)")
	fs.StringVar(&c.AuthorizedKeys, "authorized-keys", defaultAuthorizedKeys, "the remote authorized_keys file --authorize edits (~/ is the ssh user's home)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "put --timeout DUR in the forced command: the slave ends a session whose master sends no keep-alive for this long (0: omit)")
}

// check rejects a command line that cannot work before anything is run.
func (c *installConfig) check(args []string) error {
	if len(args) != 1 {
		return &usageError{errors.New("give exactly one [user@]host to install on, for example: georep slave install geo@slave1 --root /srv/replica")}
	}
	c.Target = args[0]
	user, host := splitTarget(c.Target)
	switch {
	case host == "":
		return &usageError{fmt.Errorf("%q names no host: write [user@]host", c.Target)}
	case strings.HasPrefix(host, "-") || strings.HasPrefix(user, "-"):
		return &usageError{fmt.Errorf("%q: a host or user must not start with '-'", c.Target)}
	case strings.ContainsAny(c.Target, " \t\r\n'\"\\"):
		return &usageError{fmt.Errorf("%q: a host or user must not contain spaces, quotes or backslashes", c.Target)}
	}
	if len(strings.Fields(c.SSHCommand)) == 0 {
		return &usageError{errors.New("--ssh-command is empty: give the ssh program, for example: ssh -o BatchMode=yes")}
	}
	for _, f := range []struct{ name, val string }{{"--dest", c.Dest}, {"--authorized-keys", c.AuthorizedKeys}, {"--root", c.Root}} {
		if strings.ContainsAny(f.val, "\x00\r\n") {
			return &usageError{fmt.Errorf("%s %q: must not contain a NUL or a line break", f.name, f.val)}
		}
	}
	if c.Dest == "" || c.AuthorizedKeys == "" {
		return &usageError{errors.New("--dest and --authorized-keys must not be empty")}
	}
	if c.Root != "" && !path.IsAbs(c.Root) {
		return &usageError{fmt.Errorf("--root %q: must be an absolute path on the slave host, since the forced command runs from the ssh user's home", c.Root)}
	}
	if c.Authorize != "" {
		if c.Root == "" {
			return &usageError{errors.New("--authorize needs --root: the line it adds pins the master's key to that slave root")}
		}
		if c.AddKey != "" && c.AddKey != c.Authorize {
			return &usageError{errors.New("--add-key and --authorize name different key files: give one (--authorize also prints the line)")}
		}
	}
	if c.Timeout < 0 {
		return &usageError{fmt.Errorf("--timeout %v: must not be negative", c.Timeout)}
	}
	return nil
}

// keyFile is the public key the printed line carries, if any.
func (c *installConfig) keyFile() string {
	if c.Authorize != "" {
		return c.Authorize
	}
	return c.AddKey
}

func newSlaveInstallCommand() *cobra.Command {
	var cfg installConfig
	cmd := &cobra.Command{
		Use:   "install [user@]host [--root DIR] [--dest DIR] [--add-key FILE.pub | --authorize FILE.pub] [--ssh-command CMD]",
		Short: "Install this georep binary on a slave host over ssh and print its authorized_keys line",
		Long: `Install this georep binary on a slave host over ssh, and print the
authorized_keys line that pins a master's key to one slave root.

The binary goes to DEST/georep-VERSION (DEST is --dest, ~/.georep/bin by
default; a build without a version is named by a hash of its content), so
versions sit side by side and a master's forced command keeps naming the one
it was set up with. The upload is atomic: it is written to a temporary name
in DEST, checked for size, made executable and renamed into place, then run
("georep-VERSION version") to prove it works on that host. When the same
binary is already there, nothing is uploaded.

The line
  restrict,command="DEST/georep-VERSION slave --stdio --root DIR" KEY
is printed on stdout (all else goes to stderr), with the key from --add-key,
or a placeholder. --authorize FILE.pub also adds it to the remote
authorized_keys; running it again changes nothing, and an older line for the
same key (from an earlier version, say) is replaced, since sshd would only
ever use the first.`,
		Args: cobra.ArbitraryArgs, // checked by cfg.check, as a usage error
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cfg.check(args); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runInstall(ctx, cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cfg.bindFlags(cmd)
	return cmd
}

// runInstall puts this binary on the host, verifies it, prints the
// authorized_keys line and, with --authorize, adds it.
func runInstall(ctx context.Context, cfg installConfig, stdout, stderr io.Writer) error {
	var pubKey string
	if f := cfg.keyFile(); f != "" {
		k, err := readPublicKey(f)
		if err != nil {
			return &usageError{err}
		}
		pubKey = k
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this georep binary to install: %w", err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		return fmt.Errorf("read this georep binary %s to install it: %w", exe, err)
	}
	sum := sha256.Sum256(bin)
	hash := hex.EncodeToString(sum[:])
	name := installName(softwareVersion(), hash)
	r := newRemote(cfg)

	probe, err := r.probe(ctx, cfg.Dest, name, cfg.Root)
	if err != nil {
		return err
	}
	if !unameMatches(runtime.GOOS, runtime.GOARCH, probe.sys, probe.machine) {
		return fmt.Errorf("%s runs %s %s but this georep is built for %s/%s: run the install from a georep built for that host (GOOS=%s GOARCH=... go build ./cmd/georep)",
			r.target, probe.sys, probe.machine, runtime.GOOS, runtime.GOARCH, strings.ToLower(probe.sys))
	}
	final := probe.dir + "/" + name
	if probe.have == hash {
		fmt.Fprintf(stderr, "georep: %s already holds this binary as %s; not uploading it again\n", r.target, final)
	} else {
		if err := r.upload(ctx, probe.dir, name, bin); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "georep: installed %s on %s\n", final, r.target)
	}
	if err := r.verify(ctx, final, versionLine()); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "georep: %s runs on %s: %s\n", final, r.target, versionLine())
	if cfg.Root != "" && !probe.rootIsDir {
		fmt.Fprintf(stderr, "georep: warning: the slave root %s is not a directory on %s yet; create it (as the ssh user) before a master connects\n", cfg.Root, r.target)
	}

	root := cfg.Root
	if root == "" {
		root = "/path/to/replica"
		fmt.Fprintln(stderr, "georep: no --root given; replace /path/to/replica in the line below with the slave root")
	}
	key := pubKey
	if key == "" {
		key = placeholderKey
		fmt.Fprintln(stderr, "georep: no --add-key given; replace the placeholder key in the line below with the master's public key")
	}
	line := forcedCommandLine(final, root, cfg.Timeout, key)
	if _, err := fmt.Fprintln(stdout, line); err != nil {
		return err
	}
	if cfg.Authorize == "" {
		return nil
	}
	return r.authorize(ctx, cfg.AuthorizedKeys, line, keyBlob(pubKey), stderr)
}

// installName is the binary's file name on the slave host: versioned so
// that versions sit side by side, and for a build without a version named
// by its content, so that two different "devel" builds never collide.
func installName(version, sha256Hex string) string {
	if version == "" || version == "devel" {
		return "georep-devel-" + sha256Hex[:12]
	}
	safe := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_', r == '+':
			return r
		}
		return '_'
	}, version)
	return "georep-" + safe
}

// forcedCommandLine is the authorized_keys line that lets key run only the
// slave for root. The command is run by the user's shell, so each word is
// shell-quoted; the option value is double-quoted, so '"' and '\' in it
// are escaped for sshd.
func forcedCommandLine(bin, root string, timeout time.Duration, key string) string {
	words := []string{quoteSh(bin), "slave", "--stdio", "--root", quoteSh(root)}
	if timeout > 0 {
		words = append(words, "--timeout", timeout.String())
	}
	command := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(strings.Join(words, " "))
	return `restrict,command="` + command + `" ` + key
}

// quoteSh quotes s for a POSIX shell, leaving plainly safe words alone so
// the printed line stays readable.
func quoteSh(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// remotePathExpr is a shell expression for a remote path in which a leading
// "~/" (or a lone "~") is the ssh user's home.
func remotePathExpr(p string) string {
	switch {
	case p == "~":
		return `"$HOME"`
	case strings.HasPrefix(p, "~/"):
		return `"$HOME"/` + quoteSh(p[2:])
	}
	return quoteSh(p)
}

// isKeyType reports whether s is an OpenSSH public key algorithm name.
func isKeyType(s string) bool {
	return strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-sha2-") || strings.HasPrefix(s, "sk-")
}

// readPublicKey returns the one public key in file as "TYPE BASE64 [COMMENT]".
func readPublicKey(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the master's public key: %w", err)
	}
	if strings.HasPrefix(strings.TrimSpace(string(data)), "-----BEGIN") {
		return "", fmt.Errorf("%s is a private key: give the public key, %s.pub", file, file)
	}
	var keys []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			keys = append(keys, l)
		}
	}
	if len(keys) != 1 {
		return "", fmt.Errorf("%s holds %d keys: give a file with exactly one ssh public key (the master's .pub file)", file, len(keys))
	}
	f := strings.Fields(keys[0])
	if len(f) < 2 || !isKeyType(f[0]) {
		return "", fmt.Errorf("%s is not an ssh public key (expected TYPE BASE64 [COMMENT], e.g. ssh-ed25519 AAAA... master1): give the master's .pub file", file)
	}
	if _, err := base64.StdEncoding.DecodeString(f[1]); err != nil {
		return "", fmt.Errorf("%s: the key is not valid base64 (%w): give the master's .pub file unedited", file, err)
	}
	return strings.Join(f, " "), nil
}

// keyBlob returns the base64 key of an authorized_keys or .pub line, past
// any options (which may hold quoted spaces), or "" for a comment, a blank
// or a line it cannot read.
func keyBlob(line string) string {
	line = strings.TrimSpace(line)
	if line == "" || strings.HasPrefix(line, "#") {
		return ""
	}
	if f := strings.Fields(line); len(f) >= 2 && isKeyType(f[0]) {
		return f[1]
	}
	// Skip the options field: it ends at the first blank outside quotes.
	inQuote := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case (c == ' ' || c == '\t') && !inQuote:
			if f := strings.Fields(line[i:]); len(f) >= 2 && isKeyType(f[0]) {
				return f[1]
			}
			return ""
		}
	}
	return ""
}

// mergeAuthorizedKey returns authorized_keys content holding line as the
// only line for blob, and what it did: "present" (nothing to change),
// "added" or "replaced" (with how many older lines for blob it dropped).
// sshd uses the first line that matches a key, so an older line for the
// same key would silently win over an appended one.
func mergeAuthorizedKey(existing []byte, line, blob string) (out []byte, action string, replaced int) {
	var lines []string
	if len(existing) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(existing), "\n"), "\n")
	}
	var kept []string
	placed, present := false, false
	for _, l := range lines {
		if keyBlob(l) != blob {
			kept = append(kept, l)
			continue
		}
		if placed {
			replaced++
			continue
		}
		placed = true
		if strings.TrimSpace(l) == line {
			present = true
			kept = append(kept, l)
		} else {
			replaced++
			kept = append(kept, line)
		}
	}
	switch {
	case present && replaced == 0:
		return existing, "present", 0
	case !placed:
		kept = append(kept, line)
		action = "added"
	default:
		action = "replaced"
	}
	return []byte(strings.Join(kept, "\n") + "\n"), action, replaced
}

// unameMatches reports whether a host whose `uname -s` and `uname -m` print
// sys and machine can run a binary built for goos/goarch. Names it does not
// know are let through: the version check after the upload still catches a
// binary that cannot run.
func unameMatches(goos, goarch, sys, machine string) bool {
	if !strings.EqualFold(sys, goos) {
		return false
	}
	archs := map[string][]string{
		"amd64":   {"x86_64", "amd64"},
		"arm64":   {"aarch64", "arm64"},
		"386":     {"i386", "i486", "i586", "i686", "x86"},
		"arm":     {"armv5l", "armv6l", "armv7l", "armv7", "armv8l", "arm"},
		"ppc64le": {"ppc64le"},
		"s390x":   {"s390x"},
		"riscv64": {"riscv64"},
	}
	names, known := archs[goarch]
	if !known {
		return true
	}
	for _, n := range names {
		if machine == n {
			return true
		}
	}
	return false
}

func splitTarget(t string) (user, host string) {
	if u, h, ok := strings.Cut(t, "@"); ok {
		return u, h
	}
	return "", t
}

// remote runs POSIX sh scripts on the slave host through ssh.
type remote struct {
	argv   []string // ssh and its options, up to and including "--" host
	target string
}

func newRemote(cfg installConfig) *remote {
	argv := strings.Fields(cfg.SSHCommand)
	user, host := splitTarget(cfg.Target)
	if user != "" {
		argv = append(argv, "-l", user)
	}
	return &remote{argv: append(argv, "--", host), target: cfg.Target}
}

// sshFailed is the exit status ssh itself uses for its own failures
// (refused connection, rejected key, unknown host key).
const sshFailed = 255

// remoteError is a script that ran on the host and failed.
type remoteError struct {
	code   int
	stderr string
}

func (e *remoteError) Error() string {
	if e.stderr == "" {
		return "exit status " + strconv.Itoa(e.code)
	}
	return e.stderr
}

// run runs script under sh on the host with stdin as its input and returns
// its stdout. A failure of ssh itself comes back as an error saying how to
// check the connection; a failure of the script as a *remoteError.
func (r *remote) run(ctx context.Context, script string, stdin io.Reader) (string, error) {
	argv := append(append([]string(nil), r.argv...), "sh -c "+quoteSh(script))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	msg := strings.TrimSpace(errb.String())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), nil
	case ctx.Err() != nil:
		return "", fmt.Errorf("install on %s interrupted: %w", r.target, ctx.Err())
	case errors.As(err, &exit) && exit.ExitCode() == sshFailed:
		return "", fmt.Errorf("ssh to %s failed (%s): check that the host is up and accepts your key, with: %s %s true",
			r.target, orNoMessage(msg), strings.Join(r.argv[:len(r.argv)-2], " "), r.target)
	case errors.As(err, &exit):
		return out.String(), &remoteError{code: exit.ExitCode(), stderr: msg}
	default:
		return "", fmt.Errorf("run %s to reach %s: %w (is ssh installed? set --ssh-command)", argv[0], r.target, err)
	}
}

func orNoMessage(s string) string {
	if s == "" {
		return "no message"
	}
	return s
}

// probeResult is what the host says about itself before an upload.
type probeResult struct {
	sys, machine string // uname -s, uname -m
	dir          string // the install directory, absolute, symlinks resolved
	have         string // SHA-256 of an installed file of the same name ("" if none or unknown)
	rootIsDir    bool
}

// Exit statuses of the probe script, so each failure gets its own advice.
const (
	exitNoMkdir     = 3
	exitNotWritable = 4
)

// probe creates the install directory and reports the host's system, the
// directory's real path and the hash of any binary already installed there.
func (r *remote) probe(ctx context.Context, dest, name, root string) (probeResult, error) {
	script := fmt.Sprintf(`dest=%s
mkdir -p -- "$dest" || exit %d
cd -- "$dest" || exit %d
[ -w . ] || { echo "$(pwd -P) is not writable by $(id -un)" >&2; exit %d; }
echo "sys=$(uname -s)"
echo "machine=$(uname -m)"
echo "dir=$(pwd -P)"
if [ -f %[5]s ]; then
	h=$( (sha256sum -- %[5]s || shasum -a 256 -- %[5]s) 2>/dev/null | cut -d' ' -f1)
	echo "have=$h"
fi
root=%[6]s
if [ -n "$root" ] && [ -d "$root" ]; then echo "rootdir=yes"; fi
`, remotePathExpr(dest), exitNoMkdir, exitNoMkdir, exitNotWritable, quoteSh(name), quoteSh(root))
	out, err := r.run(ctx, script, nil)
	var re *remoteError
	switch {
	case errors.As(err, &re) && re.code == exitNoMkdir:
		return probeResult{}, fmt.Errorf("cannot create the install directory %s on %s (%s): choose a --dest the ssh user can write, or create it there", dest, r.target, re)
	case errors.As(err, &re) && re.code == exitNotWritable:
		return probeResult{}, fmt.Errorf("no write permission for the install directory on %s (%s): choose a --dest the ssh user owns, or fix its mode", r.target, re)
	case err != nil:
		return probeResult{}, fmt.Errorf("examine %s before installing: %w", r.target, err)
	}
	var p probeResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "sys":
			p.sys = v
		case "machine":
			p.machine = v
		case "dir":
			p.dir = v
		case "have":
			p.have = v
		case "rootdir":
			p.rootIsDir = true
		}
	}
	if p.dir == "" || !strings.HasPrefix(p.dir, "/") {
		return p, fmt.Errorf("%s did not report the install directory (its login shell printed %q): check that the ssh user's shell runs commands (a forced command on your key would stop it)", r.target, out)
	}
	return p, nil
}

// upload writes bin to dir/name on the host atomically: to a temporary
// name in dir, checked for size (a dropped connection ends cat's input
// early, and must not install half a binary), chmod 755, then renamed.
func (r *remote) upload(ctx context.Context, dir, name string, bin []byte) error {
	script := fmt.Sprintf(`set -e
cd -- %s
tmp=.%s.tmp.$$
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
size=$(wc -c < "$tmp" | tr -d ' ')
if [ "$size" != %d ]; then echo "received $size of %d bytes" >&2; exit 1; fi
chmod 755 "$tmp"
mv -f -- "$tmp" %s
trap - EXIT
`, quoteSh(dir), name, len(bin), len(bin), quoteSh(name))
	if _, err := r.run(ctx, script, bytes.NewReader(bin)); err != nil {
		return fmt.Errorf("upload georep to %s:%s failed: %w (check free space and permissions there)", r.target, dir, err)
	}
	return nil
}

// verify runs the installed binary's version command and insists it
// reports exactly what this binary does.
func (r *remote) verify(ctx context.Context, final, want string) error {
	out, err := r.run(ctx, "exec "+quoteSh(final)+" version", nil)
	var re *remoteError
	switch {
	case errors.As(err, &re) && (re.code == 126 || re.code == 127):
		return fmt.Errorf("the installed georep does not run on %s (%s): is %s on a noexec mount, or built for another system? choose another --dest", r.target, re, final)
	case errors.As(err, &re):
		return fmt.Errorf("the installed georep fails to run on %s: %s version: exit %d: %s", r.target, final, re.code, orNoMessage(re.stderr))
	case err != nil:
		return fmt.Errorf("check the installed georep on %s: %w", r.target, err)
	}
	if got := strings.TrimSpace(out); got != want {
		return fmt.Errorf("the installed %s on %s reports %q, not %q: another file took its place; remove it and install again", final, r.target, got, want)
	}
	return nil
}

// authorize makes line the only authorized_keys line for blob in the
// remote file, rewriting the file atomically (temporary file, rename) and
// only when it has to change.
func (r *remote) authorize(ctx context.Context, file, line, blob string, stderr io.Writer) error {
	f := remotePathExpr(file)
	current, err := r.run(ctx, fmt.Sprintf(`f=%s
if [ -e "$f" ]; then exec cat -- "$f"; fi`, f), nil)
	if err != nil {
		return fmt.Errorf("read %s on %s: %w (the binary is installed; add the line above by hand)", file, r.target, err)
	}
	merged, action, replaced := mergeAuthorizedKey([]byte(current), line, blob)
	if action == "present" {
		fmt.Fprintf(stderr, "georep: %s on %s already holds this line; unchanged\n", file, r.target)
		return nil
	}
	script := fmt.Sprintf(`set -e
f=%s
d=$(dirname -- "$f")
if [ ! -d "$d" ]; then mkdir -p -- "$d"; chmod 700 "$d"; fi
tmp="$f.georep-tmp.$$"
trap 'rm -f -- "$tmp"' EXIT
umask 077
cat > "$tmp"
chmod 600 "$tmp"
mv -f -- "$tmp" "$f"
trap - EXIT
`, f)
	if _, err := r.run(ctx, script, bytes.NewReader(merged)); err != nil {
		return fmt.Errorf("write %s on %s: %w (the binary is installed; check that the ssh user owns that file, or add the line above by hand)", file, r.target, err)
	}
	if action == "replaced" {
		fmt.Fprintf(stderr, "georep: replaced %d older line(s) for this key in %s on %s (sshd uses only the first line for a key)\n", replaced, file, r.target)
	} else {
		fmt.Fprintf(stderr, "georep: added the line to %s on %s\n", file, r.target)
	}
	return nil
}
