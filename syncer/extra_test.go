package syncer

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/treecmp"
)

// TestExtraDataChannels: with extra data connections (each a slave
// process of its own on the same root, as another ssh channel brings),
// the transfer spreads over them and the slave ends up exact. A second
// run with changes (deltas included) converges too.
func TestExtraDataChannels(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d", "e")
	for i := range 400 {
		dir := []string{"d", "e"}[i%2]
		size := 200 + i*37%8000
		if i%50 == 0 {
			size = 2<<20 + i
		}
		b := make([]byte, size)
		for j := range b {
			b[j] = byte(i*7 + j*13)
		}
		if err := os.WriteFile(filepath.Join(tr.master, dir, fmt.Sprintf("f%03d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tr.config(bin)
	cfg.extraChannels = 2
	// The extra connections join once their slave processes are up (a
	// test binary, -race in CI, on a loaded machine). A local transfer of
	// these 18 MiB, which zstd shrinks to next to nothing, ended before
	// that in 2 of 5 runs; sent as they are and capped, they take two
	// seconds.
	cfg.Compress = CompressNone
	cfg.BwLimit = 8 << 20
	logs := tr.mustConverge(t, cfg, "initial")
	for _, want := range []string{"opening extra data channels", "another connection to the slave joins the transfer"} {
		if !strings.Contains(logs, want) {
			t.Errorf("initial: the log does not say %q\n%s", want, logs)
		}
	}
	// Changes: some small files rewritten, a large one changed inside
	// (a delta over whichever connection takes it).
	for i := 0; i < 400; i += 9 {
		p := filepath.Join(tr.master, []string{"d", "e"}[i%2], fmt.Sprintf("f%03d", i))
		if err := os.WriteFile(p, []byte(fmt.Sprintf("rewritten %d", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(tr.master, "d", "f050"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("changed ", 8192)), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(tr.master, "d", "f050"), future, future); err != nil {
		t.Fatal(err)
	}
	tr.mustConverge(t, cfg, "incremental")
}

// TestExtraDataChannelDies: an extra data connection whose slave process
// dies mid-transfer fails only the files in flight on it; they go again
// on the next attempt and the run converges.
func TestExtraDataChannelDies(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d")
	for i := range 60 {
		b := make([]byte, 1<<20+i)
		for j := range b {
			b[j] = byte(i + j*31)
		}
		if err := os.WriteFile(filepath.Join(tr.master, "d", fmt.Sprintf("f%02d", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tr.config(bin)
	cfg.extraChannels = 2
	var logs testbuf.Buffer
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- Run(ctx, cfg) }()

	// Once an extra connection has joined, kill every slave process of
	// this root but the first (the session's own).
	killed := 0
	for deadline := time.Now().Add(30 * time.Second); killed == 0 && time.Now().Before(deadline); {
		select {
		case err := <-ran:
			t.Fatalf("the run ended before an extra connection could be killed: %v\n%s", err, logs.String())
		case <-time.After(5 * time.Millisecond):
		}
		if !strings.Contains(logs.String(), "joins the transfer") {
			continue
		}
		pids := slavePIDs(t, tr.slave)
		for _, pid := range pids[1:] {
			if p, err := os.FindProcess(pid); err == nil && p.Kill() == nil {
				killed++
			}
		}
	}
	if killed == 0 {
		t.Fatalf("no extra slave process to kill\n%s", logs.String())
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run after %d extra slave processes were killed: %v\n%s", killed, err, logs.String())
	}
	if !strings.Contains(logs.String(), "file content not sent") {
		t.Errorf("no file failed on the killed connections: the test did not cut a transfer\n%s", logs.String())
	}
	if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
		t.Fatal("the slave differs from the master")
	}
}

// slavePIDs lists the running `georep slave --stdio` processes of root,
// oldest first.
func slavePIDs(t *testing.T, root string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	type proc struct {
		pid   int
		start uint64
	}
	var ps []proc
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmd), "slave\x00--stdio\x00--root\x00"+root+"\x00") {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Field 22 (starttime), counted after the command's closing paren.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		var start uint64
		if len(f) > 19 {
			fmt.Sscanf(f[19], "%d", &start)
		}
		ps = append(ps, proc{pid, start})
	}
	slices.SortFunc(ps, func(a, b proc) int { return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.pid, b.pid)) })
	pids := make([]int, len(ps))
	for i, p := range ps {
		pids[i] = p.pid
	}
	return pids
}

func TestExtraWanted(t *testing.T) {
	for _, tc := range []struct {
		name     string
		channels int
		kind     client.SlaveKind
		rtt      time.Duration
		size     int64
		want     int
	}{
		{"ssh across a WAN, much data", 2, client.KindSSH, 50 * time.Millisecond, 200 << 20, 2},
		{"ssh at the threshold", 3, client.KindSSH, extraRTT, extraBytes, 3},
		{"turned off", 0, client.KindSSH, 50 * time.Millisecond, 200 << 20, 0},
		{"ssh on a LAN", 2, client.KindSSH, 2 * time.Millisecond, 200 << 20, 0},
		{"ssh across a WAN, little data", 2, client.KindSSH, 50 * time.Millisecond, extraBytes - 1, 0},
		{"mTLS across a WAN", 2, client.KindMTLS, 50 * time.Millisecond, 200 << 20, 0},
		{"local", 2, client.KindLocal, 50 * time.Millisecond, 200 << 20, 0},
	} {
		if got := extraWanted(tc.channels, tc.kind, tc.rtt, tc.size); got != tc.want {
			t.Errorf("%s: %d extra connections, want %d", tc.name, got, tc.want)
		}
	}
}
