package transfer

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testfs"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server"
	"github.com/georep/georep/server/backend"
)

// env is a master tree and a real slave (backend + gRPC over 127.0.0.1).
type env struct {
	master string
	root   *os.File
	slave  string
	client pb.SlaveClient
}

// newEnv serves a slave rooted at slaveDir ("" for a fresh temp dir).
func newEnv(t *testing.T, slaveDir string) *env {
	t.Helper()
	if slaveDir == "" {
		slaveDir = t.TempDir()
	}
	e := &env{master: t.TempDir(), slave: slaveDir}
	var err error
	if e.root, err = os.Open(e.master); err != nil {
		t.Fatalf("open master root: %v", err)
	}
	t.Cleanup(func() { e.root.Close() })
	b, err := backend.Open(slaveDir, backend.Options{})
	if err != nil {
		t.Fatalf("open slave backend at %s: %v", slaveDir, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	gs := server.NewGRPCServer(server.New(b, server.Options{}), nil)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(server.MaxMessageSize), grpc.MaxCallRecvMsgSize(server.MaxMessageSize)))
	if err != nil {
		t.Fatalf("dial slave: %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	e.client = pb.NewSlaveClient(cc)
	return e
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// entries applies entry ops on the slave, each of which must succeed.
func (e *env) entries(t *testing.T, es ...*pb.Entry) {
	t.Helper()
	resp, err := e.client.EntryOps(ctxFor(t), &pb.EntryOpsRequest{Entries: es})
	if err != nil {
		t.Fatalf("EntryOps: %v", err)
	}
	for i, r := range resp.GetResults() {
		if r.GetErrno() != 0 {
			t.Fatalf("entry %d: %s %s", i, r.GetCode(), r.GetMessage())
		}
	}
}

// create makes an empty file name at the slave root and returns its GFID.
func (e *env) create(t *testing.T, name string) gfid.GFID {
	t.Helper()
	g := gfid.New()
	e.entries(t, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(),
		Name: []byte(name), Stat: &pb.Stat{Mode: unix.S_IFREG | 0o644}})
	return g
}

func (e *env) link(t *testing.T, g gfid.GFID, name string) {
	t.Helper()
	e.entries(t, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_LINK, Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte(name)})
}

func writeFile(t *testing.T, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func item(g gfid.GFID, rel, linkName string) Item {
	return Item{GFID: g, RelPath: rel, LinkParent: gfid.Root, LinkName: []byte(linkName)}
}

func (e *env) send(t *testing.T, items []Item, opts Options) ([]Result, Stats) {
	t.Helper()
	rs, st, err := Send(ctxFor(t), e.client, e.root, items, opts)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(rs) != len(items) {
		t.Fatalf("%d results for %d items", len(rs), len(items))
	}
	return rs, st
}

func wantOK(t *testing.T, rs []Result) {
	t.Helper()
	for i, r := range rs {
		if r.Err != nil {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
}

// waitTmpEmpty polls until the slave's .georep/tmp is empty.
func waitTmpEmpty(t *testing.T, slave string) {
	t.Helper()
	dir := filepath.Join(slave, backend.ReservedDir, "tmp")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %d entries (first %s); the failed transfer's temp was not removed", dir, len(ents), ents[0].Name())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSendFiles(t *testing.T) {
	mtime := time.Unix(1_500_000_000, 42)
	tests := []struct {
		name string
		// master writes the master file "m" (and returns its logical content).
		master func(t *testing.T, p string) []byte
		// links are extra names given to the slave file before the send.
		links []string
		// hint is the link name sent; "f" is the file's own name.
		hint string
		// maxAlloc bounds the slave file's allocation (0: no check).
		maxAlloc int64
		// inodeKept: the slave file keeps its inode (in-place install).
		inodeKept bool
	}{
		{name: "new file", hint: "f", master: func(t *testing.T, p string) []byte {
			d := []byte("hello, slave\n")
			writeFile(t, p, d)
			return d
		}},
		{name: "empty file", hint: "f", master: func(t *testing.T, p string) []byte {
			writeFile(t, p, nil)
			return []byte{}
		}},
		{name: "100 MiB file", hint: "f", master: func(t *testing.T, p string) []byte {
			d := randomBytes(100<<20, 1)
			writeFile(t, p, d)
			return d
		}},
		{name: "1 GiB sparse file with 1 MiB of data", hint: "f", maxAlloc: 10 << 20, master: func(t *testing.T, p string) []byte {
			writeFile(t, p, nil)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(randomBytes(1<<20, 2), 300<<20); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(1 << 30); err != nil {
				t.Fatal(err)
			}
			return nil // compared piecewise below
		}},
		{name: "hard-link group", hint: "f", links: []string{"g", "h"}, inodeKept: true, master: func(t *testing.T, p string) []byte {
			d := randomBytes(3<<20+5, 3)
			writeFile(t, p, d)
			return d
		}},
		{name: "stale link hint", hint: "elsewhere", inodeKept: true, master: func(t *testing.T, p string) []byte {
			d := []byte("content through the index")
			writeFile(t, p, d)
			return d
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			g := e.create(t, "f")
			for _, l := range tc.links {
				e.link(t, g, l)
			}
			writeFile(t, filepath.Join(e.slave, "elsewhere"), []byte("not ours"))
			mp := filepath.Join(e.master, "dir", "m")
			want := tc.master(t, mp)
			if err := os.Chmod(mp, 0o604); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(mp, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			before := lstat(t, filepath.Join(e.slave, "f"))
			start := time.Now()
			rs, st := e.send(t, []Item{item(g, "dir/m", tc.hint)}, Options{})
			wantOK(t, rs)
			t.Logf("%d data bytes, %d wire bytes in %v", st.DataBytes, st.WireBytes, time.Since(start))
			if st.Files != 1 || st.Failed != 0 {
				t.Errorf("stats %+v, want 1 file, 0 failed", st)
			}
			mst := lstat(t, mp)
			for _, n := range append([]string{"f"}, tc.links...) {
				p := filepath.Join(e.slave, n)
				if want != nil {
					if got := readFile(t, p); !bytes.Equal(got, want) {
						t.Errorf("%s: content differs (%d bytes, want %d)", n, len(got), len(want))
					}
				} else {
					sameFiles(t, mp, p)
				}
				s := lstat(t, p)
				if s.Mode != unix.S_IFREG|0o604 || s.Mtim != mst.Mtim {
					t.Errorf("%s: mode %#o mtime %v; want %#o %v", n, s.Mode, s.Mtim, unix.S_IFREG|0o604, mst.Mtim)
				}
				if tc.inodeKept && s.Ino != before.Ino {
					t.Errorf("%s: inode %d, want %d kept", n, s.Ino, before.Ino)
				}
				if tc.maxAlloc > 0 && s.Blocks*512 > tc.maxAlloc {
					t.Errorf("%s: %d bytes allocated, want at most %d (sparse)", n, s.Blocks*512, tc.maxAlloc)
				}
			}
			if tc.maxAlloc > 0 && st.DataBytes > 2<<20 {
				t.Errorf("sent %d data bytes for 1 MiB of data: holes were sent", st.DataBytes)
			}
			if got := readFile(t, filepath.Join(e.slave, "elsewhere")); string(got) != "not ours" {
				t.Errorf("a stale hint's name was overwritten: %q", got)
			}
			waitTmpEmpty(t, e.slave)
		})
	}
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return s
}

// sameFiles compares two (possibly huge, sparse) files block by block.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 4<<20), make([]byte, 4<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := fa.ReadAt(ba, off)
		nb, eb := fb.ReadAt(bb, off)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s and %s differ near offset %d", a, b, off)
		}
		if ea != nil || eb != nil {
			if (ea == nil) != (eb == nil) {
				t.Fatalf("%s and %s differ in length near offset %d", a, b, off)
			}
			return
		}
	}
}

// oldAndNew sets up a slave file "f" with old content and the master file
// "m" with new content of n bytes, and returns the item, old and new.
func oldAndNew(t *testing.T, e *env, n int) (Item, []byte, []byte) {
	t.Helper()
	g := e.create(t, "f")
	old := []byte("the previous content, which must survive")
	writeFile(t, filepath.Join(e.master, "m"), old)
	wantOK(t, must(e.send(t, []Item{item(g, "m", "f")}, Options{})))
	fresh := randomBytes(n, 9)
	writeFile(t, filepath.Join(e.master, "m"), fresh)
	return item(g, "m", "f"), old, fresh
}

func must(rs []Result, _ Stats) []Result { return rs }

func TestSendFailureKeepsOldContent(t *testing.T) {
	tests := []struct {
		name string
		// arm returns Options that make the send fail, given a cancel for
		// the send's context.
		arm   func(cancel context.CancelFunc) Options
		check func(t *testing.T, r Result)
	}{
		{
			name: "digest mismatch",
			arm: func(context.CancelFunc) Options {
				return Options{ChunkSize: 1 << 16, hooks: &hooks{corrupt: func(_ Item, data []byte) { data[len(data)/2] ^= 0xff }}}
			},
			check: func(t *testing.T, r Result) {
				if !errors.Is(r.Err, unix.EBADMSG) {
					t.Errorf("error %v, want EBADMSG from the slave", r.Err)
				}
				var re *RemoteError
				if !errors.As(r.Err, &re) || re.Code != "EBADMSG" {
					t.Errorf("error %v is not the slave's EBADMSG", r.Err)
				}
			},
		},
		{
			name: "stream cut mid-file",
			arm: func(cancel context.CancelFunc) Options {
				return Options{ChunkSize: 1 << 16, hooks: &hooks{afterChunk: func(_ Item, off int64) {
					if off == 1<<16 {
						cancel()
					}
				}}}
			},
			check: func(t *testing.T, r Result) {
				if r.Err == nil || !r.Retryable() {
					t.Errorf("error %v (retryable %v), want a retryable broken stream", r.Err, r.Retryable())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			it, old, _ := oldAndNew(t, e, 1<<20)
			ctx, cancel := context.WithCancel(ctxFor(t))
			rs, _, err := Send(ctx, e.client, e.root, []Item{it}, tc.arm(cancel))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, rs[0])
			waitTmpEmpty(t, e.slave)
			if got := readFile(t, filepath.Join(e.slave, "f")); !bytes.Equal(got, old) {
				t.Errorf("slave content is %d bytes, want the old %q", len(got), old)
			}
		})
	}
}

func TestSendFileModifiedDuringTransfer(t *testing.T) {
	e := newEnv(t, "")
	it, old, fresh := oldAndNew(t, e, 4<<20)
	mp := filepath.Join(e.master, "m")
	touched := false
	opts := Options{ChunkSize: 1 << 20, hooks: &hooks{afterChunk: func(_ Item, off int64) {
		if touched {
			return
		}
		touched = true
		f, err := os.OpenFile(mp, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("changed!"), 3<<20); err != nil {
			t.Error(err)
		}
		copy(fresh[3<<20:], "changed!")
	}}}
	rs, _ := e.send(t, []Item{it}, opts)
	if !errors.Is(rs[0].Err, ErrChanged) || !rs[0].Retryable() {
		t.Fatalf("result %v, want ErrChanged (retryable)", rs[0].Err)
	}
	waitTmpEmpty(t, e.slave)
	if got := readFile(t, filepath.Join(e.slave, "f")); !bytes.Equal(got, old) {
		t.Fatalf("a torn transfer was installed (%d bytes)", len(got))
	}
	opts.hooks = nil
	wantOK(t, must(e.send(t, []Item{it}, opts)))
	if got := readFile(t, filepath.Join(e.slave, "f")); !bytes.Equal(got, fresh) {
		t.Fatalf("resent content differs (%d bytes, want %d)", len(got), len(fresh))
	}
}

func TestSendManySmallFiles(t *testing.T) {
	const n = 1000
	for _, jobs := range []int{1, 4} {
		e := newEnv(t, "")
		items := make([]Item, 0, n+3)
		want := make([][]byte, 0, n)
		es := make([]*pb.Entry, 0, n)
		for i := range n {
			g := gfid.New()
			name := "f" + string(rune('a'+i%26)) + "-" + itoa(i)
			es = append(es, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(),
				Name: []byte(name), Stat: &pb.Stat{Mode: unix.S_IFREG | 0o644}})
			d := randomBytes(100+i%4000, uint64(i))
			writeFile(t, filepath.Join(e.master, "src", name), d)
			items = append(items, item(g, "src/"+name, name))
			want = append(want, d)
		}
		e.entries(t, es...)
		// Failures among them fail only themselves.
		if err := os.Symlink("src/"+string(es[0].Name), filepath.Join(e.master, "sym")); err != nil {
			t.Fatal(err)
		}
		items = append(items,
			Item{GFID: gfid.New(), RelPath: "src/" + string(es[1].Name)}, // unknown on the slave
			Item{GFID: gfid.GFID(es[2].Gfid), RelPath: "missing"},        // gone on the master
			Item{GFID: gfid.GFID(es[3].Gfid), RelPath: "sym"})            // a symlink is never followed
		start := time.Now()
		rs, st := e.send(t, items, Options{Jobs: jobs})
		el := time.Since(start)
		wantOK(t, rs[:n])
		for i := range n {
			if got := readFile(t, filepath.Join(e.slave, string(es[i].Name))); !bytes.Equal(got, want[i]) {
				t.Fatalf("file %d differs", i)
			}
		}
		if !errors.Is(rs[n].Err, unix.ENOENT) || !errors.As(rs[n].Err, new(*RemoteError)) {
			t.Errorf("unknown gfid: %v, want the slave's ENOENT", rs[n].Err)
		}
		if !errors.Is(rs[n+1].Err, unix.ENOENT) || errors.As(rs[n+1].Err, new(*RemoteError)) {
			t.Errorf("missing master file: %v, want a local ENOENT", rs[n+1].Err)
		}
		if !errors.Is(rs[n+2].Err, unix.ELOOP) {
			t.Errorf("symlink: %v, want ELOOP", rs[n+2].Err)
		}
		if st.Files != n || st.Failed != 3 {
			t.Errorf("stats %+v, want %d files and 3 failed", st, n)
		}
		t.Logf("jobs=%d: %d small files in %v: %.0f files/s, %d data bytes, %d wire bytes",
			jobs, n, el, float64(n)/el.Seconds(), st.DataBytes, st.WireBytes)
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestSendENOSPC(t *testing.T) {
	tests := []struct {
		name   string
		links  []string // a hard-link group forces the in-place install
		filler int
		fresh  int
	}{
		// The temp itself does not fit: 1 MiB old + 1.5 MiB filler + 2 MiB.
		{name: "temp does not fit", filler: 3 << 19, fresh: 2 << 20},
		// The temp fits and verifies; reserving space in the target does
		// not: 1 MiB old + 1 MiB filler + 1.75 MiB temp + 0.75 MiB more.
		{name: "in-place install does not fit", links: []string{"g"}, filler: 1 << 20, fresh: 7 << 18},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, testfs.Tmpfs(t, "4m"))
			g := e.create(t, "f")
			for _, l := range tc.links {
				e.link(t, g, l)
			}
			old := randomBytes(1<<20, 5)
			writeFile(t, filepath.Join(e.master, "m"), old)
			wantOK(t, must(e.send(t, []Item{item(g, "m", "f")}, Options{})))
			filler := filepath.Join(e.slave, "filler")
			writeFile(t, filler, randomBytes(tc.filler, 6))
			fresh := randomBytes(tc.fresh, 7)
			writeFile(t, filepath.Join(e.master, "m"), fresh)

			rs, _ := e.send(t, []Item{item(g, "m", "f")}, Options{})
			var re *RemoteError
			if !errors.Is(rs[0].Err, unix.ENOSPC) || !errors.As(rs[0].Err, &re) {
				t.Fatalf("result %v, want the slave's ENOSPC", rs[0].Err)
			}
			t.Logf("slave said: %s", re.Message)
			waitTmpEmpty(t, e.slave)
			for _, n := range append([]string{"f"}, tc.links...) {
				if got := readFile(t, filepath.Join(e.slave, n)); !bytes.Equal(got, old) {
					t.Fatalf("%s: old content lost (%d bytes now)", n, len(got))
				}
			}
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			wantOK(t, must(e.send(t, []Item{item(g, "m", "f")}, Options{})))
			for _, n := range append([]string{"f"}, tc.links...) {
				if got := readFile(t, filepath.Join(e.slave, n)); !bytes.Equal(got, fresh) {
					t.Fatalf("%s: new content not installed after space was freed", n)
				}
			}
		})
	}
}

