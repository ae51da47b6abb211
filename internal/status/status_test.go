package status

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestWriteReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Read of an empty state dir: %v, want ErrNoSession", err)
	}
	synced := time.Date(2026, 11, 24, 12, 0, 0, 123456789, time.UTC)
	want := &Status{Master: "/data", Slave: "geo@slave1:/srv/replica", State: Active, Crawl: ChangelogCrawl,
		LastSynced: synced, Pending: Pending{Entry: 3, Data: 2, Meta: 1}, Failures: 1,
		RecentFailures: []Failure{{Kind: "data", Op: "PUT", Path: "a/b", GFID: "g", Code: "ENOSPC", Message: "full", Attempts: 5, At: synced}},
		PID:            os.Getpid(), Updated: synced}
	if err := Write(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if string(a) != string(b) {
		t.Fatalf("round trip changed the status:\n%s\n%s", a, b)
	}
	if !got.Running() {
		t.Error("Running() is false for this very process")
	}
	if lag := got.Lag(synced.Add(90 * time.Second)); lag != 90*time.Second {
		t.Errorf("Lag = %v, want 1m30s", lag)
	}
	// No temporary files are left beside it.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != FileName {
		t.Errorf("state dir holds %v, want only %s", ents, FileName)
	}
}

// TestSchemaFieldNames pins the JSON field names scripts depend on.
func TestSchemaFieldNames(t *testing.T) {
	data, err := json.Marshal(&Status{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := "checkpoint crawl_status failures last_synced master oldest_pending pending pid reconnects schema slave status updated"
	if got := strings.Join(keys, " "); got != want {
		t.Fatalf("status JSON fields:\n got %s\nwant %s", got, want)
	}
}

func TestReadRefusesNewerSchema(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(`{"schema": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "upgrade georep") {
		t.Fatalf("Read of schema 99: %v, want an upgrade hint", err)
	}
}
