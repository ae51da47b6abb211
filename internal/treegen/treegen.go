// Package treegen builds the master trees the acceptance tests replicate:
// the first tree (every kind of object and attribute georep must carry),
// the second wave of changes (renames, links, deletes, attribute and data
// changes), and Churn, a seeded stream of random changes for continuous and
// crash tests. Owners are set, so the builders must run as root.
package treegen

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Sizes of the files whose size matters to a transfer.
const (
	// LargeSize spans many transfer chunks and is not a multiple of any.
	LargeSize = 6<<20 + 12345
	// SparseSize is the apparent size of the sparse file; it holds data
	// only at its start and at SparseDataAt.
	SparseSize   = 16 << 20
	SparseDataAt = 12 << 20
)

// OldTime is a fixed past instant with a nanosecond part, for mtimes that
// must arrive exactly.
func OldTime(ns int) time.Time { return time.Date(2001, 2, 3, 4, 5, 6, ns, time.UTC) }

type builder struct {
	t    testing.TB
	root string
}

func (b builder) p(rel string) string { return filepath.Join(b.root, rel) }

func (b builder) must(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatalf("build master tree: %v", err)
	}
}

func (b builder) write(rel string, data []byte) {
	b.t.Helper()
	b.must(os.WriteFile(b.p(rel), data, 0o644))
}

// Random returns n deterministic pseudo-random bytes for seed.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	out := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			out[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		out[i] = byte(r.Uint32())
	}
	return out
}

// First builds the first tree under root (an existing, empty directory):
// nested directories, small and large files, an empty file, names with
// spaces and non-ASCII, relative, absolute and dangling symlinks, hard-link
// groups, modes including a sticky directory, owners, user xattrs, old
// mtimes, a sparse file and a fifo. SecondWave expects exactly this tree.
func First(t testing.TB, root string) {
	t.Helper()
	b := builder{t, root}
	for _, d := range []string{"a", "a/b", "a/b/c", "x y", "ünï", "sticky", "gone", "gone/deep", "empty",
		"d1", "d2", "tree", "big"} {
		b.must(os.Mkdir(b.p(d), 0o755))
	}
	b.must(unix.Chmod(b.p("sticky"), 0o1777)) // os.Chmod would drop the sticky bit
	files := map[string]string{
		"a/f1": "one", "a/b/f2": "two", "a/b/c/f3": "three", "x y/f 4": "four", "ünï/é": "accent",
		"empty-file": "", "over-src": "src", "over-dst": "dst", "s1": "first", "s2": "second",
		"gone/g1": "g1", "gone/deep/g2": "g2", "trunc-short": "0123456789", "trunc-long": "0123",
		"same-second": "aaaa", "d1/in-d1": "d1", "d2/in-d2": "d2", "sticky/f": "st", "tree/t": "t",
		"append": "line 1\n", "mode-me": "m", "own-me": "o", "touch-me": "t", "xattr-me": "x",
	}
	for f, data := range files {
		b.write(f, []byte(data))
	}
	b.write("big/large", Random(1, LargeSize))
	b.write("big/middle", Random(2, LargeSize))
	f, err := os.Create(b.p("big/sparse"))
	b.must(err)
	_, err = f.WriteAt([]byte("head"), 0)
	b.must(err)
	_, err = f.WriteAt(Random(3, 4096), SparseDataAt)
	b.must(err)
	b.must(f.Truncate(SparseSize))
	b.must(f.Close())

	b.must(os.Link(b.p("a/f1"), b.p("a/b/hard")))  // a group of three
	b.must(os.Link(b.p("a/f1"), b.p("x y/hard2"))) // across directories
	b.must(os.Link(b.p("s2"), b.p("ünï/s2-link"))) // a group of two
	b.must(os.Symlink("../f1", b.p("a/b/rel")))    // relative
	b.must(os.Symlink("/etc/passwd", b.p("abs")))  // absolute
	b.must(os.Symlink("nowhere", b.p("dangling"))) // dangling
	b.must(os.Symlink("a/f1", b.p("retarget-me"))) // retargeted in the wave
	b.must(unix.Mkfifo(b.p("fifo"), 0o640))
	b.must(unix.Chmod(b.p("mode-me"), 0o4755)) // setuid
	b.must(os.Chmod(b.p("a/b/c"), 0o700))
	b.must(os.Lchown(b.p("a/b/f2"), 1234, 5678))
	b.must(os.Lchown(b.p("abs"), 42, 43))
	b.must(os.Lchown(b.p("x y"), 99, 100))
	b.must(unix.Lsetxattr(b.p("a/f1"), "user.colour", []byte("blue"), 0))
	b.must(unix.Lsetxattr(b.p("a/b"), "user.dir", []byte("yes"), 0))
	b.must(unix.Lsetxattr(b.p("xattr-me"), "user.keep", []byte("k"), 0))
	b.must(unix.Lsetxattr(b.p("xattr-me"), "user.change", []byte("before"), 0))
	b.must(unix.Lsetxattr(b.p("xattr-me"), "user.remove", []byte("r"), 0))
	b.must(unix.Lsetxattr(b.p("big/large"), "user.binary", []byte{0, 1, 2, 0xff}, 0))
	b.must(os.Chtimes(b.p("a/b/c/f3"), OldTime(0), OldTime(123456789)))
	b.must(os.Chtimes(b.p("touch-me"), OldTime(0), OldTime(1)))
	b.must(os.Chtimes(b.p("a/b/c"), OldTime(0), OldTime(7)))
}

