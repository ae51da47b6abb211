package transfer

// The delta transfer (rsync's algorithm over PutFiles): for a file the
// slave already holds, ask its BlockSums, slide a rolling checksum over
// the master's file, and send FileCopy parts for the blocks the slave has
// (runs coalesced) and FileChunk literals for the rest. The trailer's
// digest covers the whole new content, so a slave content that changed
// after its sums fails the file (EBADMSG) and Send sends it again whole.

import (
	"bytes"
	"fmt"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/georep/georep/internal/blocksum"
	pb "github.com/georep/georep/proto/georep/v1"
)

// DeltaMin is the smallest file sent as a delta: below it the block sums
// round trip costs more than the content.
const DeltaMin = 64 << 10

// readAhead is how much of the master's file the scan reads at a time.
const readAhead = 1 << 20

// blockSums asks the slave for the block sums of item i's current content,
// or returns nil when the file goes whole: delta off, a small or huge file,
// a file the slave does not have (NotFound) or has empty, or any failure
// to get the sums (the whole file does not need them).
func (st *stream) blockSums(i int, size int64) *pb.BlockSumsResponse {
	s := st.s
	if s.opts.WholeFile || s.whole[i] || size < DeltaMin {
		return nil
	}
	bs, ok := blocksum.BlockSize(size)
	if !ok {
		return nil
	}
	req := &pb.BlockSumsRequest{Gfid: s.items[i].GFID.Bytes(), BlockSize: uint32(bs)}
	s.wire.Add(int64(proto.Size(req)))
	resp, err := st.slave.BlockSums(st.ctx, req)
	if err != nil {
		if status.Code(err) != codes.NotFound {
			s.log.Debug("no block sums from the slave; sending the whole file", "path", s.items[i].RelPath, "err", err)
		}
		return nil
	}
	s.wire.Add(int64(proto.Size(resp)))
	if resp.GetBlockSize() != uint32(bs) || len(resp.GetBlocks()) == 0 {
		return nil
	}
	if h := s.opts.hooks; h != nil && h.afterSums != nil {
		h.afterSums(s.items[i])
	}
	return resp
}

// deltaScan is the state of one file's delta: what is read of the master's
// file, the literal and copy waiting to be sent, and the running digest.
type deltaScan struct {
	st   *stream
	i    int
	fd   int
	size int64
	hash *blake3.Hasher

	buf    []byte // the file's bytes [bufOff, bufOff+len(buf))
	bufOff int64
	eof    bool // the file ended (or reached size) at bufOff+len(buf)

	litStart int64 // the literal waiting to be sent is [litStart, p)
	z        fileCompression
	// the copy waiting to be sent, coalescing adjacent matched blocks
	cpOff, cpSrc, cpLen int64
}

// fill reads until the buffer reaches end (or the file's end), first
// dropping what is before the pending literal.
func (d *deltaScan) fill(end int64) error {
	for !d.eof && d.bufOff+int64(len(d.buf)) < end {
		if drop := d.litStart - d.bufOff; drop > readAhead {
			d.buf = append(d.buf[:0], d.buf[drop:]...)
			d.bufOff += drop
		}
		at := d.bufOff + int64(len(d.buf))
		n := int(min(readAhead, d.size-at))
		if n <= 0 {
			d.eof = true
			break
		}
		old := len(d.buf)
		d.buf = append(d.buf, make([]byte, n)...)
		got, err := unix.Pread(d.fd, d.buf[old:], at)
		if err != nil {
			return fmt.Errorf("read %s at offset %d: %w", d.st.s.items[d.i].RelPath, at, err)
		}
		d.buf = d.buf[:old+got]
		if got == 0 {
			d.eof = true
		}
	}
	return nil
}

func (d *deltaScan) bytes(from, to int64) []byte {
	return d.buf[from-d.bufOff : to-d.bufOff]
}

// flushCopy sends the pending copy.
func (d *deltaScan) flushCopy() error {
	if d.cpLen == 0 {
		return nil
	}
	c := &pb.FileCopy{Offset: d.cpOff, Length: d.cpLen, SourceOffset: d.cpSrc}
	d.cpLen = 0
	return d.st.send(&pb.PutFilesRequest{Part: &pb.PutFilesRequest_Copy{Copy: c}})
}

