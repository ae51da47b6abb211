package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/internal/certs"
)

func TestServerAuthorizesClients(t *testing.T) {
	ours := newPKI(t, "m1", "m2", "m3")
	other := newPKI(t, "m1") // same client name, different CA

	otherCACert := func(t *testing.T) *tls.Config {
		// Presents other's m1 but trusts our CA, so only the server can object.
		cfg, err := Client(other.path("m1.crt"), other.path("m1.key"), ours.ca(), "localhost")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	noCert := func(t *testing.T) *tls.Config {
		cfg := ours.client(t, "m1")
		cfg.Certificates = nil
		return cfg
	}
	distrustsServer := func(t *testing.T) *tls.Config {
		// Our m1 trusting only the other CA: the client must refuse our server.
		cfg, err := Client(ours.path("m1.crt"), ours.path("m1.key"), other.ca(), "localhost")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	wrongServerName := func(t *testing.T) *tls.Config {
		cfg := ours.client(t, "m1")
		cfg.ServerName = "elsewhere.example"
		return cfg
	}

	tests := []struct {
		name      string
		allow     []string
		client    func(*testing.T) *tls.Config
		wantID    string // identity the server saw, when admitted
		serverErr string // substring of the server's handshake error, when refused
		clientErr string // substring of the client's error, when refused
		notAllow  bool   // server error wraps ErrNotAllowed
	}{
		{name: "allowed m1", allow: []string{"m1", "m2"}, client: func(t *testing.T) *tls.Config { return ours.client(t, "m1") }, wantID: "m1"},
		{name: "allowed m2", allow: []string{"m2", "m1"}, client: func(t *testing.T) *tls.Config { return ours.client(t, "m2") }, wantID: "m2"},
		{
			name: "off the allow-list", allow: []string{"m2", "m1", "m1"},
			client:    func(t *testing.T) *tls.Config { return ours.client(t, "m3") },
			serverErr: "client certificate CN=m3 is not in the allow-list [m1 m2]",
			clientErr: "bad certificate", notAllow: true,
		},
		{
			name: "no client certificate", allow: []string{"m1"}, client: noCert,
			serverErr: "client didn't provide a certificate", clientErr: "certificate required",
		},
		{
			name: "certificate from another CA", allow: []string{"m1"}, client: otherCACert,
			serverErr: "certificate signed by unknown authority", clientErr: "unknown certificate authority",
		},
		{name: "empty allow-list admits any CA-signed client", client: func(t *testing.T) *tls.Config { return ours.client(t, "m3") }, wantID: "m3"},
		{
			name: "empty allow-list still refuses another CA", client: otherCACert,
			serverErr: "certificate signed by unknown authority", clientErr: "unknown certificate authority",
		},
		{
			name: "empty allow-list still refuses no certificate", client: noCert,
			serverErr: "client didn't provide a certificate", clientErr: "certificate required",
		},
		{
			name: "client refuses a server from another CA", client: distrustsServer,
			serverErr: "bad certificate", clientErr: "certificate signed by unknown authority",
		},
		{
			name: "client refuses a server certificate for another name", client: wrongServerName,
			serverErr: "bad certificate", clientErr: "elsewhere.example",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newLogger()
			r, err := Server(ours.serverCert(), ours.serverKey(), ours.ca(), tc.allow, logger)
			if err != nil {
				t.Fatal(err)
			}
			srv := startServer(t, r)
			res := srv.dial(t, tc.client(t))

			if tc.serverErr == "" {
				if res.err != nil || res.server.err != nil {
					t.Fatalf("refused: client error %v, server error %v", res.err, res.server.err)
				}
				if res.server.identity != tc.wantID {
					t.Errorf("server saw identity %q, want %q", res.server.identity, tc.wantID)
				}
				if want := "hello " + tc.wantID + "\n"; res.reply != want {
					t.Errorf("reply %q, want %q", res.reply, want)
				}
				return
			}
			if res.err == nil || !strings.Contains(res.err.Error(), tc.clientErr) {
				t.Errorf("client error = %s, want one containing %q", errText(res.err), tc.clientErr)
			}
			if res.server.err == nil || !strings.Contains(res.server.err.Error(), tc.serverErr) {
				t.Errorf("server error = %s, want one containing %q", errText(res.server.err), tc.serverErr)
			}
			if got := isNotAllowed(res.server.err); got != tc.notAllow {
				t.Errorf("errors.Is(server error, ErrNotAllowed) = %v, want %v", got, tc.notAllow)
			}
			if tc.notAllow && logs.count("refused a client certificate") != 1 {
				t.Errorf("refusal not logged once; log:\n%s", logs)
			}
		})
	}
}

// A resumed session is authorized again, and a session ticket does not
// outlive a change of CA.
func TestResumedSessions(t *testing.T) {
	ours := newPKI(t, "m1")
	next := newPKI(t, "m1") // the CA everything is rotated to
	logger, _ := newLogger()
	r, err := Server(ours.serverCert(), ours.serverKey(), ours.ca(), []string{"m1"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, r)

	cfg := ours.client(t, "m1")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	// Trust both CAs so that only the server's judgement is tested below.
	if !cfg.RootCAs.AppendCertsFromPEM(readFile(t, next.ca())) {
		t.Fatal("no certificate in the next CA file")
	}

	for i, wantResumed := range []bool{false, true} {
		res := srv.dial(t, cfg)
		if res.err != nil || res.server.err != nil {
			t.Fatalf("connection %d refused: client %v, server %v", i, res.err, res.server.err)
		}
		if res.server.resumed != wantResumed {
			t.Errorf("connection %d resumed = %v, want %v", i, res.server.resumed, wantResumed)
		}
		if res.server.identity != "m1" {
			t.Errorf("connection %d identity %q, want m1", i, res.server.identity)
		}
	}

	// Rotate to the next CA with its server certificate; the cached ticket
	// was issued to a certificate of the old CA.
	for _, f := range []string{certs.ServerKeyFile, certs.ServerCertFile, certs.CACertFile} {
		replaceFile(t, ours.path(f), readFile(t, next.path(f)))
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	res := srv.dial(t, cfg)
	if res.err == nil || res.server.err == nil || !strings.Contains(res.server.err.Error(), "unknown authority") {
		t.Fatalf("old-CA client after CA rotation: client %s, server %s; want refused as unknown authority", errText(res.err), errText(res.server.err))
	}
	if res := srv.dial(t, next.client(t, "m1")); res.err != nil || res.server.err != nil || res.server.identity != "m1" {
		t.Fatalf("new-CA client refused: client %v, server %v", res.err, res.server.err)
	}
}

func TestReloadServesNewCertificateToNewConnections(t *testing.T) {
	p := newPKI(t, "m1")
	logger, logs := newLogger()
	r, err := Server(p.serverCert(), p.serverKey(), p.ca(), []string{"m1"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, r)
	client := p.client(t, "m1")
	servedSerial := func() string {
		t.Helper()
		res := srv.dial(t, client)
		if res.err != nil || res.server.err != nil {
			t.Fatalf("refused: client %v, server %v", res.err, res.server.err)
		}
		return res.serial.String()
	}

	first := serialOf(t, p.serverCert()).String()
	if got := servedSerial(); got != first {
		t.Fatalf("serving serial %s, want %s", got, first)
	}

	// Connections made before the new certificate is loaded get the old one;
	// nothing watches the files without Run.
	second := p.reissueServer(t, "localhost", "127.0.0.1", "slave2.example").String()
	if second == first {
		t.Fatal("reissued certificate has the same serial")
	}
	if got := servedSerial(); got != first {
		t.Fatalf("before Reload: serving serial %s, want the old %s", got, first)
	}
	// Established connections keep working across a reload.
	held, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", srv.addr, client)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	select {
	case <-srv.results: // the held connection's report, so later dials get their own
	case <-time.After(ioTimeout):
		t.Fatal("the server reported no handshake for the held connection")
	}
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := servedSerial(); got != second {
		t.Fatalf("after Reload: serving serial %s, want %s", got, second)
	}
	if !strings.Contains(logs.String(), "certificate loaded") {
		t.Errorf("reload not logged; log:\n%s", logs)
	}
	held.SetDeadline(time.Now().Add(ioTimeout))
	line := make([]byte, len("hello m1\n"))
	if _, err := held.Read(line); err != nil || string(line) != "hello m1\n" {
		t.Errorf("connection made before the reload: read %q, %v", line, err)
	}

	// The poll loop picks up the next rotation by itself and stops with ctx.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, 20*time.Millisecond)
	}()
	third := p.reissueServer(t, "localhost", "127.0.0.1").String()
	waitFor(t, "the poll to serve the reissued certificate", func() bool { return servedSerial() == third })
	cancel()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

func TestFailedReloadKeepsServing(t *testing.T) {
	p := newPKI(t, "m1")
	stranger := newPKI(t)
	logger, logs := newLogger()
	r, err := Server(p.serverCert(), p.serverKey(), p.ca(), nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, r)
	good := serialOf(t, p.serverCert()).String()
	client := p.client(t, "m1") // before the CA file is broken below
	originals := map[string][]byte{}
	for _, f := range []string{p.serverCert(), p.serverKey(), p.ca()} {
		originals[f] = readFile(t, f)
	}

	tests := []struct {
		name       string
		breakFiles func(t *testing.T)
		wantErr    string
	}{
		{"garbage certificate", func(t *testing.T) { replaceFile(t, p.serverCert(), []byte("not a certificate\n")) }, "unable to load the key pair"},
		{"truncated certificate", func(t *testing.T) {
			replaceFile(t, p.serverCert(), originals[p.serverCert()][:len(originals[p.serverCert()])/2])
		}, "unable to load the key pair"},
		{"key of another certificate", func(t *testing.T) { replaceFile(t, p.serverKey(), readFile(t, p.path("m1.key"))) }, "private key does not match public key"},
		{"client certificate as server certificate", func(t *testing.T) {
			replaceFile(t, p.serverKey(), readFile(t, p.path("m1.key")))
			replaceFile(t, p.serverCert(), readFile(t, p.path("m1.crt")))
		}, "is not a server certificate"},
		{"empty CA", func(t *testing.T) { replaceFile(t, p.ca(), nil) }, "is empty"},
		{"CA without a certificate", func(t *testing.T) { replaceFile(t, p.ca(), readFile(t, p.path("m1.key"))) }, "holds no PEM certificate"},
		{"certificate removed", func(t *testing.T) {
			if err := os.Remove(p.serverCert()); err != nil {
				t.Fatal(err)
			}
		}, "unable to read the server certificate"},
		{"certificate of another key", func(t *testing.T) {
			replaceFile(t, p.serverCert(), readFile(t, stranger.serverCert()))
		}, "private key does not match public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() {
				for f, b := range originals {
					replaceFile(t, f, b)
				}
			})
			tc.breakFiles(t)
			before := logs.count("keeping the current certificate")
			err := r.Reload()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Reload error = %s, want one containing %q", errText(err), tc.wantErr)
			}
			if logs.count("keeping the current certificate") != before+1 {
				t.Errorf("failed reload not logged; log:\n%s", logs)
			}
			// A poll over the same broken files reports nothing new: one report per change.
			r.reload(false)
			if got := logs.count("keeping the current certificate"); got != before+1 {
				t.Errorf("an unchanged broken file was reported again (%d reports)", got-before)
			}
			res := srv.dial(t, client)
			if res.err != nil || res.server.err != nil {
				t.Fatalf("refused after a failed reload: client %v, server %v", res.err, res.server.err)
			}
			if res.serial.String() != good {
				t.Errorf("serving serial %s after a failed reload, want the old %s", res.serial, good)
			}
		})
	}

	// Once the files are whole again, the poll path loads them.
	replacement := p.reissueServer(t, "localhost", "127.0.0.1").String()
	if err := r.reload(false); err != nil {
		t.Fatalf("reload of repaired files: %v", err)
	}
	if res := srv.dial(t, client); res.err != nil || res.serial.String() != replacement {
		t.Fatalf("after repair: serial %v err %v, want serial %s", res.serial, res.err, replacement)
	}
}

