package backend

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testfs"
	pb "github.com/georep/georep/proto/georep/v1"
)

// createHeader is a create of x at name in parent with size bytes.
func createHeader(x, parent gfid.GFID, name string, size int64) PutHeader {
	return PutHeader{GFID: x, Size: size, LinkParent: parent, LinkName: name, Create: true,
		Stat: &pb.Stat{Mode: unix.S_IFREG | 0o640, Uid: 1234, Gid: 5678,
			Atime: &pb.Timestamp{Sec: 1_100_000_000, Nsec: 7}, Mtime: &pb.Timestamp{Sec: 1_000_000_000, Nsec: 123456789}}}
}

// wantCreated checks that p holds x with content and h's attributes, that
// the index entry is p's inode and that no temp is left.
func wantCreated(t *testing.T, b *Backend, dir, p string, x gfid.GFID, h PutHeader, content []byte) {
	t.Helper()
	// Before reading the content, which moves the atime.
	st := lstatPath(t, p)
	if got := fileBytes(t, p); !bytes.Equal(got, content) {
		t.Errorf("%s: content differs (len %d, want %d)", p, len(got), len(content))
	}
	if st.Mode != unix.S_IFREG|h.Stat.GetMode()&0o7777 || st.Uid != h.Stat.GetUid() || st.Gid != h.Stat.GetGid() {
		t.Errorf("%s: mode %#o owner %d:%d, want %#o %d:%d", p, st.Mode, st.Uid, st.Gid,
			unix.S_IFREG|h.Stat.GetMode()&0o7777, h.Stat.GetUid(), h.Stat.GetGid())
	}
	if m := h.Stat.GetMtime(); st.Mtim.Sec != m.GetSec() || st.Mtim.Nsec != int64(m.GetNsec()) {
		t.Errorf("%s: mtime %v, want %v", p, st.Mtim, m)
	}
	if a := h.Stat.GetAtime(); st.Atim.Sec != a.GetSec() || st.Atim.Nsec != int64(a.GetNsec()) {
		t.Errorf("%s: atime %v, want %v", p, st.Atim, a)
	}
	if st.Nlink != 2 {
		t.Errorf("%s: nlink %d, want 2 (the name and the index link)", p, st.Nlink)
	}
	if g := gfidOfPath(t, b, p); g != x {
		t.Errorf("%s: gfid %s, want %s", p, g, x)
	}
	resp, err := b.LstatGFID(x)
	if err != nil {
		t.Fatalf("LstatGFID: %v", err)
	}
	if resp.GetStat().GetIno() != st.Ino {
		t.Errorf("index entry is inode %d, the name is inode %d", resp.GetStat().GetIno(), st.Ino)
	}
	checkTmpEmpty(t, dir)
}

func TestPutCreate(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7)
	tests := []struct {
		name   string
		size   int64
		spans  []putSpan
		subdir bool
	}{
		{name: "small", size: 11, spans: []putSpan{{0, []byte("hello world")}}},
		{name: "empty", size: 0},
		{name: "multi-chunk", size: int64(len(big)), spans: []putSpan{{0, big}}},
		{name: "holes", size: 8 << 20, spans: []putSpan{{1 << 20, []byte("a")}, {5 << 20, big[:1<<20]}}},
		// The size comes from the ftruncate at verify, before the stat.
		{name: "only a hole", size: 3 << 20},
		{name: "past the writeback mark", size: 2*writebackMin + 5, spans: []putSpan{{0, bytes.Repeat(big[:1<<20], 9)[:2*writebackMin+5]}}},
		{name: "in a subdirectory", size: 3, spans: []putSpan{{0, []byte("sub")}}, subdir: true},
	}
	for _, tc := range tests {
		for _, temp := range []string{"unnamed", "named"} {
			t.Run(tc.name+"/"+temp, func(t *testing.T) {
				b, dir := newBackend(t)
				useTemp(t, b, temp)
				parent, rel := gfid.Root, "f"
				if tc.subdir {
					parent = gfid.New()
					apply(t, b, mkdir(parent, gfid.Root, "d"))
					rel = "d/f"
				}
				x := gfid.New()
				entriesBefore := indexEntries(t, b)
				h := createHeader(x, parent, "f", tc.size)
				how, err := putContent(t, b, h, tc.spans, digestOf(tc.size, tc.spans), nil)
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				if how != InstallCreated {
					t.Errorf("installed %v, want %v", how, InstallCreated)
				}
				wantCreated(t, b, dir, filepath.Join(dir, rel), x, h, logical(tc.size, tc.spans))
				if n := indexEntries(t, b); n != entriesBefore+1 {
					t.Errorf("%d index entries, want %d", n, entriesBefore+1)
				}
			})
		}
	}
}

