package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// TestPutFilesCancelMidBatch: a master that cancels its stream while the
// slave holds whole files waiting for the committer and one file half
// received leaves no temp behind (nothing of the handler's goroutines
// lingers holding one), every file shows either its old or its new content
// whole, and the slave takes the next stream.
func TestPutFilesCancelMidBatch(t *testing.T) {
	tests := []struct {
		name  string
		files int
		size  int
	}{
		{name: "many small files", files: 2 * commitQueueMax, size: 100},
		{name: "fewer big files", files: 24, size: 3 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, dir := openBackend(t)
			c := serve(t, New(b, Options{}), overTCP, testLogger(t, nil))
			ctx := callCtx(t)
			gs := make([]gfid.GFID, tc.files)
			var entries []*pb.Entry
			for i := range gs {
				gs[i] = gfid.New()
				entries = append(entries, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: gs[i].Bytes(),
					ParentGfid: gfid.Root.Bytes(), Name: fmt.Appendf(nil, "f%d", i), Stat: regStat(0o644)})
			}
			if r, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: entries}); err != nil {
				t.Fatalf("create: %v", err)
			} else {
				for i, res := range r.GetResults() {
					if res.GetErrno() != 0 {
						t.Fatalf("create f%d: %s", i, res.GetMessage())
					}
				}
			}
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := c.PutFiles(sctx)
			if err != nil {
				t.Fatal(err)
			}
			content := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, tc.size) }
			for i, g := range gs {
				data := content(i)
				if err := stream.Send(header(g.Bytes(), int64(len(data)))); err != nil {
					t.Fatalf("send: %v", err)
				}
				for off := 0; off < len(data); off += 1 << 20 {
					if err := stream.Send(chunk(int64(off), string(data[off:min(off+1<<20, len(data))]))); err != nil {
						t.Fatalf("send: %v", err)
					}
				}
				if i == len(gs)-1 {
					break // the last file stays open: no trailer
				}
				if err := stream.Send(trailer(string(data))); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			cancel()
			tmp := filepath.Join(dir, ".georep", "tmp")
			deadline := time.Now().Add(20 * time.Second)
			for {
				ents, err := os.ReadDir(tmp)
				if err != nil {
					t.Fatalf("read tmp: %v", err)
				}
				if len(ents) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("tmp still holds %d temps 20s after the stream was cancelled", len(ents))
				}
				time.Sleep(20 * time.Millisecond)
			}
			for i := range gs {
				got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%d", i)))
				if err != nil {
					t.Fatalf("read f%d: %v", i, err)
				}
				if len(got) != 0 && !bytes.Equal(got, content(i)) {
					t.Errorf("f%d: %d bytes, neither the old (empty) nor the new content", i, len(got))
				}
				if i == len(gs)-1 && len(got) != 0 {
					t.Errorf("f%d, sent without trailer, was installed", i)
				}
			}
			// The slave is not wedged: a new stream puts a file.
			next, err := c.PutFiles(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []*pb.PutFilesRequest{header(gs[0].Bytes(), 5), chunk(0, "after"), trailer("after")} {
				if err := next.Send(m); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			next.CloseSend()
			resp, err := next.Recv()
			if err != nil || resp.GetResult().GetErrno() != 0 {
				t.Fatalf("put after the cancelled stream: %v %v", err, resp.GetResult())
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "f0")); string(got) != "after" {
				t.Errorf("f0 = %q after the next stream, want %q", got, "after")
			}
		})
	}
}

// TestPutFilesGoneMasterInstallsNothing: files whose master went away
// while the slave flushed them are not installed. The flush can take
// seconds; a newer session of the same master may have installed newer
// content of the same file through another slave process meanwhile, and
// this content must not land over it.
func TestPutFilesGoneMasterInstallsNothing(t *testing.T) {
	b, dir := openBackend(t)
	svc := New(b, Options{})
	flushed := make(chan struct{})
	svc.afterFlush = func(ctx context.Context) {
		close(flushed)
		// The master's cancel reaches the handler as the flush ends.
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Error("the stream's context was not cancelled within 10s of the master's cancel")
		}
	}
	c := serve(t, svc, overTCP, testLogger(t, nil))
	ctx := callCtx(t)
	g := gfid.New()
	r, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(),
		ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: regStat(0o644)}}})
	if err != nil || r.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create: %v %v", err, r)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.PutFiles(sctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*pb.PutFilesRequest{header(g.Bytes(), 4), chunk(0, "late"), trailer("late")} {
		if err := stream.Send(m); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	select {
	case <-flushed:
	case <-time.After(20 * time.Second):
		t.Fatal("the file was not flushed within 20s")
	}
	cancel()
	tmp := filepath.Join(dir, ".georep", "tmp")
	deadline := time.Now().Add(20 * time.Second)
	for ents, _ := os.ReadDir(tmp); len(ents) > 0; ents, _ = os.ReadDir(tmp) {
		if time.Now().After(deadline) {
			t.Fatalf("tmp still holds %d temps 20s after the master went away", len(ents))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The handler has ended (its temp is gone) by the time the next
	// stream is answered; the file still has its old, empty content.
	svc.afterFlush = nil
	next, err := c.PutFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := next.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Recv(); err != io.EOF {
		t.Fatalf("an empty stream after the cancelled one: %v, want io.EOF", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || len(got) != 0 {
		t.Errorf("f = %q (%v); want its old, empty content: the gone master's file was installed", got, err)
	}
}
