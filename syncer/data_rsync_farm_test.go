package syncer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testbuf"
)

// TestRsyncFarmStaysBeneathRoot: a local user who can rename inside the
// master tree swaps a path component of a file for a symlink to a file
// outside the root while rsync runs, and swaps it back before rsync ends
// (the slave daemon's start and exit are the moments: a wrapper around the
// slave program does it). rsync must still send the file georep opened
// beneath the root, never the outside one of the same size: the slave
// ends with the master's content. Real georep slave child, real rsync.
func TestRsyncFarmStaysBeneathRoot(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// swapped is the path (relative to the master root) replaced by a
		// symlink to its outside twin while rsync runs.
		swapped string
	}{
		{name: "parent directory", swapped: "d"},
		{name: "the file itself", swapped: "d/f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			master, slave, state, outside := filepath.Join(base, "m"), filepath.Join(base, "s"),
				filepath.Join(base, "state"), filepath.Join(base, "outside")
			for _, d := range []string{filepath.Join(master, "d"), slave, state, filepath.Join(outside, "d")} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mine := bytes.Repeat([]byte("master's own content\n"), 100)
			secret := bytes.Repeat([]byte("SECRET outside root!\n"), 100)
			if len(mine) != len(secret) {
				t.Fatalf("test data: %d and %d bytes, want equal sizes", len(mine), len(secret))
			}
			if err := os.WriteFile(filepath.Join(master, "d", "f"), mine, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(outside, "d", "f"), secret, 0o644); err != nil {
				t.Fatal(err)
			}
			// The swap happens once, on the first rsync daemon start.
			victim, twin := filepath.Join(master, tc.swapped), filepath.Join(outside, tc.swapped)
			marker := filepath.Join(base, "swapped")
			script := fmt.Sprintf(`#!/bin/sh
if [ "$2" = rsyncd ] && [ ! -e %[1]q ]; then
	touch %[1]q
	mv %[2]q %[2]q.real && ln -s %[3]q %[2]q
	%[4]q "$@"; rc=$?
	rm %[2]q && mv %[2]q.real %[2]q
	exit $rc
fi
exec %[4]q "$@"
`, marker, victim, twin, bin)
			wrapper := filepath.Join(base, "georep-wrapper")
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			u, err := client.ParseSlaveURL(slave)
			if err != nil {
				t.Fatal(err)
			}
			var logs testbuf.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err = Run(ctx, Config{Root: master, StateDir: state, Slave: u, Dial: client.Options{LocalGeorep: wrapper},
				Once: true, SyncMode: SyncRsync, SyncJobs: 1,
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatalf("Run: %v\n%s", err, logs.String())
			}
			if _, err := os.Stat(marker); err != nil {
				t.Fatalf("the wrapper never swapped %s (did rsync run?): %v", tc.swapped, err)
			}
			got, err := os.ReadFile(filepath.Join(slave, "d", "f"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(got, secret) {
				t.Fatalf("the slave's d/f holds the file from outside the master root")
			}
			if !bytes.Equal(got, mine) {
				t.Fatalf("the slave's d/f = %q..., want the master's content", got[:min(len(got), 40)])
			}
		})
	}
}