func TestServerConstructorErrors(t *testing.T) {
	p := newPKI(t, "m1")
	missing := p.path("absent.crt")
	tests := []struct {
		name          string
		cert, key, ca string
		allow         []string
		wantErr       string
	}{
		{"missing certificate", missing, p.serverKey(), p.ca(), nil, "unable to read the server certificate"},
		{"missing key", p.serverCert(), missing, p.ca(), nil, "unable to read the server key"},
		{"missing CA", p.serverCert(), p.serverKey(), missing, nil, "unable to read the client CA"},
		{"mismatched key", p.serverCert(), p.path("m1.key"), p.ca(), nil, "does not match"},
		{"client certificate", p.path("m1.crt"), p.path("m1.key"), p.ca(), nil, "is not a server certificate"},
		{"CA file is a key", p.serverCert(), p.serverKey(), p.serverKey(), nil, "holds no PEM certificate"},
		{"empty allow-list entry", p.serverCert(), p.serverKey(), p.ca(), []string{"m1", ""}, "empty name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Server(tc.cert, tc.key, tc.ca, tc.allow, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Server error = %s, want one containing %q", errText(err), tc.wantErr)
			}
			if r != nil {
				t.Error("Server returned a Reloader with an error")
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	p := newPKI(t)
	r, err := Server(p.serverCert(), p.serverKey(), p.ca(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]*tls.Config{"base": r.Config(), "per-handshake": r.current.Load().config} {
		if cfg.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s MinVersion = %x, want TLS 1.3", name, cfg.MinVersion)
		}
		if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("%s ClientAuth = %v, want RequireAndVerifyClientCert", name, cfg.ClientAuth)
		}
	}
	if r.current.Load().config.VerifyConnection == nil {
		t.Error("per-handshake config has no VerifyConnection: resumed sessions would skip authorization")
	}

	// Run with no interval falls back to the default rather than panicking,
	// and returns once its context is done.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, 0)
	}()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatal("Run with a cancelled context did not return")
	}
}

