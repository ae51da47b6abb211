package testfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/testbin"
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
	dev := filepath.Base(mountSource(t, dir))
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

// mountSource is the source (the device) of the mount at dir, or "" when
// nothing is mounted there.
func mountSource(t *testing.T, dir string) string {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var src string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 9 && f[4] == dir {
			src = f[len(f)-2]
		}
	}
	return src
}

// holdEnv makes TestExt4CleansUpOnSignal's child: it mounts an Ext4,
// says where, and waits to be signalled.
const holdEnv = "GEOREP_TESTFS_HOLD"

// TestExt4CleansUpOnSignal: a test process killed by SIGINT or SIGTERM
// (make bench-compare interrupted) runs no cleanups; Ext4 still leaves no
// mount, no loop device and no image behind, RemoveOnSignal's directory
// is gone too, and the process still dies of the signal.
func TestExt4CleansUpOnSignal(t *testing.T) {
	if os.Getenv(holdEnv) != "" {
		dir := Ext4(t, 64<<20)
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A second handler beside Ext4's: both clean before the death.
		work := t.TempDir()
		if err := os.WriteFile(filepath.Join(work, "tree"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		RemoveOnSignal(t, work)
		fmt.Printf("MOUNTED %s %s\n", dir, work)
		time.Sleep(time.Minute)
		t.Fatal("no signal came within a minute")
	}
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{name: "SIGINT", sig: syscall.SIGINT},
		{name: "SIGTERM", sig: syscall.SIGTERM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			child := testbin.StartChild(ctx, t, "TestExt4CleansUpOnSignal", holdEnv+"=1", "MOUNTED")
			if len(child.Fields) != 2 {
				t.Fatalf("the child reported %q, want the mount point and a work dir", child.Fields)
			}
			dir, other := child.Fields[0], child.Fields[1]
			dev := mountSource(t, dir)
			if !strings.HasPrefix(dev, "/dev/loop") {
				t.Fatalf("%s is mounted from %q, not a loop device", dir, dev)
			}
			work := filepath.Dir(dir)
			img := filepath.Join(work, "ext4.img")
			if err := child.Cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := child.Cmd.Wait()
			ws, ok := child.Cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != tc.sig {
				t.Errorf("the child ended with %v (%v), not killed by %v; stderr:\n%s", child.Cmd.ProcessState, err, tc.sig, child.Stderr.String())
			}
			if src := mountSource(t, dir); src != "" {
				t.Errorf("%s is still mounted from %s", dir, src)
				_ = unix.Unmount(dir, unix.MNT_DETACH)
			}
			if _, err := os.Stat(work); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the image's directory %s is still there (%v)", work, err)
				_ = os.RemoveAll(work)
			}
			if _, err := os.Stat(other); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the work dir given to RemoveOnSignal, %s, is still there (%v)", other, err)
				_ = os.RemoveAll(other)
			}
			// The autoclear device goes once the kernel releases the
			// filesystem, which a lazy unmount lets happen a moment later.
			backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
			deadline := time.Now().Add(10 * time.Second)
			for {
				b, err := os.ReadFile(backing)
				if err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), img) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s still serves %s 10s after the child died", dev, b)
					_ = exec.Command("losetup", "--detach", dev).Run()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			// What is left is testing's own temporary root, empty.
			if err := os.Remove(filepath.Dir(work)); err != nil {
				t.Errorf("the child's temporary root: %v", err)
			}
		})
	}
}
