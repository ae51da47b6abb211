package transfer

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/georep/georep/internal/blocksum"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// seed makes the slave hold old as the content of a new file name (sent
// whole) and the master hold fresh at the same relative path.
func (e *env) seed(t *testing.T, name string, old, fresh []byte) Item {
	t.Helper()
	g := e.create(t, name)
	it := item(g, name, name)
	writeFile(t, filepath.Join(e.master, name), old)
	wantOK(t, must(e.send(t, []Item{it}, Options{WholeFile: true})))
	writeFile(t, filepath.Join(e.master, name), fresh)
	return it
}

// sameContent fails unless the slave's file name holds exactly want.
func (e *env) sameContent(t *testing.T, name string, want []byte) {
	t.Helper()
	got := readFile(t, filepath.Join(e.slave, name))
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("slave %s: %d bytes, want %d; first difference at offset %d", name, len(got), len(want), i)
	}
}

func TestSendDelta(t *testing.T) {
	const mib = 1 << 20
	base := randomBytes(2*mib, 1)
	tests := []struct {
		name     string
		old, new []byte
		// maxData bounds the literal bytes sent; wantDelta says whether
		// the file goes as a delta at all.
		maxData   int64
		wantDelta bool
	}{
		{name: "identical", old: base, new: base, maxData: 0, wantDelta: true},
		{name: "middle block changed", old: base,
			new:     slices.Concat(base[:mib], randomBytes(5000, 2), base[mib+5000:]),
			maxData: 5000 + 2*4096, wantDelta: true},
		{name: "append growth", old: base, new: slices.Concat(base, randomBytes(300<<10, 3)),
			maxData: 300<<10 + 4096, wantDelta: true},
		{name: "truncation", old: base, new: base[:mib+123], maxData: 4096, wantDelta: true},
		{name: "insertion shifts the rest", old: base,
			new:     slices.Concat(base[:100<<10+7], randomBytes(1000, 4), base[100<<10+7:]),
			maxData: 1000 + 2*4096, wantDelta: true},
		{name: "deletion shifts the rest", old: base,
			new:     slices.Concat(base[:700<<10+3], base[700<<10+3000:]),
			maxData: 2 * 4096, wantDelta: true},
		{name: "nothing in common", old: base, new: randomBytes(2*mib, 5), maxData: 2 * mib, wantDelta: true},
		{name: "small file goes whole", old: base[:1000], new: base[:DeltaMin-1], maxData: DeltaMin - 1},
		{name: "empty slave file goes whole", old: nil, new: base, maxData: 2 * mib},
	}
	e := newEnv(t, "")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "f" + itoa(i)
			it := e.seed(t, name, tt.old, tt.new)
			rs, st := e.send(t, []Item{it}, Options{})
			wantOK(t, rs)
			if rs[0].Delta != tt.wantDelta {
				t.Errorf("delta %v, want %v", rs[0].Delta, tt.wantDelta)
			}
			if st.DataBytes > tt.maxData || rs[0].Sent != st.DataBytes {
				t.Errorf("sent %d literal bytes (result says %d), want at most %d", st.DataBytes, rs[0].Sent, tt.maxData)
			}
			if st.Files != 1 || st.Failed != 0 || st.WholeRetries != 0 {
				t.Errorf("stats %+v: want 1 file installed, none failed or retried", st)
			}
			e.sameContent(t, name, tt.new)
		})
	}
	waitTmpEmpty(t, e.slave)
}

