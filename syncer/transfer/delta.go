package transfer

// The delta transfer (rsync's algorithm over PutFiles): for a file the
// slave already holds, ask its BlockSums, find the master's windows that
// are blocks the slave has, and send FileCopy parts for those (runs
// coalesced) and FileChunk literals for the rest. The trailer's digest
// covers the whole new content, so a slave content that changed after its
// sums fails the file (EBADMSG) and Send sends it again whole.
//
// Most changes are edits in place, so the search first tries the strong
// sum of the window against the slave's block at the same offset (and
// against the block that continues the pending copy, for content that
// shifted): an unchanged file costs one XXH3 pass. Only where that fails
// does the rolling checksum slide byte by byte, as rsync's does, until a
// window's weak and strong sums find a block again.

import (
	"bytes"
	"fmt"
	"hash"
	"slices"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	if !st.wantsSums(i, size) {
		return nil
	}
	bs, _ := blocksum.BlockSize(size)
	req := &pb.BlockSumsRequest{Gfid: s.items[i].GFID.Bytes(), BlockSize: uint32(bs)}
	s.wire.Add(int64(req.SizeVT()))
	var resp *pb.BlockSumsResponse
	if ahead := s.opts.SumsAhead; ahead != nil {
		// Fetched for this file already: no round trip to wait for.
		if r := ahead(st.ctx, s.items[i].GFID, bs); r.GetBlockSize() == uint32(bs) && len(r.GetBlocks()) > 0 {
			resp = r
			s.ahead.Add(1)
		}
	}
	if resp == nil {
		var err error
		if resp, err = st.slave.BlockSums(st.ctx, req); err != nil {
			if status.Code(err) != codes.NotFound {
				s.log.Debug("no block sums from the slave; sending the whole file", "path", s.items[i].RelPath, "err", err)
			}
			return nil
		}
	}
	s.wire.Add(int64(resp.SizeVT()))
	if resp.GetBlockSize() != uint32(bs) || len(resp.GetBlocks()) == 0 {
		return nil
	}
	if h := s.opts.hooks; h != nil && h.afterSums != nil {
		h.afterSums(s.items[i])
	}
	return resp
}

// wantsSums reports whether blockSums would ask the slave for item i's
// block sums (a round trip) for a file of size bytes.
func (st *stream) wantsSums(i int, size int64) bool {
	s := st.s
	if s.opts.WholeFile || s.whole[i] || size < DeltaMin {
		return false
	}
	_, ok := blocksum.BlockSize(size)
	return ok
}

// deltaSink takes a delta's parts in file order.
type deltaSink interface {
	// literal sends data, the new content at off; data is the scan's
	// buffer, valid only during the call.
	literal(off int64, data []byte) error
	// copy sends a copy of the slave's n bytes at src to off.
	copy(off, src, n int64) error
}

// streamSink sends item i's delta parts on its PutFiles stream.
type streamSink struct {
	st *stream
	i  int
	z  fileCompression
}

func (k *streamSink) literal(off int64, data []byte) error {
	s := k.st.s
	// A copy, so a corrupting hook cannot reach the scan's buffer.
	data = bytes.Clone(data)
	if h := s.opts.hooks; h != nil && h.corrupt != nil {
		h.corrupt(s.items[k.i], data)
	}
	if err := k.st.sendData(k.i, off, data, &k.z); err != nil {
		return err
	}
	if h := s.opts.hooks; h != nil && h.afterChunk != nil {
		h.afterChunk(s.items[k.i], off)
	}
	return nil
}

func (k *streamSink) copy(off, src, n int64) error {
	c := &pb.FileCopy{Offset: off, Length: n, SourceOffset: src}
	return k.st.send(&pb.PutFilesRequest{Part: &pb.PutFilesRequest_Copy{Copy: c}})
}

// matcher is the slave's blocks, indexed for the search. Only whole
// blocks are matched: a short last block rarely recurs.
type matcher struct {
	bs     int64
	strong [][blocksum.StrongSize]byte
	whole  []bool // block j is whole and has a strong sum
	table  map[uint32][]int64
	// A bit per 16-bit tag of the weak sums spares the map lookup at most
	// offsets of a file that does not match.
	filter [1 << 16 / 64]uint64
}

func newMatcher(sums *pb.BlockSumsResponse) *matcher {
	bs := int64(sums.GetBlockSize())
	blocks := sums.GetBlocks()
	m := &matcher{bs: bs, strong: make([][blocksum.StrongSize]byte, len(blocks)), whole: make([]bool, len(blocks)),
		table: make(map[uint32][]int64, len(blocks))}
	for j, b := range blocks {
		if int64(j+1)*bs > sums.GetSize() || len(b.GetStrong()) != blocksum.StrongSize {
			continue
		}
		m.whole[j] = true
		copy(m.strong[j][:], b.GetStrong())
		m.table[b.GetWeak()] = append(m.table[b.GetWeak()], int64(j))
		t := tag(b.GetWeak())
		m.filter[t/64] |= 1 << (t % 64)
	}
	return m
}

// is reports whether the slave's block at src (a multiple of the block
// size) is whole and has strong sum s.
func (m *matcher) is(src int64, s *[blocksum.StrongSize]byte) bool {
	j := src / m.bs
	return src >= 0 && src%m.bs == 0 && j < int64(len(m.whole)) && m.whole[j] && m.strong[j] == *s
}

// direct tries, by strong sum s of the window at p, the block that
// continues the pending copy (next, when follows) and then the block at
// p itself: no weak sum needed for an unchanged run.
func (m *matcher) direct(s *[blocksum.StrongSize]byte, p, next int64, follows bool) (int64, bool) {
	if follows && m.is(next, s) {
		return next, true
	}
	if m.is(p, s) {
		return p, true
	}
	return 0, false
}

