package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/internal/testfs"
	"github.com/georep/georep/internal/treecmp"
)

// statusDetail runs `georep status --json --detail` on state.
func statusDetail(t *testing.T, state string) *status.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), onceTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, georepBin, "status", "--state", state, "--json", "--detail").Output()
	if err != nil {
		t.Fatalf("georep status --json --detail: %v\n%s", err, out)
	}
	var st status.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("georep status --json: %v\n%s", err, out)
	}
	return &st
}

// stageEntries lists what is left in the slave's rsync staging area.
func stageEntries(t *testing.T, slave string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(slave, treecmp.ReservedDir, "stage"))
	if err != nil {
		t.Fatalf("read the slave's staging area: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestRsyncModeENOSPC: a slave filesystem too full for a file's new
// content fails that file with a clear ENOSPC, keeps its previous content
// and leaves no staged copy behind; once space is freed, the next run
// completes.
func TestRsyncModeENOSPC(t *testing.T) {
	base := t.TempDir()
	// The slave root and a filler share an 8 MiB filesystem; the filler is
	// outside the root so the trees compare equal.
	fs := testfs.Tmpfs(t, "8m")
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(fs, "slave"))
	old := randBytes(t, 2<<20)
	writeAt(t, filepath.Join(s.master, "f"), 0, old)
	writeAt(t, filepath.Join(s.master, "small"), 0, []byte("small\n"))
	s.mustOnce(t, "--sync-mode", "rsync")
	if !treecmp.Compare(t, s.master, s.slave, treecmp.Options{}) {
		t.FailNow()
	}

	// 2 MiB old + 4 MiB filler leave under 2 MiB for rsync's 4 MiB temp.
	filler := filepath.Join(fs, "filler")
	writeAt(t, filler, 0, randBytes(t, 4<<20))
	fresh := randBytes(t, 4<<20)
	if err := os.Truncate(filepath.Join(s.master, "f"), 0); err != nil {
		t.Fatal(err)
	}
	writeAt(t, filepath.Join(s.master, "f"), 0, fresh)
	writeAt(t, filepath.Join(s.master, "small"), 0, []byte("small, changed\n"))

	out, err := s.once(t, "--sync-mode", "rsync")
	if code := exitCode(err); code != 1 {
		t.Fatalf("--once onto a full slave exited %d (%v), want 1; output:\n%s", code, err, out)
	}
	if !strings.Contains(out, "ENOSPC") && !strings.Contains(out, "No space left on device") {
		t.Errorf("the output does not say the slave is out of space:\n%s", out)
	}
	st := statusDetail(t, s.state)
	var found *status.Failure
	for i, f := range st.RecentFailures {
		if f.Path == "f" {
			found = &st.RecentFailures[i]
		}
	}
	switch {
	case found == nil:
		t.Errorf("status lists no failure for f: %+v", st.RecentFailures)
	case found.Code != "ENOSPC" || !strings.Contains(found.Message, "No space left on device"):
		t.Errorf("status failure for f is %s %q, want ENOSPC with rsync's reason", found.Code, found.Message)
	default:
		t.Logf("status: %s %s: %s", found.Path, found.Code, found.Message)
	}
	if got := mustRead(t, filepath.Join(s.slave, "f")); !bytes.Equal(got, old) {
		t.Errorf("the slave's f lost its previous content: %d bytes now, %d before", len(got), len(old))
	}
	// A file that fitted went through in the same run.
	if got := string(mustRead(t, filepath.Join(s.slave, "small"))); got != "small, changed\n" {
		t.Errorf("the slave's small is %q, want the new content", got)
	}
	if left := stageEntries(t, s.slave); len(left) != 0 {
		t.Errorf("the failed run left %v in the staging area", left)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.mustOnce(t, "--sync-mode", "rsync")
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
	if left := stageEntries(t, s.slave); len(left) != 0 {
		t.Errorf("the run after space was freed left %v in the staging area", left)
	}
}

// rewriter rewrites a file whole, again and again, each version filled
// with one byte value, until stopped: any mix of two versions is a torn
// read. The goroutine is the test's, ended by stop or a cleanup.
type rewriter struct {
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // set before done closes
	versions atomic.Int64
}

func startRewriter(t *testing.T, path string, size int) *rewriter {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &rewriter{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer f.Close()
		chunk := make([]byte, 1<<20)
		for v := 1; ctx.Err() == nil; v++ {
			fill := byte(v%255 + 1) // never 0, the first version's fill
			for i := range chunk {
				chunk[i] = fill
			}
			// A version is always finished, so the file at rest is whole.
			for off := 0; off < size; off += len(chunk) {
				if _, w.err = f.WriteAt(chunk[:min(len(chunk), size-off)], int64(off)); w.err != nil {
					return
				}
			}
			w.versions.Store(int64(v))
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *rewriter) stop() (int64, error) {
	w.cancel()
	<-w.done
	return w.versions.Load(), w.err
}

// waitVersions polls until the writer has made n whole versions.
func (w *rewriter) waitVersions(t *testing.T, n int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for w.versions.Load() < n {
		select {
		case <-w.done:
			t.Fatalf("the writer stopped after %d versions: %v", w.versions.Load(), w.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer made %d versions in %v, want %d", w.versions.Load(), within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// uniform reports whether b is size bytes of one value.
func uniform(b []byte, size int) bool {
	if len(b) != size {
		return false
	}
	for _, c := range b {
		if c != b[0] {
			return false
		}
	}
	return true
}

// TestRsyncModeFileChangesDuringTransfer: a file rewritten without pause
// while rsync reads it is never installed torn (the slave keeps a content
// the master had), and once the writes stop the same run brings the final
// content. The writer runs from before the run starts until rsync has sent
// the file twice, so at least two transfers race it.
func TestRsyncModeFileChangesDuringTransfer(t *testing.T) {
	const size = 8 << 20
	base := t.TempDir()
	s := newSession(t, filepath.Join(base, "master"), filepath.Join(base, "slave"))
	mf := filepath.Join(s.master, "f")
	writeAt(t, mf, 0, make([]byte, size))
	writeAt(t, filepath.Join(s.master, "quiet"), 0, []byte("v1\n"))
	s.mustOnce(t, "--sync-mode", "rsync")
	if !treecmp.Compare(t, s.master, s.slave, treecmp.Options{}) {
		t.FailNow()
	}

	writeAt(t, filepath.Join(s.master, "quiet"), 0, []byte("v2\n"))
	w := startRewriter(t, mf, size)
	w.waitVersions(t, 1, 10*time.Second)
	p := s.start(t, "--once", "--sync-mode", "rsync", "--log-level", "debug", "--progress=false")
	deadline := time.Now().Add(onceTimeout)
	for strings.Count(p.out.String(), `msg="rsync batch done"`) < 2 {
		if p.exited() {
			// The change went unnoticed: say whether it tore the file.
			got := mustRead(t, filepath.Join(s.slave, "f"))
			t.Fatalf("the run ended (%v) after one transfer that raced a writer; the slave's f is whole: %v\n%s",
				p.err, uniform(got, size), tail(p.out.String(), 4000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsync did not send twice within %v:\n%s", onceTimeout, tail(p.out.String(), 4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Two transfers have raced the writer: whatever the slave has now is
	// one whole version.
	got := mustRead(t, filepath.Join(s.slave, "f"))
	versions, werr := w.stop()
	if werr != nil {
		t.Fatalf("rewrite %s: %v", mf, werr)
	}
	t.Logf("two transfers raced %d whole rewrites; the slave's f holds fill %#x", versions, got[0])
	if !uniform(got, size) {
		t.Errorf("the slave's f is torn: %d bytes, not one version of the master's file", len(got))
	}
	select {
	case <-p.done:
	case <-time.After(onceTimeout):
		t.Fatalf("the run did not end within %v of the writes stopping:\n%s", onceTimeout, tail(p.out.String(), 4000))
	}
	out := p.out.String()
	if p.err != nil {
		t.Fatalf("the run exited %v once the writes stopped; want 0:\n%s", p.err, tail(out, 4000))
	}
	if !strings.Contains(out, "changed while it was being sent") {
		t.Errorf("the run never says f changed during its transfer:\n%s", tail(out, 4000))
	}
	if got := mustRead(t, filepath.Join(s.slave, "f")); !uniform(got, size) {
		t.Errorf("the slave's f is torn after the run: %d bytes, not one version", len(got))
	}
	if got := string(mustRead(t, filepath.Join(s.slave, "quiet"))); got != "v2\n" {
		t.Errorf("a quiet file batched with the changing one is %q on the slave, want v2", got)
	}

	// The run brought the slave to the master as of its start; the writes
	// after that (f's last mtime) are the next run's, which converges.
	s.mustOnce(t, "--sync-mode", "rsync")
	treecmp.Compare(t, s.master, s.slave, treecmp.Options{})
	if got := mustRead(t, filepath.Join(s.slave, "f")); !bytes.Equal(got, mustRead(t, mf)) {
		t.Errorf("the slave's f is not the master's final content")
	}
	if left := stageEntries(t, s.slave); len(left) != 0 {
		t.Errorf("runs left %v in the staging area", left)
	}
}
