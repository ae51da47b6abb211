package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// rsyncInto runs a real rsync, as the master's runs it (no --inplace,
// --ignore-times), from a file holding content to <stage>/<gfid hex>.
func rsyncInto(t *testing.T, b *Backend, stage string, g gfid.GFID, content []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), g.Hex())
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(b.Root(), ReservedDir, StageDirName, stage) + "/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rsync", "--ignore-times", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("rsync into the stage: %v\n%s", err, out)
	}
}

func stage1(t *testing.T, b *Backend, gs ...gfid.GFID) string {
	t.Helper()
	stage, errs, err := b.StageFiles(gs)
	if err != nil {
		t.Fatalf("StageFiles: %v", err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("StageFiles(%s): %v", gs[i], e)
		}
	}
	return stage
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	return lstatPath(t, p).Ino
}

func TestInstallStaged(t *testing.T) {
	old := []byte("the old content of the file\n")
	fresh := bytes.Repeat([]byte("new content "), 10000)
	mtime := &pb.Timestamp{Sec: 1_500_000_000, Nsec: 42}
	tests := []struct {
		name      string
		links     int    // extra hard links before staging
		send      []byte // what rsync delivers; nil: rsync does not run
		size      int64  // the size the master expects; -1: len(send)
		discard   bool
		wantErrno unix.Errno
		want      Install
		wantData  []byte // the file's content afterwards
	}{
		{name: "sole name: renamed", send: fresh, size: -1, want: InstallRenamed, wantData: fresh},
		{name: "hard-link group: in place", links: 2, send: fresh, size: -1, want: InstallInPlace, wantData: fresh},
		{name: "truncate to empty", send: []byte{}, size: 0, want: InstallRenamed, wantData: []byte{}},
		{name: "discard", send: fresh, size: -1, discard: true, wantErrno: unix.ECANCELED, wantData: old},
		{name: "wrong size", send: fresh, size: 5, wantErrno: unix.EBADMSG, wantData: old},
		{name: "not replaced, size differs", size: 99, wantErrno: unix.EBADMSG, wantData: old},
		{name: "not replaced, identical", size: int64(len(old)), want: InstallNone, wantData: old},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			writeOld(t, b, dir, x, "f", old)
			names := []string{"f"}
			for i := range tc.links {
				n := "l" + string(rune('0'+i))
				apply(t, b, link(x, gfid.Root, n, nil))
				names = append(names, n)
			}
			inoBefore := inoOf(t, filepath.Join(dir, "f"))
			entries := indexEntries(t, b)
			stage := stage1(t, b, x)
			if tc.send != nil {
				rsyncInto(t, b, stage, x, tc.send)
			}
			size := tc.size
			if size < 0 {
				size = int64(len(tc.send))
			}
			res, err := b.InstallStaged(stage, []StagedFile{{
				GFID: x, Size: size, LinkParent: gfid.Root, LinkName: "f",
				Stat: &pb.Stat{Mode: 0o640, Mtime: mtime}, Discard: tc.discard,
			}}, true, nil)
			if err != nil {
				t.Fatalf("InstallStaged: %v", err)
			}
			if len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			r := res[0]
			if tc.wantErrno != 0 {
				if !errors.Is(r.Err, tc.wantErrno) {
					t.Fatalf("result %v, want %v", r.Err, tc.wantErrno)
				}
			} else if r.Err != nil || r.Install != tc.want {
				t.Fatalf("result %v (%v), want %v", r.Install, r.Err, tc.want)
			}
			for _, n := range names {
				if got := fileBytes(t, filepath.Join(dir, n)); !bytes.Equal(got, tc.wantData) {
					t.Errorf("%s holds %d bytes, want %d", n, len(got), len(tc.wantData))
				}
				if g := gfidOfPath(t, b, filepath.Join(dir, n)); g != x {
					t.Errorf("%s carries gfid %s, want %s", n, g, x)
				}
			}
			inoAfter := inoOf(t, filepath.Join(dir, "f"))
			switch {
			case tc.want == InstallRenamed && tc.wantErrno == 0 && inoAfter == inoBefore:
				t.Errorf("renamed install kept the inode")
			case tc.want != InstallRenamed && inoAfter != inoBefore:
				t.Errorf("the inode changed (%d -> %d), want it kept", inoBefore, inoAfter)
			}
			if tc.wantErrno == 0 {
				fst := lstatPath(t, filepath.Join(dir, "f"))
				if fst.Mode&0o7777 != 0o640 || fst.Mtim.Sec != mtime.Sec || fst.Mtim.Nsec != int64(mtime.Nsec) {
					t.Errorf("stat not applied: mode %#o mtime %d.%d", fst.Mode&0o7777, fst.Mtim.Sec, fst.Mtim.Nsec)
				}
			}
			// The index still finds the file, at the inode its name has.
			idx := lstatPath(t, filepath.Join(dir, IndexPath(x)))
			if idx.Ino != inoAfter {
				t.Errorf("index entry is inode %d, the name is %d", idx.Ino, inoAfter)
			}
			if int(idx.Nlink) != len(names)+1 {
				t.Errorf("file has %d links, want %d (names and index; no stage link left)", idx.Nlink, len(names)+1)
			}
			if n := indexEntries(t, b); n != entries {
				t.Errorf("index has %d entries, had %d", n, entries)
			}
			dirEmpty(t, filepath.Join(dir, ReservedDir, StageDirName))
			dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
		})
	}
}

