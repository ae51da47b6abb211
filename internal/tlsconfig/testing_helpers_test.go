package tlsconfig

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/georep/georep/internal/certs"
	"github.com/georep/georep/internal/testbuf"
)

const ioTimeout = 10 * time.Second

// logBuffer collects log output from the Reloader; handshakes log from the
// listener's goroutines.
type logBuffer struct{ testbuf.Buffer }

func (b *logBuffer) count(s string) int { return strings.Count(b.String(), s) }

func newLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// pki is a certificate directory made by internal/certs.
type pki struct{ dir string }

func newPKI(t *testing.T, clients ...string) pki {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, []string{"localhost", "127.0.0.1"}, clients); err != nil {
		t.Fatalf("generate certificates: %v", err)
	}
	return pki{dir: dir}
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }
func (p pki) serverCert() string      { return p.path(certs.ServerCertFile) }
func (p pki) serverKey() string       { return p.path(certs.ServerKeyFile) }
func (p pki) ca() string              { return p.path(certs.CACertFile) }

// reissueServer writes a new server certificate (new key, new serial) in place.
func (p pki) reissueServer(t *testing.T, names ...string) *big.Int {
	t.Helper()
	if err := certs.Generate(p.dir, names, nil); err != nil {
		t.Fatalf("reissue server certificate: %v", err)
	}
	return serialOf(t, p.serverCert())
}

func (p pki) client(t *testing.T, name string) *tls.Config {
	t.Helper()
	cfg, err := Client(p.path(certs.ClientCertFile(name)), p.path(certs.ClientKeyFile(name)), p.ca(), "localhost")
	if err != nil {
		t.Fatalf("client config for %s: %v", name, err)
	}
	return cfg
}

func serialOf(t *testing.T, certFile string) *big.Int {
	t.Helper()
	c, err := certs.ParseCertificatePEM(readFile(t, certFile))
	if err != nil {
		t.Fatalf("%s: %v", certFile, err)
	}
	return c.SerialNumber
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replaceFile swaps a file's contents the way a rotation tool would: write a
// temporary file and rename it over the old one.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// handshake is what the test server saw of one connection.
type handshake struct {
	identity string
	resumed  bool
	err      error
}

// testServer is a TLS listener on 127.0.0.1 using a Reloader's config, never
// restarted during a test. Each accepted connection is handshaken, reported on
// results, answered with one line and closed.
type testServer struct {
	addr    string
	results chan handshake
}

func startServer(t *testing.T, r *Reloader) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), results: make(chan handshake, 64)}
	tlsLn := tls.NewListener(ln, r.Config())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := tlsLn.Accept()
			if err != nil {
				return // listener closed by cleanup
			}
			wg.Go(func() { s.serve(c.(*tls.Conn)) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *testServer) serve(c *tls.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if err := c.Handshake(); err != nil {
		s.results <- handshake{err: err}
		return
	}
	st := c.ConnectionState()
	s.results <- handshake{identity: PeerIdentity(st), resumed: st.DidResume}
	c.Write([]byte("hello " + PeerIdentity(st) + "\n"))
}

// dialResult is what the client saw: the server certificate's serial and the
// server's greeting, or the error that ended the exchange.
type dialResult struct {
	serial *big.Int
	reply  string
	err    error
	server handshake
}

// dial connects with cfg, reads the greeting (which, in TLS 1.3, is when a
// server's rejection of the client certificate arrives) and returns both
// sides' view of the connection.
func (s *testServer) dial(t *testing.T, cfg *tls.Config) dialResult {
	t.Helper()
	var res dialResult
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: ioTimeout}, Config: cfg}
	conn, err := d.Dial("tcp", s.addr)
	if err == nil {
		c := conn.(*tls.Conn)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if certs := c.ConnectionState().PeerCertificates; len(certs) > 0 {
			res.serial = certs[0].SerialNumber
		}
		res.reply, err = bufio.NewReader(c).ReadString('\n')
		c.Close()
	}
	res.err = err
	select {
	case res.server = <-s.results:
	case <-time.After(ioTimeout):
		// The client failed before the server accepted anything to report.
		if res.err == nil {
			t.Fatal("the server reported no handshake")
		}
	}
	return res
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func isNotAllowed(err error) bool { return errors.Is(err, ErrNotAllowed) }

// parsedCert is a certificate with only the naming fields set, for PeerIdentity.
func parsedCert(cn string, mod func(*x509.Certificate)) *x509.Certificate {
	c := &x509.Certificate{}
	c.Subject.CommonName = cn
	if mod != nil {
		mod(c)
	}
	return c
}
