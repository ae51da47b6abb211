package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// configDir holds config files and the golden output they must produce.
const configDir = "testdata/config"

// checkGolden compares got with testdata/config/name, rewriting the file
// instead when GEOREP_UPDATE_GOLDEN=1.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(configDir, name)
	if os.Getenv("GEOREP_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatalf("update golden %s: %v", path, err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden %s (GEOREP_UPDATE_GOLDEN=1 writes it): %v", path, err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}

// TestConfigShow: config show prints every key of the effective
// configuration with its source, and flags override the file.
func TestConfigShow(t *testing.T) {
	valid := filepath.Join(configDir, "valid.yaml")
	tests := []struct {
		name   string
		args   []string
		golden string
	}{
		{"defaults", []string{"config", "show"}, "defaults.show.golden"},
		{"valid file, both sections", []string{"config", "show", "--config", valid}, "valid.show.golden"},
		{"flags override the file", []string{"config", "show", "--config", valid, "master",
			"--sync-jobs", "8", "--exclude", "cache/", "--once"}, "override.show.golden"},
		{"config after the section", []string{"config", "show", "slave", "--config", valid, "--volume", "only=/srv/only"},
			"slave-override.show.golden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runGeorep(t, tc.args...)
			if code != 0 {
				t.Fatalf("georep %s: exit %d, stderr %q", strings.Join(tc.args, " "), code, stderr)
			}
			checkGolden(t, tc.golden, stdout)
		})
	}
}

// TestConfigShowIsAConfigFile: what config show prints is itself a config
// file that yields the same configuration.
func TestConfigShowIsAConfigFile(t *testing.T) {
	code, first, stderr := runGeorep(t, "config", "show", "--config", filepath.Join(configDir, "valid.yaml"))
	if code != 0 {
		t.Fatalf("config show: exit %d: %s", code, stderr)
	}
	again := filepath.Join(t.TempDir(), "again.yaml")
	if err := os.WriteFile(again, []byte(first), 0o644); err != nil {
		t.Fatal(err)
	}
	code, second, stderr := runGeorep(t, "config", "show", "--config", again)
	if code != 0 {
		t.Fatalf("config show of its own output: exit %d: %s", code, stderr)
	}
	// Only the sources differ: every key now comes from the new file.
	strip := func(s string) string {
		var lines []string
		for l := range strings.SplitSeq(s, "\n") {
			if i := strings.LastIndex(l, " # "); i >= 0 {
				l = l[:i]
			}
			lines = append(lines, l)
		}
		return strings.Join(lines, "\n")
	}
	if strip(first) != strip(second) {
		t.Errorf("values changed on a round trip\n--- first ---\n%s--- second ---\n%s", first, second)
	}
	if !strings.Contains(second, "sync-jobs: 4 # "+again+":") {
		t.Errorf("round trip output does not attribute sync-jobs to %s:\n%s", again, second)
	}
}