// flushLiteral sends the pending literal [litStart, to), hashing it.
func (d *deltaScan) flushLiteral(to int64) error {
	if to <= d.litStart {
		return nil
	}
	if err := d.flushCopy(); err != nil {
		return err
	}
	s := d.st.s
	for d.litStart < to {
		end := min(to, d.litStart+int64(s.chunk))
		data := bytes.Clone(d.bytes(d.litStart, end))
		d.hash.Write(data)
		if h := s.opts.hooks; h != nil && h.corrupt != nil {
			h.corrupt(s.items[d.i], data)
		}
		if err := d.st.sendData(d.i, d.litStart, data, &d.z); err != nil {
			return err
		}
		if h := s.opts.hooks; h != nil && h.afterChunk != nil {
			h.afterChunk(s.items[d.i], d.litStart)
		}
		d.litStart = end
	}
	return nil
}

// match records the block at p (length n) as a copy of the slave's bytes
// at src.
func (d *deltaScan) match(p, src, n int64) error {
	if err := d.flushLiteral(p); err != nil {
		return err
	}
	d.hash.Write(d.bytes(p, p+n))
	if d.cpLen > 0 && d.cpOff+d.cpLen == p && d.cpSrc+d.cpLen == src {
		d.cpLen += n
	} else {
		if err := d.flushCopy(); err != nil {
			return err
		}
		d.cpOff, d.cpSrc, d.cpLen = p, src, n
	}
	d.litStart = p + n
	return nil
}

// sendDelta sends fd's first size bytes against the slave's sums and
// returns the digest of what it sent. changed is true when the file
// turned out shorter than size.
func (st *stream) sendDelta(i int, fd int, size int64, sums *pb.BlockSumsResponse) (digest []byte, changed bool, err error) {
	bs := int64(sums.GetBlockSize())
	// Only whole blocks are matched: a short last block rarely recurs.
	table := map[uint32][]int64{}
	// A bit per 16-bit tag of the weak sums spares the map lookup at most
	// offsets of a file that does not match.
	var filter [1 << 16 / 64]uint64
	for j, b := range sums.GetBlocks() {
		if int64(j+1)*bs <= sums.GetSize() && len(b.GetStrong()) == blocksum.StrongSize {
			table[b.GetWeak()] = append(table[b.GetWeak()], int64(j))
			t := tag(b.GetWeak())
			filter[t/64] |= 1 << (t % 64)
		}
	}
	d := &deltaScan{st: st, i: i, fd: fd, size: size, hash: blake3.New()}
	var roll blocksum.Rolling
	rolled := false
	p := int64(0)
	for {
		if err := d.fill(p + bs + 1); err != nil {
			return nil, false, err
		}
		end := d.bufOff + int64(len(d.buf))
		if end-p < bs {
			break
		}
		win := d.bytes(p, p+bs)
		if !rolled {
			roll.Reset(win)
			rolled = true
		}
		w := roll.Sum()
		if t := tag(w); filter[t/64]&(1<<(t%64)) != 0 && len(table[w]) > 0 {
			cands := table[w]
			if j, ok := pick(cands, sums.GetBlocks(), win, d.cpSrc+d.cpLen, bs, d.cpLen > 0 && d.cpOff+d.cpLen == p); ok {
				if err := d.match(p, j*bs, bs); err != nil {
					return nil, false, err
				}
				p += bs
				rolled = false
				continue
			}
		}
		if p+bs < end {
			roll.Roll(d.buf[p-d.bufOff], d.buf[p+bs-d.bufOff])
		} else {
			rolled = false
		}
		p++
		// Literals go out as they reach a chunk, so memory stays bounded.
		if p-d.litStart >= int64(st.s.chunk) {
			if err := d.flushLiteral(p); err != nil {
				return nil, false, err
			}
		}
	}
	end := d.bufOff + int64(len(d.buf))
	if err := d.flushLiteral(end); err != nil {
		return nil, false, err
	}
	if err := d.flushCopy(); err != nil {
		return nil, false, err
	}
	if end < size {
		// Shrank under us: the digest does not matter, the trailer abandons.
		return d.hash.Sum(nil), true, nil
	}
	return d.hash.Sum(nil), false, nil
}

// pick chooses which of the candidate blocks (same weak sum) win is, by
// strong sum, preferring the block that continues the pending copy (next,
// when follows) so runs coalesce.
func pick(cands []int64, blocks []*pb.Block, win []byte, next, bs int64, follows bool) (int64, bool) {
	strong := blocksum.Strong(win)
	if follows && next%bs == 0 {
		if j := next / bs; j < int64(len(blocks)) && bytes.Equal(blocks[j].GetStrong(), strong) {
			return j, true
		}
	}
	for _, j := range cands {
		if bytes.Equal(blocks[j].GetStrong(), strong) {
			return j, true
		}
	}
	return 0, false
}

func tag(w uint32) uint32 { return (w ^ w>>16) & 0xffff }
