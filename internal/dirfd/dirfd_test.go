package dirfd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func openTemp(t *testing.T) (*Dir, string) {
	t.Helper()
	root := t.TempDir()
	d, err := Open(root)
	if err != nil {
		t.Fatalf("open %s: %v", root, err)
	}
	t.Cleanup(func() { d.Close() })
	return d, root
}

// every method that takes a name, called with that name.
func nameMethods(d *Dir) map[string]func(name string) error {
	return map[string]func(string) error{
		"OpenDir":    func(n string) error { x, err := d.OpenDir(n); closeIf(x); return err },
		"OpenFile":   func(n string) error { f, err := d.OpenFile(n, unix.O_RDONLY, 0); closeFile(f); return err },
		"CreateExcl": func(n string) error { f, err := d.CreateExcl(n, 0o600); closeFile(f); return err },
		"Lstat":      func(n string) error { _, err := d.Lstat(n); return err },
		"Mkdir":      func(n string) error { return d.Mkdir(n, 0o700) },
		"Mknod":      func(n string) error { return d.Mknod(n, unix.S_IFIFO|0o600, 0) },
		"Symlink":    func(n string) error { return d.Symlink("x", n) },
		"Readlink":   func(n string) error { _, err := d.Readlink(n); return err },
		"LinkFrom":   func(n string) error { return d.Link(n, d, "ok") },
		"LinkTo":     func(n string) error { return d.Link("ok", d, n) },
		"LinkFile": func(n string) error {
			f, err := d.OpenTmpfile(0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			return d.LinkFile(f, n)
		},
		"RenameFrom": func(n string) error { return d.Rename(n, d, "ok", RenameNoReplace) },
		"RenameTo":   func(n string) error { return d.Rename("ok", d, n, RenameNoReplace) },
		"Unlink":     func(n string) error { return d.Unlink(n) },
		"Rmdir":      func(n string) error { return d.Rmdir(n) },
		"Chmod":      func(n string) error { return d.Chmod(n, 0o600) },
		"Chown":      func(n string) error { return d.Chown(n, -1, -1) },
		"Utimes": func(n string) error {
			return d.Utimes(n, unix.Timespec{Nsec: unix.UTIME_OMIT}, unix.Timespec{Nsec: unix.UTIME_OMIT})
		},
		"SetXattr":    func(n string) error { return d.SetXattr(n, "user.t", []byte("v"), 0) },
		"GetXattr":    func(n string) error { _, err := d.GetXattr(n, "user.t"); return err },
		"ListXattr":   func(n string) error { _, err := d.ListXattr(n); return err },
		"RemoveXattr": func(n string) error { return d.RemoveXattr(n, "user.t") },
	}
}

func closeIf(d *Dir) {
	if d != nil {
		d.Close()
	}
}

func closeFile(f *os.File) {
	if f != nil {
		f.Close()
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"file.txt", true},
		{"..a", true},
		{"\xff\xfe", true},
		{strings.Repeat("x", 255), true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"/", false},
		{"a\x00b", false},
		{strings.Repeat("x", 256), false},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("ValidName(%q) error %v does not wrap EINVAL", tt.name, err)
		}
		if errB := ValidName([]byte(tt.name)); (errB == nil) != tt.ok {
			t.Errorf("ValidName([]byte %q) = %v, want ok=%v", tt.name, errB, tt.ok)
		}
	}
}