// A 100 MiB file with 64 KiB changed in the middle moves less than 1% of
// its size, block sums included.
func TestSendDeltaLargeFileSmallChange(t *testing.T) {
	const size = 100 << 20
	old := randomBytes(size, 7)
	fresh := slices.Concat(old[:size/2], randomBytes(64<<10, 8), old[size/2+64<<10:])
	e := newEnv(t, "")
	it := e.seed(t, "big", old, fresh)
	rs, st := e.send(t, []Item{it}, Options{})
	wantOK(t, rs)
	if !rs[0].Delta || st.DeltaFiles != 1 {
		t.Fatalf("result %+v, stats %+v: want one delta", rs[0], st)
	}
	if st.WireBytes >= size/100 {
		t.Errorf("%d bytes on the wire (literal %d), want under 1%% of %d", st.WireBytes, st.DataBytes, size)
	}
	e.sameContent(t, "big", fresh)

	// Unchanged: only checksums move.
	rs, st = e.send(t, []Item{it}, Options{})
	wantOK(t, rs)
	if st.DataBytes != 0 || st.WireBytes >= size/100 {
		t.Errorf("identical file: %d literal bytes, %d on the wire; want 0 literal and only checksums", st.DataBytes, st.WireBytes)
	}
	e.sameContent(t, "big", fresh)
}

// When the slave's content changes between its block sums and the copy,
// the digest fails and the file goes again whole.
func TestSendDeltaSlaveChangedRetriesWhole(t *testing.T) {
	base := randomBytes(1<<20, 11)
	fresh := slices.Concat(base[:500<<10], []byte("master edit"), base[500<<10+11:])
	e := newEnv(t, "")
	it := e.seed(t, "f", base, fresh)
	slavePath := filepath.Join(e.slave, "f")
	var sums int
	opts := Options{hooks: &hooks{afterSums: func(Item) {
		sums++
		// In place, so the inode the copies read from changes.
		f, err := os.OpenFile(slavePath, os.O_WRONLY, 0)
		if err != nil {
			t.Errorf("open slave file: %v", err)
			return
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xAA}, 8192), 100<<10); err != nil {
			t.Errorf("change slave file: %v", err)
		}
	}}}
	rs, st := e.send(t, []Item{it}, opts)
	wantOK(t, rs)
	if sums != 1 || st.WholeRetries != 1 || rs[0].Delta || st.DeltaFiles != 0 || st.Files != 1 || st.Failed != 0 {
		t.Errorf("sums asked %d times, result %+v, stats %+v: want one delta that failed, then one whole send", sums, rs[0], st)
	}
	// The failed delta's literals count too: they did cross the wire.
	if rs[0].Sent != int64(len(fresh)) || st.DataBytes <= int64(len(fresh)) {
		t.Errorf("result sent %d bytes, stats %d literal bytes; want the whole %d for the retry, plus the delta's literals",
			rs[0].Sent, st.DataBytes, len(fresh))
	}
	e.sameContent(t, "f", fresh)
	waitTmpEmpty(t, e.slave)
}

func TestBlockSumsRPC(t *testing.T) {
	e := newEnv(t, "")
	data := randomBytes(10000, 12)
	it := e.seed(t, "f", data, data)
	tests := []struct {
		name      string
		gfid      gfid.GFID
		blockSize uint32
		code      codes.Code
	}{
		{"sums", it.GFID, 4096, codes.OK},
		{"unknown gfid", gfid.New(), 4096, codes.NotFound},
		{"a directory", gfid.Root, 4096, codes.FailedPrecondition},
		{"block size not a power of two", it.GFID, 3000, codes.InvalidArgument},
		{"block size too small", it.GFID, 1024, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := e.client.BlockSums(ctxFor(t), &pb.BlockSumsRequest{Gfid: tt.gfid.Bytes(), BlockSize: tt.blockSize})
			if status.Code(err) != tt.code {
				t.Fatalf("error %v, want code %v", err, tt.code)
			}
			if tt.code != codes.OK {
				return
			}
			if resp.GetSize() != int64(len(data)) || resp.GetBlockSize() != tt.blockSize || len(resp.GetBlocks()) != 3 {
				t.Fatalf("size %d, block size %d, %d blocks; want %d, %d, 3", resp.GetSize(), resp.GetBlockSize(),
					len(resp.GetBlocks()), len(data), tt.blockSize)
			}
			for j, b := range resp.GetBlocks() {
				blk := data[j*4096 : min(len(data), (j+1)*4096)]
				if b.GetWeak() != blocksum.Weak(blk) || !bytes.Equal(b.GetStrong(), blocksum.Strong(blk)) {
					t.Errorf("block %d: sums %#x %x, want %#x %x", j, b.GetWeak(), b.GetStrong(), blocksum.Weak(blk), blocksum.Strong(blk))
				}
			}
		})
	}
}