func TestStageFilesResults(t *testing.T) {
	b, dir := newBackend(t)
	f, d := gfid.New(), gfid.New()
	writeOld(t, b, dir, f, "f", []byte("x"))
	apply(t, b, mkdir(d, gfid.Root, "d"))
	stage, errs, err := b.StageFiles([]gfid.GFID{f, gfid.New(), d, gfid.Root})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []unix.Errno{0, unix.ENOENT, unix.EISDIR, unix.EISDIR} {
		if want == 0 {
			if errs[i] != nil {
				t.Errorf("result %d: %v, want success", i, errs[i])
			}
			continue
		}
		if !errors.Is(errs[i], want) {
			t.Errorf("result %d: %v, want %v", i, errs[i], want)
		}
	}
	basis := filepath.Join(dir, ReservedDir, StageDirName, stage, f.Hex())
	if inoOf(t, basis) != inoOf(t, filepath.Join(dir, "f")) {
		t.Errorf("the basis is not a link of the file's content")
	}
	// Staged but never delivered: rsync did not run for it.
	res, err := b.InstallStaged(stage, []StagedFile{{GFID: gfid.New(), Size: 1}}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, unix.EBADMSG) {
		t.Errorf("undelivered file: %v, want EBADMSG", res[0].Err)
	}
	dirEmpty(t, filepath.Join(dir, ReservedDir, StageDirName))
}

func TestInstallStagedRefusesBadStageNames(t *testing.T) {
	b, dir := newBackend(t)
	x := gfid.New()
	writeOld(t, b, dir, x, "f", []byte("x"))
	for _, stage := range []string{"", ".", "..", "../tmp", "s-a/b", "s-/../x", "tmp", "s-nonexistent"} {
		t.Run(stage, func(t *testing.T) {
			_, err := b.InstallStaged(stage, []StagedFile{{GFID: x, Size: 1}}, true, nil)
			if err == nil {
				t.Fatalf("InstallStaged(%q) succeeded, want a refusal", stage)
			}
			if got := fileBytes(t, filepath.Join(dir, "f")); string(got) != "x" {
				t.Errorf("file changed to %q", got)
			}
		})
	}
}

