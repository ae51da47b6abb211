package backend

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// putSpan is content at an offset; what no span covers is a hole.
type putSpan struct {
	off  int64
	data []byte
}

// logical is the content spans describe, holes as zeros.
func logical(size int64, spans []putSpan) []byte {
	out := make([]byte, size)
	for _, s := range spans {
		copy(out[s.off:], s.data)
	}
	return out
}

// digestOf hashes size bytes of spans as the sender does, without
// materialising the holes.
func digestOf(size int64, spans []putSpan) []byte {
	h := blake3.New()
	zeros := make([]byte, 1<<20)
	pos := int64(0)
	for _, s := range spans {
		for pos < s.off {
			n := min(s.off-pos, int64(len(zeros)))
			h.Write(zeros[:n])
			pos += n
		}
		h.Write(s.data)
		pos += int64(len(s.data))
	}
	for pos < size {
		n := min(size-pos, int64(len(zeros)))
		h.Write(zeros[:n])
		pos += n
	}
	return h.Sum(nil)
}

// putContent sends spans (in MaxChunk pieces) and commits with digest.
func putContent(t testing.TB, b *Backend, h PutHeader, spans []putSpan, digest []byte, hook func(string) error) (Install, error) {
	t.Helper()
	w, err := b.BeginPut(h)
	if err != nil {
		return InstallNone, err
	}
	defer w.Abort()
	w.installHook = hook
	for _, s := range spans {
		for o := 0; o < len(s.data); o += MaxChunk {
			if err := w.WriteAt(s.data[o:min(o+MaxChunk, len(s.data))], s.off+int64(o)); err != nil {
				return InstallNone, err
			}
		}
	}
	return w.Commit(digest)
}

func fileBytes(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func writeOld(t testing.TB, b *Backend, dir string, x gfid.GFID, name string, content []byte) {
	t.Helper()
	apply(t, b, create(x, gfid.Root, name))
	h := PutHeader{GFID: x, Size: int64(len(content)), LinkParent: gfid.Root, LinkName: name}
	sp := []putSpan{{0, content}}
	if _, err := putContent(t, b, h, sp, digestOf(h.Size, sp), nil); err != nil {
		t.Fatalf("put old content of %s: %v", name, err)
	}
	if got := fileBytes(t, filepath.Join(dir, name)); !bytes.Equal(got, content) {
		t.Fatalf("old content of %s not in place", name)
	}
}

func TestPutInstalls(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+7)
	mtime := &pb.Timestamp{Sec: 1_000_000_000, Nsec: 123456789}
	tests := []struct {
		name     string
		size     int64
		spans    []putSpan
		links    int    // extra hard links made before the put
		hintName string // "" means the file's own name
		noHint   bool
		want     Install
	}{
		{name: "new content", size: 11, spans: []putSpan{{0, []byte("hello world")}}, want: InstallRenamed},
		{name: "empty", size: 0, want: InstallRenamed},
		{name: "multi-chunk", size: int64(len(big)), spans: []putSpan{{0, big}}, want: InstallRenamed},
		{name: "holes", size: 8 << 20, spans: []putSpan{{1 << 20, []byte("a")}, {5 << 20, big[:1<<20]}}, want: InstallRenamed},
		{name: "hard-link group", size: 5, spans: []putSpan{{0, []byte("fresh")}}, links: 2, want: InstallInPlace},
		{name: "stale hint", size: 5, spans: []putSpan{{0, []byte("fresh")}}, hintName: "other", want: InstallInPlace},
		{name: "no hint", size: 5, spans: []putSpan{{0, []byte("fresh")}}, noHint: true, want: InstallInPlace},
		{name: "no hint, shrink to sparse", size: 4 << 20, spans: []putSpan{{3 << 20, []byte("tail")}}, noHint: true, want: InstallInPlace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			writeOld(t, b, dir, x, "f", bytes.Repeat([]byte("old!"), 1<<20))
			if err := os.WriteFile(filepath.Join(dir, "other"), []byte("someone else"), 0o644); err != nil {
				t.Fatal(err)
			}
			names := []string{"f"}
			for i := range tc.links {
				n := "link" + string(rune('0'+i))
				apply(t, b, link(x, gfid.Root, n, nil))
				names = append(names, n)
			}
			if err := unix.Setxattr(filepath.Join(dir, "f"), "user.keep", []byte("me"), 0); err != nil {
				t.Fatal(err)
			}
			before := lstatPath(t, filepath.Join(dir, "f"))
			h := PutHeader{GFID: x, Size: tc.size, LinkParent: gfid.Root, LinkName: "f",
				Stat: &pb.Stat{Mode: unix.S_IFREG | 0o640, Uid: 0, Gid: 0, Mtime: mtime}}
			if tc.hintName != "" {
				h.LinkName = tc.hintName
			}
			if tc.noHint {
				h.LinkName = ""
			}
			how, err := putContent(t, b, h, tc.spans, digestOf(tc.size, tc.spans), nil)
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if how != tc.want {
				t.Errorf("installed %v, want %v", how, tc.want)
			}
			want := logical(tc.size, tc.spans)
			for _, n := range names {
				p := filepath.Join(dir, n)
				if got := fileBytes(t, p); !bytes.Equal(got, want) {
					t.Errorf("%s: content differs (len %d, want %d)", n, len(got), len(want))
				}
				st := lstatPath(t, p)
				if st.Mode != unix.S_IFREG|0o640 || st.Mtim.Sec != mtime.Sec || st.Mtim.Nsec != int64(mtime.Nsec) {
					t.Errorf("%s: mode %#o mtime %v, want %#o %v", n, st.Mode, st.Mtim, unix.S_IFREG|0o640, mtime)
				}
				if int(st.Nlink) != len(names)+1 {
					t.Errorf("%s: nlink %d, want %d (names plus the index link)", n, st.Nlink, len(names)+1)
				}
				if tc.want == InstallInPlace && st.Ino != before.Ino {
					t.Errorf("%s: inode changed from %d to %d; in-place writes keep it", n, before.Ino, st.Ino)
				}
				if g := gfidOfPath(t, b, p); g != x {
					t.Errorf("%s: gfid %s, want %s", n, g, x)
				}
				if v := userXattrs(t, p)["user.keep"]; v != "me" {
					t.Errorf("%s: user.keep = %q, want it carried over", n, v)
				}
			}
			resp, err := b.LstatGFID(x)
			if err != nil {
				t.Fatalf("LstatGFID: %v", err)
			}
			if resp.GetStat().GetIno() != lstatPath(t, filepath.Join(dir, "f")).Ino {
				t.Errorf("index entry is inode %d, the name is inode %d", resp.GetStat().GetIno(), lstatPath(t, filepath.Join(dir, "f")).Ino)
			}
			if got := fileBytes(t, filepath.Join(dir, "other")); string(got) != "someone else" {
				t.Errorf("a stale hint's name was written: %q", got)
			}
			dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
		})
	}
}