// TestConfigRefusesBadFile: a bad file is reported with its file and line
// and exit status 2, before the command opens or writes anything.
func TestConfigRefusesBadFile(t *testing.T) {
	base := t.TempDir()
	master, slave := filepath.Join(base, "master"), filepath.Join(base, "slave")
	for _, d := range []string{master, slave} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(base, "state")
	masterArgs := []string{"master", "--root", master, "--slave", slave, "--state", state}
	tests := []struct {
		file string
		args []string
	}{
		{"unknown-key.yaml", masterArgs},
		{"mapping-for-scalar.yaml", []string{"master", "--slave", slave, "--state", state}},
		{"not-an-integer.yaml", masterArgs},
		{"bad-duration.yaml", masterArgs},
		{"bad-enum.yaml", masterArgs},
		{"bad-bool.yaml", masterArgs},
		{"unknown-section.yaml", masterArgs},
		{"invalid-yaml.yaml", masterArgs},
		{"slave-mapping-for-list.yaml", []string{"slave", "--root", slave}},
		{"slave-bad-duration.yaml", []string{"slave", "--root", slave}},
		{"unknown-key.yaml", []string{"config", "show"}},
	}
	for _, tc := range tests {
		t.Run(tc.args[0]+"/"+tc.file, func(t *testing.T) {
			args := append(append([]string{}, tc.args...), "--config", filepath.Join(configDir, tc.file))
			code, stdout, stderr := runGeorep(t, args...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			checkGolden(t, strings.TrimSuffix(tc.file, ".yaml")+".err.golden", stderr)
			if !strings.Contains(stderr, filepath.Join(configDir, tc.file)+":") {
				t.Errorf("stderr %q does not name the file and line", stderr)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused configuration created the state directory (%v)", err)
			}
			if ents, _ := os.ReadDir(slave); len(ents) != 0 {
				t.Errorf("a refused configuration wrote into the slave: %v", ents)
			}
		})
	}
}

// TestConfigShowAcceptsEnumItWillRefuse: config show reports what is
// configured; value checks belong to the command, which names the line.
func TestConfigShowAcceptsEnumItWillRefuse(t *testing.T) {
	code, stdout, stderr := runGeorep(t, "config", "show", "master", "--config", filepath.Join(configDir, "bad-enum.yaml"))
	if code != 0 {
		t.Fatalf("config show: exit %d: %s", code, stderr)
	}
	want := "change-detector: inotify # " + filepath.Join(configDir, "bad-enum.yaml") + ":3"
	if !strings.Contains(stdout, want) {
		t.Errorf("config show output lacks %q:\n%s", want, stdout)
	}
}

// TestMasterRunsFromConfigFile: a real --once session configured by a file,
// with a command-line flag overriding the file's value.
func TestMasterRunsFromConfigFile(t *testing.T) {
	bin := buildGeorep(t)
	base := t.TempDir()
	master, slave := filepath.Join(base, "master"), filepath.Join(base, "slave")
	fileState, flagState := filepath.Join(base, "state-from-file"), filepath.Join(base, "state-from-flag")
	for _, d := range []string{master, slave} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{"keep.txt": "kept", "skip.tmp": "excluded", "log.old": "excluded"} {
		if err := os.WriteFile(filepath.Join(master, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(base, "georep.yaml")
	body := fmt.Sprintf("master:\n  root: %s\n  slave: %s\n  state: %s\n  once: true\n  change-detector: xsync\n  exclude: ['*.tmp', '*.old']\n  progress: false\n",
		master, slave, fileState)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "master", "--config", cfg, "--state", flagState).CombinedOutput()
	if err != nil {
		t.Fatalf("georep master --config: %v\n%s", err, out)
	}
	tests := []struct {
		path   string
		exists bool
	}{
		{filepath.Join(slave, "keep.txt"), true},
		{filepath.Join(slave, "skip.tmp"), false},
		{filepath.Join(slave, "log.old"), false},
		{flagState, true},
		{fileState, false},
	}
	for _, tc := range tests {
		_, err := os.Stat(tc.path)
		if got := err == nil; got != tc.exists {
			t.Errorf("%s exists = %v, want %v (stat: %v)", tc.path, got, tc.exists, err)
		}
	}
	if data, err := os.ReadFile(filepath.Join(slave, "keep.txt")); err != nil || string(data) != "kept" {
		t.Errorf("slave keep.txt = %q, %v; want %q", data, err, "kept")
	}
}

// TestConfigExampleIsComplete: deploy/georep.yaml.example loads, and sets
// every key of both sections, so it documents the whole schema.
func TestConfigExampleIsComplete(t *testing.T) {
	example := filepath.Join("..", "..", "deploy", "georep.yaml.example")
	code, stdout, stderr := runGeorep(t, "config", "show", "--config", example)
	if code != 0 {
		t.Fatalf("config show of the example: exit %d: %s", code, stderr)
	}
	for l := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
		if strings.HasPrefix(l, "  ") && !strings.Contains(l, "# "+example+":") {
			t.Errorf("the example does not set this key: %q", strings.TrimSpace(l))
		}
	}
}
