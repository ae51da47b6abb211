package backend

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/internal/gfid"
)

// TestSyncPutsHoldsNoBackendLock: a batch's flush (a syncfs of the whole
// filesystem, which can take seconds when other writers dirtied it) takes
// no backend lock. Held shared, it made every install and entry op wait
// for the flush, and with a writer queued (Go's RWMutex) every other
// stream's BeginPut and BlockSums too: the whole slave stalled per flush.
// Here the test holds the write lock, as another stream's install does;
// the flush must still finish, and the batch installs once it is released.
func TestSyncPutsHoldsNoBackendLock(t *testing.T) {
	tests := []struct {
		name  string
		files int
	}{
		{name: "fsync each", files: 1},
		{name: "syncfs batch", files: syncfsMin},
		{name: "big syncfs batch", files: 4 * syncfsMin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			var ws []*FileWriter
			var want [][]byte
			for i := range tc.files {
				x := gfid.New()
				name := "f" + string(rune('a'+i))
				writeOld(t, b, dir, x, name, []byte("old"))
				content := bytes.Repeat([]byte{byte('A' + i)}, 4096+i)
				w, err := b.BeginPut(PutHeader{GFID: x, Size: int64(len(content)), LinkParent: gfid.Root, LinkName: name})
				if err != nil {
					t.Fatalf("BeginPut %s: %v", name, err)
				}
				defer w.Abort()
				if err := w.WriteAt(content, 0); err != nil {
					t.Fatalf("WriteAt %s: %v", name, err)
				}
				if err := w.Verify(digestOf(int64(len(content)), []putSpan{{0, content}})); err != nil {
					t.Fatalf("Verify %s: %v", name, err)
				}
				ws = append(ws, w)
				want = append(want, content)
			}

			b.mu.Lock() // another stream installing
			done := make(chan error, 1)
			go func() { done <- b.SyncPuts(ws) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				b.mu.Unlock()
				<-done
				t.Fatalf("SyncPuts of %d files waited for the backend's write lock: a flush must not hold up, or be held up by, other calls", tc.files)
			}
			b.mu.Unlock()
			if err != nil {
				t.Fatalf("SyncPuts: %v", err)
			}
			for i, w := range ws {
				if _, err := w.Install(); err != nil {
					t.Fatalf("Install %d: %v", i, err)
				}
				if got := fileBytes(t, filepath.Join(dir, "f"+string(rune('a'+i)))); !bytes.Equal(got, want[i]) {
					t.Errorf("file %d: %d bytes, not the new content", i, len(got))
				}
			}
			checkTmpEmpty(t, dir)
		})
	}
}