func TestPutSparseStaysSparse(t *testing.T) {
	const size = 1 << 30
	data := bytes.Repeat([]byte{0xa5}, 1<<20)
	spans := []putSpan{{size / 2, data}}
	for _, links := range []int{0, 1} {
		b, dir := newBackend(t)
		x := gfid.New()
		apply(t, b, create(x, gfid.Root, "sparse"))
		if links > 0 {
			apply(t, b, link(x, gfid.Root, "second", nil))
		}
		h := PutHeader{GFID: x, Size: size, LinkParent: gfid.Root, LinkName: "sparse"}
		if _, err := putContent(t, b, h, spans, digestOf(size, spans), nil); err != nil {
			t.Fatalf("links=%d: put: %v", links, err)
		}
		st := lstatPath(t, filepath.Join(dir, "sparse"))
		if st.Size != size || st.Blocks*512 > 10<<20 {
			t.Errorf("links=%d: size %d allocated %d bytes; want %d and under 10 MiB", links, st.Size, st.Blocks*512, size)
		}
		f, err := os.Open(filepath.Join(dir, "sparse"))
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data)+2)
		if _, err := f.ReadAt(got, size/2-1); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if got[0] != 0 || got[len(got)-1] != 0 || !bytes.Equal(got[1:len(got)-1], data) {
			t.Errorf("links=%d: data around the middle is wrong", links)
		}
	}
}

