package treecmp

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/treegen"
)

// copyTree copies master to a new slave directory with cp -a, which keeps
// hard links, owners, modes, ns mtimes and xattrs: a replica treecmp must
// call equal.
func copyTree(t *testing.T, master string) string {
	t.Helper()
	slave := filepath.Join(t.TempDir(), "slave")
	if out, err := exec.Command("cp", "-a", master, slave).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	return slave
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestEqualCopiesCompareEqual(t *testing.T) {
	master := t.TempDir()
	treegen.First(t, master)
	slave := copyTree(t, master)
	// The slave's own state is not part of the replica.
	must(t, os.MkdirAll(filepath.Join(slave, ReservedDir, "gfid"), 0o700))
	must(t, os.WriteFile(filepath.Join(slave, ReservedDir, "volume-id"), []byte("x"), 0o600))
	if !Compare(t, master, slave, Options{}) {
		return
	}
	treegen.SecondWave(t, master)
	if diffs, err := Differences(master, slave, Options{}); err != nil || len(diffs) < 20 {
		t.Errorf("after the second wave on the master only, %d differences (%v), want many:\n%s", len(diffs), err, Format(diffs))
	}
	Compare(t, master, copyTree(t, master), Options{})
}

// TestEveryDifferenceIsReported changes one thing on a faithful copy and
// checks Compare names it.
func TestEveryDifferenceIsReported(t *testing.T) {
	master := t.TempDir()
	treegen.First(t, master)
	tests := []struct {
		name   string
		change func(t *testing.T, slave string)
		want   []string // substrings of one reported line
	}{
		{"missing file", func(t *testing.T, s string) { must(t, os.Remove(filepath.Join(s, "a/b/f2"))) },
			[]string{`"a/b/f2": only on the master`}},
		{"extra file", func(t *testing.T, s string) { must(t, os.WriteFile(filepath.Join(s, "extra"), nil, 0o644)) },
			[]string{`"extra": only on the slave`}},
		{"content, same size", func(t *testing.T, s string) {
			must(t, os.WriteFile(filepath.Join(s, "same-second"), []byte("zzzz"), 0o644))
		}, []string{`"same-second": content sha256`}},
		{"size", func(t *testing.T, s string) { must(t, os.Truncate(filepath.Join(s, "big/large"), 5)) },
			[]string{`"big/large": size`}},
		{"mode", func(t *testing.T, s string) { must(t, os.Chmod(filepath.Join(s, "sticky"), 0o777)) },
			[]string{`"sticky": mode 01777 on the master, 0777 on the slave`}},
		{"owner", func(t *testing.T, s string) { must(t, os.Lchown(filepath.Join(s, "abs"), 0, 0)) },
			[]string{`"abs": owner 42:43 on the master, 0:0`}},
		{"file mtime ns", func(t *testing.T, s string) {
			tm := treegen.OldTime(123456788)
			must(t, os.Chtimes(filepath.Join(s, "a/b/c/f3"), tm, tm))
		}, []string{`"a/b/c/f3": mtime (ns)`}},
		{"symlink target", func(t *testing.T, s string) {
			must(t, os.Remove(filepath.Join(s, "dangling")))
			must(t, os.Symlink("elsewhere", filepath.Join(s, "dangling")))
		}, []string{`"dangling": symlink target "nowhere" on the master, "elsewhere"`}},
		{"type", func(t *testing.T, s string) {
			must(t, os.Remove(filepath.Join(s, "fifo")))
			must(t, os.WriteFile(filepath.Join(s, "fifo"), nil, 0o640))
		}, []string{`"fifo": type fifo on the master, file`}},
		{"hard link broken", func(t *testing.T, s string) {
			p := filepath.Join(s, "x y/hard2")
			must(t, os.Remove(p))
			must(t, os.WriteFile(p, []byte("one"), 0o644))
			must(t, unix.Lsetxattr(p, "user.colour", []byte("blue"), 0))
		}, []string{`"x y/hard2": hard-link group [a/b/hard|a/f1|x y/hard2] on the master, []`}},
		{"xattr changed", func(t *testing.T, s string) {
			must(t, unix.Lsetxattr(filepath.Join(s, "a/b"), "user.dir", []byte("no"), 0))
		}, []string{`"a/b": xattr user.dir "yes" on the master, "no"`}},
		{"xattr missing", func(t *testing.T, s string) { must(t, unix.Lremovexattr(filepath.Join(s, "xattr-me"), "user.keep")) },
			[]string{`"xattr-me": xattr user.keep "k" on the master, absent`}},
		{"xattr extra", func(t *testing.T, s string) {
			must(t, unix.Lsetxattr(filepath.Join(s, "empty-file"), "user.new", []byte("n"), 0))
		}, []string{`"empty-file": xattr user.new absent on the master, "n"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			slave := copyTree(t, master)
			tc.change(t, slave)
			diffs, err := Differences(master, slave, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				found := false
				for _, d := range diffs {
					found = found || strings.Contains(d, w)
				}
				if !found {
					t.Errorf("no difference mentions %q; got:\n%s", w, Format(diffs))
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	master := t.TempDir()
	treegen.First(t, master)
	slave := copyTree(t, master)
	must(t, os.RemoveAll(filepath.Join(slave, "gone")))
	must(t, os.Chtimes(filepath.Join(slave, "a/b"), treegen.OldTime(1), treegen.OldTime(1)))
	tests := []struct {
		name  string
		opts  Options
		diffs int
	}{
		{"defaults: the missing subtree, not directory mtimes", Options{}, 4},
		{"skip the subtree", Options{Skip: func(rel string) bool { return rel == "gone" }}, 0},
		{"directory mtimes too", Options{Skip: func(rel string) bool { return rel == "gone" }, DirMtimes: true}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			diffs, err := Differences(master, slave, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(diffs) != tc.diffs {
				t.Errorf("%d differences, want %d:\n%s", len(diffs), tc.diffs, Format(diffs))
			}
		})
	}
}

func TestInodeAndGFIDs(t *testing.T) {
	root := t.TempDir()
	must(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "d/f"), nil, 0o644))
	must(t, os.Mkdir(filepath.Join(root, ReservedDir), 0o755))
	want := map[string]gfid.GFID{".": gfid.Root, "d": gfid.New(), "d/f": gfid.New()}
	for rel, g := range want {
		must(t, unix.Lsetxattr(filepath.Join(root, rel), GFIDXattr, g.Bytes(), 0))
	}
	got, err := GFIDs(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("GFIDs = %v, want %v", got, want)
	}
	for rel, g := range want {
		if got[rel] != g {
			t.Errorf("GFID of %s = %s, want %s", rel, got[rel], g)
		}
	}
	before := Inode(t, filepath.Join(root, "d/f"))
	all, err := Inodes(root, Options{})
	if err != nil || len(all) != 3 || all["d/f"] != before {
		t.Errorf("Inodes = %v, %v; want 3 paths with d/f at %d", all, err, before)
	}
	must(t, os.Rename(filepath.Join(root, "d/f"), filepath.Join(root, "g")))
	if after := Inode(t, filepath.Join(root, "g")); after != before {
		t.Errorf("inode after rename %d, want %d", after, before)
	}
	if _, err := GFIDs(root, Options{}); err != nil {
		t.Errorf("GFIDs after a rename: %v", err)
	}
	must(t, os.WriteFile(filepath.Join(root, "no-gfid"), nil, 0o644))
	if _, err := GFIDs(root, Options{}); err == nil || !strings.Contains(err.Error(), "no-gfid") {
		t.Errorf("GFIDs with an object lacking one: %v, want an error naming it", err)
	}
}
