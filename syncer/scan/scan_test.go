package scan

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/syncer/index"
)

// tree builds a small master tree and returns its root.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(rel string) string { return filepath.Join(root, rel) }
	for _, d := range []string{"a", "a/b", "a/b/c", "x y", "ünï", ".georep", ".georep/gfid", "build", "other"} {
		must(os.Mkdir(p(d), 0o755))
	}
	for _, f := range []string{"a/f1", "a/b/f2", "a/b/c/f3", "x y/f 4", "ünï/é", ".georep/secret", "build/out.o", "other/keep.log", "top.log"} {
		must(os.WriteFile(p(f), []byte("data "+f), 0o644))
	}
	must(os.Link(p("a/f1"), p("a/b/hard")))
	must(os.Symlink("../..", p("a/b/up")))     // to a directory: never followed
	must(os.Symlink("/etc", p("abs")))         // absolute
	must(os.Symlink("nowhere", p("dangling"))) // dangling
	must(unix.Lsetxattr(p("a/f1"), "user.colour", []byte("blue"), 0))
	must(unix.Lsetxattr(p("a/f1"), "user.georep.gfid", []byte("0123456789abcdef"), 0))
	must(unix.Lsetxattr(p("a/f1"), "user.alpha", []byte("1"), 0))
	return root
}