// TestInstallStagedRefusesAForeignLink: a hostile client hard-links one
// file's basis under another's name; the real inode must never be renamed
// onto the other identity.
func TestInstallStagedRefusesAForeignLink(t *testing.T) {
	b, dir := newBackend(t)
	x, y := gfid.New(), gfid.New()
	writeOld(t, b, dir, x, "x", []byte("xx"))
	writeOld(t, b, dir, y, "y", []byte("yy"))
	stage := stage1(t, b, x, y)
	sd := filepath.Join(dir, ReservedDir, StageDirName, stage)
	if err := os.Remove(filepath.Join(sd, y.Hex())); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(sd, x.Hex()), filepath.Join(sd, y.Hex())); err != nil {
		t.Fatal(err)
	}
	res, err := b.InstallStaged(stage, []StagedFile{{GFID: y, Size: 2, LinkParent: gfid.Root, LinkName: "y"}}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, unix.EBADMSG) {
		t.Errorf("foreign link: %v, want EBADMSG", res[0].Err)
	}
	if gfidOfPath(t, b, filepath.Join(dir, "x")) != x || gfidOfPath(t, b, filepath.Join(dir, "y")) != y {
		t.Errorf("identities moved")
	}
	if string(fileBytes(t, filepath.Join(dir, "y"))) != "yy" {
		t.Errorf("y changed")
	}
}

