package testfs

import (
	"errors"
	"os"
	"path/filepath"
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
