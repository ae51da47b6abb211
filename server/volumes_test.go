package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// serveVolumes runs v on a real gRPC server on 127.0.0.1 and returns a
// client for it; everything stops when the test ends.
func serveVolumes(t *testing.T, v *Volumes) pb.SlaveClient {
	t.Helper()
	return pb.NewSlaveClient(serveVolumesConn(t, v))
}

// serveVolumesConn is serveVolumes returning the raw connection.
func serveVolumesConn(t *testing.T, v *Volumes) *grpc.ClientConn {
	t.Helper()
	gs := NewGRPCServer(v, testLogger(t, nil), grpc.WaitForHandlers(true))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.1: %v", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		gs.Stop()
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cc
}

// volumeCtx is a call context naming volumes in the georep-volume metadata.
func volumeCtx(t *testing.T, names ...string) context.Context {
	t.Helper()
	ctx := callCtx(t)
	for _, n := range names {
		ctx = metadata.AppendToOutgoingContext(ctx, VolumeHeader, n)
	}
	return ctx
}

// newVolumeServices opens one backend and Service per name.
func newVolumeServices(t *testing.T, names ...string) (map[string]*Service, map[string]string) {
	t.Helper()
	svcs, roots := map[string]*Service{}, map[string]string{}
	for _, n := range names {
		b, dir := openBackend(t)
		svcs[n], roots[n] = New(b, Options{}), dir
	}
	return svcs, roots
}

func handshakeReq() *pb.HandshakeRequest {
	return &pb.HandshakeRequest{
		Protocol: &pb.Version{Major: ProtocolMajor, Minor: ProtocolMinor},
		Object:   &pb.Version{Major: ObjectMajor, Minor: ObjectMinor},
	}
}