// TestSendSparseChangedStaysSparse: a sparse file the slave already has
// goes whole when it changes (the whole-file path skips holes; the delta
// would copy or send them as zeros and make the slave's copy dense).
func TestSendSparseChangedStaysSparse(t *testing.T) {
	e := newEnv(t, "")
	g := e.create(t, "f")
	mp := filepath.Join(e.master, "dir", "m")
	writeFile(t, mp, nil)
	f, err := os.OpenFile(mp, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(randomBytes(1<<20, 7), 100<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		if round == 1 {
			if _, err := f.WriteAt(randomBytes(4096, 8), 100<<20+8192); err != nil {
				t.Fatal(err)
			}
		}
		rs, st := e.send(t, []Item{item(g, "dir/m", "f")}, Options{})
		wantOK(t, rs)
		if rs[0].Delta {
			t.Errorf("round %d: a sparse file went as a delta", round)
		}
		s := lstat(t, filepath.Join(e.slave, "f"))
		if s.Blocks*512 > 10<<20 {
			t.Errorf("round %d: slave file allocates %d bytes for 1 MiB of data (not sparse)", round, s.Blocks*512)
		}
		if st.DataBytes > 2<<20 {
			t.Errorf("round %d: sent %d data bytes for 1 MiB of data", round, st.DataBytes)
		}
		sameFiles(t, mp, filepath.Join(e.slave, "f"))
	}
}
