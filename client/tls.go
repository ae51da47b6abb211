package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	"github.com/georep/georep/internal/tlsconfig"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server"
)

// Keep-alive pings on an mTLS connection: a slave host that vanishes
// without a TCP reset (power loss, a dropped route) is noticed within
// tlsKeepaliveTime+tlsKeepaliveTimeout instead of at the kernel's TCP
// timeout. The slave tolerates pings every server.KeepaliveMinTime or
// slower, so this must stay above it.
const (
	tlsKeepaliveTime    = 20 * time.Second
	tlsKeepaliveTimeout = 10 * time.Second
)

// DialTLS connects to a `georep slave --listen` daemon at u over gRPC with
// mutual TLS 1.3 and performs the Handshake. opts.CertFile and opts.KeyFile
// are this master's certificate, opts.CAFile the CA the slave's certificate
// must chain to. When u names a volume (grpcs://host:port/NAME) every call
// carries it, so the daemon routes it to that root. Unlike ssh and local
// connections, gRPC redials a broken TCP connection itself; a Session still
// treats an Unavailable call as a broken connection and dials anew.
func DialTLS(ctx context.Context, u SlaveURL, opts Options) (*Conn, error) {
	if u.Kind != KindMTLS {
		return nil, fmt.Errorf("dial %s over mTLS: it is a %s URL; mTLS needs grpcs://host:port[/NAME]", u, u.Kind)
	}
	for _, f := range []struct{ name, value string }{
		{"a client certificate (--cert)", opts.CertFile},
		{"a client key (--key)", opts.KeyFile},
		{"the CA certificate (--ca)", opts.CAFile},
	} {
		if f.value == "" {
			return nil, fmt.Errorf("connect to slave %s: mTLS needs %s; georep certs issues them", u, f.name)
		}
	}
	cfg, err := tlsconfig.Client(opts.CertFile, opts.KeyFile, opts.CAFile, opts.ServerName)
	if err != nil {
		return nil, fmt.Errorf("connect to slave %s: %w", u, err)
	}
	return dialTLSConfig(ctx, u, opts, cfg)
}

// dialTLSConfig is DialTLS with the TLS configuration already built; tests
// use it to present certificates DialTLS would refuse to load.
func dialTLSConfig(ctx context.Context, u SlaveURL, opts Options, cfg *tls.Config) (*Conn, error) {
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(awaitVerdict{credentials.NewTLS(cfg)}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                max(tlsKeepaliveTime, server.KeepaliveMinTime),
			Timeout:             tlsKeepaliveTimeout,
			PermitWithoutStream: true,
		}),
	}
	if u.Volume != "" {
		dialOpts = append(dialOpts,
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
				return invoker(withVolume(ctx, u.Volume), method, req, reply, cc, callOpts...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, callOpts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(withVolume(ctx, u.Volume), desc, cc, method, callOpts...)
			}))
	}
	target := "dns:///" + net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	cc, err := grpc.NewClient(target, append(dialOpts, transportTuning()...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to slave %s: %w", u, err)
	}
	c := &Conn{Slave: pb.NewSlaveClient(cc), cc: cc, url: u}
	if err := c.handshake(ctx, opts); err != nil {
		_ = c.Close()
		if hint := explainTLS(err, u, cfg); hint != "" {
			return nil, fmt.Errorf("%w; %s", err, hint)
		}
		return nil, err
	}
	return c, nil
}

// verdictBuffer is how much of the slave's first record awaitVerdict reads:
// gRPC's SETTINGS frame, or an alert, fits.
const verdictBuffer = 4096

// awaitVerdict makes a TLS 1.3 refusal by the slave reach the master as the
// slave's alert. In TLS 1.3 the client's handshake is over before the server
// has checked the client's certificate, and gRPC then writes its preface at
// once; if the slave has meanwhile refused and closed, that write draws a TCP
// reset that discards the alert unread, and all the master learns is
// "broken pipe". So this reads the slave's first record before gRPC writes:
// it is the alert, or the SETTINGS frame a gRPC server sends before reading
// anything, which is handed on to gRPC untouched.
type awaitVerdict struct {
	credentials.TransportCredentials
}

