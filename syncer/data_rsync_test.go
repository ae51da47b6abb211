package syncer

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/rsyncd"
	"github.com/georep/georep/internal/testfs"
	"github.com/georep/georep/syncer/transfer"
)

// TestRsyncShellArg runs real rsync with -e rsyncShellArg(words), the
// program being a script that records the words it was given: rsync must
// split the string back into exactly those words.
func TestRsyncShellArg(t *testing.T) {
	tests := []struct {
		name  string
		words []string
	}{
		{"plain", []string{"georep", "slave", "rsyncd", "--root", "/srv/slave"}},
		{"spaces", []string{"ssh", "-o", "ControlPath=/tmp/a dir/ctl", "host name"}},
		{"tab", []string{"x\ty"}},
		{"double quotes", []string{`say "hi"`, `"`, `a"b`}},
		{"backslashes", []string{`C:\dir\`, `\\`, `a\"b`}},
		{"single quotes", []string{"it's", "'"}},
		{"empty word", []string{"", "after-empty"}},
		{"quotes inside quotes", []string{`'"'`, `"'"`, `""`, `''`, `a "" b`}},
		{"dollar and star stay literal", []string{"$HOME", "*", "a;b|c&d"}},
	}
	dir := filepath.Join(t.TempDir(), "with space")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "argv")
	prog := filepath.Join(dir, "record argv")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s\\0' \"$@\" > '%s'\nexit 1\n", out)
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.Remove(out)
			arg := rsyncShellArg(append([]string{prog}, tc.words...))
			cmd := exec.Command("rsync", "-e", arg, src+"/", "somehost::georep/x/")
			cmd.Env = append(os.Environ(), "LC_ALL=C")
			res, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("rsync succeeded through a program that exits 1:\n%s", res)
			}
			raw, rerr := os.ReadFile(out)
			if rerr != nil {
				t.Fatalf("rsync -e %q never ran the program (%v): %v\n%s", arg, rerr, err, res)
			}
			got := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
			// rsync appends the host and its daemon command.
			want := append(slices.Clone(tc.words), "somehost", "rsync", "--server", "--daemon", ".")
			if !slices.Equal(got, want) {
				t.Errorf("rsync -e %q gave the program %q, want %q", arg, got, want)
			}
		})
	}
}

