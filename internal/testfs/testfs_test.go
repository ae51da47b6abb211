package testfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTmpfsFillsUp: the mount is a filesystem of its own of the given
// size: writing past it fails with ENOSPC.
func TestTmpfsFillsUp(t *testing.T) {
	dir := Tmpfs(t, "1m")
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not a tmpfs (type %#x)", dir, st.Type)
	}
	err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2<<20), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing 2 MiB into a 1 MiB tmpfs: %v, want ENOSPC", err)
	}
}

// TestTmpfsUnmountsWhileBusy: a mount a process still holds at cleanup is
// detached, not left behind.
func TestTmpfsUnmountsWhileBusy(t *testing.T) {
	var dir string
	var held *os.File
	t.Run("mount", func(t *testing.T) {
		dir = Tmpfs(t, "1m")
		f, err := os.Create(filepath.Join(dir, "held"))
		if err != nil {
			t.Fatal(err)
		}
		held = f
	})
	defer held.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		t.Fatalf("%s is still a mounted tmpfs after its test ended", dir)
	}
}

// TestExt4HasJournal: the image is an ext4 of its own, mounted from a
// direct-I/O loop device, with a journal, and writable.
func TestExt4HasJournal(t *testing.T) {
	dir := Ext4(t, 64<<20)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		t.Fatalf("%s is not an ext4 (type %#x)", dir, st.Type)
	}
	if st.Blocks*uint64(st.Bsize) > 64<<20 {
		t.Fatalf("%s holds %d bytes, more than its 64 MiB image", dir, st.Blocks*uint64(st.Bsize))
	}
	// ext4 lists its options per device; only a journal has a data mode.
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var dev string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 9 && f[4] == dir {
			dev = filepath.Base(f[len(f)-2])
		}
	}
	opts, err := os.ReadFile(filepath.Join("/proc/fs/ext4", dev, "options"))
	if err != nil {
		t.Fatalf("options of %s's device %q: %v", dir, dev, err)
	}
	if !strings.Contains(string(opts), "data=ordered") {
		t.Errorf("%s (%s) has no journal: options %q", dir, dev, opts)
	}
	// The loop device writes to its image directly, as a disk would.
	if dio, err := os.ReadFile(filepath.Join("/sys/block", dev, "loop", "dio")); err != nil || strings.TrimSpace(string(dio)) != "1" {
		t.Errorf("%s (%s) does not do direct I/O: %q, %v", dir, dev, dio, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}
