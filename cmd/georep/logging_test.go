package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJSONLogsStayJSON: with --log-format json every line a master writes
// is a JSON record, grpc-go's own warnings included. A master whose
// slave cannot start (a local slave root that does not exist) makes
// gRPC warn on every dial; those lines were written raw
// ("2026/12/06 08:14:03 WARNING: [core] ... createTransport failed"),
// which a log shipper parsing JSON chokes on. The run is stopped after a
// few retries (a --once run gives up only after two minutes).
func TestJSONLogsStayJSON(t *testing.T) {
	bin := buildGeorep(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "master", "--once", "--log-format", "json", "--progress=false",
		"--root", t.TempDir(), "--slave", filepath.Join(dir, "missing"), "--state", filepath.Join(dir, "state"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); ctx.Err() == nil {
		t.Fatalf("the master ended by itself (%v) while its slave could not start:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	grpcLines, retries := 0, 0
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON record: %q", line)
			continue
		}
		if rec["component"] == "grpc" {
			grpcLines++
		}
		if rec["msg"] == "slave unreachable; retrying" {
			retries++
		}
	}
	if retries < 2 || grpcLines == 0 {
		t.Errorf("%d retries and %d records from gRPC in 4s; want at least 2 and 1:\n%s", retries, grpcLines, stderr.String())
	}
}
