package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbuf"
	pb "github.com/georep/georep/proto/georep/v1"
)

// Several tests serve a Service with a nil backend: they exercise paths that
// must answer before the backend is reached (validation, refusals, health,
// reflection, keep-alive without a mark). Were one of them to reach the
// backend, the nil pointer would panic, recovery would turn it into
// Internal, and the test would fail on the code.

func TestHandshake(t *testing.T) {
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			b, dir := openBackend(t)
			c := serve(t, New(b, Options{SoftwareVersion: "v0.1.0-test"}), tr, testLogger(t, nil))
			master := gfid.New()
			resp, err := c.Handshake(callCtx(t), &pb.HandshakeRequest{
				Protocol: &pb.Version{Major: ProtocolMajor, Minor: ProtocolMinor + 3},
				Object:   &pb.Version{Major: ObjectMajor, Minor: ObjectMinor},
				Master:   &pb.VolumeMark{Uuid: master.Bytes(), Holder: "master:/data"},
			})
			if err != nil {
				t.Fatalf("handshake with a newer minor version: %v", err)
			}
			if got := versionString(resp.GetProtocol()); got != "1.0" {
				t.Errorf("protocol = %s, want 1.0", got)
			}
			if got := versionString(resp.GetObject()); got != "1.0" {
				t.Errorf("object = %s, want 1.0", got)
			}
			if resp.GetRoot() != b.Root() || !strings.HasSuffix(resp.GetRoot(), filepath.Base(dir)) {
				t.Errorf("root = %q, want the backend's root %q (dir %s)", resp.GetRoot(), b.Root(), dir)
			}
			if _, err := gfid.FromBytes(resp.GetNative().GetUuid()); err != nil {
				t.Errorf("native mark uuid: %v", err)
			}
			if resp.GetPrivileged() != b.Privileged() {
				t.Errorf("privileged = %v, want %v", resp.GetPrivileged(), b.Privileged())
			}
			if resp.GetSoftwareVersion() != "v0.1.0-test" {
				t.Errorf("software version = %q, want v0.1.0-test", resp.GetSoftwareVersion())
			}
		})
	}
}

func TestHandshakeRefused(t *testing.T) {
	c := serve(t, New(nil, Options{}), overTCP, testLogger(t, nil))
	v := func(major, minor uint32) *pb.Version { return &pb.Version{Major: major, Minor: minor} }
	tests := []struct {
		name  string
		req   *pb.HandshakeRequest
		code  codes.Code
		parts []string
	}{
		{"protocol major ahead", &pb.HandshakeRequest{Protocol: v(2, 0), Object: v(1, 0)},
			codes.FailedPrecondition, []string{"protocol major version mismatch: master 2.0, slave 1.0"}},
		{"protocol major behind", &pb.HandshakeRequest{Protocol: v(0, 9), Object: v(1, 0)},
			codes.FailedPrecondition, []string{"master 0.9", "slave 1.0"}},
		{"object major", &pb.HandshakeRequest{Protocol: v(1, 0), Object: v(3, 1)},
			codes.FailedPrecondition, []string{"object major version mismatch: master 3.1, slave 1.0"}},
		{"no protocol", &pb.HandshakeRequest{Object: v(1, 0)},
			codes.InvalidArgument, []string{"protocol version is required"}},
		{"no object", &pb.HandshakeRequest{Protocol: v(1, 0)},
			codes.InvalidArgument, []string{"object version is required"}},
		{"short master uuid", &pb.HandshakeRequest{Protocol: v(1, 0), Object: v(1, 0), Master: &pb.VolumeMark{Uuid: []byte{1, 2}}},
			codes.InvalidArgument, []string{"master.uuid", "16 bytes, got 2"}},
		{"claim without a master", &pb.HandshakeRequest{Protocol: v(1, 0), Object: v(1, 0), Claim: &pb.Claim{TimeoutSeconds: 60}},
			codes.InvalidArgument, []string{"claim needs the master's volume mark"}},
		{"claim without a timeout", &pb.HandshakeRequest{Protocol: v(1, 0), Object: v(1, 0),
			Master: &pb.VolumeMark{Uuid: gfid.New().Bytes()}, Claim: &pb.Claim{}},
			codes.InvalidArgument, []string{"claim.timeout_seconds must be above 0"}},
		{"claim with a short session", &pb.HandshakeRequest{Protocol: v(1, 0), Object: v(1, 0),
			Master: &pb.VolumeMark{Uuid: gfid.New().Bytes()}, Claim: &pb.Claim{TimeoutSeconds: 60, Session: []byte{1, 2, 3}}},
			codes.InvalidArgument, []string{"claim.session is 3 bytes, want 16"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Handshake(callCtx(t), tc.req)
			wantStatus(t, err, tc.code, tc.parts...)
		})
	}
}