func TestPutFailuresKeepOldContent(t *testing.T) {
	fresh := []putSpan{{0, []byte("new content")}}
	failing := func(step string) func(string) error {
		return func(s string) error {
			if s == step {
				return errors.New("injected install failure at " + step)
			}
			return nil
		}
	}
	tests := []struct {
		name   string
		links  int
		digest []byte
		hook   func(string) error
		abort  bool
		errno  unix.Errno
	}{
		{name: "digest mismatch", digest: make([]byte, DigestSize), errno: unix.EBADMSG},
		{name: "short digest", digest: []byte{1, 2, 3}, errno: unix.EBADMSG},
		{name: "aborted", abort: true},
		{name: "rename install fails after verify", hook: failing("rename")},
		{name: "in-place install fails after verify", links: 1, hook: failing("copy")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			x := gfid.New()
			old := []byte("previous content, kept")
			writeOld(t, b, dir, x, "f", old)
			for range tc.links {
				apply(t, b, link(x, gfid.Root, "g", nil))
			}
			before := lstatPath(t, filepath.Join(dir, "f"))
			h := PutHeader{GFID: x, Size: 11, LinkParent: gfid.Root, LinkName: "f"}
			digest := tc.digest
			if digest == nil {
				digest = digestOf(11, fresh)
			}
			var err error
			if tc.abort {
				w, berr := b.BeginPut(h)
				if berr != nil {
					t.Fatal(berr)
				}
				if err := w.WriteAt(fresh[0].data, 0); err != nil {
					t.Fatal(err)
				}
				w.Abort()
				if _, err := w.Commit(digest); !errors.Is(err, unix.EINVAL) {
					t.Errorf("commit after abort: %v, want EINVAL", err)
				}
			} else {
				_, err = putContent(t, b, h, fresh, digest, tc.hook)
				if err == nil {
					t.Fatal("put succeeded, want a failure")
				}
				if tc.errno != 0 && !errors.Is(err, tc.errno) {
					t.Errorf("error %v, want %v", err, tc.errno)
				}
			}
			if got := fileBytes(t, filepath.Join(dir, "f")); !bytes.Equal(got, old) {
				t.Errorf("content now %q, want the previous %q", got, old)
			}
			if after := lstatPath(t, filepath.Join(dir, "f")); after.Ino != before.Ino || after.Nlink != before.Nlink {
				t.Errorf("inode/nlink changed: %d/%d -> %d/%d", before.Ino, before.Nlink, after.Ino, after.Nlink)
			}
			dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
		})
	}
}

