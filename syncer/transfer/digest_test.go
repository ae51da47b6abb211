package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/georep/georep/internal/digest"
	pb "github.com/georep/georep/proto/georep/v1"
)

var digestKinds = []pb.ContentDigest{pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED, pb.ContentDigest_CONTENT_DIGEST_XXH3_128}

// digestLog records, from a real PutFiles stream, the digest kind of each
// file header sent and the length of each trailer's digest.
type digestLog struct {
	mu       sync.Mutex
	kinds    []pb.ContentDigest
	trailers []int
}

func (l *digestLog) header(h *pb.FileHeader) {
	l.kinds = append(l.kinds, h.GetDigest())
	if tr := h.GetTrailer(); tr != nil {
		l.trailers = append(l.trailers, len(tr.GetDigest()))
	}
}

// check fails unless files headers were sent, each naming k, and each
// trailer carried a digest of k's size.
func (l *digestLog) check(t *testing.T, k pb.ContentDigest, files int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.kinds) != files || len(l.trailers) != files {
		t.Errorf("%d headers and %d trailers sent, want %d of each", len(l.kinds), len(l.trailers), files)
	}
	for i, got := range l.kinds {
		if got != k {
			t.Errorf("header %d names %s, want %s", i, digest.Name(got), digest.Name(k))
		}
	}
	for i, n := range l.trailers {
		if n != digest.Size(k) {
			t.Errorf("trailer %d carries %d bytes of digest, want %d (%s)", i, n, digest.Size(k), digest.Name(k))
		}
	}
}

// digestSlave is the real slave client, its PutFiles streams' digests
// logged; with hideDigests, its Handshake answers as a slave older than
// content_digests (none listed).
type digestSlave struct {
	tappedSlave
	hideDigests bool
}

func newDigestSlave(c pb.SlaveClient, log *digestLog, hideDigests bool) digestSlave {
	return digestSlave{tappedSlave{SlaveClient: c, sent: log.send}, hideDigests}
}

func (d digestSlave) Handshake(ctx context.Context, in *pb.HandshakeRequest, opts ...grpc.CallOption) (*pb.HandshakeResponse, error) {
	resp, err := d.SlaveClient.Handshake(ctx, in, opts...)
	if err == nil && d.hideDigests {
		resp.ContentDigests = nil
	}
	return resp, err
}

func (l *digestLog) send(req *pb.PutFilesRequest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch p := req.GetPart().(type) {
	case *pb.PutFilesRequest_Header:
		l.header(p.Header)
	case *pb.PutFilesRequest_Batch:
		for _, h := range p.Batch.GetFiles() {
			l.header(h)
		}
	case *pb.PutFilesRequest_Trailer:
		l.trailers = append(l.trailers, len(p.Trailer.GetDigest()))
	}
}

// sendDigests is e.send over a client that logs digests.
func (e *env) sendDigests(t *testing.T, items []Item, opts Options) ([]Result, Stats, *digestLog) {
	t.Helper()
	log := &digestLog{}
	rs, st, err := Send(ctxFor(t), newDigestSlave(e.client, log, false), e.root, items, opts)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(rs) != len(items) {
		t.Fatalf("%d results for %d items", len(rs), len(items))
	}
	return rs, st, log
}

// sparseFile makes the master file rel size bytes long, data at off and
// holes elsewhere.
func (e *env) sparseFile(t *testing.T, rel string, off int64, data []byte, size int64) {
	t.Helper()
	p := filepath.Join(e.master, rel)
	writeFile(t, p, nil)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// TestSendDigests: with either digest, every way a file goes (new and in
// chunks, sparse, a delta, single-message, batched) arrives intact, each
// header naming the digest and each trailer carrying one of its size.
func TestSendDigests(t *testing.T) {
	reg := &pb.Stat{Mode: unix.S_IFREG | 0o644}
	tests := []struct {
		name string
		// prepare makes the master (and slave) files and returns the items.
		prepare func(t *testing.T, e *env) []Item
		opts    Options
		delta   bool // the one item must go as a delta
	}{
		{name: "new file in chunks", prepare: func(t *testing.T, e *env) []Item {
			writeFile(t, filepath.Join(e.master, "big"), randomBytes(2<<20+12345, 1))
			return []Item{createItem("big", "big", reg)}
		}},
		{name: "sparse", prepare: func(t *testing.T, e *env) []Item {
			e.sparseFile(t, "sparse", 3<<20, randomBytes(70000, 2), 8<<20)
			return []Item{item(e.create(t, "sparse"), "sparse", "sparse")}
		}},
		{name: "delta", delta: true, prepare: func(t *testing.T, e *env) []Item {
			base := randomBytes(2<<20, 3)
			fresh := slices.Concat(base[:1<<20], randomBytes(5000, 4), base[1<<20+5000:])
			return []Item{e.seed(t, "delta", base, fresh)}
		}},
		{name: "single message", opts: Options{SingleMessage: true}, prepare: func(t *testing.T, e *env) []Item {
			writeFile(t, filepath.Join(e.master, "one"), randomBytes(3000, 5))
			writeFile(t, filepath.Join(e.master, "empty"), nil)
			return []Item{createItem("one", "one", reg), createItem("empty", "empty", reg)}
		}},
		{name: "batched small files", opts: Options{FileBatches: true}, prepare: func(t *testing.T, e *env) []Item {
			var items []Item
			for i := range 40 {
				name := fmt.Sprintf("small%d", i)
				writeFile(t, filepath.Join(e.master, name), randomBytes(100*i, uint64(10+i)))
				items = append(items, createItem(name, name, reg))
			}
			return items
		}},
	}
	for _, k := range digestKinds {
		for _, tc := range tests {
			t.Run(digest.Name(k)+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t, "")
				items := tc.prepare(t, e)
				opts := tc.opts
				opts.Digest = k
				rs, st, log := e.sendDigests(t, items, opts)
				wantOK(t, rs)
				if tc.delta && (st.DeltaFiles != 1 || !rs[0].Delta) {
					t.Errorf("stats %+v: want the file sent as a delta", st)
				}
				log.check(t, k, len(items))
				for _, it := range items {
					sameFiles(t, filepath.Join(e.master, it.RelPath), filepath.Join(e.slave, string(it.LinkName)))
				}
				waitTmpEmpty(t, e.slave)
			})
		}
	}
}