func TestInvalidArgument(t *testing.T) {
	c := serve(t, New(nil, Options{}), overPipe, testLogger(t, nil))
	good := gfid.New().Bytes()
	zero := make([]byte, 16)
	short := good[:15]
	tooMany := func(n int) []*pb.Entry {
		es := make([]*pb.Entry, n)
		for i := range es {
			es[i] = &pb.Entry{}
		}
		return es
	}
	tests := []struct {
		name  string
		call  func(ctx context.Context) error
		parts []string
	}{
		{"xtime short gfid", func(ctx context.Context) error {
			_, err := c.Xtime(ctx, &pb.XtimeRequest{MasterUuid: good, Gfid: short})
			return err
		}, []string{"gfid: gfid must be 16 bytes, got 15"}},
		{"xtime zero gfid", func(ctx context.Context) error {
			_, err := c.Xtime(ctx, &pb.XtimeRequest{MasterUuid: good, Gfid: zero})
			return err
		}, []string{"gfid: gfid must not be all zero"}},
		{"stime missing uuid", func(ctx context.Context) error {
			_, err := c.Stime(ctx, &pb.StimeRequest{})
			return err
		}, []string{"master_uuid: volume uuid: gfid must be 16 bytes, got 0"}},
		{"set stime without time", func(ctx context.Context) error {
			_, err := c.SetStime(ctx, &pb.SetStimeRequest{MasterUuid: good})
			return err
		}, []string{"stime is required"}},
		{"set stime nsec out of range", func(ctx context.Context) error {
			_, err := c.SetStime(ctx, &pb.SetStimeRequest{MasterUuid: good, Stime: &pb.Timestamp{Sec: 1, Nsec: 1e9}})
			return err
		}, []string{"stime: nsec must be below 1,000,000,000, got 1000000000"}},
		{"set xtime zero master", func(ctx context.Context) error {
			_, err := c.SetXtime(ctx, &pb.SetXtimeRequest{MasterUuid: zero, Gfid: good, Xtime: &pb.Timestamp{}})
			return err
		}, []string{"master_uuid", "all zero"}},
		{"keep-alive mark without timeout", func(ctx context.Context) error {
			_, err := c.KeepAlive(ctx, &pb.KeepAliveRequest{Mark: &pb.VolumeMark{Uuid: good}})
			return err
		}, []string{"timeout_seconds must be above 0"}},
		{"keep-alive mark with bad uuid", func(ctx context.Context) error {
			_, err := c.KeepAlive(ctx, &pb.KeepAliveRequest{Mark: &pb.VolumeMark{Uuid: short}, TimeoutSeconds: 60})
			return err
		}, []string{"mark.uuid"}},
		{"entries without gfid", func(ctx context.Context) error {
			_, err := c.Entries(ctx, &pb.EntriesRequest{})
			return err
		}, []string{"gfid: gfid must be 16 bytes, got 0"}},
		{"lstat with both addresses", func(ctx context.Context) error {
			_, err := c.Lstat(ctx, &pb.LstatRequest{Gfid: good, ParentGfid: good, Name: []byte("a")})
			return err
		}, []string{"not both"}},
		{"lstat with no address", func(ctx context.Context) error {
			_, err := c.Lstat(ctx, &pb.LstatRequest{})
			return err
		}, []string{"is required"}},
		{"lstat name without parent", func(ctx context.Context) error {
			_, err := c.Lstat(ctx, &pb.LstatRequest{Name: []byte("a")})
			return err
		}, []string{"parent_gfid"}},
		{"gfid without name", func(ctx context.Context) error {
			_, err := c.Gfid(ctx, &pb.GfidRequest{ParentGfid: good})
			return err
		}, []string{"name is required"}},
		{"purge empty name", func(ctx context.Context) error {
			_, err := c.Purge(ctx, &pb.PurgeRequest{ParentGfid: good, Names: [][]byte{[]byte("a"), nil}})
			return err
		}, []string{"names[1] is required"}},
		{"purge too many names", func(ctx context.Context) error {
			_, err := c.Purge(ctx, &pb.PurgeRequest{ParentGfid: good, Names: make([][]byte, MaxBatch+1)})
			return err
		}, []string{"names: 100001 items", "at most 100000"}},
		{"entry ops batch too large", func(ctx context.Context) error {
			_, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: tooMany(MaxBatch + 1)})
			return err
		}, []string{"entries: 100001 items", "split the batch"}},
		{"meta ops batch too large", func(ctx context.Context) error {
			es := make([]*pb.MetaEntry, MaxBatch+1)
			for i := range es {
				es[i] = &pb.MetaEntry{}
			}
			_, err := c.MetaOps(ctx, &pb.MetaOpsRequest{Entries: es})
			return err
		}, []string{"entries: 100001 items"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantStatus(t, tc.call(callCtx(t)), codes.InvalidArgument, tc.parts...)
		})
	}
}

