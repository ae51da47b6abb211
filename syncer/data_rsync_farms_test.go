package syncer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMakeFarms: the farms go in a fresh private directory on a tmpfs, and
// the farms of processes that are gone, untouched for a day, are swept
// there first, while a live process's and recent ones stay; without a
// tmpfs, or one short of inodes, they go in the state directory, swept
// the same way.
func TestMakeFarms(t *testing.T) {
	state := t.TempDir()
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead := farmPrefix + strconv.Itoa(gone.Process.Pid)
	deadFarm := filepath.Join(shmDir, dead+"-test")
	recentFarm := filepath.Join(shmDir, dead+"-recent") // maybe another pid namespace's
	liveFarm := filepath.Join(shmDir, farmPrefix+strconv.Itoa(os.Getppid())+"-test")
	dayAgo := time.Now().Add(-staleFarm - time.Minute)
	for _, d := range []string{deadFarm, recentFarm, liveFarm} {
		if err := os.MkdirAll(filepath.Join(d, "s-x"), 0o700); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		if d != recentFarm {
			if err := os.Chtimes(d, dayAgo, dayAgo); err != nil {
				t.Fatal(err)
			}
		}
	}
	farms, err := makeFarms(shmDir, state, 1000)
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
	if _, err := os.Stat(recentFarm); err != nil {
		t.Errorf("farms touched within a day were swept: %v", err)
	}

	// No tmpfs (here: no such directory): a directory of this process in
	// <state>/rsync, where a dead master's farms are swept too.
	notShm := filepath.Join(t.TempDir(), "no-shm")
	stateDead := filepath.Join(state, "rsync", farmPrefix+strconv.Itoa(gone.Process.Pid)+"-test")
	if err := os.MkdirAll(filepath.Join(stateDead, "s-old"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(stateDead, dayAgo, dayAgo); err != nil {
		t.Fatal(err)
	}
	farms, err = makeFarms(notShm, state, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(farms) != filepath.Join(state, "rsync") || !strings.HasPrefix(filepath.Base(farms), farmPrefix+strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("without a tmpfs the farms go in %s, want a directory of this process in %s", farms, filepath.Join(state, "rsync"))
	}
	if _, err := os.Stat(stateDead); !os.IsNotExist(err) {
		t.Errorf("a gone process's farms in the state directory were not swept: %v", err)
	}
	os.RemoveAll(farms)

	// A tmpfs without inodes to spare for the files: the state directory.
	var fs unix.Statfs_t
	if err := unix.Statfs(shmDir, &fs); err != nil {
		t.Fatal(err)
	}
	farms, err = makeFarms(shmDir, state, int(fs.Ffree))
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(farms)
	if filepath.Dir(farms) != filepath.Join(state, "rsync") {
		t.Errorf("with %d files for %d free inodes the farms go in %s, want the state directory", fs.Ffree, fs.Ffree, farms)
	}
}
