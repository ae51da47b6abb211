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

// Codec implements encoding.CodecV2. The zero value is ready to use.
type Codec struct{}

// ServerOption makes a grpc.Server use the codec.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(Codec{}) }

// DialOption makes a client connection use the codec.
func DialOption() grpc.DialOption {
	return grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{}))
}

func fallback() encoding.CodecV2 { return encoding.GetCodecV2(Name) }

// Marshal encodes v into one buffer, from gRPC's pool when it is large.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
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
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVT(*buf); err != nil {
		pool.Put(buf)
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
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