// recordSink rebuilds the new content from a delta's parts against old,
// checking they come in file order without gaps.
type recordSink struct {
	old, out           []byte
	at                 int64
	literal_, copied   int64
	copies, literalOps int
}

func (r *recordSink) literal(off int64, data []byte) error {
	if off != r.at {
		return fmt.Errorf("literal at %d, want %d", off, r.at)
	}
	r.out = append(r.out, data...)
	r.at += int64(len(data))
	r.literal_ += int64(len(data))
	r.literalOps++
	return nil
}

func (r *recordSink) copy(off, src, n int64) error {
	if off != r.at || src < 0 || src+n > int64(len(r.old)) {
		return fmt.Errorf("copy of [%d, %d) to %d, want to %d within %d bytes", src, src+n, off, r.at, len(r.old))
	}
	r.out = append(r.out, r.old[src:src+n]...)
	r.at += n
	r.copied += n
	r.copies++
	return nil
}

// sumsOf is what the slave's BlockSums answers for content old.
func sumsOf(old []byte, bs int) *pb.BlockSumsResponse {
	resp := &pb.BlockSumsResponse{BlockSize: uint32(bs), Size: int64(len(old))}
	for p := 0; p < len(old); p += bs {
		blk := old[p:min(p+bs, len(old))]
		resp.Blocks = append(resp.Blocks, &pb.Block{Weak: blocksum.Weak(blk), Strong: blocksum.Strong(blk)})
	}
	return resp
}

// runScan scans fresh (from a real file) against old's sums in blocks of
// bs and returns what was sent and how far the rolling checksum slid.
func runScan(tb testing.TB, old, fresh []byte, bs int) (*recordSink, *deltaScan) {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "f")
	if err := os.WriteFile(p, fresh, 0o644); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r := &recordSink{old: old}
	d := &deltaScan{name: "f", fd: int(f.Fd()), size: int64(len(fresh)), chunk: 256 << 10, out: r, hash: blake3.New()}
	if err := d.run(newMatcher(sumsOf(old, bs))); err != nil {
		tb.Fatalf("scan: %v", err)
	}
	if !bytes.Equal(r.out, fresh) {
		tb.Fatalf("rebuilt %d bytes that differ from the %d bytes of the new content", len(r.out), len(fresh))
	}
	if want := blake3.Sum256(fresh); !bytes.Equal(d.hash.Sum(nil), want[:]) {
		tb.Fatalf("digest %x, want %x", d.hash.Sum(nil), want)
	}
	return r, d
}

// weakTwin returns blk changed so that its weak sum stays the same while
// its content (and so its strong sum) differs: +1 and -1 on two adjacent
// bytes, then -1 and +1 on two others, keep both the byte sum and the
// weighted sum.
func weakTwin(blk []byte) []byte {
	t := bytes.Clone(blk)
	for i := 0; i+3 < len(t); i++ {
		if t[i] < 255 && t[i+1] > 0 && t[i+2] > 0 && t[i+3] < 255 {
			t[i]++
			t[i+1]--
			t[i+2]--
			t[i+3]++
			return t
		}
	}
	panic("no byte pattern to twin")
}

