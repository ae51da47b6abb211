package testfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Ext4 makes an ext4 filesystem with a journal (mke2fs's defaults) in a
// sparse image of size bytes, loop-mounts it at a fresh directory and
// unmounts it when the test ends. Benchmarks put slave trees there so they
// meet the filesystem a real slave has rather than whatever the machine's
// root is: a root ext4 without a journal, for one, makes every new inode
// scan past the ones freed in the last minutes (ext4's recently_deleted
// check), which turns each create into milliseconds after a tree was
// removed and swamps what is being measured. Needs root, mkfs.ext4 and
// mount (e2fsprogs, util-linux); without them the test fails.
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
	for _, argv := range [][]string{
		{"mkfs.ext4", "-q", "-F", "-O", "has_journal", img},
		{"mount", "-o", "loop", img, dir},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v (tests run as root, with e2fsprogs and util-linux): %v: %s", argv, err, out)
		}
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}
