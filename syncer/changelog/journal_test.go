package changelog

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/georep/georep/syncer/index"
)

// dirtyOf builds a DirtySet from "key" → names ("" marks Self).
func dirtyOf(m map[string][]string) DirtySet {
	s := DirtySet{}
	for k, names := range m {
		d := s.dir(index.Key(k), "rel/"+k)
		for _, n := range names {
			d.addName(n)
		}
	}
	return s
}

func TestRecordRoundTrip(t *testing.T) {
	whole := dirtyOf(map[string][]string{"w": nil})
	whole["w"].Whole = true
	tests := []struct {
		name     string
		dirty    DirtySet
		overflow bool
	}{
		{name: "empty overflow", dirty: DirtySet{}, overflow: true},
		{name: "names and self", dirty: dirtyOf(map[string][]string{"\x00\x00\x00\x01abcdefgh": {"a", "b c", "é", ""}, "k2": {"x"}})},
		{name: "whole", dirty: whole},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := time.Unix(1700000000, 123456789)
			got, err := decodeRecord(encodeRecord(at, tc.dirty, tc.overflow))
			if err != nil {
				t.Fatal(err)
			}
			want := JournalRecord{Time: at, Dirty: tc.dirty, Overflow: tc.overflow}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("record (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRecordRejectsCorruption(t *testing.T) {
	good := encodeRecord(time.Unix(1, 0), dirtyOf(map[string][]string{"key": {"name"}}), false)
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"wrong version", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-2]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"huge dir count", []byte{recordVersion, 2, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"empty key", []byte{recordVersion, 2, 0, 1, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeRecord(tc.b); !errors.Is(err, errCorrupt) {
				t.Fatalf("decodeRecord = %v, want errCorrupt", err)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(time.Unix(1, 2), dirtyOf(map[string][]string{"k": {"a", ""}}), true))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		// A record that decodes re-encodes to something that decodes the same.
		again, err := decodeRecord(encodeRecord(r.Time, r.Dirty, r.Overflow))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if diff := cmp.Diff(r, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// TestJournalPersistsUntilAck appends, reopens, acks and reopens again: un-acked
// records survive Close, acked ones are gone for good, and sequence numbers
// keep growing across all of it.
func TestJournalPersistsUntilAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), JournalFile)
	j := openJournal(t, path)
	var seqs []uint64
	for i, names := range [][]string{{"a"}, {"b"}, {"c"}} {
		seq, err := j.Append(time.Unix(int64(i), 0), dirtyOf(map[string][]string{"dir": names}), i == 2)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, seq)
	}
	if !(seqs[0] < seqs[1] && seqs[1] < seqs[2]) {
		t.Fatalf("sequence numbers %v do not grow", seqs)
	}
	closeJournal(t, j)

	j = openJournal(t, path)
	if got := recordSeqs(t, j, 0); !cmp.Equal(got, seqs) {
		t.Fatalf("after reopen records %v, want %v", got, seqs)
	}
	if got := recordSeqs(t, j, seqs[0]); !cmp.Equal(got, seqs[1:]) {
		t.Fatalf("records after %d: %v, want %v", seqs[0], got, seqs[1:])
	}
	if err := j.Ack(seqs[1]); err != nil {
		t.Fatal(err)
	}
	if got := recordSeqs(t, j, 0); !cmp.Equal(got, seqs[2:]) {
		t.Fatalf("after Ack(%d) records %v, want %v", seqs[1], got, seqs[2:])
	}
	closeJournal(t, j)

	j = openJournal(t, path)
	defer closeJournal(t, j)
	var last JournalRecord
	if err := j.Range(0, func(r JournalRecord) error { last = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if last.Seq != seqs[2] || !last.Overflow || last.Dirty["dir"] == nil {
		t.Fatalf("surviving record %+v, want seq %d with overflow and dir", last, seqs[2])
	}
	next, err := j.Append(time.Now(), DirtySet{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if next <= seqs[2] {
		t.Fatalf("sequence restarted at %d after %d", next, seqs[2])
	}
}

func openJournal(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := OpenJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func closeJournal(t *testing.T, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

func recordSeqs(t *testing.T, j *Journal, after uint64) []uint64 {
	t.Helper()
	var out []uint64
	if err := j.Range(after, func(r JournalRecord) error { out = append(out, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}
