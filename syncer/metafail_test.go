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
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(tr.master, "d", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("f", "f one")
	write("g", "g one")
	cfg := tr.config(bin)
	cfg.Retries = 1
	if logs, err := runOnce(cfg); err != nil {
		t.Fatalf("first run: %v\n%s", err, logs)
	}
	first, firstSlave := tr.stimes(t)
	if first == 0 || first != firstSlave {
		t.Fatalf("after the first run: index stime %d, slave stime %d; want equal and set", first, firstSlave)
	}

	slaveF := filepath.Join(tr.slave, "d", "f")
	chattr := func(flag string) {
		t.Helper()
		if out, err := exec.Command("chattr", flag, slaveF).CombinedOutput(); err != nil {
			t.Fatalf("chattr %s %s (e2fsprogs, on the temp dir's filesystem): %v: %s", flag, slaveF, err, out)
		}
	}
	chattr("+i")
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", slaveF).Run() })
	// A change of attributes alone is a meta op; g's new content is data.
	if err := os.Chmod(filepath.Join(tr.master, "d", "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	write("g", "g two")
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

	chattr("-i")
	if logs, err := runOnce(cfg); err != nil {
		t.Fatalf("run after the slave let go: %v\n%s", err, logs)
	}
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
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d", "e")
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(tr.master, "d", name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("f", "f one")
	cfg := tr.config(bin)
	cfg.Retries = 1
	if logs, err := runOnce(cfg); err != nil {
		t.Fatalf("first run: %v\n%s", err, logs)
	}
	first, firstSlave := tr.stimes(t)
	if first == 0 || first != firstSlave {
		t.Fatalf("after the first run: index stime %d, slave stime %d; want equal and set", first, firstSlave)
	}

	slaveE := filepath.Join(tr.slave, "e")
	chattr := func(flag string) {
		t.Helper()
		if out, err := exec.Command("chattr", flag, slaveE).CombinedOutput(); err != nil {
			t.Fatalf("chattr %s %s (e2fsprogs, on the temp dir's filesystem): %v: %s", flag, slaveE, err, out)
		}
	}
	chattr("+i")
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", slaveE).Run() })
	if err := os.Mkdir(filepath.Join(tr.master, "e", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("f", "f two")
	write("g", "g new")
	logs, err := runOnce(cfg)
	if !errors.Is(err, ErrFailures) {
		t.Fatalf("run with an immutable slave directory: %v, want ErrFailures\n%s", err, logs)
	}
	for name, want := range map[string]string{"f": "f two", "g": "g new"} {
		if got, _ := os.ReadFile(filepath.Join(tr.slave, "d", name)); string(got) != want {
			t.Errorf("slave's d/%s = %q, want %q (the batch's other changes applied)", name, got, want)
		}
	}
	if idx, sl := tr.stimes(t); idx != first || sl != first {
		t.Errorf("after an entry op given up on: index stime %d, slave stime %d; want both still %d", idx, sl, first)
	}

	chattr("-i")
	if logs, err := runOnce(cfg); err != nil {
		t.Fatalf("run after the slave let go: %v\n%s", err, logs)
	}
	if st, err := os.Stat(filepath.Join(slaveE, "sub")); err != nil || !st.IsDir() {
		t.Errorf("slave's e/sub after the slave let go: %v; want the directory (the given-up MKDIR sent again)", err)
	}
	if idx, sl := tr.stimes(t); idx <= first || idx != sl {
		t.Errorf("after convergence: index stime %d, slave stime %d; want equal and past %d", idx, sl, first)
	}
}
