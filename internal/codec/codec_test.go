package codec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	statev1 "github.com/georep/georep/proto/georep/state/v1"
	pb "github.com/georep/georep/proto/georep/v1"
)

// messages are what the tests encode: every shape of PutFiles message the
// data plane sends, unary requests and answers, a message without a fast
// path, and empty ones.
func messages() map[string]proto.Message {
	gfid := bytes.Repeat([]byte{0xab}, 16)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB: from gRPC's pool
	stat := &pb.Stat{Mode: 0o100644, Uid: 1000, Gid: 1000, Mtime: &pb.Timestamp{Sec: 1700000000, Nsec: 5}}
	return map[string]proto.Message{
		"empty request": &pb.PutFilesRequest{},
		"header": &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: &pb.FileHeader{
			Gfid: gfid, Size: 3, Stat: stat, CreateParentGfid: gfid, CreateName: []byte("n\xffame"),
			Chunk: &pb.FileChunk{Data: []byte("abc")}, Trailer: &pb.FileTrailer{Digest: []byte{1, 2, 3}}}}, BatchResults: true},
		"large chunk": &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Offset: 1 << 40, Data: big}}},
		"batch": &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Batch{Batch: &pb.FileBatch{Files: []*pb.FileHeader{
			{Gfid: gfid, Size: 1, Chunk: &pb.FileChunk{Data: []byte{0}}, Trailer: &pb.FileTrailer{}},
			{Gfid: gfid, Trailer: &pb.FileTrailer{Abandon: true}},
		}}}},
		"entry ops": &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid, ParentGfid: gfid,
			Name: []byte("d"), Stat: stat}}},
		"results": &pb.PutFilesResponse{Results: []*pb.PutFilesResponse{{Gfid: gfid,
			Result: &pb.EntryResult{Errno: 28, Code: "ENOSPC", Message: "no space"}, BytesWritten: 7}}},
		"index record": &statev1.Object{Gfid: gfid, Mode: 0o40755, Links: []*statev1.Link{{Parent: gfid, Name: []byte("x")}}},
		"no fast path": &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING},
	}
}

// TestRoundTrip checks the codec against protobuf-go both ways: what one
// encodes, the other decodes to an equal message.
func TestRoundTrip(t *testing.T) {
	for name, m := range messages() {
		t.Run(name, func(t *testing.T) {
			c := New()
			out, err := c.Marshal(m)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			wire := out.Materialize()
			out.Free()
			want, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(wire, want) {
				t.Errorf("the codec's encoding differs from protobuf-go's (%d bytes against %d)", len(wire), len(want))
			}

			got := m.ProtoReflect().New().Interface()
			// Decoding resets the message: a stale field must not survive.
			proto.Merge(got, m)
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, got); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			// proto.Equal first: cmp's diff of a 1 MiB field takes seconds.
			if !proto.Equal(m, got) {
				t.Errorf("decoded message differs (-sent +got):\n%s", cmp.Diff(m, got, protocmp.Transform()))
			}
		})
	}
}

// TestDecodedBytesOutliveTheWire checks that a decoded message does not
// share memory with gRPC's buffers, which are reused once Unmarshal
// returns: it splits the encoding over several buffers, as frames arrive,
// then overwrites them.
func TestDecodedBytesOutliveTheWire(t *testing.T) {
	m := &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Data: []byte(strings.Repeat("data", 1000))}}}
	wire, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var parts mem.BufferSlice
	var raw [][]byte
	for rest := wire; len(rest) > 0; {
		n := min(len(rest), 1000)
		b := append([]byte(nil), rest[:n]...)
		raw = append(raw, b)
		parts = append(parts, mem.SliceBuffer(b))
		rest = rest[n:]
	}
	var got pb.PutFilesRequest
	if err := (Codec{}).Unmarshal(parts, &got); err != nil {
		t.Fatal(err)
	}
	for _, b := range raw {
		clear(b)
	}
	if !proto.Equal(&got, m) {
		t.Fatal("the decoded chunk changed when the wire buffers were reused")
	}
}

func TestUnmarshalRefusesBadInput(t *testing.T) {
	for name, wire := range map[string][]byte{
		"truncated length": {0x12, 0x05, 0x12}, // chunk, 5 bytes, 1 present
		"bad wire type":    {0x0f},             // field 1, wire type 7
		"varint overflow":  bytes.Repeat([]byte{0xff}, 11),
	} {
		t.Run(name, func(t *testing.T) {
			var got pb.PutFilesRequest
			err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got)
			if err == nil {
				t.Fatalf("decoded %x without an error", wire)
			}
			if !strings.Contains(err.Error(), "PutFilesRequest") {
				t.Errorf("error %q does not name the message", err)
			}
			if perr := proto.Unmarshal(wire, new(pb.PutFilesRequest)); perr == nil {
				t.Errorf("protobuf-go decodes %x: the case tests nothing", wire)
			}
		})
	}
}