// maybe reports whether some block may have weak sum w.
func (m *matcher) maybe(w uint32) bool {
	t := tag(w)
	return m.filter[t/64]&(1<<(t%64)) != 0
}

// pick chooses which block with weak sum w the window with strong sum s
// is, preferring the block that continues the pending copy (next, when
// follows) so runs coalesce.
func (m *matcher) pick(w uint32, s *[blocksum.StrongSize]byte, next int64, follows bool) (int64, bool) {
	cands := m.table[w]
	if len(cands) == 0 {
		return 0, false
	}
	if follows && m.is(next, s) {
		return next, true
	}
	for _, j := range cands {
		if m.strong[j] == *s {
			return j * m.bs, true
		}
	}
	return 0, false
}

func tag(w uint32) uint32 { return (w ^ w>>16) & 0xffff }

// deltaScan is the state of one file's delta: what is read of the master's
// file, the literal and copy waiting to be sent, and the running digest.
type deltaScan struct {
	name  string // for errors
	fd    int
	size  int64
	chunk int64 // the largest literal part
	out   deltaSink
	hash  hash.Hash // Options.Digest

	buf    []byte // the file's bytes [bufOff, bufOff+len(buf))
	bufOff int64
	eof    bool // the file ended (or reached size) at bufOff+len(buf)

	litStart int64 // the literal waiting to be sent is [litStart, p)
	// the copy waiting to be sent, coalescing adjacent matched blocks
	cpOff, cpSrc, cpLen int64
	// rolled counts the bytes the rolling checksum slid over: the slow
	// path, which an edit in place should barely take.
	rolled int64
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
		d.buf = slices.Grow(d.buf, n)[:old+n]
		got, err := unix.Pread(d.fd, d.buf[old:], at)
		if err != nil {
			return fmt.Errorf("read %s at offset %d: %w", d.name, at, err)
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
	n := d.cpLen
	d.cpLen = 0
	return d.out.copy(d.cpOff, d.cpSrc, n)
}

// flushLiteral sends the pending literal [litStart, to), hashing it.
func (d *deltaScan) flushLiteral(to int64) error {
	if to <= d.litStart {
		return nil
	}
	if err := d.flushCopy(); err != nil {
		return err
	}
	for d.litStart < to {
		end := min(to, d.litStart+d.chunk)
		data := d.bytes(d.litStart, end)
		d.hash.Write(data)
		if err := d.out.literal(d.litStart, data); err != nil {
			return err
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

// next is where the pending copy would continue on the slave, and whether
// a match at p would continue it.
func (d *deltaScan) next(p int64) (int64, bool) {
	return d.cpSrc + d.cpLen, d.cpLen > 0 && d.cpOff+d.cpLen == p
}

// run scans the file against m's blocks, sending its parts to d.out.
func (d *deltaScan) run(m *matcher) error {
	bs := m.bs
	var roll blocksum.Rolling
	rolling := false // roll holds the window at p, already tried
	p := int64(0)
	for {
		if err := d.fill(p + bs + 1); err != nil {
			return err
		}
		end := d.bufOff + int64(len(d.buf))
		if end-p < bs || (rolling && p+bs >= end) {
			break
		}
		if !rolling {
			// A fresh window (the file's start, or just after a match):
			// first the blocks it most likely is, by strong sum alone.
			win := d.bytes(p, p+bs)
			s := blocksum.Strong128(win)
			next, follows := d.next(p)
			src, ok := m.direct(&s, p, next, follows)
			if !ok {
				roll.Reset(win)
				rolling = true
				if w := roll.Sum(); m.maybe(w) {
					src, ok = m.pick(w, &s, next, follows)
				}
			}
			if ok {
				if err := d.match(p, src, bs); err != nil {
					return err
				}
				p += bs
				rolling = false
				continue
			}
		}
		// Slide through what the buffer holds, until a window matches.
		base := d.bufOff
		buf := d.buf
		for p+bs < end {
			roll.Roll(buf[p-base], buf[p+bs-base])
			p++
			d.rolled++
			// Literals go out as they reach a chunk, so memory stays bounded.
			if p-d.litStart >= d.chunk {
				if err := d.flushLiteral(p); err != nil {
					return err
				}
			}
			w := roll.Sum()
			if !m.maybe(w) {
				continue
			}
			s := blocksum.Strong128(buf[p-base : p+bs-base])
			next, follows := d.next(p)
			if src, ok := m.pick(w, &s, next, follows); ok {
				if err := d.match(p, src, bs); err != nil {
					return err
				}
				p += bs
				rolling = false
				break
			}
		}
	}
	end := d.bufOff + int64(len(d.buf))
	if err := d.flushLiteral(end); err != nil {
		return err
	}
	return d.flushCopy()
}

// sendDelta sends fd's first size bytes against the slave's sums and
// returns the digest of what it sent. changed is true when the file
// turned out shorter than size.
func (st *stream) sendDelta(i int, fd int, size int64, sums *pb.BlockSumsResponse) (sum []byte, changed bool, err error) {
	hasher, err := st.fileHash()
	if err != nil {
		return nil, false, err
	}
	d := &deltaScan{name: st.s.items[i].RelPath, fd: fd, size: size, chunk: int64(st.s.chunk),
		out: &streamSink{st: st, i: i}, hash: hasher}
	if err := d.run(newMatcher(sums)); err != nil {
		return nil, false, err
	}
	// Shrunk under us: the digest does not matter, the trailer abandons.
	return d.hash.Sum(nil), d.bufOff+int64(len(d.buf)) < size, nil
}