func TestBadNamesRejectedByEveryMethod(t *testing.T) {
	d, root := openTemp(t)
	if err := os.WriteFile(filepath.Join(root, "ok"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []string{"", ".", "..", "../escape", "a/b", "/etc", "x\x00y", strings.Repeat("n", 256)}
	for method, call := range nameMethods(d) {
		for _, name := range bad {
			err := call(name)
			if !errors.Is(err, unix.EINVAL) {
				t.Errorf("%s(%q) = %v, want EINVAL", method, name, err)
			}
		}
	}
	// Nothing escaped or appeared.
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "ok" {
		t.Errorf("root holds %v after bad-name calls, want only ok", ents)
	}
}

func TestOpenDirRefusesSymlinks(t *testing.T) {
	d, root := openTemp(t)
	outside := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "real"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		link, target string
	}{
		{"abs-out", outside},
		{"abs-in", filepath.Join(root, "real")},
		{"rel-in", "real"},
		{"rel-up", ".."},
		{"proc", "/proc/self/cwd"},
	}
	for _, tt := range tests {
		if err := os.Symlink(tt.target, filepath.Join(root, tt.link)); err != nil {
			t.Fatal(err)
		}
		sub, err := d.OpenDir(tt.link)
		if err == nil {
			sub.Close()
			t.Errorf("OpenDir(%s -> %s) succeeded, want ELOOP", tt.link, tt.target)
			continue
		}
		// O_NOFOLLOW|O_DIRECTORY reports a final symlink as ENOTDIR.
		if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("OpenDir(%s -> %s) = %v, want ELOOP, EXDEV or ENOTDIR", tt.link, tt.target, err)
		}
	}
	sub, err := d.OpenDir("real")
	if err != nil {
		t.Fatalf("OpenDir(real): %v", err)
	}
	sub.Close()
}

