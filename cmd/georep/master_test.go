package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMasterRefusesBadInput: a wrong command line gets a clear error and
// touches nothing — no state directory appears, the slave stays empty.
func TestMasterRefusesBadInput(t *testing.T) {
	bin := buildGeorep(t)
	base := t.TempDir()
	master, slave := filepath.Join(base, "master"), filepath.Join(base, "slave")
	for _, d := range []string{master, slave} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(base, "state")
	if err := os.Symlink(master, filepath.Join(base, "link-to-master")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no root", []string{"--slave", slave, "--state", state}, 2, "--root is required"},
		{"no slave", []string{"--root", master, "--state", state}, 2, "--slave is required"},
		{"no state", []string{"--root", master, "--slave", slave}, 2, "--state is required"},
		{"bad url", []string{"--root", master, "--slave", "relative/path", "--state", state}, 2, "accepted forms are /path"},
		{"bad detector", []string{"--root", master, "--slave", slave, "--state", state, "--change-detector", "inotify"}, 2, "accepted values are changelog and xsync"},
		{"bad sync mode", []string{"--root", master, "--slave", slave, "--state", state, "--sync-mode", "tar"}, 2, "accepted values are native and rsync"},
		{"bwlimit without unit", []string{"--root", master, "--slave", slave, "--state", state, "--bwlimit", "100"}, 2, "say the unit, e.g. 100KiB"},
		{"bwlimit bad unit", []string{"--root", master, "--slave", slave, "--state", state, "--bwlimit", "10Q"}, 2, "want bytes per second with a unit"},
		{"bwlimit too small", []string{"--root", master, "--slave", slave, "--state", state, "--bwlimit", "10B"}, 2, "between 1KiB and 1TiB"},
		{"ssh data channels negative", []string{"--root", master, "--slave", slave, "--state", state, "--ssh-data-channels", "-1"}, 2, "--ssh-data-channels -1: must be 0 to 8"},
		{"negative change settle", []string{"--root", master, "--slave", slave, "--state", state, "--change-settle", "-1s"}, 2, "--change-settle -1s: must be between 0 (off) and 1m"},
		{"ssh data channels too many", []string{"--root", master, "--slave", slave, "--state", state, "--ssh-data-channels", "9"}, 2, "must be 0 to 8"},
		{"state inside root", []string{"--root", master, "--slave", slave, "--state", filepath.Join(master, ".state")}, 2, "is inside --root"},
		{"state is root", []string{"--root", master, "--slave", slave, "--state", master}, 2, "is inside --root"},
		{"state inside root through a symlink", []string{"--root", master, "--slave", slave, "--state", filepath.Join(base, "link-to-master", "st")}, 2, "is inside --root"},
		{"local slave inside root", []string{"--root", master, "--slave", filepath.Join(master, "replica"), "--state", state}, 2, "would replicate itself"},
		{"bad compress", []string{"--root", master, "--slave", slave, "--state", state, "--compress", "gzip"}, 2, "accepted values are auto, zstd and none"},
		{"give-up-after too short", []string{"--root", master, "--slave", slave, "--state", state, "--once", "--give-up-after", "0s"}, 2, "--give-up-after 0s: must be between 1s and 24h"},
		{"mtls without certs", []string{"--root", master, "--slave", "grpcs://127.0.0.1:7070", "--state", state}, 2, "needs --cert, --key and --ca"},
		{"missing master root", []string{"--root", filepath.Join(base, "nope"), "--slave", slave, "--state", state, "--once"}, 1, "open master root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"master"}, tc.args...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("run: %v, want a non-zero exit", err)
			}
			if exitErr.ExitCode() != tc.code {
				t.Errorf("exit code = %d, want %d (stderr %q)", exitErr.ExitCode(), tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.want)
			}
			if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused command created the state directory (%v)", err)
			}
			if ents, _ := os.ReadDir(slave); len(ents) != 0 {
				t.Errorf("a refused command wrote into the slave: %v", ents)
			}
			if ents, _ := os.ReadDir(master); len(ents) != 0 {
				t.Errorf("a refused command wrote into the master: %v", ents)
			}
		})
	}
}

// TestStatusWithoutSession: status on a state directory no master used
// says so.
func TestStatusWithoutSession(t *testing.T) {
	bin := buildGeorep(t)
	out, err := exec.Command(bin, "status", "--state", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no georep session has run with this state directory") {
		t.Fatalf("status of an unused state dir: %v: %s", err, out)
	}
}