func TestHealth(t *testing.T) {
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			hc := healthpb.NewHealthClient(dial(t, New(nil, Options{}), tr, testLogger(t, nil)))
			for _, svc := range []string{"", "georep.v1.Slave"} {
				resp, err := hc.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: svc})
				if err != nil {
					t.Fatalf("check %q: %v", svc, err)
				}
				if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
					t.Errorf("check %q = %v, want SERVING", svc, resp.GetStatus())
				}
			}
			_, err := hc.Check(callCtx(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
			wantStatus(t, err, codes.NotFound)
		})
	}
}

func TestReflection(t *testing.T) {
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			rc := reflectionpb.NewServerReflectionClient(dial(t, New(nil, Options{}), tr, testLogger(t, nil)))
			stream, err := rc.ServerReflectionInfo(callCtx(t))
			if err != nil {
				t.Fatalf("open reflection stream: %v", err)
			}
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
			}); err != nil {
				t.Fatalf("send list services: %v", err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("receive list services: %v", err)
			}
			got := map[string]bool{}
			for _, s := range resp.GetListServicesResponse().GetService() {
				got[s.GetName()] = true
			}
			for _, want := range []string{"georep.v1.Slave", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
				if !got[want] {
					t.Errorf("reflection does not list %s; it lists %v", want, got)
				}
			}
			// grpcurl describes a service by asking for its file.
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "georep.v1.Slave"},
			}); err != nil {
				t.Fatalf("send file containing symbol: %v", err)
			}
			resp, err = stream.Recv()
			if err != nil {
				t.Fatalf("receive file containing symbol: %v", err)
			}
			if n := len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()); n == 0 {
				t.Errorf("no file descriptor for georep.v1.Slave: %v", resp.GetErrorResponse())
			}
			if err := stream.CloseSend(); err != nil {
				t.Fatalf("close reflection stream: %v", err)
			}
		})
	}
}

func TestKeepAliveCounts(t *testing.T) {
	svc := New(nil, Options{})
	c := serve(t, svc, overPipe, testLogger(t, nil))
	for want := uint64(1); want <= 3; want++ {
		resp, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{})
		if err != nil {
			t.Fatalf("keep-alive %d: %v", want, err)
		}
		if resp.GetCount() != want {
			t.Fatalf("keep-alive count = %d, want %d", resp.GetCount(), want)
		}
	}
	// A refused keep-alive is not counted.
	_, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{Mark: &pb.VolumeMark{Uuid: gfid.New().Bytes()}})
	wantStatus(t, err, codes.InvalidArgument)
	if got := svc.KeepAlives(); got != 3 {
		t.Fatalf("KeepAlives() = %d, want 3", got)
	}
	// Each Service counts for itself.
	if got := New(nil, Options{}).KeepAlives(); got != 0 {
		t.Fatalf("a fresh Service counts %d keep-alives, want 0", got)
	}
}