// rsyncAll runs one real rsync, as the master's runs do, delivering each
// content to <stage>/<gfid hex>.
func rsyncAll(t *testing.T, b *Backend, stage string, contents map[gfid.GFID][]byte) {
	t.Helper()
	src := t.TempDir()
	for g, c := range contents {
		if err := os.WriteFile(filepath.Join(src, g.Hex()), c, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dst := filepath.Join(b.Root(), ReservedDir, StageDirName, stage) + "/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rsync", "-r", "--ignore-times", src+"/", dst).CombinedOutput()
	if err != nil {
		t.Fatalf("rsync into the stage: %v\n%s", err, out)
	}
}

// TestInstallStagedSyncedBeforeInstall: InstallStaged flushes each group
// of delivered files (SyncPuts: one syncfs, or an fsync each below
// syncfsMin) before it puts any of that group in place, files that need no
// flush (discarded, still the basis) take no part, a new file without a
// basis is installed like the rest, and a failed flush installs nothing.
func TestInstallStagedSyncedBeforeInstall(t *testing.T) {
	tests := []struct {
		name      string
		delivered int  // files rsync delivers new content for
		links     int  // extra hard links of each: installed in place
		noBasis   bool // the delivered files were not staged (new files)
		extras    bool // plus a discarded file and one rsync left alone
		failSync  bool
	}{
		{name: "one file, fsync", delivered: 1},
		{name: "below syncfsMin", delivered: syncfsMin - 1},
		{name: "syncfs batch", delivered: 3 * syncfsMin},
		{name: "two groups", delivered: installGroup + 3},
		{name: "hard-link groups", delivered: syncfsMin, links: 1},
		{name: "new files, no basis", delivered: syncfsMin, noBasis: true},
		{name: "with a discard and an unchanged file", delivered: syncfsMin, extras: true},
		{name: "flush fails", delivered: syncfsMin + 1, failSync: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			old := []byte("old content")
			var files []StagedFile
			var staged []gfid.GFID
			deliver := map[gfid.GFID][]byte{}
			names := map[gfid.GFID]string{}
			for i := range tc.delivered {
				x, name := gfid.New(), fmt.Sprintf("f%04d", i)
				writeOld(t, b, dir, x, name, old)
				for l := range tc.links {
					apply(t, b, link(x, gfid.Root, fmt.Sprintf("%s-link%d", name, l), nil))
				}
				if !tc.noBasis {
					staged = append(staged, x)
				}
				deliver[x] = bytes.Repeat([]byte{byte(i)}, 100+i)
				names[x] = name
				files = append(files, StagedFile{GFID: x, Size: int64(100 + i), LinkParent: gfid.Root, LinkName: name})
			}
			var keep []gfid.GFID // files whose old content must stay
			if tc.extras {
				discarded, same := gfid.New(), gfid.New()
				writeOld(t, b, dir, discarded, "discarded", old)
				writeOld(t, b, dir, same, "same", old)
				staged = append(staged, discarded, same)
				deliver[discarded] = []byte("never installed")
				names[discarded], names[same] = "discarded", "same"
				// Between the delivered files, so each group's order shows.
				files = slices.Insert(files, 1,
					StagedFile{GFID: discarded, Size: 15, LinkParent: gfid.Root, LinkName: "discarded", Discard: true},
					StagedFile{GFID: same, Size: int64(len(old)), LinkParent: gfid.Root, LinkName: "same"})
				keep = append(keep, discarded, same)
			}
			stage := stage1(t, b, staged...)
			rsyncAll(t, b, stage, deliver)

			var events []string
			hook := func(step string) error {
				events = append(events, step)
				if step == "sync" && tc.failSync {
					return fmt.Errorf("test: the flush fails: %w", unix.EIO)
				}
				return nil
			}
			res, err := b.installStaged(stage, files, true, nil, hook)
			if err != nil {
				t.Fatalf("InstallStaged: %v", err)
			}
			if len(res) != len(files) {
				t.Fatalf("%d results for %d files", len(res), len(files))
			}

			// Each group: a flush of every delivered file, then its installs.
			installStep := map[bool]string{true: "copy", false: "rename"}[tc.links > 0]
			var want []string
			for start := 0; start < len(files); start += installGroup {
				n := 0
				for _, f := range files[start:min(start+installGroup, len(files))] {
					if _, ok := deliver[f.GFID]; ok && !f.Discard {
						n++
					}
				}
				if tc.failSync {
					// SyncPuts stops at the first failed flush.
					want = append(want, "sync")
					break
				}
				for range n {
					want = append(want, "sync")
				}
				for range n {
					want = append(want, installStep)
				}
			}
			if !slices.Equal(events, want) {
				t.Errorf("steps %v,\nwant %v", compactSteps(events), compactSteps(want))
			}

			for i, f := range files {
				r := res[i]
				p := filepath.Join(dir, names[f.GFID])
				switch {
				case f.Discard:
					if !errors.Is(r.Err, unix.ECANCELED) {
						t.Errorf("discarded file: %v, want ECANCELED", r.Err)
					}
				case slices.Contains(keep, f.GFID):
					if r.Err != nil || r.Install != InstallNone {
						t.Errorf("unchanged file: %v (%v), want nothing installed", r.Install, r.Err)
					}
				case tc.failSync:
					if !errors.Is(r.Err, unix.EIO) {
						t.Errorf("file %d after a failed flush: %v, want EIO", i, r.Err)
					}
					if got := fileBytes(t, p); !bytes.Equal(got, old) {
						t.Errorf("file %d changed although its flush failed", i)
					}
				default:
					if r.Err != nil || r.Written != f.Size {
						t.Errorf("file %d: %v, wrote %d, want %d", i, r.Err, r.Written, f.Size)
					}
					if got := fileBytes(t, p); !bytes.Equal(got, deliver[f.GFID]) {
						t.Errorf("file %d holds %d bytes, want the delivered %d", i, len(got), len(deliver[f.GFID]))
					}
					if g := gfidOfPath(t, b, p); g != f.GFID {
						t.Errorf("file %d carries gfid %s, want %s", i, g, f.GFID)
					}
				}
			}
			for _, x := range keep {
				if got := fileBytes(t, filepath.Join(dir, names[x])); !bytes.Equal(got, old) {
					t.Errorf("%s: %q, want the old content kept", names[x], got)
				}
			}
			dirEmpty(t, filepath.Join(dir, ReservedDir, StageDirName))
			dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
		})
	}
}