func TestPutRefusals(t *testing.T) {
	b, dir := newBackend(t)
	file, d, sl := gfid.New(), gfid.New(), gfid.New()
	apply(t, b, create(file, gfid.Root, "f"), mkdir(d, gfid.Root, "d"), symlink(sl, gfid.Root, "s", "f"))
	tests := []struct {
		name  string
		h     PutHeader
		errno unix.Errno
	}{
		{"absent gfid", PutHeader{GFID: gfid.New(), Size: 1}, unix.ENOENT},
		{"absent gfid with a hint to another file", PutHeader{GFID: gfid.New(), Size: 1, LinkParent: gfid.Root, LinkName: "f"}, unix.ENOENT},
		{"directory", PutHeader{GFID: d, Size: 1}, unix.EISDIR},
		{"root", PutHeader{GFID: gfid.Root, Size: 1}, unix.EISDIR},
		{"symlink", PutHeader{GFID: sl, Size: 1}, unix.EINVAL},
		{"negative size", PutHeader{GFID: file, Size: -1}, unix.EINVAL},
		{"bad hint name", PutHeader{GFID: file, Size: 1, LinkParent: gfid.Root, LinkName: "a/b"}, unix.EINVAL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := b.BeginPut(tc.h)
			if err == nil {
				w.Abort()
				t.Fatal("BeginPut succeeded")
			}
			if !errors.Is(err, tc.errno) {
				t.Errorf("error %v, want %v", err, tc.errno)
			}
		})
	}
	// Chunks that break the stream's rules fail the write, not the backend.
	w, err := b.BeginPut(PutHeader{GFID: file, Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, c := range []struct {
		off  int64
		data []byte
	}{{8, []byte("abc")}, {11, nil}, {-1, []byte("a")}, {0, make([]byte, MaxChunk+1)}} {
		if err := w.WriteAt(c.data, c.off); !errors.Is(err, unix.EINVAL) {
			t.Errorf("WriteAt(%d bytes at %d) = %v, want EINVAL", len(c.data), c.off, err)
		}
	}
	if err := w.WriteAt([]byte("abc"), 5); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteAt([]byte("x"), 4); !errors.Is(err, unix.EINVAL) {
		t.Errorf("going back: %v, want EINVAL", err)
	}
	if got := fileBytes(t, filepath.Join(dir, "f")); len(got) != 0 {
		t.Errorf("refused writes changed the file: %q", got)
	}
}

// A name that carries the identity but lost its index link (a crash
// between placing and indexing) is healed by the put's hint.
func TestPutHealsLostIndex(t *testing.T) {
	b, dir := newBackend(t)
	x := gfid.New()
	apply(t, b, create(x, gfid.Root, "f"))
	idx := filepath.Join(dir, IndexPath(x))
	if err := os.Remove(idx); err != nil {
		t.Fatal(err)
	}
	sp := []putSpan{{0, []byte("healed")}}
	h := PutHeader{GFID: x, Size: 6, LinkParent: gfid.Root, LinkName: "f"}
	if _, err := putContent(t, b, h, sp, digestOf(6, sp), nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	if got := fileBytes(t, filepath.Join(dir, "f")); string(got) != "healed" {
		t.Errorf("content %q", got)
	}
	if !indexed(t, b, x) {
		t.Error("index not healed")
	}
}

// TestPutBatchSyncedBeforeInstall: SyncPuts flushes a whole batch before
// any of it is put in place, by syncfs (a batch of syncfsMin or more) or
// an fsync each, and Install refuses a temp that was not flushed.
func TestPutBatchSyncedBeforeInstall(t *testing.T) {
	tests := []struct {
		name  string
		files int
		links int // extra hard links of each file: installed in place
	}{
		{name: "one file, fsync", files: 1},
		{name: "below syncfsMin", files: syncfsMin - 1},
		{name: "syncfs batch", files: 3 * syncfsMin},
		{name: "syncfs batch, hard-link groups", files: syncfsMin, links: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := newBackend(t)
			var events []string
			var ws []*FileWriter
			var want [][]byte
			for i := range tc.files {
				x := gfid.New()
				name := "f" + string(rune('a'+i))
				writeOld(t, b, dir, x, name, []byte("old content"))
				for l := range tc.links {
					apply(t, b, link(x, gfid.Root, name+"-link"+string(rune('0'+l)), nil))
				}
				content := bytes.Repeat([]byte{byte(i)}, 1000+i)
				h := PutHeader{GFID: x, Size: int64(len(content)), LinkParent: gfid.Root, LinkName: name}
				w, err := b.BeginPut(h)
				if err != nil {
					t.Fatalf("BeginPut %s: %v", name, err)
				}
				defer w.Abort()
				w.installHook = func(step string) error {
					events = append(events, step+" "+name)
					return nil
				}
				if err := w.WriteAt(content, 0); err != nil {
					t.Fatal(err)
				}
				sp := []putSpan{{0, content}}
				if err := w.Verify(digestOf(h.Size, sp)); err != nil {
					t.Fatalf("Verify %s: %v", name, err)
				}
				if _, err := w.Install(); !errors.Is(err, unix.EINVAL) {
					t.Fatalf("Install before SyncPuts: %v, want EINVAL", err)
				}
				ws = append(ws, w)
				want = append(want, content)
			}
			if err := b.SyncPuts(ws); err != nil {
				t.Fatalf("SyncPuts: %v", err)
			}
			for i, w := range ws {
				how, err := w.Install()
				if err != nil {
					t.Fatalf("Install %d: %v", i, err)
				}
				if wantHow := map[bool]Install{true: InstallInPlace, false: InstallRenamed}[tc.links > 0]; how != wantHow {
					t.Errorf("file %d installed %v, want %v", i, how, wantHow)
				}
			}
			// Every flush comes before the first install step.
			synced := 0
			for _, e := range events {
				if e[:4] == "sync" {
					synced++
					continue
				}
				if synced != tc.files {
					t.Fatalf("install step %q came after only %d of %d flushes: %q", e, synced, tc.files, events)
				}
			}
			if synced != tc.files {
				t.Fatalf("%d flush events, want %d: %q", synced, tc.files, events)
			}
			for i := range tc.files {
				if got := fileBytes(t, filepath.Join(dir, "f"+string(rune('a'+i)))); !bytes.Equal(got, want[i]) {
					t.Errorf("file %d: %d bytes, not the new content", i, len(got))
				}
			}
		})
	}
}

// TestPutBatchSyncFailureKeepsOldContent: a failed flush installs nothing
// of its batch.
func TestPutBatchSyncFailureKeepsOldContent(t *testing.T) {
	b, dir := newBackend(t)
	var ws []*FileWriter
	for i := range syncfsMin {
		x := gfid.New()
		name := "f" + string(rune('a'+i))
		writeOld(t, b, dir, x, name, []byte("old"))
		w, err := b.BeginPut(PutHeader{GFID: x, Size: 3, LinkParent: gfid.Root, LinkName: name})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		if i == 1 {
			w.installHook = func(step string) error {
				if step == "sync" {
					return unix.EIO
				}
				return nil
			}
		}
		if err := w.WriteAt([]byte("new"), 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Verify(digestOf(3, []putSpan{{0, []byte("new")}})); err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	if err := b.SyncPuts(ws); !errors.Is(err, unix.EIO) {
		t.Fatalf("SyncPuts: %v, want EIO", err)
	}
	for i, w := range ws {
		if _, err := w.Install(); !errors.Is(err, unix.EINVAL) {
			t.Errorf("Install %d after a failed flush: %v, want EINVAL", i, err)
		}
		if got := fileBytes(t, filepath.Join(dir, "f"+string(rune('a'+i)))); string(got) != "old" {
			t.Errorf("file %d: %q, want the old content", i, got)
		}
	}
	checkTmpEmpty(t, dir)
}

// checkTmpEmpty checks that no temp is left in the reserved tmp
// directory.
func checkTmpEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, ReservedDir, tmpDirName))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		t.Errorf("%d temps left in %s/%s", len(ents), ReservedDir, tmpDirName)
	}
}