// TestHandshakeClaim: a Handshake with a claim records the master's mark
// as a KeepAlive would, and counts as its first keep-alive; a second
// master's claim is refused with the holder named and records nothing.
func TestHandshakeClaim(t *testing.T) {
	b, _ := openBackend(t)
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	svc := New(b, Options{Now: clock.Now})
	c := serve(t, svc, overPipe, testLogger(t, nil))
	hello := func(holder string, force bool) (*pb.HandshakeResponse, *pb.VolumeMark) {
		t.Helper()
		m := &pb.VolumeMark{Uuid: gfid.New().Bytes(), Version: &pb.Version{Major: 1}, Holder: holder}
		resp, err := c.Handshake(callCtx(t), &pb.HandshakeRequest{
			Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor},
			Master: m, Claim: &pb.Claim{TimeoutSeconds: 60, Force: force}})
		if err != nil {
			t.Fatalf("handshake of %s: %v", holder, err)
		}
		return resp, m
	}
	foreign := func() []string {
		t.Helper()
		info, err := c.VolumeInfo(callCtx(t), &pb.VolumeInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var hs []string
		for _, m := range info.GetForeign() {
			hs = append(hs, fmt.Sprintf("%s@%d", m.GetHolder(), m.GetExpires().GetSec()))
		}
		return hs
	}

	resp, _ := hello("a:/data", false)
	if !resp.GetClaim().GetClaimed() || len(resp.GetClaim().GetOthers()) != 0 {
		t.Fatalf("first claim: %v, want claimed with no other holder", resp.GetClaim())
	}
	if got, want := foreign(), []string{"a:/data@1800000060"}; !slices.Equal(got, want) {
		t.Fatalf("marks after the first claim: %v, want %v", got, want)
	}
	if got := svc.KeepAlives(); got != 1 {
		t.Errorf("KeepAlives() after a claim = %d, want 1", got)
	}

	clock.Advance(time.Second)
	resp, _ = hello("b:/data", false)
	if resp.GetClaim().GetClaimed() || len(resp.GetClaim().GetOthers()) != 1 || resp.GetClaim().GetOthers()[0].GetHolder() != "a:/data" {
		t.Fatalf("second claim: %v, want refused naming a:/data", resp.GetClaim())
	}
	if got, want := foreign(), []string{"a:/data@1800000060"}; !slices.Equal(got, want) {
		t.Fatalf("marks after a refused claim: %v, want %v", got, want)
	}
	if got := svc.KeepAlives(); got != 1 {
		t.Errorf("KeepAlives() after a refused claim = %d, want 1", got)
	}

	// Without a claim the Handshake says nothing of one (how a master
	// tells a slave that knows claims).
	plain, err := c.Handshake(callCtx(t), &pb.HandshakeRequest{
		Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor}})
	if err != nil || plain.GetClaim() != nil {
		t.Fatalf("handshake without a claim: %v, claim %v; want no claim result", err, plain.GetClaim())
	}
}

func TestKeepAliveForeignMark(t *testing.T) {
	b, _ := openBackend(t)
	clock := &testClock{now: time.Unix(1_800_000_000, 0)}
	c := serve(t, New(b, Options{Now: clock.Now}), overTCP, testLogger(t, nil))
	master := gfid.New()
	mark := &pb.VolumeMark{
		Uuid:    master.Bytes(),
		Version: &pb.Version{Major: 1},
		Mark:    &pb.Timestamp{Sec: 1_799_999_000, Nsec: 5},
		Holder:  "master-host:/data",
	}
	if _, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{Mark: mark, TimeoutSeconds: 60}); err != nil {
		t.Fatalf("keep-alive with mark: %v", err)
	}

	tests := []struct {
		name    string
		advance time.Duration
		present bool
	}{
		{"just recorded", 0, true},
		{"before expiry", 59 * time.Second, true},
		{"after expiry", 2 * time.Second, false},
	}
	for _, tc := range tests {
		clock.Advance(tc.advance)
		info, err := c.VolumeInfo(callCtx(t), &pb.VolumeInfoRequest{})
		if err != nil {
			t.Fatalf("%s: volume info: %v", tc.name, err)
		}
		if _, err := gfid.FromBytes(info.GetNative().GetUuid()); err != nil {
			t.Errorf("%s: native mark uuid: %v", tc.name, err)
		}
		var found *pb.VolumeMark
		for _, m := range info.GetForeign() {
			if bytes.Equal(m.GetUuid(), master.Bytes()) {
				found = m
			}
		}
		if (found != nil) != tc.present {
			t.Fatalf("%s: foreign mark present = %v, want %v (foreign marks: %v)", tc.name, found != nil, tc.present, info.GetForeign())
		}
		if found == nil {
			continue
		}
		if found.GetHolder() != mark.GetHolder() {
			t.Errorf("%s: holder = %q, want %q", tc.name, found.GetHolder(), mark.GetHolder())
		}
		if want := int64(1_800_000_060); found.GetExpires().GetSec() != want {
			t.Errorf("%s: expires = %d, want %d (now + timeout)", tc.name, found.GetExpires().GetSec(), want)
		}
	}
}