func TestDeltaScanFastPath(t *testing.T) {
	const bs = 4096
	const mib = 1 << 20
	base := randomBytes(2*mib, 21)
	twin := weakTwin(base[300*bs : 301*bs])
	if blocksum.Weak(twin) != blocksum.Weak(base[300*bs:301*bs]) || bytes.Equal(twin, base[300*bs:301*bs]) {
		t.Fatal("weakTwin did not keep the weak sum with other content")
	}
	tests := []struct {
		name  string
		fresh []byte
		// literal is the exact literal bytes wanted (-1: at most maxLit);
		// maxRolled bounds the bytes the rolling checksum slides over.
		literal, maxLit, maxRolled int64
		copies                     int
	}{
		{name: "identical: one copy, no rolling", fresh: base, literal: 0, maxRolled: 0, copies: 1},
		{name: "aligned edit sends only the changed blocks",
			fresh:   slices.Concat(base[:mib+100], randomBytes(5000, 22), base[mib+5100:]),
			literal: 2 * bs, maxRolled: 2 * bs, copies: 2},
		{name: "64 KiB in place",
			fresh:   slices.Concat(base[:mib-bs/2], randomBytes(64<<10, 23), base[mib-bs/2+64<<10:]),
			literal: 64<<10 + bs, maxRolled: 64<<10 + bs, copies: 2},
		{name: "weak collision, strong differs, goes literal",
			fresh:   slices.Concat(base[:300*bs], twin, base[301*bs:]),
			literal: bs, maxRolled: bs, copies: 2},
		{name: "insertion: shifted content still found",
			fresh:   slices.Concat(base[:100*bs+7], randomBytes(1000, 24), base[100*bs+7:]),
			literal: -1, maxLit: 1000 + 2*bs, maxRolled: 1000 + 2*bs, copies: 2},
		{name: "deletion: shifted content still found",
			fresh:   slices.Concat(base[:400*bs+3], base[400*bs+3000:]),
			literal: -1, maxLit: 2 * bs, maxRolled: 2 * bs, copies: 2},
		{name: "blocks reordered", fresh: slices.Concat(base[mib:], base[:mib]), literal: 0, maxRolled: 0, copies: 2},
		{name: "short tail goes literal", fresh: base[:mib+123], literal: 123, maxRolled: 0, copies: 1},
		{name: "nothing in common", fresh: randomBytes(mib, 25), literal: mib, maxRolled: mib, copies: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, d := runScan(t, base, tt.fresh, bs)
			if tt.literal >= 0 && r.literal_ != tt.literal {
				t.Errorf("%d literal bytes, want %d", r.literal_, tt.literal)
			}
			if tt.literal < 0 && r.literal_ > tt.maxLit {
				t.Errorf("%d literal bytes, want at most %d", r.literal_, tt.maxLit)
			}
			if d.rolled > tt.maxRolled {
				t.Errorf("rolled over %d bytes, want at most %d", d.rolled, tt.maxRolled)
			}
			if r.copies != tt.copies {
				t.Errorf("%d copy parts, want %d (adjacent blocks coalesced)", r.copies, tt.copies)
			}
		})
	}
}

