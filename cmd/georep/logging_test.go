package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
// which a log shipper parsing JSON chokes on. The run gives up after
// --give-up-after 4s and exits 1, its last record saying why.
func TestJSONLogsStayJSON(t *testing.T) {
	stderr, took := runUnreachable(t, "--give-up-after", "4s", "--log-format", "json")
	if took < 4*time.Second || took > 30*time.Second {
		t.Errorf("the master gave up after %v, want 4s and a retry's backoff at most", took)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
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
		t.Errorf("%d retries and %d records from gRPC in 4s; want at least 2 and 1:\n%s", retries, grpcLines, stderr)
	}
	// Why the run ended is the last record, not a plain line after them.
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil ||
		last["level"] != "ERROR" || !strings.HasPrefix(fmt.Sprint(last["err"]), "the slave has been unreachable for 4s, giving up") {
		t.Errorf("last line %q; want an ERROR record whose err says the run gave up", lines[len(lines)-1])
	}
}

// TestLogFileGetsTheFailure: with --log-file the reason a run ended is in
// the file, where an operator looks, and still on stderr as a plain line.
func TestLogFileGetsTheFailure(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "georep.log")
	stderr, _ := runUnreachable(t, "--give-up-after", "1s", "--log-file", logFile)
	if !strings.HasPrefix(stderr, "georep: the slave has been unreachable for ") {
		t.Errorf("stderr = %q; want the plain failure line", stderr)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), `level=ERROR msg="georep stopped" err="the slave has been unreachable for `) {
		t.Errorf("the log file does not say why the run ended:\n%s", logs)
	}
}

// runUnreachable runs `georep master --once` with args against a local
// slave root that does not exist, so every dial fails until the run gives
// up, and returns its stderr and how long it ran. Anything but exit
// status 1 fails the test.
func runUnreachable(t *testing.T, args ...string) (stderr string, took time.Duration) {
	t.Helper()
	bin := buildGeorep(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	argv := append([]string{"master", "--once", "--progress=false", "--root", t.TempDir(),
		"--slave", filepath.Join(dir, "missing"), "--state", filepath.Join(dir, "state")}, args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	var buf bytes.Buffer
	cmd.Stderr = &buf
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("georep %s ended with %v after %v, want exit status 1 once it gave up:\n%s", strings.Join(argv, " "), err, took, buf.String())
	}
	return buf.String(), took
}