func TestWatchKeepAlive(t *testing.T) {
	const timeout = 300 * time.Millisecond
	svc := New(nil, Options{})
	c := serve(t, svc, overPipe, testLogger(t, nil))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan error, 1)
	go func() { watched <- svc.WatchKeepAlive(ctx, timeout) }()

	// Keep-alives arriving well within the timeout keep the session for
	// several timeouts' worth of time.
	tick := time.NewTicker(timeout / 6)
	defer tick.Stop()
	keepUntil := time.Now().Add(4 * timeout)
	for time.Now().Before(keepUntil) {
		if _, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{}); err != nil {
			t.Fatalf("keep-alive: %v", err)
		}
		select {
		case err := <-watched:
			t.Fatalf("session ended while keep-alives were arriving: %v", err)
		case <-tick.C:
		}
	}

	// Then silence ends the session.
	stopped := time.Now()
	select {
	case err := <-watched:
		var kt *KeepAliveTimeoutError
		if !errors.As(err, &kt) {
			t.Fatalf("watcher returned %v, want a *KeepAliveTimeoutError", err)
		}
		if want := "no keep-alive from the master for 300ms; ending session"; err.Error() != want {
			t.Fatalf("message = %q, want %q", err.Error(), want)
		}
		if waited := time.Since(stopped); waited > 10*timeout {
			t.Errorf("session ended %v after the last keep-alive, want about %v", waited, timeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session did not end after keep-alives stopped")
	}
}

func TestWatchKeepAliveStopsWithContext(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		wantErr bool
	}{
		{"cancelled before the timeout", time.Hour, false},
		{"zero timeout refused", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := New(nil, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- svc.WatchKeepAlive(ctx, tc.timeout) }()
			cancel()
			select {
			case err := <-done:
				if (err != nil) != tc.wantErr {
					t.Fatalf("WatchKeepAlive = %v, want error: %v", err, tc.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("WatchKeepAlive did not return after its context was cancelled")
			}
		})
	}
}

func TestPanicRecovered(t *testing.T) {
	logs := &testbuf.Buffer{}
	// A test-only interceptor, chained inside logging and recovery, panics
	// on VolumeInfo as a buggy handler would.
	panicky := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if info.FullMethod == pb.Slave_VolumeInfo_FullMethodName {
			panic("boom in VolumeInfo")
		}
		return h(ctx, req)
	})
	c := serve(t, New(nil, Options{}), overPipe, testLogger(t, logs), panicky)

	for i := range 2 {
		_, err := c.VolumeInfo(callCtx(t), &pb.VolumeInfoRequest{})
		wantStatus(t, err, codes.Internal, "boom in VolumeInfo", pb.Slave_VolumeInfo_FullMethodName)
		// The server (and this very connection) keeps serving.
		resp, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{})
		if err != nil {
			t.Fatalf("keep-alive after panic %d: %v", i, err)
		}
		if resp.GetCount() != uint64(i+1) {
			t.Fatalf("keep-alive count = %d, want %d", resp.GetCount(), i+1)
		}
	}
	got := logs.String()
	for _, want := range []string{"panic in gRPC handler", "boom in VolumeInfo", "goroutine", "level=ERROR"} {
		if !strings.Contains(got, want) {
			t.Errorf("logs lack %q:\n%s", want, got)
		}
	}
}

func TestCallLogLevels(t *testing.T) {
	logs := &testbuf.Buffer{}
	logger := testLogger(t, logs)
	c := serve(t, New(nil, Options{}), overTCP, logger)
	if _, err := c.KeepAlive(callCtx(t), &pb.KeepAliveRequest{}); err != nil {
		t.Fatalf("keep-alive: %v", err)
	}
	_, err := c.Stime(callCtx(t), &pb.StimeRequest{})
	wantStatus(t, err, codes.InvalidArgument)

	// The log line of a finished call is written before the response, so
	// both lines are there now.
	lines := strings.Split(logs.String(), "\n")
	tests := []struct {
		method, level string
	}{
		{"KeepAlive", "level=DEBUG"},
		{"Stime", "level=INFO"},
	}
	for _, tc := range tests {
		found := false
		for _, l := range lines {
			if strings.Contains(l, "grpc.method="+tc.method) && strings.Contains(l, "finished call") {
				found = true
				if !strings.Contains(l, tc.level) {
					t.Errorf("%s logged as %q, want %s", tc.method, l, tc.level)
				}
			}
		}
		if !found {
			t.Errorf("no finished-call log line for %s in:\n%s", tc.method, logs.String())
		}
	}
}

