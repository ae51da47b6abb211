package blocksum

import (
	"math/rand/v2"
	"testing"
)

func TestRollingMatchesFreshSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	for _, win := range []int{1, 7, 2048, 4096} {
		var r Rolling
		r.Reset(data[:win])
		for i := 1; i+win <= len(data); i++ {
			r.Roll(data[i-1], data[i+win-1])
			if got, want := r.Sum(), Weak(data[i:i+win]); got != want {
				t.Fatalf("window %d at %d: rolled %#x, fresh %#x", win, i, got, want)
			}
		}
	}
}

func TestBlockSize(t *testing.T) {
	tests := []struct {
		size int64
		want int
		ok   bool
	}{
		{0, MinBlock, true},
		{64 << 10, MinBlock, true},
		{100 << 20, 16 << 10, true},
		{1 << 30, 32 << 10, true},
		{16 << 30, MaxBlock, true},
		{MaxBlock * MaxBlocks, MaxBlock, true},
		{MaxBlock*MaxBlocks + 1, 0, false},
	}
	for _, tt := range tests {
		got, ok := BlockSize(tt.size)
		if got != tt.want || ok != tt.ok {
			t.Errorf("BlockSize(%d) = %d, %v; want %d, %v", tt.size, got, ok, tt.want, tt.ok)
		}
		if ok && !ValidBlockSize(got) {
			t.Errorf("BlockSize(%d) = %d is not a valid block size", tt.size, got)
		}
	}
}

func TestStrongDiffers(t *testing.T) {
	a, b := Strong([]byte("block one")), Strong([]byte("block two"))
	if len(a) != StrongSize || string(a) == string(b) {
		t.Fatalf("strong sums %x and %x: want %d distinct bytes", a, b, StrongSize)
	}
}

// The unrolled Reset must agree with the definition (each byte weighted by
// its distance from the window's end) for every length, including the
// tails the eight- and four-byte steps leave, and for bytes of 0xff,
// which fill the eight-byte step's 16-bit lanes the most.
func TestWeakMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 9000)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	ones := make([]byte, 9000)
	for i := range ones {
		ones[i] = 0xff
	}
	for name, data := range map[string][]byte{"random": random, "0xff": ones} {
		for _, n := range []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16, 63, 2048, 4099, 8192, 9000} {
			var a, b uint32
			for i, c := range data[:n] {
				a += uint32(c)
				b += uint32(n-i) * uint32(c)
			}
			if got, want := Weak(data[:n]), a&0xffff|(b&0xffff)<<16; got != want {
				t.Errorf("Weak of %d %s bytes = %#x, want %#x", n, name, got, want)
			}
		}
	}
}

func TestStrong128MatchesStrong(t *testing.T) {
	for _, p := range [][]byte{nil, []byte("x"), make([]byte, 8192)} {
		s := Strong128(p)
		if string(s[:]) != string(Strong(p)) {
			t.Errorf("Strong128(%d bytes) = %x, Strong = %x", len(p), s, Strong(p))
		}
	}
}

func BenchmarkWeak(b *testing.B) {
	p := make([]byte, 8192)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Weak(p)
	}
}

func BenchmarkStrong128(b *testing.B) {
	p := make([]byte, 8192)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Strong128(p)
	}
}

func BenchmarkRoll(b *testing.B) {
	p := make([]byte, 1<<20)
	for i := range p {
		p[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(p) - 8192))
	for b.Loop() {
		var r Rolling
		r.Reset(p[:8192])
		for i := 8192; i < len(p); i++ {
			r.Roll(p[i-8192], p[i])
		}
	}
}
