package treegen

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestFirstTreeHasWhatTheAcceptanceListNames(t *testing.T) {
	root := t.TempDir()
	First(t, root)
	tests := []struct {
		rel   string
		check func(st unix.Stat_t) bool
		what  string
	}{
		{"sticky", func(st unix.Stat_t) bool { return st.Mode&unix.S_ISVTX != 0 }, "a sticky directory"},
		{"mode-me", func(st unix.Stat_t) bool { return st.Mode&unix.S_ISUID != 0 }, "a setuid file"},
		{"empty-file", func(st unix.Stat_t) bool { return st.Size == 0 && st.Mode&unix.S_IFMT == unix.S_IFREG }, "an empty file"},
		{"big/large", func(st unix.Stat_t) bool { return st.Size == LargeSize }, "a large file"},
		{"big/sparse", func(st unix.Stat_t) bool { return st.Size == SparseSize && st.Blocks*512 < SparseSize/2 }, "a sparse file"},
		{"a/f1", func(st unix.Stat_t) bool { return st.Nlink == 3 }, "a hard-link group of three"},
		{"dangling", func(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFLNK }, "a symlink"},
		{"fifo", func(st unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFIFO }, "a fifo"},
		{"a/b/f2", func(st unix.Stat_t) bool { return st.Uid == 1234 && st.Gid == 5678 }, "an owner"},
		{"a/b/c/f3", func(st unix.Stat_t) bool { return st.Mtim.Nano() == OldTime(123456789).UnixNano() }, "an old ns mtime"},
		{"ünï/é", func(st unix.Stat_t) bool { return true }, "a non-ASCII name"},
		{"x y/f 4", func(st unix.Stat_t) bool { return true }, "names with spaces"},
	}
	for _, tc := range tests {
		t.Run(tc.rel, func(t *testing.T) {
			if !tc.check(lstat(t, filepath.Join(root, tc.rel))) {
				t.Errorf("%s is not %s", tc.rel, tc.what)
			}
		})
	}
	v := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(root, "a/b"), "user.dir", v); err != nil || string(v[:n]) != "yes" {
		t.Errorf("user xattr on a/b: %q, %v", v[:n], err)
	}
}

func TestSecondWaveMovesKeepTheirObjects(t *testing.T) {
	root := t.TempDir()
	First(t, root)
	inos := map[string]uint64{}
	for _, rel := range []string{"a/f1", "x y/f 4", "a/b", "over-src", "s1", "s2", "d1", "d2", "tree", "tree/t"} {
		inos[rel] = lstat(t, filepath.Join(root, rel)).Ino
	}
	moves := SecondWave(t, root)
	if len(moves) < 8 {
		t.Fatalf("only %d moves", len(moves))
	}
	for _, m := range moves {
		if got := lstat(t, filepath.Join(root, m.To)).Ino; got != inos[m.From] {
			t.Errorf("move %s -> %s: inode %d at the destination, want %d", m.From, m.To, got, inos[m.From])
		}
	}
	for _, gone := range []string{"gone", "empty", "between", "between2", "between-dir", "x y/hard2"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s still exists after the wave: %v", gone, err)
		}
	}
	before := lstat(t, filepath.Join(root, "same-second"))
	SameSecond(t, root)
	after := lstat(t, filepath.Join(root, "same-second"))
	if after.Size != before.Size || after.Mtim != before.Mtim {
		t.Errorf("SameSecond changed size or mtime: %v/%v -> %v/%v", before.Size, before.Mtim, after.Size, after.Mtim)
	}
}

func TestChurnMakesBoundedValidChanges(t *testing.T) {
	base := filepath.Join(t.TempDir(), "churn")
	c, err := NewChurn(base, 7)
	if err != nil {
		t.Fatal(err)
	}
	const steps = 2000
	for range steps {
		if err := c.Step(); err != nil {
			t.Fatalf("step %d: %v", c.Steps(), err)
		}
	}
	if c.Steps() != steps {
		t.Errorf("Steps() = %d, want %d", c.Steps(), steps)
	}
	for i := range churnDirs {
		ents, err := os.ReadDir(filepath.Join(base, "d"+string(rune('0'+i))))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 || len(ents) > c.MaxEntries+1 {
			t.Errorf("d%d holds %d entries, want 1..%d", i, len(ents), c.MaxEntries+1)
		}
	}
}