func TestClient(t *testing.T) {
	p := newPKI(t, "m1")
	missing := p.path("absent")
	tests := []struct {
		name          string
		cert, key, ca string
		wantErr       string
	}{
		{"valid", p.path("m1.crt"), p.path("m1.key"), p.ca(), ""},
		{"missing certificate", missing, p.path("m1.key"), p.ca(), "unable to read the client certificate"},
		{"missing key", p.path("m1.crt"), missing, p.ca(), "unable to read the client key"},
		{"missing CA", p.path("m1.crt"), p.path("m1.key"), missing, "unable to read the CA certificate"},
		{"mismatched key", p.path("m1.crt"), p.serverKey(), p.ca(), "does not match"},
		{"server certificate", p.serverCert(), p.serverKey(), p.ca(), "is not a client certificate"},
		{"CA file without a certificate", p.path("m1.crt"), p.path("m1.key"), p.path("m1.key"), "holds no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Client(tc.cert, tc.key, tc.ca, "slave.example")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Client error = %s, want one containing %q", errText(err), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MinVersion != tls.VersionTLS13 || cfg.ServerName != "slave.example" || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
				t.Errorf("Client config = MinVersion %x ServerName %q RootCAs %v %d certificates", cfg.MinVersion, cfg.ServerName, cfg.RootCAs, len(cfg.Certificates))
			}
			if cn := cfg.Certificates[0].Leaf.Subject.CommonName; cn != "m1" {
				t.Errorf("client certificate CN = %q, want m1", cn)
			}
		})
	}
}

