// Package codec is the gRPC codec georep's master and slave speak on every
// transport: the protobuf wire format, encoded and decoded by the
// reflection-free code vtprotobuf generates for georep's messages, and by
// protobuf-go for the rest (health, reflection). Peers that use protobuf-go
// (grpcurl, older georep) read and write the same bytes.
//
// A decoded message's bytes fields share one buffer made for that message,
// instead of protobuf-go's copy of each field (for a file's chunk, a
// second copy of every byte received). Whoever keeps a small field of a
// large message keeps the whole message's buffer alive.
package codec

import (
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	// The proto codec, registered by this import, handles what has no
	// generated fast path.
	_ "google.golang.org/grpc/encoding/proto"
)

// Name is the codec's name: the content-subtype of plain protobuf, so it
// is what every gRPC peer already speaks.
const Name = "proto"

// fast is what vtprotobuf generates for a message.
type fast interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVTUnsafe([]byte) error
}

// Codec implements encoding.CodecV2. The zero value is ready to use and
// encodes large messages into gRPC's shared buffers; New's into buffers of
// its own that are not cleared between uses.
type Codec struct {
	buffers *dirtyPool
}

// New returns a Codec with its own pool of encoding buffers.
func New() Codec { return Codec{buffers: new(dirtyPool)} }

// ServerOption makes a grpc.Server use a new Codec.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(New()) }

// DialOption makes a client connection use a new Codec.
func DialOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.ForceCodecV2(New()))
}

func fallback() encoding.CodecV2 { return encoding.GetCodecV2(Name) }

// Marshal encodes v into one buffer: a large one from the codec's pool (see
// New), or from gRPC's.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(fast)
	if !ok {
		return fallback().Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVT(buf); err != nil {
			return nil, fmt.Errorf("encode %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	var pool mem.BufferPool = c.buffers
	if c.buffers == nil || size > maxPooled {
		pool = mem.DefaultBufferPool()
	}
	buf := pool.Get(size)
	n, err := m.MarshalToSizedBufferVT(*buf)
	if err == nil && n != size {
		// A buffer from the codec's pool still holds an earlier message:
		// an encoding shorter than its size would send some of it.
		err = fmt.Errorf("wrote %d bytes of %d", n, size)
	}
	if err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// Encoding buffers come in powers of two from 4 KiB to maxPooled, the
// size of a full PutFiles message (1 MiB of content and its headers)
// rounded up. gRPC's own pool clears a buffer before handing it out, as
// it must for readers; an encoder overwrites every byte it is given, and
// clearing 200 MiB of them cost the master of an initial sync 4% of its
// CPU.
const (
	minPooledShift = 12
	maxPooledShift = 21
	maxPooled      = 1 << maxPooledShift
)

// dirtyPool is a mem.BufferPool whose buffers keep their old content.
type dirtyPool struct {
	tiers [maxPooledShift - minPooledShift + 1]sync.Pool
}

func tier(size int) int {
	return max(bits.Len(uint(size-1)), minPooledShift) - minPooledShift
}

// Get returns a buffer of length size (at most maxPooled).
func (p *dirtyPool) Get(size int) *[]byte {
	t := tier(size)
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<(t+minPooledShift))
	return &b
}

// Put takes back a buffer Get returned.
func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minPooledShift || c > maxPooled || c&(c-1) != 0 {
		return
	}
	p.tiers[tier(c)].Put(b)
}

// Unmarshal decodes data into v, which it resets first. gRPC frees data
// when this returns, so the message's bytes fields point into a copy
// made for it: one copy of the data, not one per field.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(fast)
	if !ok {
		return fallback().Unmarshal(data, v)
	}
	if pm, ok := v.(proto.Message); ok {
		proto.Reset(pm)
	}
	if err := m.UnmarshalVTUnsafe(data.Materialize()); err != nil {
		return fmt.Errorf("decode %T: %w", v, err)
	}
	return nil
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return Name }