// TestRunError: what an rsync exit code says about the run as a whole.
func TestRunError(t *testing.T) {
	tests := []struct {
		code     int
		unnamed  []string
		wantNil  bool
		wantText string
	}{
		{code: 0, wantNil: true},
		{code: rsyncPartial, wantNil: true},
		{code: rsyncVanished, wantNil: true},
		{code: rsyncPartial, unnamed: []string{"rsync: [receiver] something odd"}, wantText: "something odd"},
		{code: rsyncVanished, unnamed: []string{"rsync: x failed: y", "rsync: z"}, wantText: "rsync: x failed: y; rsync: z"},
		{code: 1, wantText: "syntax or usage error"},
		{code: 5, wantText: "installed on the slave"},
		{code: 10, wantText: "connection to the slave broke"},
		{code: 11, wantText: "full slave filesystem"},
		{code: 12, wantText: "connection to the slave broke"},
		{code: 20, wantText: "interrupted"},
		{code: 30, wantText: "timeout"},
		{code: 35, wantText: "daemon connection"},
		{code: 255, wantText: "ssh"},
		{code: 99, wantText: "rsync(1) EXIT VALUES"},
	}
	const stderr = "line one\n\nrsync error: last (code 11)\n"
	for _, tc := range tests {
		err := runError(tc.code, tc.unnamed, stderr)
		if tc.wantNil {
			if err != nil {
				t.Errorf("runError(%d, %q) = %v, want nil", tc.code, tc.unnamed, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrRsync) || !strings.Contains(err.Error(), tc.wantText) {
			t.Errorf("runError(%d, %q) = %v, want an ErrRsync saying %q", tc.code, tc.unnamed, err, tc.wantText)
		}
		if tc.unnamed == nil && !strings.Contains(err.Error(), "rsync error: last (code 11)") {
			t.Errorf("runError(%d) = %v, want stderr's last lines in it", tc.code, err)
		}
	}
}

// TestRsyncLineErr: lines rsync prints about one file, to errors.
func TestRsyncLineErr(t *testing.T) {
	tests := []struct {
		line     string
		errno    unix.Errno // 0: no errno
		remote   bool       // the slave's side failed
		notExist bool
	}{
		{line: `rsync: [receiver] write failed on "/s-1/ab" (in georep): No space left on device (28)`, errno: unix.ENOSPC, remote: true},
		{line: `rsync: [receiver] mkstemp "/d/.ab.x" failed: Permission denied (13)`, errno: unix.EACCES, remote: true},
		{line: `rsync: [receiver] write failed on "/d/ab": Disk quota exceeded (122)`, errno: unix.EDQUOT, remote: true},
		{line: `rsync: [generator] recv_generator: failed to stat "/d/ab": Input/output error (5)`, errno: unix.EIO, remote: true},
		{line: `rsync: [receiver] write failed on "ab": No space left on device`, errno: unix.ENOSPC, remote: true},
		{line: `rsync: [receiver] odd errno "ab" (4000)`, errno: 4000, remote: true},
		{line: `rsync: [sender] send_files failed to open "/m/ab": Permission denied (13)`, errno: unix.EACCES},
		{line: `rsync: [sender] link_stat "/m/ab" failed: No such file or directory (2)`, errno: unix.ENOENT, notExist: true},
		{line: `file has vanished: "/m/ab"`, notExist: true},
		{line: `rsync: [sender] symlink has no referent: "/m/ab"`, notExist: true},
		{line: `rsync: something about "ab" with no reason`},
	}
	for _, tc := range tests {
		err := rsyncLineErr(tc.line)
		if !errors.Is(err, ErrRsync) || !strings.Contains(err.Error(), tc.line) {
			t.Errorf("%q: %v, want an ErrRsync quoting the line", tc.line, err)
		}
		if tc.errno != 0 && !errors.Is(err, tc.errno) {
			t.Errorf("%q: %v, want errno %v", tc.line, err, tc.errno)
		}
		var re *transfer.RemoteError
		if got := errors.As(err, &re); got != tc.remote {
			t.Errorf("%q: a slave error %v, want %v", tc.line, got, tc.remote)
		} else if got && (re.Errno != tc.errno || re.Code == "") {
			t.Errorf("%q: slave error %+v, want errno %v with its name", tc.line, re, tc.errno)
		}
		if got := errors.Is(err, os.ErrNotExist); got != tc.notExist {
			t.Errorf("%q: not-exist %v, want %v", tc.line, got, tc.notExist)
		}
	}
}

const (
	hexA = "0000000000000000000000000000000a" // sorts first: rsync sends it first
	hexB = "0000000000000000000000000000000b"
	hexC = "ccccccccccccccccccccccccccccccc0"
)

// rsyncCase is a real rsync run of a few files named by GFID hex.
type rsyncCase struct {
	src, dst string   // dst: a local directory, or HOST::MODULE/...
	shell    string   // -e program, "" for none
	setpriv  bool     // run as nobody
	extra    []string // more rsync options
	list     []string
	during   func(t *testing.T, cmd *exec.Cmd) // while rsync runs
}

// run runs the case's rsync, as the master does, and returns its stderr
// and exit code.
func (c rsyncCase) run(t *testing.T) (string, int) {
	t.Helper()
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte(strings.Join(c.list, "\x00")+"\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(list), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"--copy-links", "--ignore-times", "--sparse", "--files-from=" + list, "--from0",
		"--out-format=" + sentPrefix + "%n %b"}
	if c.shell != "" {
		args = append(args, "-e", c.shell)
	}
	args = append(append(args, c.extra...), c.src+"/", c.dst)
	name := "rsync"
	if c.setpriv {
		args = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "rsync"}, args...)
		name = "setpriv"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	if c.during != nil {
		c.during(t, cmd)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("rsync: %v", err)
	}
	code := 0
	if ee != nil {
		code = ee.ExitCode()
	}
	return stderr.String(), code
}

// openTree makes dir (and its parent) traversable by anyone, for runs as
// nobody.
func openTree(t *testing.T, dir string) string {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeRandom(t *testing.T, p string, n int, mode os.FileMode) {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// daemonShell writes an -e program that runs the slave's confined rsync
// daemon (internal/rsyncd's configuration) for stage, as georep slave
// rsyncd does, its log on stderr.
func daemonShell(t *testing.T, stage string) string {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "rsyncd.conf")
	if err := os.WriteFile(conf, []byte(rsyncd.Config(stage, os.Getuid(), os.Getgid())), 0o600); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(dir, "daemon")
	script := fmt.Sprintf("#!/bin/sh\nexec rsync --server --daemon --config='%s' .\n", conf)
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog
}

// TestParseRsyncStderr maps the stderr of real rsync runs to per-file
// errors and judges each run as the master does.
func TestParseRsyncStderr(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, src string) rsyncCase
		wantCode int
		// per file: the errno its error must match (0: no error for it)
		want       map[string]error
		wantRemote map[string]bool
		wantRunErr bool
	}{
		{
			name: "slave filesystem full (daemon)",
			setup: func(t *testing.T, src string) rsyncCase {
				writeRandom(t, filepath.Join(src, hexA), 2<<20, 0o644)
				stage := testfs.Tmpfs(t, "1m")
				return rsyncCase{src: src, dst: "slave::" + rsyncd.Module + "/", shell: daemonShell(t, stage), list: []string{hexA}}
			},
			wantCode:   11,
			want:       map[string]error{hexA: unix.ENOSPC},
			wantRemote: map[string]bool{hexA: true},
			wantRunErr: true,
		},
		{
			name: "file gone from the master before the run",
			setup: func(t *testing.T, src string) rsyncCase {
				writeRandom(t, filepath.Join(src, hexA), 10, 0o644)
				return rsyncCase{src: src, dst: t.TempDir(), list: []string{hexA, hexB}}
			},
			wantCode: rsyncPartial,
			want:     map[string]error{hexB: os.ErrNotExist},
		},
		{
			name: "farm symlink with no referent",
			setup: func(t *testing.T, src string) rsyncCase {
				writeRandom(t, filepath.Join(src, hexA), 10, 0o644)
				if err := os.Symlink(filepath.Join(src, "gone"), filepath.Join(src, hexC)); err != nil {
					t.Fatal(err)
				}
				return rsyncCase{src: src, dst: t.TempDir(), list: []string{hexA, hexC}}
			},
			wantCode: rsyncPartial,
			want:     map[string]error{hexC: os.ErrNotExist},
		},
		{
			name: "master file unreadable (sender permission denied)",
			setup: func(t *testing.T, src string) rsyncCase {
				openTree(t, src)
				writeRandom(t, filepath.Join(src, hexA), 10, 0o600)
				writeRandom(t, filepath.Join(src, hexB), 10, 0o644)
				dst := openTree(t, t.TempDir())
				if err := os.Chown(dst, 65534, 65534); err != nil {
					t.Fatal(err)
				}
				return rsyncCase{src: src, dst: dst, setpriv: true, list: []string{hexA, hexB}}
			},
			wantCode:   rsyncPartial,
			want:       map[string]error{hexA: unix.EACCES},
			wantRemote: map[string]bool{hexA: false},
		},
		{
			name: "slave directory not writable (receiver permission denied)",
			setup: func(t *testing.T, src string) rsyncCase {
				openTree(t, src)
				writeRandom(t, filepath.Join(src, hexA), 10, 0o644)
				return rsyncCase{src: src, dst: openTree(t, t.TempDir()), setpriv: true, list: []string{hexA}}
			},
			wantCode:   rsyncPartial,
			want:       map[string]error{hexA: unix.EACCES},
			wantRemote: map[string]bool{hexA: true},
		},
		{
			name: "file vanished during the transfer",
			setup: func(t *testing.T, src string) rsyncCase {
				writeRandom(t, filepath.Join(src, hexA), 256<<10, 0o644)
				writeRandom(t, filepath.Join(src, hexB), 10, 0o644)
				dst := t.TempDir()
				return rsyncCase{src: src, dst: dst, list: []string{hexA, hexB}, extra: []string{"--bwlimit=64"},
					// Once rsync writes A's temp, its file list (with B)
					// is made: B vanishes before the sender reaches it.
					during: func(t *testing.T, cmd *exec.Cmd) {
						deadline := time.Now().Add(30 * time.Second)
						for {
							ents, _ := os.ReadDir(dst)
							if len(ents) > 0 {
								break
							}
							if time.Now().After(deadline) {
								_ = cmd.Process.Kill()
								t.Fatal("rsync wrote nothing in 30s")
							}
							time.Sleep(2 * time.Millisecond)
						}
						if err := os.Remove(filepath.Join(src, hexB)); err != nil {
							t.Fatal(err)
						}
					}}
			},
			wantCode: rsyncVanished,
			want:     map[string]error{hexB: os.ErrNotExist},
		},
		{
			name: "clean run",
			setup: func(t *testing.T, src string) rsyncCase {
				writeRandom(t, filepath.Join(src, hexA), 10, 0o644)
				return rsyncCase{src: src, dst: t.TempDir(), list: []string{hexA}}
			},
			want: map[string]error{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.setup(t, t.TempDir())
			stderr, code := c.run(t)
			t.Logf("rsync exit %d, stderr:\n%s", code, stderr)
			if code != tc.wantCode {
				t.Fatalf("rsync exit %d, want %d", code, tc.wantCode)
			}
			r := &rsyncRun{byHex: map[string]int{hexA: 0, hexB: 1, hexC: 2}}
			failures, unnamed := r.parseStderr(stderr)
			// A run that failed as a whole may say more (a broken pipe);
			// a partial one must pin every error on a file.
			if len(unnamed) != 0 && !tc.wantRunErr {
				t.Errorf("lines naming no file taken for errors: %q", unnamed)
			}
			for hex, i := range r.byHex {
				err, want := failures[i], tc.want[hex]
				switch {
				case want == nil && err != nil:
					t.Errorf("%s: failed with %v, want no failure", hex, err)
				case want != nil && !errors.Is(err, want):
					t.Errorf("%s: %v, want an error matching %v", hex, err, want)
				case err != nil && !errors.Is(err, ErrRsync):
					t.Errorf("%s: %v is no ErrRsync", hex, err)
				}
				if remote, ok := tc.wantRemote[hex]; ok {
					var re *transfer.RemoteError
					if got := errors.As(err, &re); got != remote {
						t.Errorf("%s: a slave error %v (%v), want %v", hex, got, err, remote)
					}
				}
				if err != nil && daemonLogRE.MatchString(strings.TrimPrefix(err.Error(), ErrRsync.Error()+": ")) {
					t.Errorf("%s: %v keeps the daemon's log prefix", hex, err)
				}
			}
			if err := runError(code, unnamed, stderr); (err != nil) != tc.wantRunErr {
				t.Errorf("run error %v, want one: %v", err, tc.wantRunErr)
			}
		})
	}
}

