package transfer

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	pb "github.com/georep/georep/proto/georep/v1"
)

// TestSendSingleMessage: files of at most one chunk go as one message (the
// header carrying chunk and trailer) to a real slave: new files, replaced
// content, empty files, compressible and not, exactly one chunk; every one
// arrives intact with its attributes, in one message instead of three;
// bigger files in the same Send still go chunk by chunk.
func TestSendSingleMessage(t *testing.T) {
	const chunk = 64 << 10
	text := func(n int) []byte { return bytes.Repeat([]byte("single message "), n/15+1)[:n] }
	tests := []struct {
		name   string
		sizes  []int
		text   bool
		create bool
		comp   pb.Compression
	}{
		{name: "new small files", sizes: []int{1, 100, 4096, 4096, 30_000}, create: true},
		{name: "replaced content", sizes: []int{10, 4096, 50_000}},
		{name: "empty files", sizes: []int{0, 0}, create: true},
		{name: "exactly one chunk and one byte more", sizes: []int{chunk, chunk + 1}, create: true},
		{name: "compressible, zstd", sizes: []int{4096, 4096, 20_000}, text: true, comp: pb.Compression_COMPRESSION_ZSTD, create: true},
		{name: "incompressible, zstd", sizes: []int{4096, 4096, 4096, 4096}, comp: pb.Compression_COMPRESSION_ZSTD},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs := map[bool]int64{}
			for _, single := range []bool{false, true} {
				e := newEnv(t, "")
				var items []Item
				var want [][]byte
				for i, n := range tc.sizes {
					name := fmt.Sprintf("f%d", i)
					data := randomBytes(n, uint64(i+1))
					if tc.text {
						data = text(n)
					}
					writeFile(t, filepath.Join(e.master, name), data)
					mtime := &pb.Timestamp{Sec: 1_500_000_000 + int64(i), Nsec: 7}
					stat := &pb.Stat{Mode: unix.S_IFREG | 0o640, Mtime: mtime, Atime: mtime}
					var it Item
					if tc.create {
						it = createItem(name, name, stat)
					} else {
						it = item(e.create(t, name), name, name)
						it.Stat, it.New = stat, true
					}
					items = append(items, it)
					want = append(want, data)
				}
				rs, st := e.send(t, items, Options{Jobs: 2, ChunkSize: chunk, Compression: tc.comp, SingleMessage: single})
				wantOK(t, rs)
				for i, data := range want {
					p := filepath.Join(e.slave, fmt.Sprintf("f%d", i))
					if got := readFile(t, p); !bytes.Equal(got, data) {
						t.Fatalf("single=%v: %s is %d bytes, differs from the %d sent", single, p, len(got), len(data))
					}
					s := lstat(t, p)
					if s.Mode&0o7777 != 0o640 || s.Mtim.Sec != 1_500_000_000+int64(i) || s.Mtim.Nsec != 7 {
						t.Errorf("single=%v: %s has mode %#o mtime %d.%d, want 0640 and %d.7", single, p,
							s.Mode&0o7777, s.Mtim.Sec, s.Mtim.Nsec, 1_500_000_000+int64(i))
					}
					if rs[i].Sent != int64(len(data)) {
						t.Errorf("single=%v: file %d: %d bytes sent, want %d", single, i, rs[i].Sent, len(data))
					}
				}
				if st.Files != int64(len(items)) || st.Failed != 0 {
					t.Errorf("single=%v: stats %+v, want %d files", single, st, len(items))
				}
				waitTmpEmpty(t, e.slave)
				msgs[single] = st.Messages
			}
			// Three messages a file (two for an empty one) without; one for
			// each file of at most a chunk with.
			var want, wantSingle int64
			for _, n := range tc.sizes {
				switch {
				case n == 0:
					want, wantSingle = want+2, wantSingle+1
				case n <= chunk:
					want, wantSingle = want+3, wantSingle+1
				default:
					want, wantSingle = want+4, wantSingle+4
				}
			}
			if msgs[false] != want || msgs[true] != wantSingle {
				t.Errorf("messages: %d without single messages, %d with; want %d and %d", msgs[false], msgs[true], want, wantSingle)
			}
		})
	}
}

