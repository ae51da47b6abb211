package tlsconfig

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// gRPC replaces ALPN and clones configs; this checks the per-handshake config
// from GetConfigForClient still negotiates h2 (grpc-go's client insists on it)
// and that the verified identity reaches RPC handlers.
func TestGRPCOverReloader(t *testing.T) {
	p := newPKI(t, "m1", "m3")
	r, err := Server(p.serverCert(), p.serverKey(), p.ca(), []string{"m1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 4)
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(r.Config())),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			pr, ok := peer.FromContext(ctx)
			if !ok {
				return nil, status.Error(codes.Internal, "no peer")
			}
			info, ok := pr.AuthInfo.(credentials.TLSInfo)
			if !ok {
				return nil, status.Errorf(codes.Internal, "auth info is %T", pr.AuthInfo)
			}
			seen <- PeerIdentity(info.State)
			return h(ctx, req)
		}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})

	tests := []struct {
		client   string
		wantCode codes.Code
	}{
		{"m1", codes.OK},
		{"m3", codes.Unavailable},
	}
	for _, tc := range tests {
		t.Run(tc.client, func(t *testing.T) {
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(p.client(t, tc.client))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("Check: code %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.wantCode != codes.OK {
				return
			}
			select {
			case id := <-seen:
				if id != tc.client {
					t.Errorf("handler saw identity %q, want %q", id, tc.client)
				}
			default:
				t.Error("the interceptor did not run")
			}
		})
	}
}