// TestParseSent: rsync's --out-format lines.
func TestParseSent(t *testing.T) {
	tests := []struct {
		line   string
		logged bool
		sent   int64
	}{
		{line: sentPrefix + hexA + " 1234", logged: true, sent: 1234},
		{line: sentPrefix + hexA + " 0", logged: true},
		{line: sentPrefix + hexA + " -5", logged: true},
		{line: sentPrefix + hexA + " x", logged: true},
		{line: sentPrefix + hexA},
		{line: sentPrefix + hexC + " 9"},
		{line: hexA + " 9"},
		{line: "  " + sentPrefix + hexA + " 9"},
	}
	for _, tc := range tests {
		r := &rsyncRun{byHex: map[string]int{hexA: 0}, sent: make([]int64, 1), logged: make([]bool, 1)}
		r.parseSent(tc.line)
		if r.logged[0] != tc.logged || r.sent[0] != tc.sent {
			t.Errorf("%q: logged %v sent %d, want %v %d", tc.line, r.logged[0], r.sent[0], tc.logged, tc.sent)
		}
	}
}

// FuzzRsyncOutput feeds the stderr and --out-format parsers what a slave
// could send: they must not panic, must only name known files, and must
// never count negative bytes.
func FuzzRsyncOutput(f *testing.F) {
	f.Add("rsync: [receiver] write failed on \"/s-1/" + hexA + "\" (in georep): No space left on device (28)\n")
	f.Add(sentPrefix + hexA + " 12\n" + sentPrefix + hexB + " 7\n")
	f.Fuzz(func(t *testing.T, text string) {
		r := &rsyncRun{byHex: map[string]int{hexA: 0, hexB: 1, hexC: 2},
			sent: make([]int64, 3), logged: make([]bool, 3)}
		for _, line := range strings.Split(text, "\n") {
			r.parseSent(line)
		}
		for i, n := range r.sent {
			if n < 0 {
				t.Fatalf("file %d: %d bytes sent", i, n)
			}
			if n > 0 && !r.logged[i] {
				t.Fatalf("file %d: bytes without a sent line", i)
			}
		}
		failures, unnamed := r.parseStderr(text)
		for i, err := range failures {
			if i < 0 || i >= 3 {
				t.Fatalf("failure for unknown file %d", i)
			}
			if !errors.Is(err, ErrRsync) {
				t.Fatalf("failure %v is no ErrRsync", err)
			}
		}
		if len(unnamed) > strings.Count(text, "\n")+1 {
			t.Fatalf("%d unnamed lines from %d lines", len(unnamed), strings.Count(text, "\n")+1)
		}
		for _, code := range []int{0, rsyncPartial, rsyncVanished, 11} {
			if err := runError(code, unnamed, text); err != nil && !errors.Is(err, ErrRsync) {
				t.Fatalf("run error %v is no ErrRsync", err)
			}
		}
	})
}