func TestVolumesRouteByName(t *testing.T) {
	svcs, roots := newVolumeServices(t, "alpha", "beta")
	v, err := NewVolumes(svcs)
	if err != nil {
		t.Fatal(err)
	}
	c := serveVolumes(t, v)

	tests := []struct {
		name     string
		header   []string
		wantRoot string
		code     codes.Code
		parts    []string
	}{
		{"alpha", []string{"alpha"}, roots["alpha"], codes.OK, nil},
		{"beta", []string{"beta"}, roots["beta"], codes.OK, nil},
		{"no name with several volumes", nil, "", codes.InvalidArgument, []string{"several volumes (alpha, beta)", "grpcs://host:port/NAME"}},
		{"empty name", []string{""}, "", codes.InvalidArgument, []string{"alpha, beta"}},
		{"unknown name", []string{"gamma"}, "", codes.NotFound, []string{`no volume "gamma"`, "it serves: alpha, beta"}},
		{"two names", []string{"alpha", "beta"}, "", codes.InvalidArgument, []string{"names 2 volumes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.Handshake(volumeCtx(t, tc.header...), handshakeReq())
			if tc.code != codes.OK {
				wantStatus(t, err, tc.code, tc.parts...)
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if resp.GetRoot() != tc.wantRoot {
				t.Errorf("root = %q, want %q", resp.GetRoot(), tc.wantRoot)
			}
		})
	}

	// A write lands in the named volume only.
	_, err = c.EntryOps(volumeCtx(t, "beta"), &pb.EntryOpsRequest{Entries: []*pb.Entry{
		{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid.New().Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("only-in-beta"), Stat: dirStat(0o755)},
	}})
	if err != nil {
		t.Fatalf("EntryOps on beta: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(roots["beta"], "only-in-beta")); err != nil {
		t.Errorf("mkdir on beta did not land in beta's root: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(roots["alpha"], "only-in-beta")); err == nil {
		t.Errorf("mkdir on beta landed in alpha's root")
	}

	// Keep-alive counters are per volume.
	for range 2 {
		if _, err := c.KeepAlive(volumeCtx(t, "alpha"), &pb.KeepAliveRequest{}); err != nil {
			t.Fatalf("KeepAlive alpha: %v", err)
		}
	}
	resp, err := c.KeepAlive(volumeCtx(t, "beta"), &pb.KeepAliveRequest{})
	if err != nil {
		t.Fatalf("KeepAlive beta: %v", err)
	}
	if resp.GetCount() != 1 || svcs["alpha"].KeepAlives() != 2 {
		t.Errorf("keep-alive counts: beta %d (want 1), alpha %d (want 2)", resp.GetCount(), svcs["alpha"].KeepAlives())
	}
}

func TestVolumesSingleRoot(t *testing.T) {
	tests := []struct {
		name     string
		volume   string // the served volume; "" is an unnamed --root
		header   []string
		code     codes.Code
		parts    []string
		wantRoot bool
	}{
		{"unnamed root, no name", "", nil, codes.OK, nil, true},
		{"unnamed root, a name", "", []string{"x"}, codes.NotFound, []string{"one unnamed root", "drop /x from the slave URL"}, false},
		{"one named volume, no name", "only", nil, codes.OK, nil, true},
		{"one named volume, its name", "only", []string{"only"}, codes.OK, nil, true},
		{"one named volume, another name", "only", []string{"other"}, codes.NotFound, []string{`no volume "other"`, "it serves: only"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svcs, roots := newVolumeServices(t, tc.volume)
			v, err := NewVolumes(svcs)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := serveVolumes(t, v).Handshake(volumeCtx(t, tc.header...), handshakeReq())
			if tc.code != codes.OK {
				wantStatus(t, err, tc.code, tc.parts...)
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if resp.GetRoot() != roots[tc.volume] {
				t.Errorf("root = %q, want %q", resp.GetRoot(), roots[tc.volume])
			}
		})
	}
}

// TestVolumesRouteEveryMethod guards against an RPC added to the Slave
// service but not to Volumes: it would answer Unimplemented over --listen
// only. Every method must consult the volume name (NotFound for an unknown
// one) and reach a Service (anything but Unimplemented for a known one).
func TestVolumesRouteEveryMethod(t *testing.T) {
	svcs, _ := newVolumeServices(t, "v")
	v, err := NewVolumes(svcs)
	if err != nil {
		t.Fatal(err)
	}
	noDecode := func(any) error { return nil }
	for _, m := range pb.Slave_ServiceDesc.Methods {
		t.Run(m.MethodName, func(t *testing.T) {
			unknown := metadata.NewIncomingContext(callCtx(t), metadata.Pairs(VolumeHeader, "nope"))
			_, err := m.Handler(v, unknown, noDecode, nil)
			if status.Code(err) != codes.NotFound {
				t.Errorf("%s on an unknown volume: %v, want NotFound (is it routed?)", m.MethodName, err)
			}
			known := metadata.NewIncomingContext(callCtx(t), metadata.Pairs(VolumeHeader, "v"))
			_, err = m.Handler(v, known, noDecode, nil)
			if status.Code(err) == codes.Unimplemented {
				t.Errorf("%s on a served volume: %v", m.MethodName, err)
			}
		})
	}
	// Streams are checked over a real connection: the stream opens, and
	// its first receive reports the routing decision.
	cc := serveVolumesConn(t, v)
	for _, sd := range pb.Slave_ServiceDesc.Streams {
		t.Run(sd.StreamName, func(t *testing.T) {
			desc := &grpc.StreamDesc{StreamName: sd.StreamName, ServerStreams: sd.ServerStreams, ClientStreams: sd.ClientStreams}
			stream, err := cc.NewStream(volumeCtx(t, "nope"), desc, "/"+pb.Slave_ServiceDesc.ServiceName+"/"+sd.StreamName)
			if err != nil {
				t.Fatalf("open %s: %v", sd.StreamName, err)
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatalf("close %s: %v", sd.StreamName, err)
			}
			var reply emptypb.Empty
			if err := stream.RecvMsg(&reply); status.Code(err) != codes.NotFound {
				t.Errorf("%s on an unknown volume: %v, want NotFound (is it routed?)", sd.StreamName, err)
			}
		})
	}
}

func TestNewVolumesRefuses(t *testing.T) {
	svc := New(nil, Options{})
	tests := []struct {
		name   string
		byName map[string]*Service
		want   string
	}{
		{"nothing", map[string]*Service{}, "no slave root to serve"},
		{"unnamed beside named", map[string]*Service{"": svc, "a": svc}, "cannot be served beside named volumes"},
		{"leading dash", map[string]*Service{"-a": svc}, "must not be . or .. or start with '-'"},
		{"dot dot", map[string]*Service{"..": svc}, "not allowed"},
		{"slash", map[string]*Service{"a/b": svc}, "only letters, digits"},
		{"nil service", map[string]*Service{"a": nil}, "has no service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewVolumes(tc.byName)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewVolumes: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
