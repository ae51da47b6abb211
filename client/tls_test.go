package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/certs"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// TestDialTLSRefused: each way a connection can be refused is reported
// with the side that refused and what to change.
func TestDialTLSRefused(t *testing.T) {
	pki := newMTLSPKI(t)
	other := newMTLSPKI(t) // another CA, with its own m1
	d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1", "--root", t.TempDir())...)
	u := d.url(t, "")

	caPEM, err := os.ReadFile(pki.path(certs.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	closedURL := SlaveURL{Kind: KindMTLS, Host: "127.0.0.1", Port: closed}

	sshURL, err := ParseSlaveURL("ssh://host/srv")
	if err != nil {
		t.Fatal(err)
	}
	m1 := pki.clientOptions("m1")
	withCA := func(o Options, ca string) Options { o.CAFile = ca; return o }
	withName := func(o Options, n string) Options { o.ServerName = n; return o }

	tests := []struct {
		name string
		url  SlaveURL
		opts Options
		// cfg, when set, is used instead of loading opts' files.
		cfg       *tls.Config
		want      []string
		slaveLogs string
	}{
		{name: "no client certificate", url: u, cfg: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots},
			want: []string{"the slave refused the connection: it requires a client certificate", "certificate required"}},
		{name: "certificate from another CA", url: u,
			opts: withCA(other.clientOptions("m1"), pki.path(certs.CACertFile)),
			want: []string{"the slave refused this master's certificate (CN=m1): it is not signed by the CA the slave trusts", "unknown certificate authority"}},
		{name: "not on the allow-list", url: u, opts: pki.clientOptions("m2"),
			want:      []string{"the slave refused this master's certificate (CN=m2): its name is not in the slave's --allow list", "bad certificate"},
			slaveLogs: "client certificate CN=m2 is not in the allow-list [m1]"},
		{name: "master does not trust the slave", url: u, opts: withCA(m1, other.path(certs.CACertFile)),
			want: []string{"this master refused the slave's certificate: it is not signed by the CA in this master's --ca"}},
		{name: "slave certificate names another host", url: u, opts: withName(m1, "slave.example.com"),
			want: []string{"this master refused the slave's certificate: it does not name slave.example.com"}},
		{name: "nothing listening", url: closedURL, opts: m1,
			want: []string{"nothing accepts connections on 127.0.0.1:" + strconv.Itoa(closed)}},
		{name: "no certificate file", url: u, opts: Options{KeyFile: m1.KeyFile, CAFile: m1.CAFile},
			want: []string{"mTLS needs a client certificate (--cert); georep certs issues them"}},
		{name: "unreadable certificate file", url: u, opts: Options{CertFile: filepath.Join(t.TempDir(), "none.crt"), KeyFile: m1.KeyFile, CAFile: m1.CAFile},
			want: []string{"unable to read the client certificate"}},
		{name: "not an mTLS URL", url: sshURL, opts: m1, want: []string{"it is a ssh URL; mTLS needs grpcs://host:port[/NAME]"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var c *Conn
			var err error
			if tc.cfg != nil {
				c, err = dialTLSConfig(ctx, tc.url, tc.opts, tc.cfg)
			} else {
				c, err = DialTLS(ctx, tc.url, tc.opts)
			}
			if err == nil {
				c.Close()
				t.Fatalf("dial succeeded, want a refusal")
			}
			t.Logf("refused: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
			if tc.slaveLogs != "" {
				mtlsPoll(t, 10*time.Second, "slave logs the refusal", func() bool {
					return strings.Contains(d.stderr.String(), tc.slaveLogs)
				})
			}
		})
	}
}

// servedSerial makes a fresh TLS connection, as master m1, and returns the
// serial number of the certificate the slave presented.
func servedSerial(t *testing.T, addr string, pki mtlsPKI) *big.Int {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.path("m1.crt"), pki.path("m1.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(pki.path(certs.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// fileSerial is the serial number of the server certificate on disk.
func fileSerial(t *testing.T, pki mtlsPKI) *big.Int {
	t.Helper()
	data, err := os.ReadFile(pki.path(certs.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := certs.ParseCertificatePEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// TestTLSCertificateRotation: a re-issued server certificate is served to
// new connections without restarting the slave, found by the file poll or
// on SIGHUP, and a connection made before the rotation keeps working.
func TestTLSCertificateRotation(t *testing.T) {
	tests := []struct {
		name     string
		interval string
		sighup   bool
	}{
		{"file poll", "100ms", false},
		{"SIGHUP", "1h", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pki := newMTLSPKI(t)
			d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1", "--root", t.TempDir(), "--reload-interval", tc.interval)...)
			before, err := DialTLS(mtlsCtx(t), d.url(t, ""), pki.clientOptions("m1"))
			if err != nil {
				t.Fatalf("dial before rotation: %v", err)
			}
			defer before.Close()
			oldSerial := fileSerial(t, pki)
			if got := servedSerial(t, d.addr, pki); got.Cmp(oldSerial) != 0 {
				t.Fatalf("slave serves serial %x, want the file's %x", got, oldSerial)
			}

			if err := certs.Generate(pki.dir, []string{"127.0.0.1", "rotated.example"}, nil); err != nil {
				t.Fatalf("re-issue the server certificate: %v", err)
			}
			newSerial := fileSerial(t, pki)
			if newSerial.Cmp(oldSerial) == 0 {
				t.Fatal("re-issued certificate kept its serial")
			}
			if tc.sighup {
				// With an hour between polls, only the signal can load it.
				if got := servedSerial(t, d.addr, pki); got.Cmp(oldSerial) != 0 {
					t.Fatalf("slave serves %x before SIGHUP, want still the old %x", got, oldSerial)
				}
				d.signal(t, syscall.SIGHUP)
			}
			mtlsPoll(t, 20*time.Second, "new connections get the rotated certificate", func() bool {
				return servedSerial(t, d.addr, pki).Cmp(newSerial) == 0
			})

			if _, err := before.Slave.KeepAlive(mtlsCtx(t), &pb.KeepAliveRequest{}); err != nil {
				t.Errorf("connection made before the rotation broke: %v", err)
			}
			after, err := DialTLS(mtlsCtx(t), d.url(t, ""), pki.clientOptions("m1"))
			if err != nil {
				t.Fatalf("dial after rotation: %v", err)
			}
			after.Close()
			if !strings.Contains(d.stderr.String(), `msg="certificate loaded"`) {
				t.Errorf("slave did not log the reload")
			}
		})
	}
}

// TestMTLSVolumes: one daemon serves two roots by name; writes through
// grpcs://host:port/NAME land in NAME's root, and a missing or unknown
// name is refused with the served names listed.
func TestMTLSVolumes(t *testing.T) {
	pki := newMTLSPKI(t)
	roots := map[string]string{"alpha": t.TempDir(), "beta": t.TempDir()}
	d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1",
		"--volume", "alpha="+roots["alpha"], "--volume", "beta="+roots["beta"])...)

	for _, name := range []string{"alpha", "beta"} {
		t.Run(name, func(t *testing.T) {
			c, err := DialTLS(mtlsCtx(t), d.url(t, name), pki.clientOptions("m1"))
			if err != nil {
				t.Fatalf("dial %s: %v", name, err)
			}
			defer c.Close()
			if c.Info.GetRoot() != roots[name] {
				t.Errorf("handshake root = %q, want %q", c.Info.GetRoot(), roots[name])
			}
			resp, err := c.Slave.EntryOps(mtlsCtx(t), &pb.EntryOpsRequest{Entries: []*pb.Entry{
				{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: gfid.New().Bytes(), ParentGfid: gfid.Root.Bytes(),
					Name: []byte("written-to-" + name), Stat: &pb.Stat{Mode: 0o40755}},
			}})
			if err != nil {
				t.Fatalf("EntryOps: %v", err)
			}
			if r := resp.GetResults()[0]; r.GetErrno() != 0 {
				t.Fatalf("mkdir: %s", r.GetMessage())
			}
		})
	}
	for name, root := range roots {
		for other := range roots {
			_, err := os.Lstat(filepath.Join(root, "written-to-"+other))
			if present := err == nil; present != (name == other) {
				t.Errorf("%s's root holds written-to-%s: %v, want %v", name, other, present, name == other)
			}
		}
	}

	tests := []struct {
		name   string
		volume string
		code   codes.Code
		want   string
	}{
		{"no name", "", codes.InvalidArgument, "this slave serves several volumes (alpha, beta): name one in the slave URL"},
		{"unknown name", "gamma", codes.NotFound, `this slave serves no volume "gamma"; it serves: alpha, beta`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DialTLS(mtlsCtx(t), d.url(t, tc.volume), pki.clientOptions("m1"))
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded, want a refusal")
			}
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (code %v), want code %v containing %q", err, status.Code(err), tc.code, tc.want)
			}
		})
	}
}

// TestSessionReconnectsAfterTLSSlaveRestarted: the daemon is SIGKILLed in
// the middle of a stream of batches and restarted on the same port once
// the session has noticed (turned Faulty); the session reconnects and
// every batch lands.
func TestSessionReconnectsAfterTLSSlaveRestarted(t *testing.T) {
	pki := newMTLSPKI(t)
	root := t.TempDir()
	args := append(pki.serverArgs(), "--allow", "m1", "--root", root)
	d := startListenSlave(t, "127.0.0.1:0", args...)
	u := d.url(t, "")

	var mu sync.Mutex
	var states []State
	var killed bool
	var restarted sync.WaitGroup
	defer restarted.Wait()
	var restartOnce sync.Once
	restart := func() {
		// Restart only after the session saw the slave gone; otherwise
		// gRPC's own redial could hide the outage from the session.
		restartOnce.Do(func() {
			restarted.Go(func() {
				r, err := launchListenSlave(t, d.addr, args...)
				if err != nil {
					t.Errorf("restart the slave: %v", err)
				} else if r.addr != d.addr {
					t.Errorf("restarted slave listens on %s, want %s", r.addr, d.addr)
				}
			})
		})
	}
	s := NewSession(func(ctx context.Context) (*Conn, error) {
		return DialTLS(ctx, u, pki.clientOptions("m1"))
	}, SessionOptions{Master: masterMark("tls-master"), BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		OnState: func(st State, _ error) {
			mu.Lock()
			states = append(states, st)
			k := killed
			mu.Unlock()
			if st == StateFaulty && k {
				restart()
			}
		}})
	defer s.Close()
	replayWithFault(t, s, root, func(*Conn) {
		mu.Lock()
		killed = true
		mu.Unlock()
		d.kill()
	})
	restarted.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !containsState(states, StateFaulty) {
		t.Errorf("states %v never showed Faulty", states)
	}
}