func collect(t *testing.T, root string, dirs []Dirty, opts Options) (map[string]*Entry, Summary) {
	t.Helper()
	got := map[string]*Entry{}
	sum, err := Scan(context.Background(), root, dirs, opts, func(e *Entry) error {
		if _, dup := got[e.Path]; dup {
			t.Errorf("path %q reported twice", e.Path)
		}
		got[e.Path] = e
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if sum.Entries != len(got) {
		t.Errorf("Summary.Entries = %d, emitted %d", sum.Entries, len(got))
	}
	return got, sum
}

func paths(m map[string]*Entry) []string {
	var out []string
	for p := range m {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func TestScanPaths(t *testing.T) {
	root := tree(t)
	all := []string{".", "a", "a/b", "a/b/c", "a/b/c/f3", "a/b/f2", "a/b/hard", "a/b/up", "a/f1", "abs",
		"build", "build/out.o", "dangling", "other", "other/keep.log", "top.log", "x y", "x y/f 4", "ünï", "ünï/é"}
	tests := []struct {
		name    string
		dirs    []Dirty
		opts    Options
		want    []string
		descend bool
	}{
		{name: "full crawl skips only .georep", dirs: All, want: all},
		{name: "one worker", dirs: All, opts: Options{Workers: 1}, want: all},
		{name: "excludes", dirs: All, opts: Options{Exclude: NewExclude([]string{"build/", "*.log", "# comment", "", "!other/keep.log"})},
			want: []string{".", "a", "a/b", "a/b/c", "a/b/c/f3", "a/b/f2", "a/b/hard", "a/b/up", "a/f1", "abs",
				"dangling", "other", "other/keep.log", "x y", "x y/f 4", "ünï", "ünï/é"}},
		{name: "non-recursive dirty dir", dirs: []Dirty{{Path: "a/b"}},
			want: []string{"a/b", "a/b/c", "a/b/f2", "a/b/hard", "a/b/up"}},
		{name: "non-recursive with Descend", dirs: []Dirty{{Path: "a/b/"}}, descend: true,
			want: []string{"a/b", "a/b/c", "a/b/c/f3", "a/b/f2", "a/b/hard", "a/b/up"}},
		{name: "overlapping dirty dirs", dirs: []Dirty{{Path: "a/b", Recursive: true}, {Path: "a/b/c"}, {Path: "./a/b/c/"}},
			want: []string{"a/b", "a/b/c", "a/b/c/f3", "a/b/f2", "a/b/hard", "a/b/up"}},
		{name: "vanished dirty dir", dirs: []Dirty{{Path: "gone"}, {Path: "x y"}}, want: []string{"x y", "x y/f 4"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.descend {
				tc.opts.Descend = func(*Entry) bool { return true }
			}
			got, sum := collect(t, root, tc.dirs, tc.opts)
			if diff := cmp.Diff(tc.want, paths(got)); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			// A directory is listed iff the scan entered it.
			for _, e := range got {
				entered := slices.ContainsFunc(paths(got), func(p string) bool { return filepath.Dir(p) == e.Path && p != "." })
				if e.Stat.IsDir() && entered != sum.Listed[e.Key] {
					t.Errorf("%s: listed %v, entered %v", e.Path, sum.Listed[e.Key], entered)
				}
			}
			if len(sum.Unlisted) != 0 {
				t.Errorf("Unlisted = %v", sum.Unlisted)
			}
		})
	}
}

func TestScanEntries(t *testing.T) {
	root := tree(t)
	got, sum := collect(t, root, All, Options{})
	if !sum.Listed[got["a/b/c"].Key] || !sum.Listed[got["."].Key] {
		t.Errorf("directories missing from Listed")
	}
	if got["a/f1"].Key != got["a/b/hard"].Key {
		t.Errorf("hard links have different keys")
	}
	if got["a/b/f2"].ParentKey != got["a/b"].Key || got["a"].ParentKey != got["."].Key || got["."].ParentKey != "" {
		t.Errorf("parent keys do not match the directories")
	}
	if got["x y/f 4"].Name != "f 4" || got["."].Name != "" {
		t.Errorf("names: %q %q", got["x y/f 4"].Name, got["."].Name)
	}
	targets := map[string]string{"a/b/up": "../..", "abs": "/etc", "dangling": "nowhere"}
	for p, want := range targets {
		if e := got[p]; string(e.Target) != want || e.Stat.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("%s: target %q mode %o, want symlink to %q", p, e.Target, e.Stat.Mode, want)
		}
	}
	f1 := got["a/f1"]
	want := []Xattr{{"user.alpha", []byte("1")}, {"user.colour", []byte("blue")}}
	if !f1.XattrsRead || !cmp.Equal(want, f1.Xattrs) {
		t.Errorf("a/f1 xattrs = %v (read %v), want %v", f1.Xattrs, f1.XattrsRead, want)
	}
	if f1.GFID != gfid.GFID([]byte("0123456789abcdef")) {
		t.Errorf("a/f1 GFID = %s, want the xattr's", f1.GFID)
	}
	if f1.XattrDigest != XattrDigest([]Xattr{want[1], want[0]}) || f1.XattrDigest == 0 {
		t.Errorf("digest %x does not match an order-independent recomputation", f1.XattrDigest)
	}
	if d := got["a/f1"].Stat; d.Size != int64(len("data a/f1")) || d.Nlink != 2 || d.MtimeNs == 0 || d.CtimeNs == 0 {
		t.Errorf("a/f1 stat = %+v", d)
	}
}

func TestXattrDigestDistinguishes(t *testing.T) {
	tests := []struct {
		name string
		a, b []Xattr
	}{
		{"value change", []Xattr{{"user.a", []byte("1")}}, []Xattr{{"user.a", []byte("2")}}},
		{"name/value boundary", []Xattr{{"user.ab", []byte("c")}}, []Xattr{{"user.a", []byte("bc")}}},
		{"one removed", []Xattr{{"user.a", nil}, {"user.b", nil}}, []Xattr{{"user.a", nil}}},
		{"empty value vs none", []Xattr{{"user.a", nil}}, nil},
	}
	for _, tc := range tests {
		if XattrDigest(tc.a) == XattrDigest(tc.b) {
			t.Errorf("%s: same digest %x", tc.name, XattrDigest(tc.a))
		}
	}
}

func TestKnownSkipsXattrsOfUnchanged(t *testing.T) {
	root := tree(t)
	first, _ := collect(t, root, All, Options{})
	ctimes := map[index.Key]int64{}
	for _, e := range first {
		ctimes[e.Key] = e.Stat.CtimeNs
	}
	if err := unix.Lsetxattr(filepath.Join(root, "a/b/f2"), "user.new", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	known := func(k index.Key) (int64, bool, error) { ct, ok := ctimes[k]; return ct, ok, nil }
	second, _ := collect(t, root, All, Options{Known: known})
	for p, e := range second {
		wantRead := p == "a/b/f2"
		if e.XattrsRead != wantRead {
			t.Errorf("%s: XattrsRead = %v, want %v", p, e.XattrsRead, wantRead)
		}
	}
	if got := second["a/b/f2"].Xattrs; len(got) != 1 || got[0].Name != "user.new" {
		t.Errorf("a/b/f2 xattrs = %v", got)
	}
}

func TestScanStops(t *testing.T) {
	root := tree(t)
	boom := errors.New("consumer failed")
	tests := []struct {
		name string
		ctx  func() context.Context
		emit func(*Entry) error
		want error
	}{
		{"emit error", context.Background, func(*Entry) error { return boom }, boom},
		{"cancelled", func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, func(*Entry) error { return nil }, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Scan(tc.ctx(), root, All, Options{Workers: 3}, tc.emit)
			if !errors.Is(err, tc.want) {
				t.Errorf("Scan = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Scan(context.Background(), filepath.Join(root, "missing"), All, Options{}, func(*Entry) error { return nil }); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Scan of a missing root = %v, want ENOENT", err)
	}
}

// TestScanByNames checks a directory scanned by the names a detector saw:
// only those children are reported (a new subdirectory entered when
// Descend says so), the directory is not Listed, and every name looked up,
// found or gone, is in Looked; the same directory asked for whole as well
// is listed whole.
func TestScanByNames(t *testing.T) {
	root := tree(t)
	tests := []struct {
		name       string
		dirs       []Dirty
		descend    bool
		want       []string
		listed     []string // directories Listed
		looked     map[string][]string
		unexpected bool
	}{
		{name: "named children", dirs: []Dirty{{Path: "a/b", Names: []string{"f2", "gone", "hard"}}},
			want: []string{"a/b", "a/b/f2", "a/b/hard"}, looked: map[string][]string{"a/b": {"f2", "gone", "hard"}}},
		{name: "a named subdirectory entered by Descend", dirs: []Dirty{{Path: "a/b", Names: []string{"c"}}}, descend: true,
			want: []string{"a/b", "a/b/c", "a/b/c/f3"}, listed: []string{"a/b/c"}, looked: map[string][]string{"a/b": {"c"}}},
		{name: "no names: only the directory itself", dirs: []Dirty{{Path: "a", Names: []string{}}},
			want: []string{"a"}, looked: map[string][]string{"a": {}}},
		{name: "names merged, duplicates dropped", dirs: []Dirty{{Path: "a/b", Names: []string{"hard"}}, {Path: "a/b/", Names: []string{"f2", "hard"}}},
			want: []string{"a/b", "a/b/f2", "a/b/hard"}, looked: map[string][]string{"a/b": {"f2", "hard"}}},
		{name: "a whole listing absorbs names", dirs: []Dirty{{Path: "a/b", Names: []string{"f2"}}, {Path: "a/b"}},
			want: []string{"a/b", "a/b/c", "a/b/f2", "a/b/hard", "a/b/up"}, listed: []string{"a/b"}},
		{name: "the reserved directory is never reported", dirs: []Dirty{{Path: ".", Names: []string{".georep", "top.log"}}},
			want: []string{".", "top.log"}, looked: map[string][]string{".": {".georep", "top.log"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts Options
			if tc.descend {
				opts.Descend = func(*Entry) bool { return true }
			}
			got, sum := collect(t, root, tc.dirs, opts)
			if diff := cmp.Diff(tc.want, paths(got)); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			var listed []string
			for _, e := range got {
				if sum.Listed[e.Key] {
					listed = append(listed, e.Path)
				}
			}
			sort.Strings(listed)
			if diff := cmp.Diff(tc.listed, listed); diff != "" {
				t.Errorf("Listed (-want +got):\n%s", diff)
			}
			looked := map[string][]string{}
			for _, e := range got {
				if names, ok := sum.Looked[e.Key]; ok {
					looked[e.Path] = names
				}
			}
			if tc.looked == nil {
				tc.looked = map[string][]string{}
			}
			if diff := cmp.Diff(tc.looked, looked); diff != "" {
				t.Errorf("Looked (-want +got):\n%s", diff)
			}
		})
	}
}