// useTemp makes b put new files' temps where temp says: "unnamed"
// (O_TMPFILE in the parent, which the test filesystem must offer) or
// "named" (in .georep/tmp, as on a filesystem without it).
func useTemp(t *testing.T, b *Backend, temp string) {
	t.Helper()
	switch temp {
	case "unnamed":
		if !b.tmpfile {
			t.Fatal("the test filesystem offers no linkable O_TMPFILE; the unnamed-temp path cannot be tested")
		}
	case "named":
		b.tmpfile = false
	default:
		t.Fatalf("unknown temp kind %q", temp)
	}
}

// TestPutCreateTempPlacement: a new file's temp has no name anywhere until
// it is installed (unnamed), or waits in .georep/tmp (named); either way
// nothing is left behind after an abort, and the parent shows no name
// until the install.
func TestPutCreateTempPlacement(t *testing.T) {
	for _, temp := range []string{"unnamed", "named"} {
		t.Run(temp, func(t *testing.T) {
			b, dir := newBackend(t)
			useTemp(t, b, temp)
			parent := gfid.New()
			apply(t, b, mkdir(parent, gfid.Root, "d"))
			wantTemps := 0
			if temp == "named" {
				wantTemps = 1
			}
			tmpEntries := func() int {
				t.Helper()
				ents, err := os.ReadDir(filepath.Join(dir, ReservedDir, tmpDirName))
				if err != nil {
					t.Fatal(err)
				}
				return len(ents)
			}
			data := []byte("placed")
			sp := []putSpan{{0, data}}
			before := walkTree(t, b)
			entries := indexEntries(t, b)

			// Aborted after the content came: nothing anywhere.
			w, err := b.BeginPut(createHeader(gfid.New(), parent, "f", int64(len(data))))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			if n := tmpEntries(); n != wantTemps {
				t.Errorf("%d entries in %s/%s while receiving, want %d", n, ReservedDir, tmpDirName, wantTemps)
			}
			w.Abort()
			diffTrees(t, "after an abort", before, walkTree(t, b))
			checkTmpEmpty(t, dir)
			if n := indexEntries(t, b); n != entries {
				t.Errorf("%d index entries after an abort, want %d", n, entries)
			}

			// Installed: at "create" the index has it and the name does not.
			x := gfid.New()
			h := createHeader(x, parent, "f", int64(len(data)))
			hook := func(step string) error {
				if step == "create" {
					if _, err := os.Lstat(filepath.Join(dir, "d", "f")); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("d/f exists before the create step placed it (%v)", err)
					}
					// Through the filesystem: the hook runs under the
					// backend's write lock.
					if _, err := os.Lstat(filepath.Join(dir, IndexPath(x))); err != nil {
						t.Errorf("%s is not indexed at the create step: %v", x, err)
					}
				}
				return nil
			}
			if _, err := putContent(t, b, h, sp, digestOf(int64(len(data)), sp), hook); err != nil {
				t.Fatalf("create: %v", err)
			}
			wantCreated(t, b, dir, filepath.Join(dir, "d", "f"), x, h, data)
		})
	}
}

// TestPutCreateDefaultACLParent: in a directory with a default ACL a new
// file gets no ACL of its own, as a CREATE entry op's file does not: an
// unnamed temp made there would inherit one, so the named temp is used.
func TestPutCreateDefaultACLParent(t *testing.T) {
	b, dir := newBackend(t)
	parent := gfid.New()
	apply(t, b, mkdir(parent, gfid.Root, "acl"))
	out, err := exec.Command("setfacl", "-d", "-m", "u::rwx,g::rwx,o::rwx,u:65534:rwx", filepath.Join(dir, "acl")).CombinedOutput()
	if err != nil {
		t.Fatalf("setfacl (package acl) must work here: %v: %s", err, out)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "acl"), aclDefault, nil); err != nil {
		t.Fatalf("the directory has no default ACL after setfacl: %v", err)
	}
	x := gfid.New()
	data := []byte("no acl")
	sp := []putSpan{{0, data}}
	h := createHeader(x, parent, "f", int64(len(data)))
	if _, err := putContent(t, b, h, sp, digestOf(int64(len(data)), sp), nil); err != nil {
		t.Fatalf("create: %v", err)
	}
	p := filepath.Join(dir, "acl", "f")
	wantCreated(t, b, dir, p, x, h, data)
	if _, err := unix.Lgetxattr(p, "system.posix_acl_access", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the new file has an access ACL (getxattr: %v), want none (ENODATA)", err)
	}
}

