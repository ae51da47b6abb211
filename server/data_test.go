package server

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
	"google.golang.org/grpc/codes"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func header(g []byte, size int64) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: &pb.FileHeader{Gfid: g, Size: size}}}
}

func chunk(off int64, data string) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Offset: off, Data: []byte(data)}}}
}

func trailer(content string) *pb.PutFilesRequest {
	sum := blake3.Sum256([]byte(content))
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Trailer{Trailer: &pb.FileTrailer{Blake3: sum[:]}}}
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
			b, dir := openBackend(t)
			c := serve(t, New(b, Options{}), overTCP, testLogger(t, nil))
			ctx := callCtx(t)
			if _, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
				Gfid: x.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: regStat(0o644)}}}); err != nil {
				t.Fatal(err)
			}
			stream, err := c.PutFiles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tc.msgs {
				if err := stream.Send(m); err != nil {
					break // the slave already refused; Recv says why
				}
			}
			stream.CloseSend()
			_, err = stream.Recv()
			wantStatus(t, err, codes.InvalidArgument, tc.want)
			ents, err := os.ReadDir(filepath.Join(dir, ".georep", "tmp"))
			if err != nil || len(ents) != 0 {
				t.Errorf("tmp holds %d entries (%v), want none", len(ents), err)
			}
		})
	}
}
