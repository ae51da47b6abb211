package digest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	pb "github.com/georep/georep/proto/georep/v1"
)

// TestKnownVectors pins each digest's bytes to published values, so the
// master and a slave built from another version agree.
func TestKnownVectors(t *testing.T) {
	tests := []struct {
		name string
		kind pb.ContentDigest
		in   string
		want string
	}{
		// BLAKE3 official test vector for the empty input.
		{"blake3 empty", pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED, "",
			"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
		// XXH3-128 of the empty input, seed 0 (xxHash's sanity check:
		// 0x99AA06D3014798D8_6001C324468D497F), canonical big-endian.
		{"xxh3-128 empty", pb.ContentDigest_CONTENT_DIGEST_XXH3_128, "",
			"99aa06d3014798d86001c324468d497f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := hex.DecodeString(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := Append(nil, tt.kind, []byte(tt.in)); !bytes.Equal(got, want) {
				t.Errorf("Append = %x, want %x", got, want)
			}
			h, err := New(tt.kind)
			if err != nil {
				t.Fatal(err)
			}
			h.Write([]byte(tt.in))
			if got := h.Sum(nil); !bytes.Equal(got, want) {
				t.Errorf("New().Sum = %x, want %x", got, want)
			}
			if h.Size() != Size(tt.kind) || len(want) != Size(tt.kind) {
				t.Errorf("Size = %d, hash says %d, vector has %d", Size(tt.kind), h.Size(), len(want))
			}
		})
	}
}

// TestRunningMatchesOneShot checks that a running hash fed in uneven
// pieces, across XXH3's internal block boundaries and after Reset, gives
// the one-shot digest.
func TestRunningMatchesOneShot(t *testing.T) {
	data := make([]byte, 3<<20+17)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	for _, k := range Kinds() {
		for _, n := range []int{0, 1, 16, 240, 241, 1024, 1025, 64 << 10, len(data)} {
			t.Run(Name(k), func(t *testing.T) {
				h, err := New(k)
				if err != nil {
					t.Fatal(err)
				}
				h.Write([]byte("garbage before Reset"))
				h.Reset()
				for off, step := 0, 1; off < n; step = step*3 + 1 {
					end := min(n, off+step)
					h.Write(data[off:end])
					off = end
				}
				if got, want := h.Sum(nil), Append(nil, k, data[:n]); !bytes.Equal(got, want) {
					t.Errorf("%d bytes: running %x, one-shot %x", n, got, want)
				}
			})
		}
	}
}

func TestPreferredAndUnknown(t *testing.T) {
	xxh, b3 := pb.ContentDigest_CONTENT_DIGEST_XXH3_128, pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED
	tests := []struct {
		name    string
		offered []pb.ContentDigest
		want    pb.ContentDigest
	}{
		{"old slave lists nothing", nil, b3},
		{"blake3 only", []pb.ContentDigest{b3}, b3},
		{"both", Kinds(), xxh},
		{"unknown and xxh3", []pb.ContentDigest{pb.ContentDigest(99), xxh}, xxh},
		{"unknown only", []pb.ContentDigest{pb.ContentDigest(99)}, b3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Preferred(tt.offered); got != tt.want {
				t.Errorf("Preferred(%v) = %v, want %v", tt.offered, got, tt.want)
			}
		})
	}
	if _, err := New(pb.ContentDigest(99)); err == nil || Known(pb.ContentDigest(99)) || Size(pb.ContentDigest(99)) != 0 {
		t.Errorf("unknown kind 99: New err %v, Known %v, Size %d; want an error, false, 0",
			err, Known(pb.ContentDigest(99)), Size(pb.ContentDigest(99)))
	}
}

// BenchmarkDigest compares the kinds on a small file and a chunk, the
// running hash as the slave uses it (one per file).
func BenchmarkDigest(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		data := make([]byte, size)
		for _, k := range Kinds() {
			b.Run(fmt.Sprintf("%s/%d", Name(k), size), func(b *testing.B) {
				b.SetBytes(int64(size))
				var out [MaxSize]byte
				for b.Loop() {
					h, err := New(k)
					if err != nil {
						b.Fatal(err)
					}
					h.Write(data)
					h.Sum(out[:0])
				}
			})
		}
	}
}