// TestSendDigestsDamaged: with either digest, content damaged after it
// was hashed is refused by the slave (EBADMSG) whichever way it went, the
// previous content kept; a delta against slave content that changed under
// it fails its digest and goes again whole.
func TestSendDigestsDamaged(t *testing.T) {
	flip := &hooks{corrupt: func(_ Item, data []byte) { data[len(data)/2] ^= 1 }}
	tests := []struct {
		name string
		size int
		opts Options
	}{
		{name: "in chunks", size: 1<<20 + 4096},
		{name: "single message", size: 4000, opts: Options{SingleMessage: true}},
		{name: "batched", size: 4000, opts: Options{FileBatches: true}},
	}
	for _, k := range digestKinds {
		for _, tc := range tests {
			t.Run(digest.Name(k)+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t, "")
				old := randomBytes(tc.size/2, 1)
				it := e.seed(t, "f", old, randomBytes(tc.size, 2))
				opts := tc.opts
				opts.Digest, opts.WholeFile, opts.hooks = k, true, flip
				rs, _, log := e.sendDigests(t, []Item{it}, opts)
				var re *RemoteError
				if !errors.Is(rs[0].Err, unix.EBADMSG) || !errors.As(rs[0].Err, &re) {
					t.Errorf("error %v, want the slave's EBADMSG", rs[0].Err)
				}
				log.check(t, k, 1)
				e.sameContent(t, "f", old)
				waitTmpEmpty(t, e.slave)
			})
		}
		t.Run(digest.Name(k)+"/delta against changed slave content", func(t *testing.T) {
			base := randomBytes(1<<20, 11)
			fresh := slices.Concat(base[:500<<10], []byte("master edit"), base[500<<10+11:])
			e := newEnv(t, "")
			it := e.seed(t, "f", base, fresh)
			opts := Options{Digest: k, hooks: &hooks{afterSums: func(Item) {
				f, err := os.OpenFile(filepath.Join(e.slave, "f"), os.O_WRONLY, 0)
				if err != nil {
					t.Errorf("open slave file: %v", err)
					return
				}
				defer f.Close()
				if _, err := f.WriteAt(bytes.Repeat([]byte{0xAA}, 8192), 100<<10); err != nil {
					t.Errorf("change slave file: %v", err)
				}
			}}}
			rs, st, log := e.sendDigests(t, []Item{it}, opts)
			wantOK(t, rs)
			if st.WholeRetries != 1 || rs[0].Delta {
				t.Errorf("result %+v, stats %+v: want a delta whose digest failed, then a whole send", rs[0], st)
			}
			log.check(t, k, 2)
			e.sameContent(t, "f", fresh)
			waitTmpEmpty(t, e.slave)
		})
	}
}

// TestSendDigestNegotiation: the digest a master picks from a real
// slave's Handshake: XXH3-128 from this slave, BLAKE3-256 from one that
// lists no digests (older than the field), whose headers then leave the
// digest unset as an older master's do and whose trailers carry 32 bytes.
// A digest Send does not know is refused before anything is sent.
func TestSendDigestNegotiation(t *testing.T) {
	tests := []struct {
		name string
		old  bool
		want pb.ContentDigest
	}{
		{name: "current slave", want: pb.ContentDigest_CONTENT_DIGEST_XXH3_128},
		{name: "slave without content_digests", old: true, want: pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			log := &digestLog{}
			slave := newDigestSlave(e.client, log, tc.old)
			hs, err := slave.Handshake(ctxFor(t), &pb.HandshakeRequest{Protocol: &pb.Version{Major: 1}, Object: &pb.Version{Major: 1}})
			if err != nil {
				t.Fatalf("Handshake: %v", err)
			}
			k := digest.Preferred(hs.GetContentDigests())
			if k != tc.want {
				t.Fatalf("offered %v: picked %s, want %s", hs.GetContentDigests(), digest.Name(k), digest.Name(tc.want))
			}
			data := randomBytes(1<<20+1, 4)
			writeFile(t, filepath.Join(e.master, "f"), data)
			rs, _, err := Send(ctxFor(t), slave, e.root, []Item{createItem("f", "f", &pb.Stat{Mode: unix.S_IFREG | 0o600})}, Options{Digest: k})
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			wantOK(t, rs)
			log.check(t, tc.want, 1)
			e.sameContent(t, "f", data)
		})
	}
	e := newEnv(t, "")
	if _, _, err := Send(ctxFor(t), e.client, e.root, nil, Options{Digest: 5}); err == nil {
		t.Error("Send with an unknown digest: no error")
	}
}
