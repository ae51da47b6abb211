package syncer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/treecmp"
)

// TestRsyncShares: the shares cover every item once, in order, are at
// most jobs, differ in size by at most one, and are never split below
// rsyncMinShare.
func TestRsyncShares(t *testing.T) {
	tests := []struct {
		n, jobs, want int
	}{
		{n: 0, jobs: 3, want: 0},
		{n: 1, jobs: 3, want: 1},
		{n: rsyncMinShare, jobs: 3, want: 1},
		{n: 2*rsyncMinShare - 1, jobs: 3, want: 1},
		{n: 2 * rsyncMinShare, jobs: 3, want: 2},
		{n: 3 * rsyncMinShare, jobs: 3, want: 3},
		{n: 20004, jobs: 3, want: 3},
		{n: 20004, jobs: 1, want: 1},
		{n: 20004, jobs: 0, want: 1},
		{n: 1000, jobs: 64, want: 1000 / rsyncMinShare},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("n=%d jobs=%d", tc.n, tc.jobs), func(t *testing.T) {
			shares := rsyncShares(tc.n, tc.jobs)
			if len(shares) != tc.want {
				t.Fatalf("%d shares %v, want %d", len(shares), shares, tc.want)
			}
			next, smallest, largest := 0, tc.n, 0
			for _, sh := range shares {
				if sh[0] != next || sh[1] <= sh[0] {
					t.Fatalf("shares %v do not tile [0, %d)", shares, tc.n)
				}
				next = sh[1]
				smallest, largest = min(smallest, sh[1]-sh[0]), max(largest, sh[1]-sh[0])
			}
			if next != tc.n {
				t.Fatalf("shares %v end at %d, want %d", shares, next, tc.n)
			}
			if len(shares) > 1 && (largest-smallest > 1 || smallest < rsyncMinShare) {
				t.Errorf("shares %v: sizes %d to %d", shares, smallest, largest)
			}
		})
	}
}

// jsonLines parses logs written by a slog JSON handler, a record a line.
func jsonLines(t *testing.T, logs []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range bytes.Split(logs, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// TestRsyncParallelRuns: --sync-mode rsync with --sync-jobs N runs up to N
// rsyncs at once on disjoint shares, each with its own stage, and every
// stage's files are installed: the slave equals the master after new files
// (no basis) and again after rewriting them (a basis each), and no stage
// is left behind. Real georep slave child, real rsync daemon.
func TestRsyncParallelRuns(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		files    int
		jobs     int
		wantRuns int // rsync runs per wave
	}{
		{name: "one job", files: 2 * rsyncMinShare, jobs: 1, wantRuns: 1},
		{name: "four jobs", files: 4 * rsyncMinShare, jobs: 4, wantRuns: 4},
		{name: "too few files to split four ways", files: 3*rsyncMinShare - 1, jobs: 4, wantRuns: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrees(t)
			master, slave := tr.master, tr.slave
			for wave, content := range []string{"first", "second, longer"} {
				for i := range tc.files {
					d := filepath.Join(master, fmt.Sprintf("d%d", i%7))
					if err := os.MkdirAll(d, 0o755); err != nil {
						t.Fatal(err)
					}
					body := bytes.Repeat([]byte(fmt.Sprintf("%s %d\n", content, i)), 1+i%50)
					if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), body, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				var logs testbuf.Buffer
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				cfg := tr.config(bin)
				cfg.SyncMode, cfg.SyncJobs = SyncRsync, tc.jobs
				cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
				err := Run(ctx, cfg)
				cancel()
				if err != nil {
					t.Fatalf("wave %d: Run: %v\n%s", wave, err, logs.String())
				}
				stages := map[string]int{}
				for _, l := range jsonLines(t, logs.Bytes()) {
					if l["msg"] == "rsync batch installed" {
						stages[l["stage"].(string)] += int(l["files"].(float64))
					}
				}
				total := 0
				for _, n := range stages {
					total += n
				}
				if len(stages) != tc.wantRuns || total != tc.files {
					t.Errorf("wave %d: %d stages installed %d files (%v), want %d stages, %d files",
						wave, len(stages), total, stages, tc.wantRuns, tc.files)
				}
				if !treecmp.Compare(t, master, slave, treecmp.Options{}) {
					t.FailNow()
				}
				left, err := os.ReadDir(filepath.Join(slave, ".georep", "stage"))
				if err != nil {
					t.Fatal(err)
				}
				if len(left) != 0 {
					t.Errorf("wave %d: %d stages left behind", wave, len(left))
				}
			}
		})
	}
}

// TestRsyncBatchesOfAShare: an open-file limit that lets a run hold only
// 64 files makes one share send 300 files in five runs, each installed
// while the next one transfers (at most one install in flight, in order).
// Both waves, new files and changed ones, converge, every run installs
// its files, and no stage is left behind. Real rsync, real slave child.
func TestRsyncBatchesOfAShare(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = rsyncOpenReserve + 64
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Errorf("restore the open-file limit: %v", err)
		}
	})
	const files = 300
	tr := newTrees(t, "a", "b")
	for wave, content := range []string{"first", "second, longer"} {
		for i := range files {
			body := bytes.Repeat([]byte(fmt.Sprintf("%s %d\n", content, i)), 1+i%40)
			if err := os.WriteFile(filepath.Join(tr.master, []string{"a", "b"}[i%2], fmt.Sprintf("f%03d", i)), body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg := tr.config(bin)
		cfg.SyncMode, cfg.SyncJobs = SyncRsync, 1
		logs := tr.mustConverge(t, cfg, fmt.Sprintf("wave %d", wave))
		var runs, installed int
		for _, l := range jsonLines(t, []byte(logs)) {
			if l["msg"] == "rsync batch installed" {
				runs++
				installed += int(l["files"].(float64))
			}
		}
		if want := (files + 63) / 64; runs != want || installed != files {
			t.Errorf("wave %d: %d runs installed %d files, want %d runs, %d files", wave, runs, installed, want, files)
		}
		left, err := os.ReadDir(filepath.Join(tr.slave, ".georep", "stage"))
		if err != nil || len(left) != 0 {
			t.Errorf("wave %d: %d stages left behind (%v)", wave, len(left), err)
		}
	}
}
