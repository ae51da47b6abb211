package server

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

func header(g []byte, size int64) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: &pb.FileHeader{Gfid: g, Size: size}}}
}

func chunk(off int64, data string) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Offset: off, Data: []byte(data)}}}
}

func trailer(content string) *pb.PutFilesRequest {
	sum := blake3.Sum256([]byte(content))
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Trailer{Trailer: &pb.FileTrailer{Digest: sum[:]}}}
}

// TestPutFilesResults: every file gets its own result, in order; bad files
// fail alone.
func TestPutFilesResults(t *testing.T) {
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			b, dir := openBackend(t)
			c := serve(t, New(b, Options{}), tr, testLogger(t, nil))
			ctx := callCtx(t)
			x := gfid.New()
			r, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
				Gfid: x.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: regStat(0o644)}}})
			if err != nil || r.GetResults()[0].GetErrno() != 0 {
				t.Fatalf("create: %v %v", err, r)
			}
			stream, err := c.PutFiles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msgs := []*pb.PutFilesRequest{
				header([]byte{1, 2}, 1), chunk(0, "x"), trailer("x"), // malformed gfid
				header(gfid.New().Bytes(), 1), chunk(0, "x"), trailer("x"), // unknown gfid
				header(x.Bytes(), 4), chunk(2, "ab"), chunk(0, "zz"), trailer("\x00\x00ab"), // chunk going back
				header(x.Bytes(), 4), chunk(0, "good"), trailer("bad!"), // digest mismatch
				header(x.Bytes(), 4), chunk(1, "ood"), trailer("\x00ood"), // a hole at the start
			}
			for _, m := range msgs {
				if err := stream.Send(m); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			want := []string{"EINVAL", "ENOENT", "EINVAL", "EBADMSG", ""}
			for i, code := range want {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("result %d: %v", i, err)
				}
				if resp.GetResult().GetCode() != code {
					t.Errorf("result %d: %s %q, want %q", i, resp.GetResult().GetCode(), resp.GetResult().GetMessage(), code)
				}
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("after the last result: %v, want EOF", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "f"))
			if err != nil || string(got) != "\x00ood" {
				t.Errorf("content %q (%v), want the last file's", got, err)
			}
		})
	}
}

// TestPutFilesOrder: messages out of file order fail the stream, and the
// file that was open is discarded.
func TestPutFilesOrder(t *testing.T) {
	x := gfid.New()
	tests := []struct {
		name string
		msgs []*pb.PutFilesRequest
		want string
	}{
		{"chunk before header", []*pb.PutFilesRequest{chunk(0, "x")}, "send a header first"},
		{"trailer before header", []*pb.PutFilesRequest{trailer("")}, "send a header first"},
		{"two headers", []*pb.PutFilesRequest{header(x.Bytes(), 1), header(x.Bytes(), 1)}, "had no trailer"},
		{"end inside a file", []*pb.PutFilesRequest{header(x.Bytes(), 1), chunk(0, "x")}, "no trailer"},
		{"empty message", []*pb.PutFilesRequest{{}}, "must carry"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := sendMalformed(t, x, "f", tc.msgs, false)
			wantStatus(t, err, codes.InvalidArgument, tc.want)
			ents, err := os.ReadDir(filepath.Join(dir, ".georep", "tmp"))
			if err != nil || len(ents) != 0 {
				t.Errorf("tmp holds %d entries (%v), want none", len(ents), err)
			}
		})
	}
}

// sendMalformed serves a fresh slave holding an empty file name with GFID
// x at its root, sends msgs on one PutFiles stream (each asking for batch
// results when batchResults), and returns the slave's root and the error
// the stream ended with.
func sendMalformed(t *testing.T, x gfid.GFID, name string, msgs []*pb.PutFilesRequest, batchResults bool) (string, error) {
	t.Helper()
	b, dir := openBackend(t)
	c := serve(t, New(b, Options{}), overTCP, testLogger(t, nil))
	ctx := callCtx(t)
	if _, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
		Gfid: x.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte(name), Stat: regStat(0o644)}}}); err != nil {
		t.Fatal(err)
	}
	stream, err := c.PutFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		m.BatchResults = batchResults
		if err := stream.Send(m); err != nil {
			break // the slave already refused; Recv says why
		}
	}
	stream.CloseSend()
	_, err = stream.Recv()
	return dir, err
}

// zstdChunk is a chunk of data compressed as one zstd frame, claiming length.
func zstdChunk(t testing.TB, off int64, data []byte, length uint32) *pb.PutFilesRequest {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Offset: off,
		Data: enc.EncodeAll(data, nil), Compression: pb.Compression_COMPRESSION_ZSTD, Length: length}}}
}