func (c awaitVerdict) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(deadline)
	}
	buf := make([]byte, verdictBuffer)
	n, err := conn.Read(buf)
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("waiting for the slave to accept this master's certificate: %w", err)
	}
	return &prereadConn{Conn: conn, pending: buf[:n]}, info, nil
}

func (c awaitVerdict) Clone() credentials.TransportCredentials {
	return awaitVerdict{c.TransportCredentials.Clone()}
}

// prereadConn returns the bytes awaitVerdict read before reading on.
type prereadConn struct {
	net.Conn
	pending []byte
}

func (c *prereadConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// withVolume names the slave volume a call is for.
func withVolume(ctx context.Context, volume string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, server.VolumeHeader, volume)
}

// explainTLS says in an operator's words which side refused a failed
// connection and what to change, or "" when err says nothing it knows. The
// slave's refusal reaches the master only as a TLS alert ("remote error"),
// so the slave's own log holds the details of those.
func explainTLS(err error, u SlaveURL, cfg *tls.Config) string {
	msg := err.Error()
	hostPort := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	ours := "this master's certificate"
	if len(cfg.Certificates) > 0 && cfg.Certificates[0].Leaf != nil {
		ours = fmt.Sprintf("this master's certificate (CN=%s)", cfg.Certificates[0].Leaf.Subject.CommonName)
	}
	switch {
	// The slave refused us.
	case strings.Contains(msg, "remote error: tls: certificate required"):
		return "the slave refused the connection: it requires a client certificate; pass this master's --cert and --key (georep certs --clients NAME issues them)"
	case strings.Contains(msg, "remote error: tls: unknown certificate authority"):
		return fmt.Sprintf("the slave refused %s: it is not signed by the CA the slave trusts (the slave's --ca); issue it with georep certs from the slave's certificate directory", ours)
	case strings.Contains(msg, "remote error: tls: expired certificate"):
		return fmt.Sprintf("the slave refused %s: it has expired; issue a new one with georep certs --clients", ours)
	case strings.Contains(msg, "remote error: tls: bad certificate"):
		return fmt.Sprintf("the slave refused %s: its name is not in the slave's --allow list, or the certificate is unusable; the slave's log names the reason", ours)
	case strings.Contains(msg, "remote error: tls: protocol version not supported"):
		return "the slave refused the TLS version; georep speaks TLS 1.3 only"
	case strings.Contains(msg, "remote error: tls:"):
		return "the slave refused the TLS handshake; the slave's log names the reason"
	// We refused the slave.
	case strings.Contains(msg, "certificate signed by unknown authority"):
		return "this master refused the slave's certificate: it is not signed by the CA in this master's --ca; use the ca.crt of the slave's certificate directory"
	case strings.Contains(msg, "x509: certificate is valid for"):
		name := u.Host
		if cfg.ServerName != "" {
			name = cfg.ServerName
		}
		return fmt.Sprintf("this master refused the slave's certificate: it does not name %s; dial a name it carries, or reissue it with georep certs --server-names %s", name, name)
	case strings.Contains(msg, "x509: certificate has expired"):
		return "this master refused the slave's certificate: it has expired; reissue it with georep certs --server-names on the CA host"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Sprintf("%s does not speak TLS: is it a georep slave --listen?", hostPort)
	// Nobody there.
	case strings.Contains(msg, "connection refused"):
		return fmt.Sprintf("nothing accepts connections on %s: start georep slave --listen there, or check the host and port", hostPort)
	case strings.Contains(msg, "no such host"):
		return fmt.Sprintf("the slave host name %s does not resolve", u.Host)
	case strings.Contains(msg, "no route to host") || strings.Contains(msg, "i/o timeout") || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("cannot reach %s: check the network path and firewalls", hostPort)
	}
	return ""
}