// TestRsyncBatchFor: parallel rsync runs together hold no more files open
// than the open-file limit allows, keep a reserve for the rest of the
// master, and never exceed rsyncBatch or go below 64.
func TestRsyncBatchFor(t *testing.T) {
	tests := []struct {
		limit uint64
		runs  int
		want  int
	}{
		{limit: 1 << 20, runs: 3, want: rsyncBatch},
		{limit: 20000, runs: 3, want: (20000 - rsyncOpenReserve) / 3},
		{limit: 20000, runs: 1, want: rsyncBatch},
		{limit: 1024, runs: 4, want: 128},
		{limit: 1024, runs: 0, want: 1024 - rsyncOpenReserve},
		{limit: 600, runs: 8, want: 64},
		{limit: 100, runs: 1, want: 64},
	}
	for _, tc := range tests {
		if got := rsyncBatchFor(tc.limit, tc.runs); got != tc.want {
			t.Errorf("rsyncBatchFor(%d, %d) = %d, want %d", tc.limit, tc.runs, got, tc.want)
		}
		if got := rsyncBatchFor(tc.limit, tc.runs); tc.limit > rsyncOpenReserve+64*uint64(max(tc.runs, 1)) &&
			uint64(got*max(tc.runs, 1)) > tc.limit-rsyncOpenReserve {
			t.Errorf("rsyncBatchFor(%d, %d) = %d: %d runs would hold more than the limit allows", tc.limit, tc.runs, got, tc.runs)
		}
	}
}

// TestFullSlave: when rsync exits 11 naming no file, the files whose new
// content cannot fit in the slave's free space fail as ENOSPC with a
// reason that says so; the others are left to the run's own error.
func TestFullSlave(t *testing.T) {
	marks := []fileMark{{size: 4 << 20}, {size: 100}, {size: 0}, {size: 2 << 20}}
	for _, tc := range []struct {
		name string
		free uint64
		want []int
	}{
		{"under 2 MiB free", 2<<20 - 1, []int{0, 3}},
		{"2 MiB free", 2 << 20, []int{0}},
		{"plenty", 1 << 30, nil},
	} {
		got := fullSlave(tc.free, marks)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d files failed (%v), want %v", tc.name, len(got), got, tc.want)
			continue
		}
		for _, i := range tc.want {
			err := got[i]
			var re *transfer.RemoteError
			if !errors.Is(err, ErrRsync) || !errors.As(err, &re) || re.Errno != unix.ENOSPC || !strings.Contains(err.Error(), "No space left on device") {
				t.Errorf("%s: file %d: %v, want an rsync ENOSPC that says so", tc.name, i, err)
			}
		}
	}
}
