package server

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// TestLostConnectionInstallsNothingLate: a master's connection is lost
// while its slave process holds a flushed file (the link went silent: that
// process does not know). The master dials again, claims the root with a
// new session through a second slave process, and installs newer content.
// When the first process gets to its install, it must not put the older
// content over the newer: the file fails with ESTALE on the old stream and
// keeps the newer content. Both are real gRPC connections to two Services,
// each with its own backend on one root, as two ssh sessions make.
func TestLostConnectionInstallsNothingLate(t *testing.T) {
	dir := t.TempDir()
	open := func() *Service {
		t.Helper()
		b, err := backend.Open(dir, backend.Options{})
		if err != nil {
			t.Fatalf("open backend at %s: %v", dir, err)
		}
		t.Cleanup(func() { b.Close() })
		return New(b, Options{})
	}
	oldSvc, newSvc := open(), open()
	flushed, resume := make(chan struct{}), make(chan struct{})
	oldSvc.afterFlush = func(context.Context) {
		close(flushed)
		select {
		case <-resume:
		case <-time.After(20 * time.Second):
			t.Error("the old connection's install was not let go within 20s")
		}
	}
	oldC := serve(t, oldSvc, overTCP, testLogger(t, nil))
	newC := serve(t, newSvc, overTCP, testLogger(t, nil))
	ctx := callCtx(t)
	master := &pb.VolumeMark{Uuid: gfid.New().Bytes(), Version: &pb.Version{Major: 1}, Holder: "m:/data"}
	hello := func(c pb.SlaveClient, session []byte) {
		t.Helper()
		resp, err := c.Handshake(ctx, &pb.HandshakeRequest{
			Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor},
			Master: master, Claim: &pb.Claim{TimeoutSeconds: 60, Session: session}})
		if err != nil || !resp.GetClaim().GetClaimed() {
			t.Fatalf("handshake with session %x: %v %v", session, resp.GetClaim(), err)
		}
	}
	put := func(c pb.SlaveClient, g gfid.GFID, content string) pb.Slave_PutFilesClient {
		t.Helper()
		stream, err := c.PutFiles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []*pb.PutFilesRequest{header(g.Bytes(), int64(len(content))), chunk(0, content), trailer(content)} {
			if err := stream.Send(m); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		return stream
	}
	result := func(stream pb.Slave_PutFilesClient) *pb.EntryResult {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("result: %v", err)
		}
		return resp.GetResult()
	}

	hello(oldC, bytes.Repeat([]byte{1}, backend.SessionSize))
	g := gfid.New()
	r, err := oldC.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(),
		ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: regStat(0o644)}}})
	if err != nil || r.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create: %v %v", err, r)
	}
	late := put(oldC, g, "older")
	select {
	case <-flushed:
	case <-time.After(20 * time.Second):
		t.Fatal("the old connection's file was not flushed within 20s")
	}

	hello(newC, bytes.Repeat([]byte{2}, backend.SessionSize))
	if res := result(put(newC, g, "newer")); res.GetErrno() != 0 {
		t.Fatalf("the new connection's file: %v", res)
	}
	close(resume)
	if res := result(late); res.GetErrno() != int32(unix.ESTALE) {
		t.Errorf("the lost connection's file: %v, want ESTALE", res)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "newer" {
		t.Errorf("f = %q (%v); want the new connection's content", got, err)
	}
	if ents, err := os.ReadDir(filepath.Join(dir, backend.ReservedDir, "tmp")); err != nil || len(ents) != 0 {
		t.Errorf("tmp holds %d temps (%v), want none", len(ents), err)
	}
}