func TestPeerIdentity(t *testing.T) {
	u, err := url.Parse("spiffe://georep/master/m4")
	if err != nil {
		t.Fatal(err)
	}
	chain := func(c *x509.Certificate) [][]*x509.Certificate { return [][]*x509.Certificate{{c}} }
	tests := []struct {
		name  string
		state tls.ConnectionState
		want  string
	}{
		{"CN first", tls.ConnectionState{VerifiedChains: chain(parsedCert("m1", func(c *x509.Certificate) { c.DNSNames = []string{"other"} }))}, "m1"},
		{"DNS SAN without CN", tls.ConnectionState{VerifiedChains: chain(parsedCert("", func(c *x509.Certificate) { c.DNSNames = []string{"m2", "m2b"} }))}, "m2"},
		{"URI SAN without CN", tls.ConnectionState{VerifiedChains: chain(parsedCert("", func(c *x509.Certificate) { c.URIs = []*url.URL{u} }))}, "spiffe://georep/master/m4"},
		{"email SAN without CN", tls.ConnectionState{VerifiedChains: chain(parsedCert("", func(c *x509.Certificate) { c.EmailAddresses = []string{"m5@example"} }))}, "m5@example"},
		{"IP SAN only", tls.ConnectionState{VerifiedChains: chain(parsedCert("", func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.ParseIP("10.0.0.7")} }))}, "10.0.0.7"},
		{"no names", tls.ConnectionState{VerifiedChains: chain(parsedCert("", nil))}, ""},
		{"unverified peer certificate", tls.ConnectionState{PeerCertificates: []*x509.Certificate{parsedCert("m1", nil)}}, ""},
		{"no certificate", tls.ConnectionState{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PeerIdentity(tc.state); got != tc.want {
				t.Errorf("PeerIdentity = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	u, err := url.Parse("spiffe://georep/master/m4")
	if err != nil {
		t.Fatal(err)
	}
	state := func(c *x509.Certificate) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		allow   []string
		wantErr string
	}{
		{"by CN", parsedCert("m1", nil), []string{"m1"}, ""},
		{"by DNS SAN", parsedCert("", func(c *x509.Certificate) { c.DNSNames = []string{"m2"} }), []string{"m2"}, ""},
		{"by URI SAN", parsedCert("x", func(c *x509.Certificate) { c.URIs = []*url.URL{u} }), []string{"spiffe://georep/master/m4"}, ""},
		{"empty allow-list", parsedCert("anyone", nil), nil, ""},
		{"IP SAN is not an identity", parsedCert("", func(c *x509.Certificate) { c.IPAddresses = []net.IP{net.ParseIP("10.0.0.7")} }), []string{"10.0.0.7"}, "client certificate with no CN is not in the allow-list [10.0.0.7]"},
		{"names SANs beyond the CN", parsedCert("m3", func(c *x509.Certificate) { c.DNSNames = []string{"m3", "m3.example"} }), []string{"m1", "m2"}, "client certificate CN=m3 SAN=[m3.example] is not in the allow-list [m1 m2]"},
		{"case matters", parsedCert("M1", nil), []string{"m1"}, "CN=M1 is not in the allow-list [m1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := authorize(state(tc.cert), tc.allow)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !isNotAllowed(err) {
				t.Fatalf("authorize error = %s, want one containing %q wrapping ErrNotAllowed", errText(err), tc.wantErr)
			}
		})
	}
	if err := authorize(tls.ConnectionState{}, nil); err == nil {
		t.Error("a connection with no verified certificate was admitted by an empty allow-list")
	}
}
