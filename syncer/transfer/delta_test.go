package transfer

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

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