// Move is a rename in a wave: the object at From must be at To on the
// slave with the same inode it had there before.
type Move struct{ From, To string }

// SecondWave changes a tree built by First the way the acceptance list
// says and returns the renames whose objects must keep their slave inode.
func SecondWave(t testing.TB, root string) []Move {
	t.Helper()
	b := builder{t, root}
	moves := []Move{
		{"a/f1", "a/f1.renamed"}, // within a directory
		{"x y/f 4", "ünï/f 4"},   // across directories
		{"a/b", "a/bb"},          // a directory with its contents
		{"over-src", "over-dst"}, // over an existing file
	}
	for _, m := range moves {
		b.must(os.Rename(b.p(m.From), b.p(m.To)))
	}
	b.must(os.Rename(b.p("s1"), b.p("swap-tmp"))) // two files swapped through a temporary name
	b.must(os.Rename(b.p("s2"), b.p("s1")))
	b.must(os.Rename(b.p("swap-tmp"), b.p("s2")))
	b.must(os.Rename(b.p("d1"), b.p("d-tmp"))) // and two directories
	b.must(os.Rename(b.p("d2"), b.p("d1")))
	b.must(os.Rename(b.p("d-tmp"), b.p("d2")))
	moves = append(moves, Move{"s1", "s2"}, Move{"s2", "s1"}, Move{"d1", "d2"}, Move{"d2", "d1"})

	b.must(os.Link(b.p("a/bb/f2"), b.p("new-link"))) // a new hard link
	b.must(os.Remove(b.p("x y/hard2")))              // unlink one of several links
	b.must(os.RemoveAll(b.p("gone")))                // rm -rf of a subtree
	b.must(os.Remove(b.p("empty")))                  // rmdir
	b.must(os.Rename(b.p("tree"), b.p("tree.old")))  // a name moved away and reused at once
	b.must(os.Mkdir(b.p("tree"), 0o700))
	b.must(os.Rename(b.p("tree.old/t"), b.p("tree/t")))
	moves = append(moves, Move{"tree", "tree.old"}, Move{"tree/t", "tree/t"})

	b.must(os.Chmod(b.p("mode-me"), 0o600))                       // chmod
	b.must(os.Chmod(b.p("a/bb/c"), 0o750))                        // of a directory
	b.must(os.Lchown(b.p("own-me"), 7, 8))                        // chown
	b.must(os.Lchown(b.p("dangling"), 9, 10))                     // of a symlink
	b.must(os.Chtimes(b.p("touch-me"), OldTime(5), OldTime(999))) // touch
	b.must(os.Truncate(b.p("trunc-short"), 3))                    // truncate shorter
	b.must(os.Truncate(b.p("trunc-long"), 100_000))               // and longer
	f, err := os.OpenFile(b.p("big/middle"), os.O_WRONLY, 0)      // a write in the middle
	b.must(err)
	_, err = f.WriteAt([]byte("written in the middle"), LargeSize/2)
	b.must(err)
	b.must(f.Close())
	f, err = os.OpenFile(b.p("append"), os.O_WRONLY|os.O_APPEND, 0) // an append
	b.must(err)
	_, err = f.WriteString("line 2\n")
	b.must(err)
	b.must(f.Close())
	b.must(os.Remove(b.p("retarget-me"))) // a symlink retargeted
	b.must(os.Symlink("s1", b.p("retarget-me")))
	b.must(unix.Lsetxattr(b.p("xattr-me"), "user.change", []byte("after"), 0)) // an xattr changed
	b.must(unix.Lremovexattr(b.p("xattr-me"), "user.remove"))                  // and one removed
	b.must(unix.Lremovexattr(b.p("a/bb"), "user.dir"))

	b.write("between", []byte("x")) // created, renamed and deleted between two syncs
	b.must(os.Rename(b.p("between"), b.p("between2")))
	b.must(os.Remove(b.p("between2")))
	b.must(os.Mkdir(b.p("between-dir"), 0o755))
	b.write("between-dir/f", []byte("y"))
	b.must(os.RemoveAll(b.p("between-dir")))
	b.write("fresh", []byte("new file")) // and plain creates
	b.must(os.MkdirAll(b.p("new/nested/dirs"), 0o755))
	b.write("new/nested/dirs/leaf", []byte("leaf"))
	return moves
}

// SameSecond changes a file of the first tree so that only its content
// and ctime differ: same size, same mtime (put back). Call it right after
// a sync so the change also falls in the same second as that sync.
func SameSecond(t testing.TB, root string) {
	t.Helper()
	b := builder{t, root}
	var st unix.Stat_t
	b.must(unix.Lstat(b.p("same-second"), &st))
	data, err := os.ReadFile(b.p("same-second"))
	b.must(err)
	for i := range data {
		data[i]++ // same size, different bytes, whatever was there
	}
	b.must(os.WriteFile(b.p("same-second"), data, 0o644))
	b.must(unix.UtimesNano(b.p("same-second"), []unix.Timespec{st.Atim, st.Mtim}))
	// And a plain change, within the same second as the sync before it.
	b.write("same-second-new", []byte("made right after a sync"))
}
