package rsyncd

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemonRootEnv makes the test binary itself the rsync -e program: rsync
// runs "<test binary> HOST rsync --server --daemon ." and TestMain serves
// the daemon for the root named in the environment.
const daemonRootEnv = "GEOREP_RSYNCD_TEST_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(daemonRootEnv); root != "" {
		os.Exit(serve(root))
	}
	os.Exit(m.Run())
}

func serve(root string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, err := Command(ctx, root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// slaveTree is a slave root with a real file, its gfid-index-like second
// name, a stage directory holding a basis hard link of it, and a sibling
// directory outside the root.
type slaveTree struct {
	root, outside, real, basis string
	content                    []byte
}

func newSlaveTree(t *testing.T) slaveTree {
	t.Helper()
	base := t.TempDir()
	st := slaveTree{
		root:    filepath.Join(base, "root"),
		outside: filepath.Join(base, "outside"),
		content: []byte("the slave's current content\n"),
	}
	st.real = filepath.Join(st.root, "real")
	st.basis = filepath.Join(st.root, StageDir, "s1", "basis")
	for _, d := range []string{st.outside, filepath.Join(st.root, StageDir, "s1")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(st.real, st.content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(st.real, st.basis); err != nil {
		t.Fatal(err)
	}
	// The daemon's own config file appears on first use; make it now so
	// the snapshots compare only what a client did.
	if _, err := Command(context.Background(), st.root); err != nil {
		t.Fatal(err)
	}
	return st
}

// snapshot lists every path outside the stage directory with its size and
// content digest, so a test can see that nothing there changed.
func (st slaveTree) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	stage := filepath.Join(st.root, StageDir)
	for _, top := range []string{st.root, st.outside, filepath.Dir("/rsyncd-munged/x")} {
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			if p == stage {
				return fs.SkipDir
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			v := fi.Mode().String()
			if fi.Mode().IsRegular() {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				v += " " + string(b)
			}
			out[p] = v
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// rsyncTo runs a real rsync client against the daemon for st.root.
func rsyncTo(t *testing.T, st slaveTree, args ...string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "rsync", append([]string{"-e", self}, args...)...)
	cmd.Env = append(os.Environ(), daemonRootEnv+"="+st.root)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run rsync: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, out.String()
}

func TestConfigNamesTheConfinement(t *testing.T) {
	conf := Config("/srv/r/.georep/stage", 1000, 1000)
	for _, want := range []string{
		"[georep]", "path = /srv/r/.georep/stage", "use chroot = no", "munge symlinks = yes",
		"read only = no", "write only = yes", "list = no", "numeric ids = yes", "uid = 1000",
		"gid = 1000", "log file = /dev/stderr", "delete*", "inplace", "append*", "link-dest",
		"partial-dir", "backup*", "remove-source-files",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
}

func TestDeliversIntoTheStageWithoutTouchingTheBasis(t *testing.T) {
	st := newSlaveTree(t)
	src := t.TempDir()
	newContent := bytes.Repeat([]byte("new content "), 1000)
	if err := os.WriteFile(filepath.Join(src, "basis"), newContent, 0o644); err != nil {
		t.Fatal(err)
	}
	before := st.snapshot(t)
	realIno := ino(t, st.real)
	list := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(list, []byte("basis\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := rsyncTo(t, st, "--copy-links", "--ignore-times", "--files-from="+list, "--from0", "--stats", src+"/", "slave::georep/s1/")
	if code != 0 {
		t.Fatalf("rsync exit %d:\n%s", code, out)
	}
	got, err := os.ReadFile(st.basis)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newContent) {
		t.Errorf("staged file holds %d bytes, want the %d sent", len(got), len(newContent))
	}
	if ino(t, st.basis) == realIno {
		t.Errorf("the staged file is still the basis inode: rsync wrote in place")
	}
	if after := st.snapshot(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("outside the stage changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestHostileClientStaysConfined runs a real rsync client with arguments a
// hostile or broken master could send; none may change anything outside the
// staging area or the content of the basis inode (the real file).
func TestHostileClientStaysConfined(t *testing.T) {
	tests := []struct {
		name string
		// args gets the source dir (a farm with a file "basis", a symlink
		// "up" to the slave root's parent, a directory "d") and the
		// outside directory.
		args     func(src, outside string) []string
		wantFail bool
	}{
		{name: "inplace over the basis", args: func(src, _ string) []string {
			return []string{"--inplace", "--ignore-times", src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "append to the basis", args: func(src, _ string) []string {
			return []string{"--append", src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "delete", args: func(src, _ string) []string {
			return []string{"-r", "--delete", src + "/d/", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "dot-dot in the destination", args: func(src, _ string) []string {
			return []string{src + "/basis", "slave::georep/../../escaped"}
		}},
		{name: "dot-dot deep in the destination", args: func(src, _ string) []string {
			return []string{"-r", src + "/d/", "slave::georep/s1/../../../../outside/"}
		}},
		{name: "absolute destination", args: func(src, outside string) []string {
			return []string{src + "/basis", "slave::georep/" + outside + "/x"}
		}},
		{name: "symlink then write through it", args: func(src, _ string) []string {
			return []string{"-rl", src + "/", "slave::georep/s2/"}
		}},
		{name: "write through the uploaded symlink", args: func(src, _ string) []string {
			return []string{src + "/basis", "slave::georep/s2/up/pwned"}
		}},
		{name: "relative names with dot-dot", args: func(src, _ string) []string {
			return []string{"-R", src + "/./d/../basis", "slave::georep/s1/"}
		}},
		{name: "temp dir outside", args: func(src, outside string) []string {
			return []string{"--temp-dir=" + outside, src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "partial dir outside", args: func(src, outside string) []string {
			return []string{"--partial-dir=" + outside, src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "backup", args: func(src, outside string) []string {
			return []string{"--backup", "--backup-dir=" + outside, src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "link-dest outside", args: func(src, outside string) []string {
			return []string{"--link-dest=" + outside, src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "remove source files", args: func(src, _ string) []string {
			return []string{"--remove-source-files", src + "/basis", "slave::georep/s1/"}
		}, wantFail: true},
		{name: "download (write only)", args: func(_, outside string) []string {
			return []string{"slave::georep/s1/basis", outside + "/"}
		}, wantFail: true},
		{name: "list", args: func(string, string) []string {
			return []string{"slave::"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newSlaveTree(t)
			src := t.TempDir()
			if err := os.WriteFile(filepath.Join(src, "basis"), []byte("hostile\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, "d", "x"), []byte("x\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Dir(st.root), filepath.Join(src, "up")); err != nil {
				t.Fatal(err)
			}
			// The symlink cases run in order against one tree: upload the
			// link first, then try to write through it.
			if strings.HasPrefix(tt.name, "write through") {
				if code, out := rsyncTo(t, st, "-rl", src+"/", "slave::georep/s2/"); code != 0 {
					t.Fatalf("upload the symlink: exit %d:\n%s", code, out)
				}
			}
			before := st.snapshot(t)
			code, out := rsyncTo(t, st, tt.args(src, st.outside)...)
			if tt.wantFail && code == 0 {
				t.Errorf("rsync succeeded, want it refused:\n%s", out)
			}
			if after := st.snapshot(t); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("outside the stage changed (rsync exit %d: %s):\nbefore %v\nafter  %v", code, out, before, after)
			}
			got, err := os.ReadFile(st.real)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, st.content) {
				t.Errorf("the real file (the basis inode) now holds %q", got)
			}
			// Every symlink in the stage is munged: it cannot lead out.
			err = filepath.WalkDir(filepath.Join(st.root, StageDir), func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.Type()&fs.ModeSymlink == 0 {
					return err
				}
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(target, "/rsyncd-munged/") {
					t.Errorf("symlink %s -> %s is not munged", p, target)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStageSymlinkRefused(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, ".georep"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(root, StageDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Command(context.Background(), root); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("Command over a symlinked stage = %v, want a refusal naming the symlink", err)
	}
}
