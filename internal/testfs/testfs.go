// Package testfs gives tests small real filesystems of their own, to fill
// up (ENOSPC) without touching the machine's disks.
package testfs

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size (e.g. "8m") at a fresh directory and
// unmounts it when the test ends, after everything registered later has
// been cleaned up. Tests run as root; without the privilege the test fails.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a %s tmpfs at %s (tests run as root): %v", size, dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

// unmount retries while a process the test started (an rsync daemon being
// reaped, say) still holds the mount, then detaches it lazily: the kernel
// frees it once the last user is gone, and the test's verdict stands.
func unmount(t testing.TB, dir string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Unmount(dir, 0)
		if err == nil {
			return
		}
		if !errors.Is(err, unix.EBUSY) {
			t.Errorf("unmount %s: %v", dir, err)
			return
		}
		if time.Now().After(deadline) {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s (busy for 5s, then lazily): %v", dir, err)
				return
			}
			t.Logf("%s was still busy after 5s; detached it lazily", dir)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
