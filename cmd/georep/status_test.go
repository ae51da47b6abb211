package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/internal/checkpoint"
	"github.com/georep/georep/internal/status"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}

// fixedStatus is a stopped session with some of everything to show.
func fixedStatus(zone *time.Location) *status.Status {
	synced := time.Date(2026, 11, 24, 12, 0, 0, 0, zone)
	return &status.Status{
		Master: "/data", Slave: "geo@slave1:/srv/replica", State: status.Faulty,
		Reason: "ssh to slave1 exited with status 255: slave1 refused the ssh key",
		Crawl:  status.ChangelogCrawl, LastSynced: synced,
		Pending:       status.Pending{Entry: 12, Data: 3, Meta: 7},
		OldestPending: synced.Add(30 * time.Second),
		Failures:      1,
		RecentFailures: []status.Failure{{Kind: "data", Op: "DATA", Path: "logs/app.log", GFID: "5a0c6a43-9e2e-4c33-9f35-0e0e4f4f0a11",
			Code: "ENOSPC", Message: "no space left on device", Attempts: 3, At: synced.Add(40 * time.Second)}},
		Checkpoint: status.Checkpoint{Time: synced.Add(-time.Hour), Completed: true, CompletedAt: synced},
		Reconnects: 2,
		Updated:    synced.Add(45 * time.Second),
	}
}

// TestStatusTableGolden pins the table operators read (and sometimes
// parse): gsyncd's columns, the lag, the oldest pending change, the reason
// and, with --detail, the failures.
func TestStatusTableGolden(t *testing.T) {
	st := fixedStatus(time.Local)
	now := st.LastSynced.Add(90 * time.Second)
	for _, tc := range []struct {
		file   string
		detail bool
	}{{"status/table.golden", false}, {"status/detail.golden", true}} {
		var out bytes.Buffer
		printStatus(&out, st, tc.detail, now)
		golden(t, tc.file, out.Bytes())
	}
}

// TestStatusJSONGolden pins the --json schema scripts depend on.
func TestStatusJSONGolden(t *testing.T) {
	dir := t.TempDir()
	st := fixedStatus(time.UTC)
	if err := status.Write(dir, st); err != nil {
		t.Fatal(err)
	}
	if err := checkpoint.Set(dir, st.Checkpoint.Time); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := newRootCommand(&stdout, &stderr)
	cmd.SetArgs([]string{"status", "--state", dir, "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("status --json: %v: %s", err, stderr.String())
	}
	golden(t, "status/status.json.golden", stdout.Bytes())
}
