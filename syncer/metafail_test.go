package syncer

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/testbin"
)

// TestMetaOpGivenUp: the index transaction is built while the meta ops are
// in flight, as if they all apply. When one is given up on (the slave's
// copy is immutable: EPERM even for root), that transaction must not
// commit: it is built again with the failure, the stime stays where it
// was on both sides, the rest of the batch is kept, and once the slave
// lets go the next run converges.
func TestMetaOpGivenUp(t *testing.T) {
	tr, cfg, first := givenUpBed(t, "d")
	slaveF := filepath.Join(tr.slave, "d", "f")
	immutable(t, slaveF, true)
	// A change of attributes alone is a meta op; g's new content is data.
	if err := os.Chmod(filepath.Join(tr.master, "d", "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeMaster(t, tr, "d/g", "g two")
	logs, err := runOnce(cfg)
	if !errors.Is(err, ErrFailures) {
		t.Fatalf("run with an immutable slave file: %v, want ErrFailures\n%s", err, logs)
	}
	if got, _ := os.ReadFile(filepath.Join(tr.slave, "d", "g")); string(got) != "g two" {
		t.Errorf("slave's g = %q, want the batch's other change applied", got)
	}
	if idx, sl := tr.stimes(t); idx != first || sl != first {
		t.Errorf("after a meta op given up on: index stime %d, slave stime %d; want both still %d", idx, sl, first)
	}

	immutable(t, slaveF, false)
	mustRunOnce(t, cfg, "run after the slave let go")
	st, err := os.Stat(slaveF)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("slave's f mode = %v, want 0600 (the given-up meta op must be sent again)", st.Mode().Perm())
	}
	if idx, sl := tr.stimes(t); idx <= first || idx != sl {
		t.Errorf("after convergence: index stime %d, slave stime %d; want equal and past %d", idx, sl, first)
	}
}

// TestEntryOpGivenUp: an entry op given up on (the slave's parent
// directory is immutable: EPERM even for root) keeps its object out of
// the index and holds the stime on both sides, while the batch's other
// changes are kept; once the slave lets go the next run makes the
// directory.
func TestEntryOpGivenUp(t *testing.T) {
	tr, cfg, first := givenUpBed(t, "d", "e")
	slaveE := filepath.Join(tr.slave, "e")
	immutable(t, slaveE, true)
	if err := os.Mkdir(filepath.Join(tr.master, "e", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeMaster(t, tr, "d/f", "f two")
	writeMaster(t, tr, "d/g", "g two")
	logs, err := runOnce(cfg)
	if !errors.Is(err, ErrFailures) {
		t.Fatalf("run with an immutable slave directory: %v, want ErrFailures\n%s", err, logs)
	}
	for name, want := range map[string]string{"f": "f two", "g": "g two"} {
		if got, _ := os.ReadFile(filepath.Join(tr.slave, "d", name)); string(got) != want {
			t.Errorf("slave's d/%s = %q, want %q (the batch's other changes applied)", name, got, want)
		}
	}
	if idx, sl := tr.stimes(t); idx != first || sl != first {
		t.Errorf("after an entry op given up on: index stime %d, slave stime %d; want both still %d", idx, sl, first)
	}

	immutable(t, slaveE, false)
	mustRunOnce(t, cfg, "run after the slave let go")
	if st, err := os.Stat(filepath.Join(slaveE, "sub")); err != nil || !st.IsDir() {
		t.Errorf("slave's e/sub after the slave let go: %v; want the directory (the given-up MKDIR sent again)", err)
	}
	if idx, sl := tr.stimes(t); idx <= first || idx != sl {
		t.Errorf("after convergence: index stime %d, slave stime %d; want equal and past %d", idx, sl, first)
	}
}

// givenUpBed builds georep and makes trees with dirs, d/f and d/g written
// and synced once, for the given-up tests: it returns the trees, a config
// retrying once, and the stime the first run left on both sides.
func givenUpBed(t *testing.T, dirs ...string) (trees, Config, int64) {
	t.Helper()
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, dirs...)
	writeMaster(t, tr, "d/f", "f one")
	writeMaster(t, tr, "d/g", "g one")
	cfg := tr.config(bin)
	cfg.Retries = 1
	mustRunOnce(t, cfg, "first run")
	first, firstSlave := tr.stimes(t)
	if first == 0 || first != firstSlave {
		t.Fatalf("after the first run: index stime %d, slave stime %d; want equal and set", first, firstSlave)
	}
	return tr, cfg, first
}

// writeMaster writes content to rel in the master tree.
func writeMaster(t *testing.T, tr trees, rel, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(tr.master, rel), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// immutable sets (on) or clears the immutable flag of path, clearing it
// when the test ends in any case.
func immutable(t *testing.T, path string, on bool) {
	t.Helper()
	flag := "-i"
	if on {
		flag = "+i"
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", path).Run() })
	}
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		t.Fatalf("chattr %s %s (e2fsprogs, on the temp dir's filesystem): %v: %s", flag, path, err, out)
	}
}
