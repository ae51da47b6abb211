package syncer

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/georep/georep/syncer/changelog"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/scan"
)

// TestDirtyPaths checks how the detector's dirty directories become scan
// paths: by the names the events named, whole when the detector kept none
// (or too many), a directory's own change looked up in its parent, and the
// root always whole.
func TestDirtyPaths(t *testing.T) {
	names := func(ns ...string) map[string]struct{} {
		m := map[string]struct{}{}
		for _, n := range ns {
			m[n] = struct{}{}
		}
		return m
	}
	tests := []struct {
		name string
		set  []*changelog.DirtyDir
		want []scan.Dirty
	}{
		{name: "named children, sorted",
			set:  []*changelog.DirtyDir{{Key: "h1", Rel: "a/b", Names: names("z", "x")}},
			want: []scan.Dirty{{Path: "a/b", Names: []string{"x", "z"}}}},
		{name: "too many names: whole",
			set:  []*changelog.DirtyDir{{Key: "h1", Rel: "a", Whole: true}},
			want: []scan.Dirty{{Path: "a"}}},
		{name: "no names and no change of its own: whole",
			set:  []*changelog.DirtyDir{{Key: "h1", Rel: "a"}},
			want: []scan.Dirty{{Path: "a"}}},
		{name: "its own change: looked up in the parent, nothing listed",
			set:  []*changelog.DirtyDir{{Key: "h1", Rel: "a/b", Self: true}},
			want: []scan.Dirty{{Path: "a", Names: []string{"b"}}, {Path: "a/b", Names: []string{}}}},
		{name: "the root is listed whole",
			set: []*changelog.DirtyDir{{Key: "h0", Rel: "", Names: names("top"), Self: true},
				{Key: "h1", Rel: "a", Self: true, Names: names("f")}},
			want: []scan.Dirty{{Path: "."}, {Path: "a", Names: []string{"f"}}}},
		{name: "names of a directory and of its own change merge",
			set: []*changelog.DirtyDir{{Key: "h1", Rel: "a", Names: names("f")},
				{Key: "h2", Rel: "a/b", Self: true, Names: names("g")}},
			want: []scan.Dirty{{Path: "a", Names: []string{"b", "f"}}, {Path: "a/b", Names: []string{"g"}}}},
		{name: "a whole listing absorbs names",
			set: []*changelog.DirtyDir{{Key: "h1", Rel: "a", Whole: true},
				{Key: "h2", Rel: "a/b", Self: true}},
			want: []scan.Dirty{{Path: "a"}, {Path: "a/b", Names: []string{}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db, err := index.Open(filepath.Join(t.TempDir(), index.FileName), index.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			m := &master{db: db}
			set := changelog.DirtySet{}
			for _, d := range tc.set {
				set[d.Key] = d
			}
			got, err := m.dirtyPaths(set)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("scan paths (-want +got):\n%s", diff)
			}
		})
	}
}
