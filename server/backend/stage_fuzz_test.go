package backend_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/server/backend"
)

// FuzzInstallStagedCreate puts a delivered staged copy at a name from the
// wire (StagedFile.create_name), in the root or a directory, through a
// stage name from the wire. Whatever the names, the backend must not
// change anything outside its root or keep anything in .georep but its
// bookkeeping; a create that succeeds is at exactly that one valid name,
// complete, and a refused one leaves no name behind.
func FuzzInstallStagedCreate(f *testing.F) {
	hostileReapFastTempDirs(f)
	for _, n := range hostileFuzzNames() {
		f.Add(n, false, "")
		f.Add(n, true, "")
	}
	for _, st := range []string{"..", "../gfid", "s-", "s-a/b", "tmp", "/tmp"} {
		f.Add([]byte("a"), false, st)
	}
	f.Fuzz(func(t *testing.T, name []byte, inDir bool, stageName string) {
		s := hostileNewSandboxIn(t, hostileFastTempDir(t), 0)
		dir := gfid.New()
		s.mustApply(t, hostileMkdir(dir, gfid.Root, "d"))
		before := s.snapshotOutside(t)
		stage, _, err := s.b.StageFiles(nil)
		if err != nil {
			t.Fatal(err)
		}
		x := gfid.New()
		content := []byte("delivered by rsync")
		hostileWriteFile(t, filepath.Join(s.root, backend.ReservedDir, backend.StageDirName, stage, x.Hex()), string(content), 0o600)
		parent, parentPath := gfid.Root, s.root
		if inDir {
			parent, parentPath = dir, filepath.Join(s.root, "d")
		}
		if stageName == "" {
			stageName = stage
		}
		res, err := s.b.InstallStaged(stageName, []backend.StagedFile{{GFID: x, Size: int64(len(content)),
			LinkParent: parent, LinkName: string(name), Create: true, Stat: hostileStat(0o100644)}}, true, nil)
		valid := dirfd.ValidName(name) == nil && !(!inDir && string(name) == backend.ReservedDir)
		created := err == nil && res[0].Err == nil
		switch {
		case created && !valid:
			t.Fatalf("create at %q (in d: %v) succeeded", name, inDir)
		case created:
			got, rerr := os.ReadFile(filepath.Join(parentPath, string(name)))
			if rerr != nil || !bytes.Equal(got, content) {
				t.Fatalf("created %q holds %q (%v), want the delivered content", name, got, rerr)
			}
		case valid && !(inDir == false && string(name) == "d"):
			if _, lerr := os.Lstat(filepath.Join(parentPath, string(name))); !errors.Is(lerr, os.ErrNotExist) {
				t.Fatalf("refused create (%v, %v) left %q behind: %v", err, res, name, lerr)
			}
		}
		if stageName != stage || err != nil {
			// A refused call, or one naming another stage, touches nothing:
			// the real stage is still there, and finishing it is the
			// master's (or the stale sweep's) business.
			if _, err := s.b.InstallStaged(stage, nil, true, nil); err != nil {
				t.Fatalf("finish the real stage: %v", err)
			}
		}
		if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
			t.Fatalf("the create changed the world outside the root:\n%s", d)
		}
		hostileCheckContained(t, s)
		known := map[gfid.GFID]bool{dir: true}
		if created {
			known[x] = true
		}
		// The staging area is rsync mode's bookkeeping, and every stage in
		// it is finished.
		s.reservedBaseline[backend.StageDirName] = true
		hostileCheckReserved(t, s, known)
		if left, err := os.ReadDir(filepath.Join(s.root, backend.ReservedDir, backend.StageDirName)); err != nil || len(left) != 0 {
			t.Fatalf("staging area holds %d entries after the stage was finished (%v)", len(left), err)
		}
	})
}
