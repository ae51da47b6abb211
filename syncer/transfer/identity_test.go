package transfer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

// keyAt is the index key and filesystem of the file at p, as a scan
// records them.
func keyAt(t *testing.T, p string) (index.Key, uint64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	k, err := index.KeyOf(unix.AT_FDCWD, p, &st)
	if err != nil {
		t.Fatal(err)
	}
	return k, st.Dev
}

// TestSendOnlyTheScannedObject: an item's content is read from the file
// at its path only while that is the object the scan found there. Once
// another file has taken the name (renamed over it, or made there after
// the scanned one was removed), the item fails as moved, not retryable,
// every way a file can go (whole, in a batch, as one message, as a
// delta), and the slave keeps the GFID's previous content: before this
// check, the other file's bytes were installed as this GFID's.
func TestSendOnlyTheScannedObject(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		opts    Options
		replace func(t *testing.T, mp, dir string)
		moved   bool
	}{
		{name: "renamed over, whole", size: 3 << 20, opts: Options{ChunkSize: 1 << 20}, moved: true,
			replace: renameOver},
		{name: "renamed over, batched", size: 4096, opts: Options{FileBatches: true}, moved: true,
			replace: renameOver},
		{name: "renamed over, one message", size: 4096, opts: Options{SingleMessage: true}, moved: true,
			replace: renameOver},
		{name: "removed and made again", size: 4096, opts: Options{FileBatches: true}, moved: true,
			replace: func(t *testing.T, mp, dir string) {
				t.Helper()
				if err := os.Remove(mp); err != nil {
					t.Fatal(err)
				}
				writeFile(t, mp, randomBytes(4096, 99))
			}},
		{name: "same object written since the scan", size: 4096, opts: Options{FileBatches: true},
			replace: func(t *testing.T, mp, dir string) {
				t.Helper()
				writeFile(t, mp, randomBytes(5000, 98))
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			it, old, _ := oldAndNew(t, e, tc.size)
			mp := filepath.Join(e.master, it.RelPath)
			it.Key, it.Dev = keyAt(t, mp)
			tc.replace(t, mp, e.master)
			now := readFile(t, mp)

			rs, st := e.send(t, []Item{it}, tc.opts)
			got := readFile(t, filepath.Join(e.slave, "f"))
			if !tc.moved {
				wantOK(t, rs)
				if !bytes.Equal(got, now) {
					t.Fatalf("the slave has %d bytes, want the object's current %d", len(got), len(now))
				}
				return
			}
			if !errors.Is(rs[0].Err, os.ErrNotExist) || rs[0].Retryable() {
				t.Fatalf("result %v (retryable %v), want a move (os.ErrNotExist), not retryable", rs[0].Err, rs[0].Retryable())
			}
			if st.Failed != 1 || rs[0].Sent != 0 {
				t.Errorf("stats %+v, sent %d: want one failure and nothing sent", st, rs[0].Sent)
			}
			if !bytes.Equal(got, old) {
				t.Fatalf("the slave's content of the GFID changed (%d bytes; the file now at the path has %d)", len(got), len(now))
			}
			waitTmpEmpty(t, e.slave)
		})
	}
}

// renameOver renames a new file over mp.
func renameOver(t *testing.T, mp, dir string) {
	t.Helper()
	other := filepath.Join(dir, "other")
	writeFile(t, other, randomBytes(4096, 97))
	if err := os.Rename(other, mp); err != nil {
		t.Fatal(err)
	}
}