// compactSteps shortens a step list for a message: runs become "step×n".
func compactSteps(steps []string) []string {
	var out []string
	for i := 0; i < len(steps); {
		j := i
		for j < len(steps) && steps[j] == steps[i] {
			j++
		}
		out = append(out, fmt.Sprintf("%s×%d", steps[i], j-i))
		i = j
	}
	return out
}

// TestInstallStagedCreate: a new file's staged copy is put at its name
// with its identity and stat, never over anything there; a taken name,
// an identity that exists elsewhere or a missing parent refuse it with
// what lets the master fall back to a CREATE entry op, and nothing on the
// replica changes.
func TestInstallStagedCreate(t *testing.T) {
	old := []byte("the old content\n")
	fresh := bytes.Repeat([]byte("fresh content "), 5000)
	mtime := &pb.Timestamp{Sec: 1_600_000_000, Nsec: 7}
	tests := []struct {
		name      string
		before    func(t *testing.T, b *Backend, dir string, x gfid.GFID)
		parent    func(x gfid.GFID) gfid.GFID
		extraLink bool // a client links the staged copy under another name
		wantErrno unix.Errno
		want      Install
		// oldAt names a file that must keep old content (and its gfid).
		oldAt  string
		oldIs  func(x gfid.GFID) gfid.GFID
		gone   bool // "n" must not exist afterwards
		indexd bool // x must be indexed afterwards
	}{
		{name: "free name: created", want: InstallCreated, indexd: true},
		{name: "name taken", wantErrno: unix.EEXIST, gone: false,
			before: func(t *testing.T, b *Backend, dir string, x gfid.GFID) { writeOld(t, b, dir, gfid.New(), "n", old) },
			oldAt:  "n", oldIs: nil},
		{name: "gfid elsewhere", wantErrno: unix.EEXIST, gone: true, indexd: true,
			before: func(t *testing.T, b *Backend, dir string, x gfid.GFID) { writeOld(t, b, dir, x, "other", old) },
			oldAt:  "other", oldIs: func(x gfid.GFID) gfid.GFID { return x }},
		{name: "no parent", wantErrno: unix.ENOENT, gone: true,
			parent: func(gfid.GFID) gfid.GFID { return gfid.New() }},
		{name: "repeated create: installed over itself", want: InstallRenamed, indexd: true,
			before: func(t *testing.T, b *Backend, dir string, x gfid.GFID) { writeOld(t, b, dir, x, "n", old) }},
		{name: "staged copy with two links", extraLink: true, wantErrno: unix.EBADMSG, gone: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			if tc.before != nil {
				tc.before(t, b, dir, x)
			}
			var other gfid.GFID
			if tc.oldAt != "" {
				other = gfidOfPath(t, b, filepath.Join(dir, tc.oldAt))
			}
			parent := gfid.Root
			if tc.parent != nil {
				parent = tc.parent(x)
			}
			entries := indexEntries(t, b)
			stage := stage1(t, b) // a new file is staged with no basis
			rsyncInto(t, b, stage, x, fresh)
			if tc.extraLink {
				sd := filepath.Join(dir, ReservedDir, StageDirName, stage)
				if err := os.Link(filepath.Join(sd, x.Hex()), filepath.Join(sd, "extra")); err != nil {
					t.Fatal(err)
				}
			}
			res, err := b.InstallStaged(stage, []StagedFile{{
				GFID: x, Size: int64(len(fresh)), LinkParent: parent, LinkName: "n", Create: true,
				Stat: &pb.Stat{Mode: unix.S_IFREG | 0o640, Uid: 1234, Gid: 5678, Mtime: mtime},
			}}, true, nil)
			if err != nil {
				t.Fatalf("InstallStaged: %v", err)
			}
			r := res[0]
			if tc.wantErrno != 0 {
				if !errors.Is(r.Err, tc.wantErrno) {
					t.Fatalf("result %v, want %v", r.Err, tc.wantErrno)
				}
			} else if r.Err != nil || r.Install != tc.want || r.Written != int64(len(fresh)) {
				t.Fatalf("result %v, %d bytes (%v), want %v, %d bytes", r.Install, r.Written, r.Err, tc.want, len(fresh))
			}
			n := filepath.Join(dir, "n")
			switch {
			case tc.wantErrno == 0:
				if got := fileBytes(t, n); !bytes.Equal(got, fresh) {
					t.Errorf("n holds %d bytes, want the %d delivered", len(got), len(fresh))
				}
				if g := gfidOfPath(t, b, n); g != x {
					t.Errorf("n carries gfid %s, want %s", g, x)
				}
				st := lstatPath(t, n)
				if st.Mode != unix.S_IFREG|0o640 || st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Sec != mtime.Sec || st.Mtim.Nsec != int64(mtime.Nsec) {
					t.Errorf("stat not applied: mode %#o owner %d:%d mtime %d.%d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
				}
				if idx := lstatPath(t, filepath.Join(dir, IndexPath(x))); idx.Ino != st.Ino || idx.Nlink != 2 {
					t.Errorf("index entry is inode %d with %d links; the name is %d, want 2 links", idx.Ino, idx.Nlink, st.Ino)
				}
			case tc.gone:
				if _, err := os.Lstat(n); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("n exists after a refused create: %v", err)
				}
			}
			if tc.oldAt != "" {
				p := filepath.Join(dir, tc.oldAt)
				if got := fileBytes(t, p); !bytes.Equal(got, old) {
					t.Errorf("%s holds %q, want its old content", tc.oldAt, got)
				}
				if g := gfidOfPath(t, b, p); g != other {
					t.Errorf("%s carries gfid %s, want %s", tc.oldAt, g, other)
				}
			}
			_, err = os.Lstat(filepath.Join(dir, IndexPath(x)))
			if indexed := err == nil; indexed != tc.indexd {
				t.Errorf("x indexed: %v, want %v", indexed, tc.indexd)
			}
			wantEntries := entries
			if tc.want == InstallCreated {
				wantEntries++
			}
			if n := indexEntries(t, b); n != wantEntries {
				t.Errorf("index has %d entries, want %d", n, wantEntries)
			}
			dirEmpty(t, filepath.Join(dir, ReservedDir, StageDirName))
			dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
		})
	}
}

