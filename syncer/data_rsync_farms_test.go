package syncer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMakeFarms: the farms go in a fresh private directory on a tmpfs, and
// the farms of processes that are gone are swept there first, while a
// live process's stay; without a tmpfs they go in the state directory,
// where whatever a dead run left is removed.
func TestMakeFarms(t *testing.T) {
	state := t.TempDir()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	deadFarm := filepath.Join(shmDir, farmPrefix+strconv.Itoa(gone.Process.Pid)+"-test")
	liveFarm := filepath.Join(shmDir, farmPrefix+strconv.Itoa(os.Getppid())+"-test")
	for _, d := range []string{deadFarm, liveFarm} {
		if err := os.MkdirAll(filepath.Join(d, "s-x"), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	farms, err := makeFarms(shmDir, state)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(farms)
	if filepath.Dir(farms) != shmDir || !strings.HasPrefix(filepath.Base(farms), farmPrefix+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("farms in %s, want a directory of this process in %s", farms, shmDir)
	}
	if fi, err := os.Stat(farms); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("farms directory mode %v (%v), want 0700", fi.Mode(), err)
	}
	if _, err := os.Stat(deadFarm); !os.IsNotExist(err) {
		t.Errorf("a gone process's farms were not swept: %v", err)
	}
	if _, err := os.Stat(liveFarm); err != nil {
		t.Errorf("a live process's farms were swept: %v", err)
	}

	// No tmpfs (here: no such directory): the state directory, emptied
	// of a dead run's farm.
	notShm := filepath.Join(t.TempDir(), "no-shm")
	if err := os.MkdirAll(filepath.Join(state, "rsync", "s-old"), 0o700); err != nil {
		t.Fatal(err)
	}
	farms, err = makeFarms(notShm, state)
	if err != nil {
		t.Fatal(err)
	}
	if farms != filepath.Join(state, "rsync") {
		t.Errorf("without a tmpfs the farms go in %s, want %s", farms, filepath.Join(state, "rsync"))
	}
	if left, err := os.ReadDir(farms); err != nil || len(left) != 0 {
		t.Errorf("the state's farm directory holds %d entries (%v), want none", len(left), err)
	}
}
