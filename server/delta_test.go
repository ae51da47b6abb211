package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func deltaHeader(g []byte, size int64) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: &pb.FileHeader{Gfid: g, Size: size, Delta: true}}}
}

func fileCopy(off, length, src int64) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Copy{Copy: &pb.FileCopy{Offset: off, Length: length, SourceOffset: src}}}
}

// TestPutFilesCopy: FileCopy parts take bytes from the file's previous
// content; misuse fails the file alone and keeps the previous content.
func TestPutFilesCopy(t *testing.T) {
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
			steps := []struct {
				msgs []*pb.PutFilesRequest
				code string
				want string // the file's content afterwards
			}{
				{[]*pb.PutFilesRequest{header(x.Bytes(), 10), chunk(0, "0123456789"), trailer("0123456789")}, "", "0123456789"},
				// copies, a literal between them, a copy that goes backwards in the source
				{[]*pb.PutFilesRequest{deltaHeader(x.Bytes(), 9), fileCopy(0, 3, 7), chunk(3, "ab"), fileCopy(5, 4, 0),
					trailer("789ab0123")}, "", "789ab0123"},
				{[]*pb.PutFilesRequest{header(x.Bytes(), 3), fileCopy(0, 3, 0), trailer("789")}, "EINVAL", "789ab0123"},                     // copy without delta
				{[]*pb.PutFilesRequest{deltaHeader(x.Bytes(), 3), fileCopy(0, 3, 8), trailer("23x")}, "EBADMSG", "789ab0123"},               // past the old end
				{[]*pb.PutFilesRequest{deltaHeader(x.Bytes(), 3), fileCopy(0, 3, 0), trailer("xyz")}, "EBADMSG", "789ab0123"},               // old content differs
				{[]*pb.PutFilesRequest{deltaHeader(x.Bytes(), 3), fileCopy(1, 3, 0), trailer("789")}, "EINVAL", "789ab0123"},                // past the new size
				{[]*pb.PutFilesRequest{deltaHeader(x.Bytes(), 3), chunk(2, "z"), fileCopy(0, 2, 0), trailer("78z")}, "EINVAL", "789ab0123"}, // going back
			}
			for i, st := range steps {
				for _, m := range st.msgs {
					if err := stream.Send(m); err != nil {
						t.Fatalf("step %d: send: %v", i, err)
					}
				}
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("step %d: result: %v", i, err)
				}
				if resp.GetResult().GetCode() != st.code {
					t.Errorf("step %d: %s %q, want %q", i, resp.GetResult().GetCode(), resp.GetResult().GetMessage(), st.code)
				}
				got, err := os.ReadFile(filepath.Join(dir, "f"))
				if err != nil || string(got) != st.want {
					t.Errorf("step %d: content %q (%v), want %q", i, got, err, st.want)
				}
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
