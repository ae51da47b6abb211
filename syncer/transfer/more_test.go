package transfer

import (
	"bytes"
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// countingClient counts the PutFiles streams opened through it.
type countingClient struct {
	pb.SlaveClient
	streams atomic.Int64
}

func (c *countingClient) PutFiles(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[pb.PutFilesRequest, pb.PutFilesResponse], error) {
	c.streams.Add(1)
	return c.SlaveClient.PutFiles(ctx, opts...)
}

// TestSendMoreConnections: a connection that joins while files are left
// gets streams of its own from the same queue. The second one here is a
// second slave server on the same root, as a second slave process behind
// another ssh channel would be; every file lands whole, once.
func TestSendMoreConnections(t *testing.T) {
	const n = 600
	e := newEnv(t, "")
	other := newEnv(t, e.slave) // same slave root, its own backend and server
	items := make([]Item, 0, n)
	want := make([][]byte, 0, n)
	es := make([]*pb.Entry, 0, n)
	for i := range n {
		g := gfid.New()
		name := "f-" + itoa(i)
		es = append(es, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(),
			Name: []byte(name), Stat: &pb.Stat{Mode: unix.S_IFREG | 0o644}})
		size := 100 + i%4000
		if i%100 == 0 {
			size = 3 << 20 // some files of several chunks
		}
		d := randomBytes(size, uint64(i))
		writeFile(t, filepath.Join(e.master, "src", name), d)
		items = append(items, item(g, "src/"+name, name))
		want = append(want, d)
	}
	e.entries(t, es...)

	first, second := &countingClient{SlaveClient: e.client}, &countingClient{SlaveClient: other.client}
	more := make(chan pb.SlaveClient, 1)
	more <- second
	close(more)
	rs, st, err := Send(ctxFor(t), first, e.root, items, Options{Jobs: 2, FileBatches: true, More: more})
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, rs)
	for i := range n {
		if got := readFile(t, filepath.Join(e.slave, string(es[i].Name))); !bytes.Equal(got, want[i]) {
			t.Fatalf("file %d differs", i)
		}
	}
	if st.Files != n {
		t.Errorf("%d files sent, want %d", st.Files, n)
	}
	if first.streams.Load() == 0 || second.streams.Load() == 0 {
		t.Errorf("streams: %d on the first connection, %d on the second; want both used", first.streams.Load(), second.streams.Load())
	}

	// A More that never brings anything does not hold Send up once the
	// first connection's streams are done.
	idle := make(chan pb.SlaveClient)
	defer close(idle)
	rs, _, err = Send(ctxFor(t), first, e.root, items[:1], Options{Jobs: 1, More: idle})
	if err != nil || rs[0].Err != nil {
		t.Fatalf("Send with a More that brings nothing: %v, %v", err, rs[0].Err)
	}
}
