package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// progressTree writes a master tree of dirs directories holding files files
// between them, of sizes from 1 B to 64 KiB.
func progressTree(t *testing.T, root string, dirs, files int) {
	t.Helper()
	for i := range files {
		dir := filepath.Join(root, fmt.Sprintf("d%02d", i%dirs))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("create %s: %v", dir, err)
		}
		data := bytes.Repeat([]byte{byte(i)}, 1+(i*977)%(64<<10))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			t.Fatalf("write file %d: %v", i, err)
		}
	}
}

// sameFiles counts the master's regular files and fails unless the slave
// holds each at the same path with the same size.
func sameFiles(t *testing.T, master, slave string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(master, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		n++
		rel, _ := filepath.Rel(master, p)
		mi, err := d.Info()
		if err != nil {
			return err
		}
		si, err := os.Stat(filepath.Join(slave, rel))
		if err != nil {
			return fmt.Errorf("slave misses %s: %w", rel, err)
		}
		if si.Size() != mi.Size() {
			return fmt.Errorf("slave's %s has %d bytes, the master's %d", rel, si.Size(), mi.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("compare %s with %s: %v", master, slave, err)
	}
	return n
}

// barFrame matches one drawn frame of the bar: percentage, then done/total.
var barFrame = regexp.MustCompile(`(\d+)% \|[^|]*\| \((\d+)/(\d+), `)

// TestMasterProgressBar runs the real `georep master --once` with its
// stderr on a pseudo-terminal or a plain pipe and checks that the bar is
// drawn (ending at 100%) exactly when it should be, and never on stdout.
func TestMasterProgressBar(t *testing.T) {
	const dirs, files = 12, 300
	bin := buildGeorep(t)
	tests := []struct {
		name    string
		onPTY   bool
		args    []string
		wantBar bool
	}{
		{name: "terminal, auto", onPTY: true, wantBar: true},
		{name: "terminal, --progress=false", onPTY: true, args: []string{"--progress=false"}},
		{name: "pipe, auto", onPTY: false},
		{name: "pipe, --progress", onPTY: false, args: []string{"--progress"}, wantBar: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			master, slave, state := t.TempDir(), t.TempDir(), t.TempDir()
			progressTree(t, master, dirs, files)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			args := append([]string{"master", "--once", "--root", master, "--slave", slave, "--state", state}, tc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			var stdout bytes.Buffer
			cmd.Stdout = &stdout
			stderr := runWithStderr(t, cmd, tc.onPTY)

			if got := sameFiles(t, master, slave); got != files {
				t.Fatalf("master holds %d files, want %d", got, files)
			}
			if strings.Contains(stdout.String(), "%") || strings.Contains(stdout.String(), "\r") {
				t.Errorf("progress drawn on stdout: %q", stdout.String())
			}
			frames := barFrame.FindAllStringSubmatch(stderr, -1)
			if !tc.wantBar {
				// A terminal turns each \n into \r\n; a bar's \r is alone.
				if len(frames) > 0 || strings.Contains(strings.ReplaceAll(stderr, "\r\n", "\n"), "\r") || strings.Contains(stderr, "files/s") {
					t.Fatalf("progress drawn on stderr when it should be quiet:\n%q", stderr)
				}
				return
			}
			if len(frames) < 2 {
				t.Fatalf("want at least a first and a last bar frame on the terminal, got %d:\n%q", len(frames), stderr)
			}
			prev := -1
			for _, f := range frames {
				pct, _ := strconv.Atoi(f[1])
				if pct < prev {
					t.Errorf("bar went back from %d%% to %d%%:\n%q", prev, pct, stderr)
				}
				prev = pct
			}
			first, last := frames[0], frames[len(frames)-1]
			if first[1] != "0" {
				t.Errorf("first frame at %s%%, want 0%%", first[1])
			}
			if last[1] != "100" || last[2] != last[3] {
				t.Errorf("last frame %q, want 100%% with done equal to total", last[0])
			}
			// Every file is counted, and each directory is an object with
			// no data: the root is not created, so dirs of them.
			if want := strconv.Itoa(files + dirs); last[3] != want {
				t.Errorf("bar total %s, want %s (files plus directories)", last[3], want)
			}
			tail := stderr[strings.LastIndex(stderr, "100%"):]
			if !regexp.MustCompile(`Hybrid Crawl ([\d.]+ \w+)/([\d.]+ \w+)`).MatchString(stderr) {
				t.Errorf("no bytes figure before the bar:\n%q", stderr)
			}
			if m := regexp.MustCompile(`Hybrid Crawl ([\d.]+ \w+)/([\d.]+ \w+)\s*100%`).FindStringSubmatch(stderr); m == nil || m[1] != m[2] {
				t.Errorf("last frame's bytes are not all done: %v\n%q", m, stderr)
			}
			if !strings.Contains(tail, "files/s") {
				t.Errorf("last frame shows no rate: %q", tail)
			}
		})
	}
}

// runWithStderr runs cmd to completion with its stderr on a fresh
// pseudo-terminal (onPTY) or a pipe, requires it to exit 0 and returns what
// it wrote there.
func runWithStderr(t *testing.T, cmd *exec.Cmd, onPTY bool) string {
	t.Helper()
	var r io.ReadCloser
	var w *os.File
	var err error
	if onPTY {
		r, w, err = pty.Open()
		if err == nil {
			// A wide terminal keeps each frame on one line.
			err = pty.Setsize(w, &pty.Winsize{Rows: 40, Cols: 200})
		}
	} else {
		r, w, err = os.Pipe()
	}
	if err != nil {
		t.Fatalf("open the stderr end: %v", err)
	}
	defer r.Close()
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	// The child holds its own copy; ours closed, the reader ends when the
	// child (and its slave child) exit.
	w.Close()
	out := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(r)
		// A pty's master reads EIO once no one holds the terminal.
		if err != nil && !errors.Is(err, syscall.EIO) {
			b = append(b, fmt.Sprintf("\n[read error: %v]", err)...)
		}
		out <- string(b)
	}()
	waitErr := cmd.Wait()
	var s string
	select {
	case s = <-out:
	case <-time.After(30 * time.Second):
		t.Fatalf("stderr of %v still open 30s after it exited", cmd.Args)
	}
	if waitErr != nil {
		t.Fatalf("%v: %v\nstderr:\n%s", cmd.Args, waitErr, s)
	}
	return s
}

// TestMasterProgressFlag checks that a --progress value other than auto,
// true and false is refused before anything starts.
func TestMasterProgressFlag(t *testing.T) {
	bin := buildGeorep(t)
	for _, val := range []string{"sometimes", "yes", ""} {
		t.Run(val, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			cmd := exec.Command(bin, "master", "--root", t.TempDir(), "--slave", t.TempDir(), "--state", state, "--progress="+val)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 {
				t.Fatalf("georep master --progress=%q: %v, want exit status 2\n%s", val, err, out)
			}
			if !strings.Contains(string(out), "accepted values are auto, true and false") {
				t.Errorf("the refusal names no accepted values:\n%s", out)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("state directory created by a refused command line: %v", err)
			}
		})
	}
}
