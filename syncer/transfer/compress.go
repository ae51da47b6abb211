package transfer

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

const (
	// compressMin is the smallest chunk worth trying: below it a zstd
	// frame's overhead eats most of what it could save.
	compressMin = 256
	// giveUpAfter is how many chunks of a file in a row may fail to
	// shrink before the rest of that file goes as it is: media, archives
	// and encrypted data do not compress, and trying costs CPU.
	giveUpAfter = 2
)

// compressor encodes one stream's chunks (used by its sending goroutine
// only).
type compressor struct {
	enc *zstd.Encoder
	out []byte
}

func newCompressor() (*compressor, error) {
	// The fastest level: the wire is rarely slower than it, and a chunk
	// that shrinks at all shrinks most of the way there.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, fmt.Errorf("start a zstd encoder: %w", err)
	}
	return &compressor{enc: enc, out: make([]byte, 0, MaxChunk)}, nil
}

func (c *compressor) close() {
	if c != nil {
		c.enc.Close()
	}
}

// fileCompression is what one file's chunks taught about compressing it.
type fileCompression struct {
	misses int // chunks in a row that did not shrink
}

// compress returns data as one zstd frame when that is at most nine
// tenths of its size, so an incompressible chunk costs no extra bytes.
// The result is valid until the next call.
func (c *compressor) compress(z *fileCompression, data []byte) ([]byte, bool) {
	if len(data) < compressMin || z.misses >= giveUpAfter {
		return nil, false
	}
	c.out = c.enc.EncodeAll(data, c.out[:0])
	if len(c.out) > len(data)-len(data)/10 {
		z.misses++
		return nil, false
	}
	z.misses = 0
	return c.out, true
}