// TestSendSingleMessageDamaged: a single-message file whose content does
// not match its digest is refused by the slave (EBADMSG), the previous
// content and a new file's absence kept, nothing left in the slave's tmp.
func TestSendSingleMessageDamaged(t *testing.T) {
	e := newEnv(t, "")
	old, fresh := randomBytes(3000, 1), randomBytes(4000, 2)
	g := e.create(t, "f")
	writeFile(t, filepath.Join(e.master, "f"), old)
	wantOK(t, must(e.send(t, []Item{item(g, "f", "f")}, Options{SingleMessage: true})))
	writeFile(t, filepath.Join(e.master, "f"), fresh)
	writeFile(t, filepath.Join(e.master, "n"), fresh)
	items := []Item{item(g, "f", "f"), createItem("n", "n", &pb.Stat{Mode: unix.S_IFREG | 0o644})}
	opts := Options{SingleMessage: true, hooks: &hooks{corrupt: func(_ Item, data []byte) { data[len(data)/2] ^= 1 }}}
	rs, st := e.send(t, items, opts)
	for i, r := range rs {
		var re *RemoteError
		if !errors.Is(r.Err, unix.EBADMSG) || !errors.As(r.Err, &re) {
			t.Errorf("item %d: error %v, want the slave's EBADMSG", i, r.Err)
		}
	}
	if st.Failed != 2 {
		t.Errorf("stats %+v, want 2 failed", st)
	}
	waitTmpEmpty(t, e.slave)
	if got := readFile(t, filepath.Join(e.slave, "f")); !bytes.Equal(got, old) {
		t.Errorf("damaged content was installed (%d bytes)", len(got))
	}
	if err := unix.Lstat(filepath.Join(e.slave, "n"), new(unix.Stat_t)); !errors.Is(err, unix.ENOENT) {
		t.Errorf("a damaged new file left a name: %v", err)
	}
	opts.hooks = nil
	wantOK(t, must(e.send(t, items, opts)))
	for _, name := range []string{"f", "n"} {
		if got := readFile(t, filepath.Join(e.slave, name)); !bytes.Equal(got, fresh) {
			t.Errorf("%s: resent content differs (%d bytes)", name, len(got))
		}
	}
}

// TestSmallCompressionBackoff: after giveUpAfter small files in a row do not
// shrink, the next smallSkip go without a try; one that shrinks resets it.
func TestSmallCompressionBackoff(t *testing.T) {
	zc, err := newCompressor()
	if err != nil {
		t.Fatal(err)
	}
	defer zc.close()
	st := &stream{zc: zc}
	random := randomBytes(4096, 9)
	text := bytes.Repeat([]byte("abc"), 2000)
	tests := []struct {
		name     string
		data     []byte
		wantZstd bool
		wantSkip int
	}{
		{name: "first incompressible", data: random, wantSkip: 0},
		{name: "second gives up", data: random, wantSkip: smallSkip},
		{name: "skipped though compressible", data: text, wantSkip: smallSkip - 1},
	}
	for _, tc := range tests {
		c := st.chunkOf(tc.data)
		if got := c.GetCompression() == pb.Compression_COMPRESSION_ZSTD; got != tc.wantZstd {
			t.Errorf("%s: compressed %v, want %v", tc.name, got, tc.wantZstd)
		}
		if st.small.skip != tc.wantSkip {
			t.Errorf("%s: skip %d, want %d", tc.name, st.small.skip, tc.wantSkip)
		}
	}
	st.small.skip = 0
	if c := st.chunkOf(text); c.GetCompression() != pb.Compression_COMPRESSION_ZSTD || st.small.misses != 0 {
		t.Errorf("after the skip a compressible file: compression %v, misses %d; want zstd and 0", c.GetCompression(), st.small.misses)
	}
	if c := st.chunkOf(text); len(c.GetData()) >= len(text) || c.GetLength() != uint32(len(text)) {
		t.Errorf("compressed chunk of %d bytes (length %d) for %d bytes", len(c.GetData()), c.GetLength(), len(text))
	}
}
