package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/treecmp"
)

var sentBytesRE = regexp.MustCompile(`msg="rsync batch done".* sent_bytes=(\d+)`)

// rsyncOnceLocal runs `georep master --once --sync-mode rsync` to a local
// slave and returns the bytes rsync reported sending.
func rsyncOnceLocal(t *testing.T, master, slave, state string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), onceTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, georepBin, "master", "--once", "--sync-mode", "rsync", "--root", master,
		"--slave", slave, "--state", state, "--log-level", "debug", "--progress=false").CombinedOutput()
	if err != nil {
		t.Fatalf("georep master --once --sync-mode rsync: %v\n%s", err, out)
	}
	var sent int64
	for _, m := range sentBytesRE.FindAllSubmatch(out, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		sent += n
	}
	if !treecmp.Compare(t, master, slave, treecmp.Options{}) {
		t.FailNow()
	}
	return sent
}

func writeAt(t *testing.T, p string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRsyncModeFiles is the file list in rsync mode, to a local
// slave (georep slave rsyncd as rsync's -e program), counting the bytes
// rsync reports sending (its per-file %b: literal data plus match tokens).
func TestRsyncModeFiles(t *testing.T) {
	base := t.TempDir()
	master, slave, state := filepath.Join(base, "m"), filepath.Join(base, "s"), filepath.Join(base, "state")
	for _, d := range []string{master, slave} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const big = 100 << 20
	bigPath := filepath.Join(master, "big")
	writeAt(t, bigPath, 0, randBytes(t, big))
	if sent := rsyncOnceLocal(t, master, slave, state); sent < big {
		t.Errorf("new 100 MiB file: rsync reports %d bytes sent, want at least the content", sent)
	}
	steps := []struct {
		name    string
		change  func(t *testing.T)
		maxSent int64
	}{
		{"identical (mtime only)", func(t *testing.T) {
			now := time.Now()
			if err := os.Chtimes(bigPath, now, now); err != nil {
				t.Fatal(err)
			}
		}, big / 100},
		{"64 KiB changed in the middle", func(t *testing.T) { writeAt(t, bigPath, 50<<20, randBytes(t, 64<<10)) }, big / 100},
		{"1 MiB appended", func(t *testing.T) { writeAt(t, bigPath, big, randBytes(t, 1<<20)) }, 2 << 20},
		{"truncated to 10 MiB", func(t *testing.T) {
			if err := os.Truncate(bigPath, 10<<20); err != nil {
				t.Fatal(err)
			}
		}, 1 << 20},
		{"new 1 GiB sparse file with 1 MiB of data", func(t *testing.T) {
			p := filepath.Join(master, "sparse")
			writeAt(t, p, 512<<20, randBytes(t, 1<<20))
			if err := os.Truncate(p, 1<<30); err != nil {
				t.Fatal(err)
			}
			// rsync's sender reads a hole as zeros and sends them as literal
			// data (--sparse only makes the receiver write holes), so only
			// the slave's allocation is checked, below.
		}, -1},
		{"new small file", func(t *testing.T) { writeAt(t, filepath.Join(master, "small"), 0, []byte("hello\n")) }, 1 << 10},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.change(t)
			sent := rsyncOnceLocal(t, master, slave, state)
			t.Logf("%s: rsync sent %d bytes", st.name, sent)
			if st.maxSent >= 0 && sent > st.maxSent {
				t.Errorf("rsync sent %d bytes, want at most %d", sent, st.maxSent)
			}
		})
	}
	var sst unix.Stat_t
	if err := unix.Lstat(filepath.Join(slave, "sparse"), &sst); err != nil {
		t.Fatal(err)
	}
	if alloc := sst.Blocks * 512; alloc > 10<<20 {
		t.Errorf("the slave's 1 GiB sparse file allocates %d bytes, want under 10 MiB", alloc)
	}
	if names, err := os.ReadDir(filepath.Join(slave, ".georep", "stage")); err != nil || len(names) != 0 {
		t.Errorf("staging area left with %d entries (%v)", len(names), err)
	}
	if got, want := mustRead(t, filepath.Join(slave, "big")), mustRead(t, bigPath); !bytes.Equal(got, want) {
		t.Errorf("big differs")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
