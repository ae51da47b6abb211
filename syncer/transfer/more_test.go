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

// tappedSlave is the real slave client with its PutFiles streams tapped:
// streams counts them, and sent and received (each optional) see every
// message the master sends, before it goes, and every answer it gets.
type tappedSlave struct {
	pb.SlaveClient
	streams  *atomic.Int64
	sent     func(*pb.PutFilesRequest)
	received func(*pb.PutFilesResponse)
}

func (c tappedSlave) PutFiles(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[pb.PutFilesRequest, pb.PutFilesResponse], error) {
	if c.streams != nil {
		c.streams.Add(1)
	}
	ps, err := c.SlaveClient.PutFiles(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return tappedStream{ps, c}, nil
}

type tappedStream struct {
	grpc.BidiStreamingClient[pb.PutFilesRequest, pb.PutFilesResponse]
	tap tappedSlave
}

func (s tappedStream) Send(req *pb.PutFilesRequest) error {
	if s.tap.sent != nil {
		s.tap.sent(req)
	}
	return s.BidiStreamingClient.Send(req)
}

func (s tappedStream) Recv() (*pb.PutFilesResponse, error) {
	resp, err := s.BidiStreamingClient.Recv()
	if err == nil && s.tap.received != nil {
		s.tap.received(resp)
	}
	return resp, err
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

	var firstStreams, secondStreams atomic.Int64
	first := tappedSlave{SlaveClient: e.client, streams: &firstStreams}
	more := make(chan pb.SlaveClient, 1)
	more <- tappedSlave{SlaveClient: other.client, streams: &secondStreams}
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
	if firstStreams.Load() == 0 || secondStreams.Load() == 0 {
		t.Errorf("streams: %d on the first connection, %d on the second; want both used", firstStreams.Load(), secondStreams.Load())
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