// TestPutCreateBigCheckedFirst: a create of createCheckMin bytes or more
// whose GFID exists is refused before any content is received.
func TestPutCreateBigCheckedFirst(t *testing.T) {
	b, _ := newBackend(t)
	existing := gfid.New()
	apply(t, b, create(existing, gfid.Root, "existing"))
	for _, tc := range []struct {
		name string
		h    PutHeader
	}{
		{"gfid exists", createHeader(existing, gfid.Root, "new", createCheckMin)},
		{"gfid exists, bigger file", createHeader(existing, gfid.Root, "other", 2*createCheckMin)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := b.BeginPut(tc.h)
			if err == nil {
				w.Abort()
				t.Fatal("BeginPut of a big create of an existing gfid succeeded, want EEXIST")
			}
			if !errors.Is(err, unix.EEXIST) {
				t.Fatalf("error %v, want EEXIST", err)
			}
		})
	}
}

// TestPutCreateRefusals: a create never replaces or reuses anything. Each
// refusal leaves the name as it was, no index entry for the new GFID and
// no temp.
func TestPutCreateRefusals(t *testing.T) {
	b, dir := newBackend(t)
	other, d, fileG := gfid.New(), gfid.New(), gfid.New()
	apply(t, b, create(other, gfid.Root, "taken"), mkdir(d, gfid.Root, "dir"), create(fileG, gfid.Root, "plain"))
	if err := os.WriteFile(filepath.Join(dir, "foreign"), []byte("no gfid"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := gfid.New()
	apply(t, b, create(existing, gfid.Root, "existing"))
	sp := []putSpan{{0, []byte("data")}}
	tests := []struct {
		name   string
		mutate func(h *PutHeader)
		errno  unix.Errno
		// atInstall: the refusal comes at Commit (the name is only checked
		// under the write lock), not at BeginPut.
		atInstall bool
	}{
		{name: "name taken by a file", mutate: func(h *PutHeader) { h.LinkName = "taken" }, errno: unix.EEXIST, atInstall: true},
		{name: "name taken by a directory", mutate: func(h *PutHeader) { h.LinkName = "dir" }, errno: unix.EEXIST, atInstall: true},
		{name: "name taken by a file without gfid", mutate: func(h *PutHeader) { h.LinkName = "foreign" }, errno: unix.EEXIST, atInstall: true},
		// A small create is not looked up before its content comes.
		{name: "gfid exists under another name", mutate: func(h *PutHeader) { h.GFID = existing }, errno: unix.EEXIST, atInstall: true},
		{name: "parent missing", mutate: func(h *PutHeader) { h.LinkParent = gfid.New() }, errno: unix.ENOENT},
		{name: "parent is a file", mutate: func(h *PutHeader) { h.LinkParent = fileG }, errno: unix.ENOTDIR},
		{name: "name with a slash", mutate: func(h *PutHeader) { h.LinkName = "a/b" }, errno: unix.EINVAL},
		{name: "name dot-dot", mutate: func(h *PutHeader) { h.LinkName = ".." }, errno: unix.EINVAL},
		{name: "name with NUL", mutate: func(h *PutHeader) { h.LinkName = "a\x00b" }, errno: unix.EINVAL},
		{name: "no name", mutate: func(h *PutHeader) { h.LinkName = "" }, errno: unix.EINVAL},
		{name: "reserved name", mutate: func(h *PutHeader) { h.LinkName = ReservedDir }, errno: unix.EPERM},
		{name: "no stat", mutate: func(h *PutHeader) { h.Stat = nil }, errno: unix.EINVAL},
		{name: "directory type", mutate: func(h *PutHeader) { h.Stat.Mode = unix.S_IFDIR | 0o755 }, errno: unix.EINVAL},
		{name: "delta", mutate: func(h *PutHeader) { h.Delta = true }, errno: unix.EINVAL},
		{name: "root gfid", mutate: func(h *PutHeader) { h.GFID = gfid.Root }, errno: unix.EISDIR},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := createHeader(gfid.New(), gfid.Root, "new", 4)
			tc.mutate(&h)
			before := walkTree(t, b)
			entriesBefore := indexEntries(t, b)
			w, err := b.BeginPut(h)
			if err == nil {
				defer w.Abort()
				if !tc.atInstall {
					t.Fatal("BeginPut succeeded, want a refusal")
				}
				if err := w.WriteAt(sp[0].data, 0); err != nil {
					t.Fatal(err)
				}
				_, err = w.Commit(digestOf(4, sp))
			} else if tc.atInstall {
				t.Errorf("BeginPut refused (%v); the name is only checked at install", err)
			}
			if !errors.Is(err, tc.errno) {
				t.Errorf("error %v, want %v", err, tc.errno)
			}
			diffTrees(t, "after the refusal", before, walkTree(t, b))
			if n := indexEntries(t, b); n != entriesBefore {
				t.Errorf("%d index entries, want %d as before", n, entriesBefore)
			}
			if h.GFID != existing && h.GFID != gfid.Root && indexed(t, b, h.GFID) {
				t.Errorf("refused gfid %s is indexed", h.GFID)
			}
			checkTmpEmpty(t, dir)
		})
	}
}

