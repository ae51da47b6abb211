package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/internal/treecmp"
)

// mountTmpfs mounts a tmpfs of size at a fresh directory, unmounted when
// the test ends (after everything registered later has been cleaned up).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a %s tmpfs at %s (tests run as root): %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

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
	fs := mountTmpfs(t, "8m")
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