// BenchmarkDeltaScan32MiB is the master's delta computation for issue 5's
// large file: 32 MiB, 64 KiB rewritten in the middle, read from a real file
// (page cache) and digested, against the slave's sums at the chosen block
// size.
func BenchmarkDeltaScan32MiB(b *testing.B) {
	const size = 32 << 20
	old := randomBytes(size, 31)
	fresh := slices.Concat(old[:size/2], randomBytes(64<<10, 32), old[size/2+64<<10:])
	bs, _ := blocksum.BlockSize(size)
	sums := sumsOf(old, bs)
	p := filepath.Join(b.TempDir(), "f")
	if err := os.WriteFile(p, fresh, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(size)
	for b.Loop() {
		r := &recordSink{old: old}
		d := &deltaScan{name: "f", fd: int(f.Fd()), size: size, chunk: 256 << 10, out: &countSink{r: r}, hash: blake3.New()}
		if err := d.run(newMatcher(sums)); err != nil {
			b.Fatal(err)
		}
		if r.literal_ > 64<<10+int64(bs) {
			b.Fatalf("%d literal bytes", r.literal_)
		}
	}
}

// countSink counts a delta's parts without rebuilding the content.
type countSink struct{ r *recordSink }

func (c *countSink) literal(_ int64, data []byte) error {
	c.r.literal_ += int64(len(data))
	return nil
}

func (c *countSink) copy(_, _, n int64) error {
	c.r.copied += n
	return nil
}

// Sums from Options.SumsAhead stand in for the BlockSums call when they
// are in the file's block size; stale ones cost a whole send and no
// wrong byte; none, or the wrong block size, leave it to the call.
func TestSendDeltaSumsAhead(t *testing.T) {
	base := randomBytes(1<<20, 21)
	fresh := slices.Concat(base[:300<<10], []byte("edit"), base[300<<10+4:])
	bs, _ := blocksum.BlockSize(int64(len(fresh)))
	tests := []struct {
		name string
		// ahead is what SumsAhead answers for the file.
		ahead func(old []byte) *pb.BlockSumsResponse
		// wantAhead: the delta began with those sums; wantRetry: it
		// failed its digest and the file went again whole.
		wantAhead, wantRetry bool
		// literal: every byte goes as a literal of the delta.
		literal bool
	}{
		{name: "the slave's sums", ahead: func(old []byte) *pb.BlockSumsResponse { return sumsOf(old, bs) }, wantAhead: true},
		// Sums of content the slave does not hold (here the master's own):
		// the copies rebuild the slave's bytes, not those, and the digest
		// fails.
		{name: "stale sums", ahead: func([]byte) *pb.BlockSumsResponse { return sumsOf(fresh, bs) },
			wantAhead: true, wantRetry: true},
		{name: "sums sharing nothing", ahead: func(old []byte) *pb.BlockSumsResponse { return sumsOf(randomBytes(len(old), 22), bs) },
			wantAhead: true, literal: true},
		{name: "none", ahead: func([]byte) *pb.BlockSumsResponse { return nil }},
		{name: "another block size", ahead: func(old []byte) *pb.BlockSumsResponse { return sumsOf(old, bs*2) }},
		{name: "no blocks", ahead: func([]byte) *pb.BlockSumsResponse { return &pb.BlockSumsResponse{BlockSize: uint32(bs)} }},
	}
	e := newEnv(t, "")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "a" + itoa(i)
			it := e.seed(t, name, base, fresh)
			var asked []gfid.GFID
			opts := Options{SumsAhead: func(_ context.Context, g gfid.GFID, blockSize int) *pb.BlockSumsResponse {
				asked = append(asked, g)
				if blockSize != bs {
					t.Errorf("asked for blocks of %d bytes, want %d", blockSize, bs)
				}
				return tt.ahead(base)
			}}
			rs, st := e.send(t, []Item{it}, opts)
			wantOK(t, rs)
			if len(asked) != 1 || asked[0] != it.GFID {
				t.Errorf("SumsAhead asked for %v, want once for %s", asked, it.GFID)
			}
			if got := st.SumsAhead == 1; got != tt.wantAhead {
				t.Errorf("stats %+v: began with the sums ahead %v, want %v", st, got, tt.wantAhead)
			}
			if got := st.WholeRetries == 1; got != tt.wantRetry || rs[0].Delta == tt.wantRetry {
				t.Errorf("result %+v, stats %+v: retried whole %v, want %v", rs[0], st, got, tt.wantRetry)
			}
			switch {
			case tt.literal && st.DataBytes != int64(len(fresh)):
				t.Errorf("sent %d literal bytes, want all %d", st.DataBytes, len(fresh))
			case !tt.literal && !tt.wantRetry && st.DataBytes > 2*int64(bs):
				t.Errorf("sent %d literal bytes, want a delta of at most two blocks (%d)", st.DataBytes, 2*bs)
			}
			e.sameContent(t, name, fresh)
		})
	}
	waitTmpEmpty(t, e.slave)
}
