package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/status"
)

func TestParseTime(t *testing.T) {
	loc := time.FixedZone("X", 2*3600)
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2026-01-02T03:04:05Z", want: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{in: "2026-01-02T03:04:05.5+01:00", want: time.Date(2026, 1, 2, 2, 4, 5, 5e8, time.UTC)},
		{in: "2026-01-02 03:04:05", want: time.Date(2026, 1, 2, 1, 4, 5, 0, time.UTC)},
		{in: "yesterday", bad: true},
		{in: "2026-01-02", bad: true},
		{in: "", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in, loc)
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), Formats) {
					t.Fatalf("ParseTime(%q) = %v, %v; want an error naming %s", tc.in, got, err, Formats)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("ParseTime(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestSetReadClear(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := Read(dir); ok || err != nil {
		t.Fatalf("Read of an unset checkpoint = %v, %v", ok, err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC)
	if err := Set(dir, at); err != nil {
		t.Fatal(err)
	}
	got, ok, err := Read(dir)
	if err != nil || !ok || !got.Equal(at) {
		t.Fatalf("Read = %v, %v, %v; want %v", got, ok, err, at)
	}
	if err := Clear(dir); err != nil {
		t.Fatal(err)
	}
	if err := Clear(dir); err != nil {
		t.Fatalf("clearing twice: %v", err)
	}
	if _, ok, err := Read(dir); ok || err != nil {
		t.Fatalf("Read after Clear = %v, %v", ok, err)
	}
	missing := filepath.Join(dir, "nope")
	if err := Set(missing, at); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Set in a missing directory: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("Set created the missing state directory (%v)", err)
	}
}

func TestMerge(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	done := status.Checkpoint{Time: t0, Completed: true, CompletedAt: t0.Add(time.Minute)}
	tests := []struct {
		name string
		st   status.Status
		t    time.Time
		ok   bool
		want status.Checkpoint
	}{
		{"cleared", status.Status{Checkpoint: done}, time.Time{}, false, status.Checkpoint{}},
		{"master's own kept", status.Status{Checkpoint: done}, t0, true, done},
		{"new, passed", status.Status{LastSynced: t0.Add(time.Hour), Checkpoint: done}, t0.Add(time.Second), true,
			status.Checkpoint{Time: t0.Add(time.Second), Completed: true}},
		{"new, exactly at stime", status.Status{LastSynced: t0}, t0, true, status.Checkpoint{Time: t0, Completed: true}},
		{"new, ahead", status.Status{LastSynced: t0}, t0.Add(time.Second), true, status.Checkpoint{Time: t0.Add(time.Second)}},
		{"never synced", status.Status{}, t0, true, status.Checkpoint{Time: t0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st
			Merge(&st, tc.t, tc.ok)
			if st.Checkpoint != tc.want {
				t.Fatalf("Merge: checkpoint = %+v, want %+v", st.Checkpoint, tc.want)
			}
		})
	}
}

// TestWatcher follows a master's publishes: completion is recorded once,
// a new checkpoint resets it, a cleared one disappears, and a restarted
// master keeps the completion its predecessor recorded.
func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(24 * time.Hour)
	type step struct {
		name  string
		do    func(t *testing.T)
		stime time.Time
		want  status.Checkpoint
	}
	set := func(at time.Time) func(t *testing.T) {
		return func(t *testing.T) {
			t.Helper()
			if err := Set(dir, at); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := NewWatcher(dir)
	steps := []step{
		{name: "none", stime: t0, want: status.Checkpoint{}},
		{name: "set ahead", do: set(t0.Add(time.Hour)), stime: t0, want: status.Checkpoint{Time: t0.Add(time.Hour)}},
		{name: "stime passes", stime: t0.Add(2 * time.Hour),
			want: status.Checkpoint{Time: t0.Add(time.Hour), Completed: true, CompletedAt: now.Add(2 * time.Second)}},
		{name: "completion kept", stime: t0.Add(3 * time.Hour),
			want: status.Checkpoint{Time: t0.Add(time.Hour), Completed: true, CompletedAt: now.Add(2 * time.Second)}},
		{name: "set again, same time", do: set(t0.Add(time.Hour)), stime: t0.Add(3 * time.Hour),
			want: status.Checkpoint{Time: t0.Add(time.Hour), Completed: true, CompletedAt: now.Add(2 * time.Second)}},
		{name: "moved ahead", do: set(t0.Add(5 * time.Hour)), stime: t0.Add(3 * time.Hour),
			want: status.Checkpoint{Time: t0.Add(5 * time.Hour)}},
		{name: "cleared", do: func(t *testing.T) {
			if err := Clear(dir); err != nil {
				t.Fatal(err)
			}
		}, stime: t0.Add(3 * time.Hour), want: status.Checkpoint{}},
	}
	for i, s := range steps {
		if s.do != nil {
			s.do(t)
		}
		got, err := w.Update(s.stime, now.Add(time.Duration(i)*time.Second))
		if err != nil || got != s.want {
			t.Fatalf("step %q: Update = %+v, %v; want %+v", s.name, got, err, s.want)
		}
	}

	// A restart: the previous master's status recorded a completion.
	set(t0)(t)
	prev := status.Checkpoint{Time: t0, Completed: true, CompletedAt: now}
	if err := status.Write(dir, &status.Status{Checkpoint: prev}); err != nil {
		t.Fatal(err)
	}
	got, err := NewWatcher(dir).Update(t0.Add(time.Hour), now.Add(time.Hour))
	if err != nil || got != prev {
		t.Fatalf("after a restart Update = %+v, %v; want the recorded %+v", got, err, prev)
	}

	// A damaged request keeps the last good checkpoint and says why.
	w = NewWatcher(dir)
	if _, err := w.Update(t0, now); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = w.Update(t0, now)
	if err == nil || got.Time != t0 {
		t.Fatalf("damaged request: Update = %+v, %v; want the last good checkpoint and an error", got, err)
	}
}
