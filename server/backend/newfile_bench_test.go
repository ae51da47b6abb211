package backend

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/testfs"
)

// BenchmarkNewFileSteps weighs the kernel's work for one new 4 KiB file
// under sequences of system calls a slave could use, on a journalled ext4
// the benchmark makes (the bed of BENCHMARKS.md's data plane figures):
//
//   - tmpfile, what the backend does: an unnamed temp in the parent, its
//     GFID xattr, content and attributes, then a link into the GFID index
//     and one at the name;
//   - atindex: the temp created at its GFID index path, then a link at the
//     name (one directory operation fewer, but an index entry that exists
//     before its content is verified);
//   - named: a named temp in the parent, linked into the index, then
//     renamed to the name;
//   - rsync: what rsync's receiver does, with no index or GFID: a named temp
//     renamed to the name.
//
// It calls no backend code: it is the measurement behind the backend's
// choice (see BENCHMARKS.md), run with `go test -run '^$' -bench
// NewFileSteps ./server/backend/`. One op is one file, receivers in
// parallel as the slave's streams are; the closing syncfs is timed too.
func BenchmarkNewFileSteps(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root: it loop-mounts an ext4 and sets trusted.* xattrs")
	}
	fs := testfs.Ext4(b, 4<<30)
	content := make([]byte, 4096)
	rand.Read(content)
	ts := []unix.Timespec{{Sec: 1}, {Sec: 1}}
	for _, variant := range []string{"tmpfile", "atindex", "named", "rsync"} {
		b.Run(variant, func(b *testing.B) {
			// b.Run calls this again with a larger b.N: a fresh tree each time.
			root, err := os.MkdirTemp(fs, variant)
			if err != nil {
				b.Fatal(err)
			}
			// Registered first, so it runs after openDirs' closes: the
			// filesystem has inodes for a few runs' trees, not all of them.
			b.Cleanup(func() { _ = os.RemoveAll(root) })
			dirs := openDirs(b, root, "d%02d", 20)
			buckets := openDirs(b, filepath.Join(root, ".georep", "index"), "%02x", 256)
			var next atomic.Int64
			step := func(err error) {
				if err != nil {
					b.Error(err)
				}
			}
			unix.Sync()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var g [16]byte
				for pb.Next() {
					i := next.Add(1)
					rand.Read(g[:])
					pd, bd := dirs[i%int64(len(dirs))], buckets[g[0]]
					name, idx, tmp := fmt.Sprintf("f%07d", i), fmt.Sprintf("%x", g), fmt.Sprintf(".t%07d", i)
					var fd int
					var err error
					switch variant {
					case "tmpfile":
						fd, err = unix.Openat(pd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
					case "atindex":
						fd, err = unix.Openat(bd, idx, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
					default:
						fd, err = unix.Openat(pd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
					}
					if err != nil {
						b.Error(err)
						return
					}
					if variant != "rsync" {
						step(unix.Fsetxattr(fd, "trusted.georep.gfid", g[:], 0))
					}
					_, err = unix.Pwrite(fd, content, 0)
					step(err)
					step(unix.Fchmod(fd, 0o644))
					step(unix.Fchown(fd, 0, 0))
					step(unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH))
					switch variant {
					case "tmpfile":
						step(unix.Linkat(fd, "", bd, idx, unix.AT_EMPTY_PATH))
						step(unix.Linkat(fd, "", pd, name, unix.AT_EMPTY_PATH))
					case "atindex":
						step(unix.Linkat(bd, idx, pd, name, 0))
					case "named":
						step(unix.Linkat(pd, tmp, bd, idx, 0))
						step(unix.Renameat(pd, tmp, pd, name))
					case "rsync":
						step(unix.Renameat(pd, tmp, pd, name))
					}
					step(unix.Close(fd))
				}
			})
			step(unix.Syncfs(dirs[0]))
		})
	}
}

// openDirs makes count directories in parent, named by format and their
// number, and opens them; they close with the benchmark.
func openDirs(b *testing.B, parent, format string, count int) []int {
	b.Helper()
	fds := make([]int, count)
	for i := range fds {
		p := filepath.Join(parent, fmt.Sprintf(format, i))
		if err := os.MkdirAll(p, 0o755); err != nil {
			b.Fatal(err)
		}
		fd, err := unix.Open(p, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		fds[i] = fd
		b.Cleanup(func() { unix.Close(fd) })
	}
	return fds
}
