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