// TestPutFilesCompressedChunks: zstd chunks decode into the file; a chunk
// that would decode past 1 MiB (a bomb), claims more, or lies about its
// length fails its file alone with a message that says so.
func TestPutFilesCompressedChunks(t *testing.T) {
	text := bytes.Repeat([]byte("georep compresses text well. "), 20000) // ~580 KB
	bomb := make([]byte, 8<<20)                                          // 8 MiB of zeros: a frame of a few hundred bytes
	tests := []struct {
		name    string
		size    int64
		chunks  []*pb.PutFilesRequest
		content []byte // what the file must hold; nil: unchanged
		code    string
		message string
	}{
		{name: "zstd chunk", size: int64(len(text)), chunks: []*pb.PutFilesRequest{zstdChunk(t, 0, text, uint32(len(text)))},
			content: text},
		{name: "zstd and plain chunks", size: int64(len(text)) + 4, chunks: []*pb.PutFilesRequest{
			zstdChunk(t, 0, text, uint32(len(text))), chunk(int64(len(text)), "tail")}, content: append(bytes.Clone(text), "tail"...)},
		{name: "bomb", size: 8 << 20, chunks: []*pb.PutFilesRequest{zstdChunk(t, 0, bomb, 1<<20)},
			code: "EINVAL", message: "does not decode"},
		{name: "length over 1 MiB", size: 8 << 20, chunks: []*pb.PutFilesRequest{zstdChunk(t, 0, bomb[:2<<20], 2<<20)},
			code: "EINVAL", message: "exceeds"},
		{name: "length lies", size: int64(len(text)), chunks: []*pb.PutFilesRequest{zstdChunk(t, 0, text, 100)},
			code: "EINVAL", message: "decodes to"},
		{name: "not zstd", size: 4, chunks: []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{
			Data: []byte("junk"), Compression: pb.Compression_COMPRESSION_ZSTD, Length: 4}}}}, code: "EINVAL", message: "does not decode"},
		{name: "unknown compression", size: 4, chunks: []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{
			Data: []byte("junk"), Compression: 7, Length: 4}}}}, code: "EINVAL", message: "not one this slave offered"},
	}
	b, dir := openBackend(t)
	c := serve(t, New(b, Options{}), overPipe, testLogger(t, nil))
	ctx := callCtx(t)
	hs, err := c.Handshake(ctx, &pb.HandshakeRequest{Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(hs.GetCompressions(), pb.Compression_COMPRESSION_ZSTD) {
		t.Fatalf("Handshake offers %v, want zstd among them", hs.GetCompressions())
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := gfid.New()
			r, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
				Gfid: x.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte(x.String()), Stat: regStat(0o644)}}})
			if err != nil || r.GetResults()[0].GetErrno() != 0 {
				t.Fatalf("create: %v %v", err, r)
			}
			stream, err := c.PutFiles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msgs := append([]*pb.PutFilesRequest{header(x.Bytes(), tc.size)}, tc.chunks...)
			want := tc.content
			if want == nil {
				want = make([]byte, tc.size)
			}
			msgs = append(msgs, trailer(string(want)))
			for _, m := range msgs {
				if err := stream.Send(m); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("result: %v", err)
			}
			if got := resp.GetResult(); got.GetCode() != tc.code || !strings.Contains(got.GetMessage(), tc.message) {
				t.Errorf("result %s %q, want %q with %q", got.GetCode(), got.GetMessage(), tc.code, tc.message)
			}
			if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("after the result: %v, want EOF", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, x.String()))
			if err != nil {
				t.Fatal(err)
			}
			if tc.content != nil && !bytes.Equal(got, tc.content) {
				t.Errorf("content: %d bytes, not what was sent", len(got))
			}
			if tc.content == nil && len(got) != 0 {
				t.Errorf("a refused file changed: %d bytes", len(got))
			}
		})
	}
}

// FuzzDecodeChunk: whatever a chunk carries, decoding never yields more
// than MaxChunk bytes, and a decoded chunk is exactly its stated length.
func FuzzDecodeChunk(f *testing.F) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc.EncodeAll([]byte("hello, georep"), nil), uint32(1), uint32(13))
	f.Add(enc.EncodeAll(make([]byte, 2<<20), nil), uint32(1), uint32(1<<20))
	f.Add([]byte("plain data"), uint32(0), uint32(0))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x00, 0x00}, uint32(1), uint32(0))
	enc.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(backend.MaxChunk))
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	f.Fuzz(func(t *testing.T, data []byte, comp uint32, length uint32) {
		c := &pb.FileChunk{Data: data, Compression: pb.Compression(comp), Length: length}
		out, buf, err := decodeChunk(dec, c, nil)
		if cap(buf) > backend.MaxChunk+64<<10 {
			t.Fatalf("decode buffer grew to %d bytes", cap(buf))
		}
		if err != nil {
			if !errors.Is(err, unix.EINVAL) {
				t.Fatalf("error %v is not EINVAL", err)
			}
			return
		}
		if len(out) > backend.MaxChunk {
			t.Fatalf("decoded %d bytes, more than %d", len(out), backend.MaxChunk)
		}
		if c.GetCompression() == pb.Compression_COMPRESSION_ZSTD && len(out) != int(length) {
			t.Fatalf("decoded %d bytes, chunk says %d", len(out), length)
		}
	})
}