// TestInstallStagedCreateChecks: a create's name and stat are checked as
// a CREATE entry op's, before anything is installed.
func TestInstallStagedCreateChecks(t *testing.T) {
	b, dir := newBackend(t)
	x := gfid.New()
	stage := stage1(t, b)
	rsyncInto(t, b, stage, x, []byte("content"))
	reg := &pb.Stat{Mode: unix.S_IFREG | 0o644}
	for _, tc := range []struct {
		name string
		f    StagedFile
	}{
		{"no stat", StagedFile{GFID: x, Size: 7, LinkParent: gfid.Root, LinkName: "n", Create: true}},
		{"no name", StagedFile{GFID: x, Size: 7, LinkParent: gfid.Root, Create: true, Stat: reg}},
		{"reserved name", StagedFile{GFID: x, Size: 7, LinkParent: gfid.Root, LinkName: ReservedDir, Create: true, Stat: reg}},
		{"a directory's mode", StagedFile{GFID: x, Size: 7, LinkParent: gfid.Root, LinkName: "n", Create: true, Stat: &pb.Stat{Mode: unix.S_IFDIR | 0o755}}},
		{"a path", StagedFile{GFID: x, Size: 7, LinkParent: gfid.Root, LinkName: "a/n", Create: true, Stat: reg}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := b.InstallStaged(stage, []StagedFile{tc.f}, false, nil); err == nil {
				t.Fatalf("InstallStaged accepted a create with %s", tc.name)
			}
			names, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range names {
				if e.Name() != ReservedDir {
					t.Errorf("%s appeared in the root", e.Name())
				}
			}
		})
	}
}