// FuzzDecode holds the codec's decoder to protobuf-go's on any input a
// peer may send. What both decode must be the same message. What only
// protobuf-go decodes must be a known field with the wrong wire type, which
// protobuf-go keeps as an unknown field: no georep peer sends one, and
// refusing is the safe side. What only the codec decodes (it is lenient on
// a varint's eleventh bit, an unknown field's number, proto3's UTF-8 rule
// for strings) must still be a well-formed message, one protobuf-go
// encodes and decodes back unchanged; no georep string field is used as a
// name or a path without a check of its own.
func FuzzDecode(f *testing.F) {
	for _, m := range messages() {
		if _, ok := m.(*pb.PutFilesRequest); !ok {
			continue
		}
		wire, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		if len(wire) < 4096 {
			f.Add(wire)
		}
	}
	// Unknown fields may differ in how their tags were spelt (protobuf-go
	// re-encodes a tag it reads); georep ignores them.
	same := func(a, b proto.Message) string { return cmp.Diff(a, b, protocmp.Transform(), protocmp.IgnoreUnknown()) }
	f.Fuzz(func(t *testing.T, wire []byte) {
		var got, want pb.PutFilesRequest
		err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got)
		perr := proto.Unmarshal(wire, &want)
		switch {
		case err == nil && perr == nil:
			if diff := same(&want, &got); diff != "" {
				t.Fatalf("decoders disagree on %x (-protobuf-go +codec):\n%s", wire, diff)
			}
		case err != nil && perr == nil:
			if !strings.Contains(err.Error(), "wrong wireType") {
				t.Fatalf("the codec refuses %x, which protobuf-go decodes: %v", wire, err)
			}
		case err == nil && perr != nil:
			dropUnknown(got.ProtoReflect())
			again, merr := proto.Marshal(&got)
			if merr != nil {
				if !strings.Contains(merr.Error(), "UTF-8") {
					t.Fatalf("the codec decodes %x to a message protobuf-go cannot encode: %v", wire, merr)
				}
				return
			}
			var back pb.PutFilesRequest
			if err := proto.Unmarshal(again, &back); err != nil {
				t.Fatalf("the codec decodes %x to a message that does not survive re-encoding: %v", wire, err)
			}
			if diff := same(&got, &back); diff != "" {
				t.Fatalf("the codec decodes %x to a message that changes when re-encoded:\n%s", wire, diff)
			}
		}
	})
}

// dropUnknown removes the unknown fields of m and of every message in it.
func dropUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil || fd.IsMap():
		case fd.IsList():
			for i := range v.List().Len() {
				dropUnknown(v.List().Get(i).Message())
			}
		default:
			dropUnknown(v.Message())
		}
		return true
	})
}

// TestReusedBufferEncodesExactly encodes a large message, frees it, then
// encodes smaller ones that take the same buffer, which still holds the
// first's bytes: every encoding must be exactly its message's.
func TestReusedBufferEncodesExactly(t *testing.T) {
	c := New()
	first := &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Data: bytes.Repeat([]byte{0xee}, 1<<20)}}}
	out, err := c.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	out.Free()
	for _, n := range []int{1 << 20, 900 << 10, 600 << 10} {
		m := &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Offset: int64(n), Data: bytes.Repeat([]byte{1}, n)}}}
		out, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("%d bytes of content: a reused buffer's encoding differs from protobuf-go's", n)
		}
		out.Free()
	}
}

func TestDirtyPoolTiers(t *testing.T) {
	var p dirtyPool
	for _, tc := range []struct{ size, capacity int }{
		{1, 4 << 10}, {4 << 10, 4 << 10}, {4<<10 + 1, 8 << 10}, {1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20}, {maxPooled, maxPooled},
	} {
		b := p.Get(tc.size)
		if len(*b) != tc.size || cap(*b) != tc.capacity {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.size, len(*b), cap(*b), tc.size, tc.capacity)
		}
		p.Put(b)
	}
	// Buffers of a size no tier holds are dropped, not handed out later.
	odd := make([]byte, 5000)
	p.Put(&odd)
	huge := make([]byte, 2*maxPooled)
	p.Put(&huge)
	for range 10 {
		if b := p.Get(4000); cap(*b) != 4<<10 {
			t.Fatalf("Get(4000) returned a buffer of capacity %d", cap(*b))
		}
	}
}