// TestPutCreateFailuresLeaveNothing: whatever fails between the header and
// the rename, neither the name nor the GFID appears.
func TestPutCreateFailuresLeaveNothing(t *testing.T) {
	fresh := []putSpan{{0, []byte("new content")}}
	failing := func(step string) func(string) error {
		return func(s string) error {
			if s == step {
				return errors.New("injected failure at " + step)
			}
			return nil
		}
	}
	tests := []struct {
		name   string
		digest []byte
		hook   func(string) error
		abort  bool
		errno  unix.Errno
	}{
		{name: "digest mismatch", digest: make([]byte, DigestSize), errno: unix.EBADMSG},
		{name: "abandoned", abort: true},
		{name: "flush fails", hook: failing("sync")},
		{name: "fails after indexing, before the rename", hook: failing("create")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			h := createHeader(x, gfid.Root, "f", 11)
			digest := tc.digest
			if digest == nil {
				digest = digestOf(11, fresh)
			}
			if tc.abort {
				w, err := b.BeginPut(h)
				if err != nil {
					t.Fatal(err)
				}
				if err := w.WriteAt(fresh[0].data, 0); err != nil {
					t.Fatal(err)
				}
				w.Abort()
			} else {
				_, err := putContent(t, b, h, fresh, digest, tc.hook)
				if err == nil {
					t.Fatal("create succeeded, want a failure")
				}
				if tc.errno != 0 && !errors.Is(err, tc.errno) {
					t.Errorf("error %v, want %v", err, tc.errno)
				}
			}
			wantMissing(t, filepath.Join(dir, "f"))
			if indexed(t, b, x) {
				t.Error("the gfid of a failed create is indexed")
			}
			if n := indexEntries(t, b); n != 0 {
				t.Errorf("%d index entries left", n)
			}
			checkTmpEmpty(t, dir)
		})
	}
}

// TestPutCreateNameTakenMeanwhile: a name that was free at BeginPut but
// is taken by install time is not replaced (RENAME_NOREPLACE semantics).
func TestPutCreateNameTakenMeanwhile(t *testing.T) {
	b, dir := newBackend(t)
	x, y := gfid.New(), gfid.New()
	sp := []putSpan{{0, []byte("mine")}}
	w, err := b.BeginPut(createHeader(x, gfid.Root, "f", 4))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.WriteAt(sp[0].data, 0); err != nil {
		t.Fatal(err)
	}
	apply(t, b, create(y, gfid.Root, "f"))
	if _, err := w.Commit(digestOf(4, sp)); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("commit: %v, want EEXIST", err)
	}
	if g := gfidOfPath(t, b, filepath.Join(dir, "f")); g != y {
		t.Errorf("the name holds %s, want the other file %s", g, y)
	}
	if indexed(t, b, x) {
		t.Error("the refused gfid is indexed")
	}
	checkTmpEmpty(t, dir)
}