func TestStatusFromBackend(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{syscall.ENOENT, codes.NotFound},
		{fmt.Errorf("open a/b: %w", syscall.EINVAL), codes.InvalidArgument},
		{&os.PathError{Op: "openat2", Path: "x", Err: syscall.ENAMETOOLONG}, codes.InvalidArgument},
		{syscall.EPERM, codes.PermissionDenied},
		{syscall.EACCES, codes.PermissionDenied},
		{syscall.EEXIST, codes.AlreadyExists},
		{syscall.ENOTDIR, codes.FailedPrecondition},
		{syscall.EISDIR, codes.FailedPrecondition},
		{syscall.ENOTEMPTY, codes.FailedPrecondition},
		{syscall.ENOSPC, codes.ResourceExhausted},
		{syscall.EIO, codes.Internal},
		{errors.New("index corrupt"), codes.Internal},
		{fmt.Errorf("list: %w", context.Canceled), codes.Canceled},
		{status.Error(codes.Unavailable, "already a status"), codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			got := statusFromBackend(tc.err)
			// The backend's words reach the master unchanged.
			want := tc.err.Error()
			if st, ok := status.FromError(tc.err); ok {
				want = st.Message()
			}
			wantStatus(t, got, tc.code, want)
		})
	}
	if statusFromBackend(nil) != nil {
		t.Fatal("statusFromBackend(nil) is not nil")
	}
}

func TestEntryOpsOverGRPC(t *testing.T) {
	for _, tr := range transports() {
		t.Run(string(tr), func(t *testing.T) {
			b, dir := openBackend(t)
			c := serve(t, New(b, Options{}), tr, testLogger(t, nil))
			d, f := gfid.New(), gfid.New()
			resp, err := c.EntryOps(callCtx(t), &pb.EntryOpsRequest{Entries: []*pb.Entry{
				{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: d.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("dir"), Stat: dirStat(0o755)},
				{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: f.Bytes(), ParentGfid: d.Bytes(), Name: []byte("file"), Stat: regStat(0o644)},
				// A hostile entry fails alone; the batch goes on.
				{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: gfid.New().Bytes(), ParentGfid: d.Bytes(), Name: []byte("../escape"), Stat: regStat(0o644)},
				{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: gfid.New().Bytes(), ParentGfid: d.Bytes(), Name: []byte("after"), Stat: regStat(0o600)},
			}})
			if err != nil {
				t.Fatalf("entry ops: %v", err)
			}
			wantErrno := []bool{false, false, true, false}
			if len(resp.GetResults()) != len(wantErrno) {
				t.Fatalf("%d results for %d entries", len(resp.GetResults()), len(wantErrno))
			}
			for i, r := range resp.GetResults() {
				if (r.GetErrno() != 0) != wantErrno[i] {
					t.Errorf("entry %d: errno %d (%s: %s), want failure: %v", i, r.GetErrno(), r.GetCode(), r.GetMessage(), wantErrno[i])
				}
			}
			for _, p := range []string{"dir", "dir/file", "dir/after"} {
				if _, err := os.Lstat(filepath.Join(dir, p)); err != nil {
					t.Errorf("%s not on disk: %v", p, err)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, "escape")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("an entry named ../escape made %s/escape: %v", dir, err)
			}

			got, err := c.Gfid(callCtx(t), &pb.GfidRequest{ParentGfid: d.Bytes(), Name: []byte("file")})
			if err != nil {
				t.Fatalf("gfid of dir/file: %v", err)
			}
			if !bytes.Equal(got.GetGfid(), f.Bytes()) {
				t.Errorf("gfid of dir/file = %x, want %x", got.GetGfid(), f.Bytes())
			}
			_, err = c.Lstat(callCtx(t), &pb.LstatRequest{ParentGfid: d.Bytes(), Name: []byte("missing")})
			wantStatus(t, err, codes.NotFound)
		})
	}
}
