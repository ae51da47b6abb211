package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/checkpoint"
	"github.com/georep/georep/internal/status"
)

// runGeorep runs the command line in process and returns its exit code,
// stdout and stderr.
func runGeorep(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestCheckpointCommand: set and clear round-trip through the state
// directory, and a wrong command line exits 2 saying what is accepted.
func TestCheckpointCommand(t *testing.T) {
	state := t.TempDir()
	missing := filepath.Join(state, "nope")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
		want   time.Time // the checkpoint left set; zero: none
		now    bool      // want is the time the command ran
	}{
		{name: "rfc 3339", args: []string{"set", "2026-01-02T03:04:05Z"},
			want: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{name: "local", args: []string{"set", "2025-06-07 08:09:10"},
			want: time.Date(2025, 6, 7, 8, 9, 10, 0, time.Local)},
		{name: "now", args: []string{"set"}, now: true},
		{name: "bad time", args: []string{"set", "tomorrow"}, code: 2, stderr: checkpoint.Formats, now: true},
		{name: "two times", args: []string{"set", "2026-01-02", "03:04:05"}, code: 2, stderr: "accepts at most 1 arg", now: true},
		{name: "clear", args: []string{"clear"}},
		{name: "clear again", args: []string{"clear"}},
		{name: "no action", args: nil, code: 2, stderr: "say set [TIME] or clear"},
		{name: "clear with an argument", args: []string{"clear", "now"}, code: 2, stderr: "unknown command"},
	}
	var lastNow [2]time.Time // bounds of the last "set" with no TIME
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			code, _, stderr := runGeorep(t, append([]string{"checkpoint", "--state", state}, tc.args...)...)
			after := time.Now()
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tc.code, tc.stderr)
			}
			if tc.now && tc.code == 0 {
				lastNow = [2]time.Time{before, after}
			}
			got, ok, err := checkpoint.Read(state)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.now:
				if !ok || got.Before(lastNow[0]) || got.After(lastNow[1]) {
					t.Fatalf("checkpoint = %v (set %v), want the time of the last set with no TIME, %v..%v", got, ok, lastNow[0], lastNow[1])
				}
			case tc.want.IsZero():
				if ok {
					t.Fatalf("checkpoint = %v, want none", got)
				}
			default:
				if !ok || !got.Equal(tc.want) {
					t.Fatalf("checkpoint = %v (set %v), want %v", got, ok, tc.want)
				}
			}
		})
	}

	for _, args := range [][]string{{"checkpoint", "set"}, {"checkpoint", "clear"}} {
		if code, _, stderr := runGeorep(t, args...); code != 2 || !strings.Contains(stderr, "--state is required") {
			t.Errorf("%v without --state: exit %d, %q", args, code, stderr)
		}
		code, _, stderr := runGeorep(t, append(args, "--state", missing)...)
		if code != 1 || !strings.Contains(stderr, "does not exist") {
			t.Errorf("%v with a missing --state: exit %d, %q", args, code, stderr)
		}
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a checkpoint command created the missing state directory (%v)", err)
	}
}

// TestStatusShowsCheckpointWithoutMaster: a checkpoint set while no master
// runs shows in status, completed only if the last stime passed it.
func TestStatusShowsCheckpointWithoutMaster(t *testing.T) {
	state := t.TempDir()
	synced := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	if err := status.Write(state, &status.Status{Master: "/m", Slave: "/s", State: status.Stopped, LastSynced: synced}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		set       string
		completed bool
		column    string
	}{
		{"passed", "2026-05-01T11:59:59Z", true, "Yes"},
		{"at the stime", "2026-05-01T12:00:00Z", true, "Yes"},
		{"ahead", "2026-05-01T12:00:01Z", false, "No"},
		{"cleared", "", false, "N/A"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"checkpoint", "--state", state, "clear"}
			if tc.set != "" {
				args = []string{"checkpoint", "--state", state, "set", tc.set}
			}
			if code, _, stderr := runGeorep(t, args...); code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, stderr)
			}
			st := statusJSON(t, func(args ...string) (int, string, string) { return runGeorep(t, args...) }, state)
			if st.Checkpoint.Completed != tc.completed || !st.Checkpoint.CompletedAt.IsZero() {
				t.Errorf("checkpoint = %+v, want completed %v with no completed_at (no master saw it)", st.Checkpoint, tc.completed)
			}
			code, out, stderr := runGeorep(t, "status", "--state", state)
			if code != 0 {
				t.Fatalf("status: exit %d: %s", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if f := strings.Fields(lines[1]); f[len(f)-1] != tc.column {
				t.Errorf("CHECKPOINT COMPLETED = %q, want %q\n%s", f[len(f)-1], tc.column, out)
			}
		})
	}
}