// TestPutCreateENOSPC: a full disk fails the create while the content is
// written, and leaves no name, no index entry and no temp.
func TestPutCreateENOSPC(t *testing.T) {
	dir := testfs.Tmpfs(t, "2m")
	b := openBackend(t, dir, Options{})
	x := gfid.New()
	data := bytes.Repeat([]byte{0x5a}, 4<<20)
	sp := []putSpan{{0, data}}
	_, err := putContent(t, b, createHeader(x, gfid.Root, "big", int64(len(data))), sp, digestOf(int64(len(data)), sp), nil)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("create of 4 MiB on a 2 MiB filesystem: %v, want ENOSPC", err)
	}
	wantMissing(t, filepath.Join(dir, "big"))
	if indexed(t, b, x) {
		t.Error("the gfid of a failed create is indexed")
	}
	checkTmpEmpty(t, dir)
	// The space is back: a create that fits succeeds.
	small := []putSpan{{0, []byte("fits")}}
	h := createHeader(x, gfid.Root, "big", 4)
	if _, err := putContent(t, b, h, small, digestOf(4, small), nil); err != nil {
		t.Fatalf("create after ENOSPC: %v", err)
	}
	wantCreated(t, b, dir, filepath.Join(dir, "big"), x, h, []byte("fits"))
}

// TestPutCreateReplay: a create repeated after a crash (or a lost answer)
// succeeds whatever step the first one reached, and leaves exactly one
// indexed file at the name with the content.
func TestPutCreateReplay(t *testing.T) {
	sp := []putSpan{{0, []byte("replayed")}}
	tests := []struct {
		name string
		// crash brings the slave to the state the first attempt left.
		crash func(t *testing.T, b *Backend, dir string, x gfid.GFID)
	}{
		{name: "first create completed", crash: func(t *testing.T, b *Backend, dir string, x gfid.GFID) {
			h := createHeader(x, gfid.Root, "f", 8)
			if _, err := putContent(t, b, h, sp, digestOf(8, sp), nil); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "placed, index link lost", crash: func(t *testing.T, b *Backend, dir string, x gfid.GFID) {
			h := createHeader(x, gfid.Root, "f", 8)
			if _, err := putContent(t, b, h, sp, digestOf(8, sp), nil); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(dir, IndexPath(x))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "indexed, killed before the rename", crash: func(t *testing.T, b *Backend, dir string, x gfid.GFID) {
			tmp := filepath.Join(dir, ReservedDir, tmpDirName, "half")
			if err := os.WriteFile(tmp, []byte("replayed"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(tmp, b.gfidAttr, x.Bytes(), 0); err != nil {
				t.Fatal(err)
			}
			idx := filepath.Join(dir, IndexPath(x))
			if err := os.MkdirAll(filepath.Dir(idx), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Link(tmp, idx); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "an older CREATE entry op made it empty", crash: func(t *testing.T, b *Backend, dir string, x gfid.GFID) {
			apply(t, b, create(x, gfid.Root, "f"))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			x := gfid.New()
			first, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			tc.crash(t, first, dir, x)
			first.Close()
			b := openBackend(t, dir, Options{})
			h := createHeader(x, gfid.Root, "f", 8)
			if _, err := putContent(t, b, h, sp, digestOf(8, sp), nil); err != nil {
				t.Fatalf("repeated create: %v", err)
			}
			wantCreated(t, b, dir, filepath.Join(dir, "f"), x, h, []byte("replayed"))
			if n := indexEntries(t, b); n != 1 {
				t.Errorf("%d index entries, want 1", n)
			}
		})
	}
}

// TestPutWritebackStarted: a big file's writeback is started every
// writebackMin bytes as it is written (the flush before install finds it
// under way); a small file's never is, and both verify and install.
func TestPutWritebackStarted(t *testing.T) {
	tests := []struct {
		name       string
		size       int64
		wantKicked int64
	}{
		{name: "small", size: 4096, wantKicked: 0},
		{name: "just under the mark", size: writebackMin - 1, wantKicked: 0},
		{name: "two marks and a bit", size: 2*writebackMin + MaxChunk/2, wantKicked: 2 * writebackMin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			h := createHeader(x, gfid.Root, "f", tc.size)
			data := bytes.Repeat([]byte("writeback"), int(tc.size)/9+1)[:tc.size]
			w, err := b.BeginPut(h)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			for o := int64(0); o < tc.size; o += MaxChunk {
				if err := w.WriteAt(data[o:min(o+MaxChunk, tc.size)], o); err != nil {
					t.Fatal(err)
				}
			}
			if w.kicked != tc.wantKicked {
				t.Errorf("writeback started up to %d, want %d", w.kicked, tc.wantKicked)
			}
			spans := []putSpan{{0, data}}
			if how, err := w.Commit(digestOf(tc.size, spans)); err != nil || how != InstallCreated {
				t.Fatalf("commit: %v, %v", how, err)
			}
			wantCreated(t, b, dir, filepath.Join(dir, "f"), x, h, data)
		})
	}
}