// TestInstallAll: a group installed under one lock gets a result per
// file in order; a refused file (a taken name, a writer not flushed) does
// not stop the others, and no temp is left either way.
func TestInstallAll(t *testing.T) {
	for _, temp := range []string{"unnamed", "named"} {
		t.Run(temp, func(t *testing.T) {
			b, dir := newBackend(t)
			useTemp(t, b, temp)
			apply(t, b, create(gfid.New(), gfid.Root, "taken"))
			oldX := gfid.New()
			writeOld(t, b, dir, oldX, "old", []byte("old content"))
			files := []struct {
				h       PutHeader
				content []byte
				sync    bool
				errno   unix.Errno
				path    string
			}{
				{h: createHeader(gfid.New(), gfid.Root, "new1", 5), content: []byte("new 1"), sync: true, path: "new1"},
				{h: createHeader(gfid.New(), gfid.Root, "taken", 5), content: []byte("clash"), sync: true, errno: unix.EEXIST},
				{h: PutHeader{GFID: oldX, Size: 11, LinkParent: gfid.Root, LinkName: "old"}, content: []byte("new content"), sync: true, path: "old"},
				{h: createHeader(gfid.New(), gfid.Root, "unsynced", 5), content: []byte("never"), errno: unix.EINVAL},
				{h: createHeader(gfid.New(), gfid.Root, "new2", 5), content: []byte("new 2"), sync: true, path: "new2"},
			}
			var ws, synced []*FileWriter
			for _, f := range files {
				w, err := b.BeginPut(f.h)
				if err != nil {
					t.Fatalf("BeginPut %q: %v", f.h.LinkName, err)
				}
				defer w.Abort()
				if err := w.WriteAt(f.content, 0); err != nil {
					t.Fatal(err)
				}
				sp := []putSpan{{0, f.content}}
				if err := w.Verify(digestOf(f.h.Size, sp)); err != nil {
					t.Fatal(err)
				}
				ws = append(ws, w)
				if f.sync {
					synced = append(synced, w)
				}
			}
			if err := b.SyncPuts(synced); err != nil {
				t.Fatal(err)
			}
			errs := b.InstallAll(ws, nil)
			if len(errs) != len(files) {
				t.Fatalf("%d results for %d files", len(errs), len(files))
			}
			for i, f := range files {
				switch {
				case f.errno != 0 && !errors.Is(errs[i], f.errno):
					t.Errorf("file %d (%s): %v, want %v", i, f.h.LinkName, errs[i], f.errno)
				case f.errno == 0 && errs[i] != nil:
					t.Errorf("file %d (%s): %v", i, f.h.LinkName, errs[i])
				case f.errno == 0:
					if got := fileBytes(t, filepath.Join(dir, f.path)); !bytes.Equal(got, f.content) {
						t.Errorf("%s holds %q, want %q", f.path, got, f.content)
					}
				}
			}
			if got := fileBytes(t, filepath.Join(dir, "taken")); len(got) != 0 {
				t.Errorf("taken holds %q after a refused create over it, want its old empty content", got)
			}
			wantMissing(t, filepath.Join(dir, "unsynced"))
			checkTmpEmpty(t, dir)
		})
	}
}