// statusJSON runs `georep status --json` through runner and decodes it.
func statusJSON(t *testing.T, runner func(args ...string) (int, string, string), state string) status.Status {
	t.Helper()
	code, out, stderr := runner("status", "--state", state, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, stderr)
	}
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode status --json: %v\n%s", err, out)
	}
	return st
}

// TestMasterRecordsCheckpoint drives the real binary with a local slave:
// `georep master --once` records when its stime passes the checkpoint.
func TestMasterRecordsCheckpoint(t *testing.T) {
	bin := buildGeorep(t)
	base := t.TempDir()
	master, slave, state := filepath.Join(base, "master"), filepath.Join(base, "slave"), filepath.Join(base, "state")
	for _, d := range []string{master, slave, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(master, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	georep := func(args ...string) (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ctx.Err() != nil {
			t.Fatalf("georep %v did not finish within a minute: %s", args, stderr.String())
		}
		code := 0
		if err != nil {
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("georep %v: %v", args, err)
			}
			code = exitErr.ExitCode()
		}
		return code, stdout.String(), stderr.String()
	}
	must := func(args ...string) {
		t.Helper()
		if code, _, stderr := georep(args...); code != 0 {
			t.Fatalf("georep %v: exit %d: %s", args, code, stderr)
		}
	}
	once := func() (time.Time, time.Time) {
		t.Helper()
		start := time.Now()
		must("master", "--root", master, "--slave", slave, "--state", state, "--once")
		return start, time.Now()
	}

	type step struct {
		name      string
		set       func() string // the checkpoint to set before the run
		completed bool
	}
	steps := []step{
		{"in the past", func() string { return "2020-01-02 03:04:05" }, true},
		{"in the future", func() string { return time.Now().Add(time.Hour).Format(time.RFC3339) }, false},
		// Set now, then a run: its stime is when its crawl began, after.
		{"now", func() string { return "" }, true},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			args := []string{"checkpoint", "--state", state, "set"}
			if at := s.set(); at != "" {
				args = append(args, at)
			}
			must(args...)
			want, ok, err := checkpoint.Read(state)
			if err != nil || !ok {
				t.Fatalf("checkpoint after set: %v, %v", ok, err)
			}
			start, end := once()
			st := statusJSON(t, georep, state)
			cp := st.Checkpoint
			if !cp.Time.Equal(want) || cp.Completed != s.completed {
				t.Fatalf("status checkpoint = %+v (last synced %v), want time %v completed %v", cp, st.LastSynced, want, s.completed)
			}
			if s.completed && (cp.CompletedAt.Before(start) || cp.CompletedAt.After(end)) {
				t.Errorf("completed_at = %v, want within the run, %v..%v", cp.CompletedAt, start, end)
			}
			if !s.completed && !cp.CompletedAt.IsZero() {
				t.Errorf("completed_at = %v for a checkpoint not completed", cp.CompletedAt)
			}
		})
	}

	// Another run keeps when the checkpoint completed; a cleared one goes.
	before := statusJSON(t, georep, state).Checkpoint
	once()
	if after := statusJSON(t, georep, state).Checkpoint; !after.CompletedAt.Equal(before.CompletedAt) || !after.Completed {
		t.Errorf("after another run checkpoint = %+v, want it kept as %+v", after, before)
	}
	must("checkpoint", "--state", state, "clear")
	once()
	if cp := statusJSON(t, georep, state).Checkpoint; cp != (status.Checkpoint{}) {
		t.Errorf("after clear and a run checkpoint = %+v, want none", cp)
	}
}
