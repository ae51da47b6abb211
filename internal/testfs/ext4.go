package testfs

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ext4 makes an ext4 filesystem with a journal (mke2fs's defaults) in a
// sparse image of size bytes, loop-mounts it at a fresh directory and
// unmounts it when the test ends. Benchmarks put slave trees there so they
// meet the filesystem a real slave has rather than whatever the machine's
// root is: a root ext4 without a journal, for one, makes every new inode
// scan past the ones freed in the last minutes (ext4's recently_deleted
// check), which turns each create into milliseconds after a tree was
// removed and swamps what is being measured.
//
// The loop device does direct I/O to its image, as a disk does DMA. A
// buffered loop copies every block written back once more into the image
// file's page cache, a kernel worker's memcpy that a real slave never
// pays; it charged about 0.6 s of CPU per 200 MiB to whichever tool
// flushes inside the timed window (georep's group commit) and nothing to
// one that leaves its dirty pages for later (rsync). Needs root, mkfs.ext4,
// losetup and mount (e2fsprogs, util-linux); without them, or without
// direct I/O on the image's filesystem, the test fails.
func Ext4(t testing.TB, size int64) string {
	t.Helper()
	work := t.TempDir()
	img, dir := filepath.Join(work, "ext4.img"), filepath.Join(work, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("size the ext4 image: %v", err)
	}
	run := func(argv ...string) string {
		t.Helper()
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v (tests run as root, with e2fsprogs and util-linux): %v: %s", argv, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("mkfs.ext4", "-q", "-F", "-O", "has_journal", img)
	dev := run("losetup", "--find", "--show", "--direct-io=on", img)
	// Registered first, so it runs after the unmount below.
	t.Cleanup(func() { detach(t, dev, img) })
	// losetup only warns when the image's filesystem refuses O_DIRECT.
	dio, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "dio"))
	if err != nil || strings.TrimSpace(string(dio)) != "1" {
		t.Fatalf("%s over %s does not do direct I/O (%q, %v): put the test's temporary directory on a filesystem with O_DIRECT",
			dev, img, dio, err)
	}
	run("mount", dev, dir)
	t.Cleanup(func() { unmount(t, dir) })
	// Once mounted (the mount holds the device), the device detaches
	// itself when the filesystem is released, as mount -o loop's does: a
	// benchmark killed mid-run runs no cleanup, and left a mount and a
	// loop device behind.
	if err := autoclear(dev); err != nil {
		t.Fatalf("%s: %v", dev, err)
	}
	// Interrupted, the filesystem is detached lazily and the image and
	// the mount point removed: the autoclear device then goes once the
	// last process using the filesystem (a slave the test started) is gone.
	onSignal(t, func() {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		_ = os.RemoveAll(work)
	})
	return dir
}

// autoclear sets the loop device's autoclear flag.
func autoclear(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open to set autoclear: %w", err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("read loop status: %w", err)
	}
	info.Flags |= unix.LO_FLAGS_AUTOCLEAR
	if err := unix.IoctlLoopSetStatus64(int(f.Fd()), info); err != nil {
		return fmt.Errorf("set autoclear: %w", err)
	}
	return nil
}

// detach makes sure dev no longer serves img once the test unmounted it:
// autoclear normally detached it already, perhaps a moment later.
func detach(t testing.TB, dev, img string) {
	t.Helper()
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(backing)
		if err != nil || strings.TrimSpace(string(b)) != img {
			return // detached, or already serving another test's image
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
		t.Errorf("detach %s: %v: %s", dev, err, out)
	}
}

// RemoveOnSignal removes dir (a test's work, say) when the test process
// gets SIGINT or SIGTERM: Go removes a test's TempDir only when the test
// ends, which a killed process never reaches. See onSignal.
func RemoveOnSignal(t testing.TB, dir string) {
	onSignal(t, func() { _ = os.RemoveAll(dir) })
}

// onSignal runs clean when the test process gets SIGINT or SIGTERM, then
// lets the signal kill it as it would have. Nothing is done once the test
// has ended. With several registered, the process dies when the last has
// cleaned: until then the others still catch the signal.
func onSignal(t testing.TB, clean func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM)
	ended := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case sig := <-sigs:
			clean()
			signal.Stop(sigs)
			_ = unix.Kill(os.Getpid(), sig.(unix.Signal))
		case <-ended:
		}
	})
	t.Cleanup(func() {
		signal.Stop(sigs)
		close(ended)
		wg.Wait()
	})
}
