package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/internal/treegen"
)

// checkMovesKeptInodes fails for every move whose object changed inode on
// the slave; before maps slave paths to inodes as they were before the wave.
func checkMovesKeptInodes(t *testing.T, slave string, before map[string]uint64, moves []treegen.Move) {
	t.Helper()
	for _, m := range moves {
		want, ok := before[m.From]
		if !ok {
			t.Errorf("move %s -> %s: %s was not on the slave before the wave", m.From, m.To, m.From)
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(slave, m.To), &st); err != nil {
			t.Errorf("move %s -> %s: %v", m.From, m.To, err)
			continue
		}
		if st.Ino != want {
			t.Errorf("move %s -> %s: the slave object was recreated (inode %d, was %d), not renamed", m.From, m.To, st.Ino, want)
		}
	}
}

// checkSparse fails unless the slave's copy of the sparse file kept its holes.
func checkSparse(t *testing.T, slave string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(slave, "big/sparse"), &st); err != nil {
		t.Errorf("sparse file on the slave: %v", err)
		return
	}
	if alloc := st.Blocks * 512; alloc >= treegen.SparseSize/2 {
		t.Errorf("the slave's sparse file allocates %d bytes of its %d: its holes were filled", alloc, treegen.SparseSize)
	}
}

func TestOnceWaves(t *testing.T) {
	// The same waves and assertions for each data plane: native (PutFiles
	// over the session) and rsync (into the slave's staging area through
	// the same forced ssh command).
	for _, mode := range []string{"native", "rsync"} {
		t.Run(mode, func(t *testing.T) { onceWaves(t, "--sync-mode", mode) })
	}
}

func onceWaves(t *testing.T, extra ...string) {
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	treegen.First(t, s.master)
	s.mustOnce(t, extra...)
	if !treecmp.Compare(t, s.master, s.slave, treecmp.Options{}) {
		t.FailNow()
	}
	checkSparse(t, s.slave)
	before, err := treecmp.Inodes(s.slave, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// Within the same second as the sync that just ended, then the wave.
	treegen.SameSecond(t, s.master)
	moves := treegen.SecondWave(t, s.master)
	s.mustOnce(t, extra...)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
	checkMovesKeptInodes(t, s.slave, before, moves)

	// Once more right after a sync, alone, so nothing else hides it.
	treegen.SameSecond(t, s.master)
	s.mustOnce(t, extra...)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})

	// Nothing changed: a run finds nothing to do and exits 0.
	s.mustOnce(t, extra...)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
}

// TestOnceUnderChurn runs --once again and again while changes stream in
// (each run races the stream), then once more in quiet: that last run must
// leave the slave equal to the master whatever the earlier runs saw.
func TestOnceUnderChurn(t *testing.T) {
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	smallTree(t, s.master)
	churn := startChurn(t, filepath.Join(s.master, "churn"), 42, 100)
	runs := 6
	if inCI() {
		runs = 3
	}
	for range runs {
		s.mustOnce(t)
	}
	steps, err := churn.stop()
	if err != nil {
		t.Fatalf("the change stream failed: %v", err)
	}
	t.Logf("%d runs raced %d changes", runs, steps)
	s.mustOnce(t)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
}

// smallTree is a few files and directories: enough for the guard and
// option tests.
func smallTree(t *testing.T, root string) {
	t.Helper()
	for rel, data := range map[string]string{
		"keep": "k", "dir/x": "x", "dir/sub/y": "y", "other/z": "z",
		"a.tmp": "excluded", "dir/b.tmp": "excluded", "cache/c": "excluded", "dir/cache/d": "excluded",
		"renamed-in.tmp": "excluded until renamed",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestEmptiedMasterRootKeepsSlave(t *testing.T) {
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	smallTree(t, s.master)
	s.mustOnce(t)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
	replica, err := treecmp.Snapshot(s.slave, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}

	// rm -rf master/*
	ents, err := os.ReadDir(s.master)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.master, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	out, err := s.once(t)
	if err == nil {
		t.Errorf("--once on an emptied master root exited 0; want a refusal. Output:\n%s", out)
	}
	if !strings.Contains(out, "--allow-mass-delete") || !strings.Contains(out, "empty") {
		t.Errorf("the refusal does not name the guard (the root is empty; --allow-mass-delete confirms):\n%s", out)
	}
	now, err := treecmp.Snapshot(s.slave, treecmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diffs := treecmp.Diff(replica, now); len(diffs) != 0 {
		t.Errorf("the refused run changed the slave:\n%s", treecmp.Format(diffs))
	}

	s.mustOnce(t, "--allow-mass-delete")
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
	if ents, err := os.ReadDir(s.slave); err != nil || len(ents) != 1 {
		t.Errorf("confirmed mass delete left %v (%v) on the slave; want only %s", ents, err, treecmp.ReservedDir)
	}
}

func TestIgnoreDeletes(t *testing.T) {
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	smallTree(t, s.master)
	s.mustOnce(t)
	for _, rel := range []string{"keep", "dir"} {
		if err := os.RemoveAll(filepath.Join(s.master, rel)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.master, "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.master, "other/z"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.mustOnce(t, "--ignore-deletes")
	tests := []struct {
		rel  string
		want string
	}{
		{"keep", "k"},          // deleted on the master, kept
		{"dir/x", "x"},         // rm -rf on the master, kept
		{"dir/sub/y", "y"},     //
		{"new", "n"},           // creates still flow
		{"other/z", "changed"}, // and data
	}
	for _, tc := range tests {
		got, err := os.ReadFile(filepath.Join(s.slave, tc.rel))
		if err != nil || string(got) != tc.want {
			t.Errorf("slave %s = %q, %v; want %q", tc.rel, got, err, tc.want)
		}
	}
}

// excluded is the test's reading of the patterns it passes: "*.tmp" and
// "cache/" (a directory named cache at any depth).
func excluded(rel string) bool {
	base := filepath.Base(rel)
	return strings.HasSuffix(base, ".tmp") || base == "cache"
}

func TestExclude(t *testing.T) {
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	smallTree(t, s.master)
	flags := []string{"--exclude", "*.tmp", "--exclude", "cache/"}
	s.mustOnce(t, flags...)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{Skip: excluded})
	for _, rel := range []string{"a.tmp", "dir/b.tmp", "cache", "dir/cache", "renamed-in.tmp"} {
		if exists(t, filepath.Join(s.slave, rel)) {
			t.Errorf("excluded %s reached the slave", rel)
		}
	}

	// Later changes: new excluded files stay off; a file renamed from an
	// excluded name to a replicated one arrives.
	for rel, data := range map[string]string{"later.tmp": "x", "cache/later": "x", "dir/later": "replicated"} {
		if err := os.WriteFile(filepath.Join(s.master, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(s.master, "renamed-in.tmp"), filepath.Join(s.master, "renamed-in")); err != nil {
		t.Fatal(err)
	}
	s.mustOnce(t, flags...)
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{Skip: excluded})
	for _, rel := range []string{"later.tmp", "cache"} {
		if exists(t, filepath.Join(s.slave, rel)) {
			t.Errorf("excluded %s reached the slave", rel)
		}
	}
}