// A symlink at name is acted on itself, never its target, by every method.
func TestSymlinkAtNameNeverFollowed(t *testing.T) {
	d, root := openTemp(t)
	outside := t.TempDir()
	victimFile := filepath.Join(outside, "victim")
	if err := os.WriteFile(victimFile, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	victimDir := filepath.Join(outside, "vdir")
	if err := os.Mkdir(victimDir, 0o755); err != nil {
		t.Fatal(err)
	}
	before := func() (unix.Stat_t, unix.Stat_t) {
		var a, b unix.Stat_t
		if err := unix.Lstat(victimFile, &a); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(victimDir, &b); err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	fileSt, dirSt := before()

	tests := []struct {
		method  string
		call    func(name string) error
		wantErr bool
		check   func(st unix.Stat_t) bool
	}{
		{"OpenDir", func(n string) error { x, err := d.OpenDir(n); closeIf(x); return err }, true, nil},
		{"OpenFile", func(n string) error { f, err := d.OpenFile(n, unix.O_RDWR, 0); closeFile(f); return err }, true, nil},
		{"CreateExcl", func(n string) error { f, err := d.CreateExcl(n, 0o600); closeFile(f); return err }, true, nil},
		{"Mkdir", func(n string) error { return d.Mkdir(n, 0o700) }, true, nil},
		{"Chmod", func(n string) error { return d.Chmod(n, 0o600) }, true, nil}, // EOPNOTSUPP on a link
		{"Chown", func(n string) error { return d.Chown(n, 12345, 12345) }, false,
			func(st unix.Stat_t) bool { return st.Uid == 12345 && st.Gid == 12345 }},
		{"Utimes", func(n string) error {
			return d.Utimes(n, unix.Timespec{Sec: 1000}, unix.Timespec{Sec: 2000})
		}, false, func(st unix.Stat_t) bool { return st.Mtim.Sec == 2000 && st.Atim.Sec == 1000 }},
		{"SetXattr", func(n string) error { return d.SetXattr(n, "user.evil", []byte("x"), 0) }, true, nil},
		{"GetXattr", func(n string) error { _, err := d.GetXattr(n, "user.evil"); return err }, true, nil},
		{"RemoveXattr", func(n string) error { return d.RemoveXattr(n, "user.evil") }, true, nil},
	}
	for _, target := range []string{victimFile, victimDir} {
		for _, tt := range tests {
			link := "lnk"
			_ = os.Remove(filepath.Join(root, link))
			if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
				t.Fatal(err)
			}
			err := tt.call(link)
			if tt.wantErr && err == nil {
				t.Errorf("%s on symlink to %s succeeded, want an error", tt.method, target)
			}
			if !tt.wantErr && err != nil {
				t.Errorf("%s on symlink to %s: %v", tt.method, target, err)
			}
			if tt.check != nil {
				st, err := d.Lstat(link)
				if err != nil || !tt.check(st) {
					t.Errorf("%s did not change the link itself: %+v, %v", tt.method, st, err)
				}
			}
			// The link itself is still a symlink with its target verbatim.
			got, err := d.Readlink(link)
			if err != nil || got != target {
				t.Errorf("after %s: readlink = %q, %v; want %q", tt.method, got, err, target)
			}
		}
	}
	fileAfter, dirAfter := before()
	if fileAfter.Mode != fileSt.Mode || fileAfter.Uid != fileSt.Uid || fileAfter.Mtim != fileSt.Mtim {
		t.Errorf("victim file changed through a symlink: %+v -> %+v", fileSt, fileAfter)
	}
	if dirAfter.Mode != dirSt.Mode || dirAfter.Uid != dirSt.Uid || dirAfter.Mtim != dirSt.Mtim {
		t.Errorf("victim dir changed through a symlink")
	}
	if data, _ := os.ReadFile(victimFile); string(data) != "keep" {
		t.Errorf("victim file content = %q", data)
	}
	if v, err := unix.Getxattr(victimFile, "user.evil", make([]byte, 16)); err == nil {
		t.Errorf("xattr set on victim through symlink (%d bytes)", v)
	}
}

// A parent replaced by a symlink cannot be walked through: every OpenDir of a
// path component that is a symlink fails, so no later *at call runs beneath it.
func TestSymlinkParentRefused(t *testing.T) {
	d, root := openTemp(t)
	outside := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "p"), 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := d.OpenDir("p")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// Swap p for a symlink to outside after we hold its fd: the fd keeps
	// pointing at the real directory (now renamed), never at outside.
	if err := os.Rename(filepath.Join(root, "p"), filepath.Join(root, "p.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "p")); err != nil {
		t.Fatal(err)
	}
	if err := p.Mkdir("child", 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(outside, "child")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("child appeared outside the root: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "p.moved", "child")); err != nil {
		t.Errorf("child not in the real directory: %v", err)
	}
	if x, err := d.OpenDir("p"); !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
		closeIf(x)
		t.Errorf("OpenDir through swapped symlink = %v, want ELOOP or ENOTDIR", err)
	}
}

func TestOperationsRoundTrip(t *testing.T) {
	d, _ := openTemp(t)
	f, err := d.CreateExcl("f", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := d.CreateExcl("f", 0o600); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second CreateExcl = %v, want EEXIST", err)
	}
	if err := d.Mkdir("sub", 0o700); err != nil {
		t.Fatal(err)
	}
	sub, err := d.OpenDir("sub")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := d.Link("f", sub, "g"); err != nil {
		t.Fatal(err)
	}
	st, err := d.Lstat("f")
	if err != nil || st.Nlink != 2 {
		t.Fatalf("nlink after Link = %d, %v", st.Nlink, err)
	}
	if err := d.Symlink("../dangling/\xff", "s"); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Readlink("s"); err != nil || got != "../dangling/\xff" {
		t.Errorf("Readlink = %q, %v", got, err)
	}
	if err := d.Rename("s", sub, "g", RenameNoReplace); !errors.Is(err, unix.EEXIST) {
		t.Errorf("Rename NOREPLACE over existing = %v, want EEXIST", err)
	}
	if err := d.Rename("s", sub, "g", RenameExchange); err != nil {
		t.Fatal(err)
	}
	if st, err := sub.Lstat("g"); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("after exchange sub/g mode %o, %v", st.Mode, err)
	}
	if err := d.Chmod("f", 0o4751); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Lstat("f"); st.Mode&0o7777 != 0o4751 {
		t.Errorf("mode %o, want 4751", st.Mode&0o7777)
	}
	big := bytes.Repeat([]byte("v"), 4000)
	if err := d.SetXattr("f", "user.big", big, 0); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetXattr("f", "user.big"); err != nil || !bytes.Equal(got, big) {
		t.Errorf("GetXattr len %d, %v", len(got), err)
	}
	names, err := d.ListXattr("f")
	if err != nil || !contains(names, "user.big") {
		t.Errorf("ListXattr = %v, %v", names, err)
	}
	if err := d.RemoveXattr("f", "user.big"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetXattr("f", "user.big"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("GetXattr after remove = %v, want ENODATA", err)
	}
	if err := d.SetXattrSelf("user.me", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetXattrSelf("user.me"); err != nil || string(got) != "1" {
		t.Errorf("GetXattrSelf = %q, %v", got, err)
	}
	if err := d.SetXattr("f", "user.huge", make([]byte, XattrSizeMax+1), 0); !errors.Is(err, unix.E2BIG) {
		t.Errorf("oversized SetXattr = %v, want E2BIG", err)
	}
	ns := []unix.Timespec{{Sec: 1_600_000_000, Nsec: 123456789}, {Sec: 1_500_000_000, Nsec: 987654321}}
	if err := d.Utimes("f", ns[0], ns[1]); err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Lstat("f"); st.Mtim != ns[1] || st.Atim != ns[0] {
		t.Errorf("times %v %v, want %v", st.Atim, st.Mtim, ns)
	}
	all, err := d.ReadDirNames()
	if err != nil || len(all) != 3 {
		t.Errorf("ReadDirNames = %v, %v", all, err)
	}
	if err := d.Rmdir("sub"); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("Rmdir non-empty = %v", err)
	}
	if err := sub.Unlink("g"); err != nil {
		t.Fatal(err)
	}
	if err := d.Rmdir("sub"); err != nil {
		t.Errorf("Rmdir emptied = %v", err)
	}
	if err := d.Fsync(); err != nil {
		t.Error(err)
	}
	if err := d.Syncfs(); err != nil {
		t.Error(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestTmpfileLinkedOnlyWhenNamed: an unnamed file is invisible until
// LinkFile names it, a taken name is never replaced, and a file closed
// without a name leaves nothing behind.
func TestTmpfileLinkedOnlyWhenNamed(t *testing.T) {
	d, root := openTemp(t)
	if err := os.WriteFile(filepath.Join(root, "taken"), []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := d.OpenTmpfile(0o600)
	if err != nil {
		t.Fatalf("OpenTmpfile: %v", err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		t.Helper()
		ents, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range ents {
			out = append(out, e.Name())
		}
		return out
	}
	if got := names(); len(got) != 1 {
		t.Fatalf("root holds %v with an unnamed file open, want only taken", got)
	}
	if err := d.LinkFile(f, "taken"); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("LinkFile over a taken name = %v, want EEXIST", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "taken")); string(b) != "old" {
		t.Fatalf("taken holds %q after a refused link, want old", b)
	}
	if err := d.LinkFile(f, "named"); err != nil {
		t.Fatalf("LinkFile: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "named")); err != nil || string(b) != "new" {
		t.Fatalf("named = %q, %v; want new", b, err)
	}
	// A second name for the same open file works too (an index link).
	if err := d.LinkFile(f, "second"); err != nil {
		t.Fatalf("LinkFile second name: %v", err)
	}
	st1, _ := d.Lstat("named")
	st2, _ := d.Lstat("second")
	if st1.Ino != st2.Ino || st1.Nlink != 2 {
		t.Fatalf("named and second: ino %d/%d nlink %d, want one inode with 2 links", st1.Ino, st2.Ino, st1.Nlink)
	}

	g, err := d.OpenTmpfile(0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte("dropped")); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if got := names(); len(got) != 3 {
		t.Fatalf("root holds %v after an unnamed file was closed, want named, second, taken", got)
	}
}

// TestTmpfileLinkThroughProc covers the /proc/self/fd way LinkFile takes
// when the kernel refuses AT_EMPTY_PATH to the caller.
func TestTmpfileLinkThroughProc(t *testing.T) {
	d, root := openTemp(t)
	f, err := d.OpenTmpfile(0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("via proc")); err != nil {
		t.Fatal(err)
	}
	if err := d.linkProc(int(f.Fd()), "p"); err != nil {
		t.Fatalf("link through /proc: %v", err)
	}
	if err := d.linkProc(int(f.Fd()), "p"); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second link through /proc to the same name = %v, want EEXIST", err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "p")); err != nil || string(b) != "via proc" {
		t.Fatalf("p = %q, %v", b, err)
	}
}
