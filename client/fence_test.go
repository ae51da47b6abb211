package client

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// putFile sends content as the whole of g's file through slave and
// returns the slave's result for it.
func putFile(ctx context.Context, t *testing.T, slave pb.SlaveClient, g gfid.GFID, content string) *pb.EntryResult {
	t.Helper()
	stream, err := slave.PutFiles(ctx)
	if err != nil {
		t.Fatalf("PutFiles: %v", err)
	}
	sum := digest.Append(nil, pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED, []byte(content))
	for _, m := range []*pb.PutFilesRequest{
		{Part: &pb.PutFilesRequest_Header{Header: &pb.FileHeader{Gfid: g.Bytes(), Size: int64(len(content))}}},
		{Part: &pb.PutFilesRequest_Chunk{Chunk: &pb.FileChunk{Data: []byte(content)}}},
		{Part: &pb.PutFilesRequest_Trailer{Trailer: &pb.FileTrailer{Digest: sum}}},
	} {
		if err := stream.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("PutFiles result: %v", err)
	}
	return resp.GetResult()
}

// TestSessionFencesLostConnection: every connection a session makes after
// losing one claims the root with a new session, and its extra
// connections with the same: an extra connection left from before the
// loss (its slave process still running) can no longer install content,
// while the new connection and its own extras can. Real slave processes
// (local transport) on one root.
func TestSessionFencesLostConnection(t *testing.T) {
	root := t.TempDir()
	u, err := ParseSlaveURL(root)
	if err != nil {
		t.Fatal(err)
	}
	master := masterMark("test-master")
	var s *Session
	s = NewSession(func(ctx context.Context) (*Conn, error) {
		return Dial(ctx, u, Options{LocalGeorep: georepBin, Master: master, Claim: s.Claim()})
	}, SessionOptions{Master: master, BackoffMin: 50 * time.Millisecond})
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	first, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g := gfid.New()
	r, err := first.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(),
		ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: &pb.Stat{Mode: unix.S_IFREG | 0o644}}}})
	if err != nil || r.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create f: %v %v", err, r)
	}
	oldExtra, closeOld, err := s.Extra(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOld()
	// The extra claimed with the first connection's session: both install.
	for name, c := range map[string]*Conn{"first connection": first, "its extra": oldExtra} {
		if res := putFile(ctx, t, c.Slave, g, name); res.GetErrno() != 0 {
			t.Fatalf("install through the %s: %v", name, res)
		}
	}

	// Lose the first connection; the session dials again.
	if err := first.Process().Kill(); err != nil {
		t.Fatal(err)
	}
	s.drop(first, nil)
	second, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Fatal("the session kept the lost connection")
	}
	newExtra, closeNew, err := s.Extra(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer closeNew()
	if res := putFile(ctx, t, second.Slave, g, "second"); res.GetErrno() != 0 {
		t.Fatalf("install through the second connection: %v", res)
	}
	if res := putFile(ctx, t, oldExtra.Slave, g, "stale"); res.GetErrno() != int32(unix.ESTALE) {
		t.Fatalf("install through the lost connection's extra: %v, want ESTALE", res)
	}
	if got, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(got) != "second" {
		t.Fatalf("f = %q (%v), want the second connection's content", got, err)
	}
	if res := putFile(ctx, t, newExtra.Slave, g, "third"); res.GetErrno() != 0 {
		t.Fatalf("install through the second connection's extra: %v", res)
	}
	if got, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(got) != "third" {
		t.Fatalf("f = %q (%v), want the second connection's extra's content", got, err)
	}
}
