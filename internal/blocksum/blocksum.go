// Package blocksum owns the block checksums of the delta transfer, shared
// by the slave (which sums its current content) and the master (which
// scans its file for those blocks): the rsync-style rolling weak checksum,
// the strong XXH3-128 and the choice of block size.
package blocksum

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/zeebo/xxh3"
)

const (
	// MinBlock and MaxBlock bound the block size.
	MinBlock = 2 << 10
	MaxBlock = 128 << 10
	// MaxBlocks is the most blocks one BlockSums answer holds, so it stays
	// well under gRPC's default 4 MiB message limit (about 26 bytes each).
	MaxBlocks = 1 << 17
	// StrongSize is the length of a strong checksum.
	StrongSize = 16
)

// ValidBlockSize reports whether n is a power of two within the bounds.
func ValidBlockSize(n int) bool {
	return n >= MinBlock && n <= MaxBlock && n&(n-1) == 0
}

// BlockSize picks the block size for a file of size bytes: about its
// square root (so the sums and the literal data of one changed block
// weigh about the same), rounded up to a power of two, clamped, and big
// enough that the file needs at most MaxBlocks. ok is false when no
// allowed block size is big enough.
func BlockSize(size int64) (n int, ok bool) {
	if size <= 0 {
		return MinBlock, true
	}
	n = 1 << bits.Len64(uint64(isqrt(size)-1))
	n = min(max(n, MinBlock), MaxBlock)
	for int64(n)*MaxBlocks < size {
		if n >= MaxBlock {
			return 0, false
		}
		n *= 2
	}
	return n, true
}

func isqrt(v int64) int64 {
	r := int64(math.Sqrt(float64(v)))
	for r*r < v {
		r++
	}
	return max(r, 1)
}

// Weak is the rolling checksum of p.
func Weak(p []byte) uint32 {
	var r Rolling
	r.Reset(p)
	return r.Sum()
}

// Rolling is the rsync rolling checksum of a window of bytes: a is the sum
// of the bytes, b the sum of the running sums, both mod 2^16, so the window
// can slide one byte in O(1).
type Rolling struct {
	a, b uint32
	n    uint32
}

// Reset makes the window p. The sums are taken eight bytes at a time
// (then four) with 32-bit wraparound (only their low 16 bits count): a is
// the plain sum, and b gains each byte times its distance from the
// window's end.
func (r *Rolling) Reset(p []byte) {
	var a, b uint32
	l := uint32(len(p))
	w := l // the weight of p[0]
	for len(p) >= 8 {
		v := binary.LittleEndian.Uint64(p)
		// Bytes 0, 2, 4, 6 and 1, 3, 5, 7 in 16-bit lanes: no lane
		// overflows, as each holds at most 4*255*7.
		even, odd := v&0x00ff00ff00ff00ff, v>>8&0x00ff00ff00ff00ff
		s := uint32((even + odd) * 0x0001000100010001 >> 48)
		// sum of i*c_i for i in 0..7: even lanes weigh 0,2,4,6 and odd
		// lanes 1,3,5,7, taken by one multiply each (lane k of the
		// product's top 16 bits gathers lanes 0..3 times their weights).
		ws := uint32((even*0x0000000200040006)>>48) + uint32((odd*0x0001000300050007)>>48)
		a += s
		b += w*s - ws
		w -= 8
		p = p[8:]
	}
	for len(p) >= 4 {
		c0, c1, c2, c3 := uint32(p[0]), uint32(p[1]), uint32(p[2]), uint32(p[3])
		s := c0 + c1 + c2 + c3
		a += s
		// w*c0 + (w-1)*c1 + (w-2)*c2 + (w-3)*c3
		b += w*s - c1 - 2*c2 - 3*c3
		w -= 4
		p = p[4:]
	}
	for _, c := range p {
		a += uint32(c)
		b += w * uint32(c)
		w--
	}
	r.a, r.b, r.n = a&0xffff, b&0xffff, l
}

// Roll slides the window one byte: out leaves at the front, in enters at
// the back.
func (r *Rolling) Roll(out, in byte) {
	r.a = (r.a - uint32(out) + uint32(in)) & 0xffff
	r.b = (r.b - r.n*uint32(out) + r.a) & 0xffff
}

// Sum is the checksum of the window.
func (r *Rolling) Sum() uint32 { return r.a | r.b<<16 }

// Strong is the XXH3-128 of p, high half first.
func Strong(p []byte) []byte {
	s := Strong128(p)
	return s[:]
}

// Strong128 is Strong without an allocation, for comparing many blocks.
func Strong128(p []byte) [StrongSize]byte {
	h := xxh3.Hash128(p)
	var out [StrongSize]byte
	binary.BigEndian.PutUint64(out[:], h.Hi)
	binary.BigEndian.PutUint64(out[8:], h.Lo)
	return out
}
