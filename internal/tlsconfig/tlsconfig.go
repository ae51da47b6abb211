// Package tlsconfig builds the *tls.Config pair of georep's mTLS transport: a
// server side (the slave) that serves whatever certificate and CA are on disk
// now, reloading them without restarting its listener, and only admits client
// certificates signed by that CA and named in an allow-list; and a client side
// (the master) that trusts only that CA and presents its own certificate.
//
// Both sides require TLS 1.3. Authorization lives in VerifyConnection, which
// crypto/tls runs on every handshake including resumed ones, so a session
// ticket never bypasses the allow-list.
package tlsconfig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotAllowed is wrapped by the error a server handshake fails with when the
// client's certificate is valid but its identity is not in the allow-list.
var ErrNotAllowed = errors.New("client identity not allowed")

// Reloader owns the server side: the certificate, key and CA files, the
// snapshot of them that new handshakes use, and the allow-list. Connections
// already established keep the certificate they were made with.
type Reloader struct {
	certFile, keyFile, caFile string
	allow                     []string
	logger                    *slog.Logger

	current atomic.Pointer[snapshot]

	// mu serialises reloads (the poll loop and Reload from a signal handler)
	// and guards the two fields below, which remember the last contents tried
	// so that an unchanged broken file is reported once, not on every poll.
	mu          sync.Mutex
	lastDigest  [sha256.Size]byte
	lastReadErr string
}

// snapshot is one consistent set of files: a handshake uses one snapshot from
// start to end, so a reload in the middle cannot mix old and new.
type snapshot struct {
	config *tls.Config
	leaf   *x509.Certificate
}

// Server loads certFile/keyFile (the slave's certificate) and caFile (the CA
// client certificates must chain to) and returns a Reloader serving them.
// allow lists the client identities admitted (a certificate's CN or any of its
// DNS, URI or email SANs); an empty allow-list admits any client certificate
// the CA signed. A nil logger logs to slog.Default(). The files are read again
// by Reload and, while Run is running, whenever their contents change.
func Server(certFile, keyFile, caFile string, allow []string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Reloader{
		certFile: certFile,
		keyFile:  keyFile,
		caFile:   caFile,
		allow:    slices.Clone(allow),
		logger:   logger.With("cert", certFile, "ca", caFile),
	}
	slices.Sort(r.allow)
	r.allow = slices.Compact(r.allow)
	for _, a := range r.allow {
		if a == "" {
			return nil, errors.New("the client allow-list holds an empty name: remove it, or pass no names to admit every client the CA signed")
		}
	}
	f, err := r.readFiles()
	if err != nil {
		return nil, err
	}
	snap, err := r.load(f)
	if err != nil {
		return nil, err
	}
	r.lastDigest = f.digest()
	r.current.Store(snap)
	return r, nil
}

// Config returns a server *tls.Config whose every handshake uses the files
// loaded last. Hand it to tls.NewListener or grpc credentials.NewTLS; both
// clone it, and gRPC adds its ALPN protocol to the per-handshake config too.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current.Load().config, nil
		},
	}
}

// Reload reads the files now (SIGHUP calls it). On failure the previous
// certificate and CA stay in service, the error is logged and returned.
func (r *Reloader) Reload() error {
	return r.reload(true)
}

// DefaultPollInterval is how often Run looks at the files when given no
// interval: rotations are rare, and reading three small files is cheap.
const DefaultPollInterval = 5 * time.Second

// Run polls the files every interval (DefaultPollInterval if not positive) and
// reloads them when their contents change, until ctx is done. The caller owns
// the goroutine running it.
func (r *Reloader) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are logged inside; the loop keeps watching for a fix.
			_ = r.reload(false)
		}
	}
}

// reload reads the three files and swaps in a new snapshot. Unless force is
// set, contents identical to the last attempt (good or bad) are left alone.
func (r *Reloader) reload(force bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := r.readFiles()
	if err != nil {
		// A rotation tool may remove and recreate files; report each distinct
		// failure once and keep serving the current snapshot.
		if force || err.Error() != r.lastReadErr {
			r.logger.Error("certificate reload failed, keeping the current certificate", "err", err)
		}
		r.lastReadErr = err.Error()
		return err
	}
	r.lastReadErr = ""
	d := f.digest()
	if !force && d == r.lastDigest {
		return nil
	}
	r.lastDigest = d
	snap, err := r.load(f)
	if err != nil {
		// A half-written rotation (new key, old certificate) lands here too;
		// the next poll sees the finished files and picks them up.
		r.logger.Error("certificate reload failed, keeping the current certificate", "err", err)
		return err
	}
	r.current.Store(snap)
	r.logger.Info("certificate loaded", "serial", snap.leaf.SerialNumber.Text(16), "subject", snap.leaf.Subject.String(), "not_after", snap.leaf.NotAfter)
	return nil
}

type files struct{ cert, key, ca []byte }

// digest fingerprints the contents; lengths are included so moving bytes from
// one file to the next cannot look unchanged.
func (f files) digest() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{f.cert, f.key, f.ca} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

func (r *Reloader) readFiles() (files, error) {
	var f files
	var err error
	if f.cert, err = os.ReadFile(r.certFile); err != nil {
		return files{}, fmt.Errorf("unable to read the server certificate: %w", err)
	}
	if f.key, err = os.ReadFile(r.keyFile); err != nil {
		return files{}, fmt.Errorf("unable to read the server key: %w", err)
	}
	if f.ca, err = os.ReadFile(r.caFile); err != nil {
		return files{}, fmt.Errorf("unable to read the client CA: %w", err)
	}
	return f, nil
}

// load parses one set of files into a snapshot, or fails without side effects.
func (r *Reloader) load(f files) (*snapshot, error) {
	cert, err := keyPair(f.cert, f.key, r.certFile, r.keyFile, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	pool, err := caPool(f.ca, r.caFile)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{leaf: cert.Leaf}
	snap.config = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := authorize(cs, r.allow); err != nil {
				r.logger.Warn("refused a client certificate", "err", err, "resumed", cs.DidResume)
				return err
			}
			return nil
		},
	}
	return snap, nil
}

// authorize admits a connection whose verified client certificate carries an
// identity in allow (sorted); an empty allow admits any verified certificate.
func authorize(cs tls.ConnectionState, allow []string) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return errors.New("the client presented no certificate signed by the CA")
	}
	if len(allow) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	for _, id := range identities(leaf) {
		if _, found := slices.BinarySearch(allow, id); found {
			return nil
		}
	}
	return fmt.Errorf("client certificate %s is not in the allow-list [%s]: %w", describe(leaf), strings.Join(allow, " "), ErrNotAllowed)
}

// identities lists the names a certificate can be allowed by: its CN, then
// its DNS, URI and email SANs. IP SANs name hosts, not masters, and are left out.
func identities(c *x509.Certificate) []string {
	var ids []string
	if c.Subject.CommonName != "" {
		ids = append(ids, c.Subject.CommonName)
	}
	ids = append(ids, c.DNSNames...)
	for _, u := range c.URIs {
		ids = append(ids, u.String())
	}
	return append(ids, c.EmailAddresses...)
}

// describe names a certificate for an error: its CN, and its SANs when they
// say more than the CN does.
func describe(c *x509.Certificate) string {
	var b strings.Builder
	if c.Subject.CommonName != "" {
		fmt.Fprintf(&b, "CN=%s", c.Subject.CommonName)
	} else {
		b.WriteString("with no CN")
	}
	ids := slices.DeleteFunc(identities(c), func(s string) bool { return s == c.Subject.CommonName })
	if len(ids) > 0 {
		fmt.Fprintf(&b, " SAN=[%s]", strings.Join(ids, " "))
	}
	return b.String()
}

// PeerIdentity names the verified peer of a connection for logs: the CN of its
// verified certificate, else its first DNS, URI or email SAN, else its first IP
// SAN. It returns "" when the peer's certificate was not verified.
func PeerIdentity(cs tls.ConnectionState) string {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := cs.VerifiedChains[0][0]
	if ids := identities(leaf); len(ids) > 0 {
		return ids[0]
	}
	if len(leaf.IPAddresses) > 0 {
		return leaf.IPAddresses[0].String()
	}
	return ""
}

// Client returns the master's *tls.Config: it presents certFile/keyFile,
// trusts only the CA in caFile and expects the slave's certificate to name
// serverName (empty means the host being dialled, as crypto/tls and gRPC fill
// in). The files are read once; build a new config to pick up a rotation.
func Client(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("unable to read the client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("unable to read the client key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("unable to read the CA certificate: %w", err)
	}
	cert, err := keyPair(certPEM, keyPEM, certFile, keyFile, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	pool, err := caPool(caPEM, caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

// keyPair parses a certificate and its key and checks the certificate may be
// used for usage and has not expired, so a wrong or stale file fails here with
// its name rather than later as an opaque handshake error on the other side.
func keyPair(certPEM, keyPEM []byte, certFile, keyFile string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("unable to load the key pair %s and %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("unable to parse %s: %w", certFile, err)
		}
		cert.Leaf = leaf
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, usage) && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		role := "server"
		if usage == x509.ExtKeyUsageClientAuth {
			role = "client"
		}
		return tls.Certificate{}, fmt.Errorf("%s is not a %s certificate (its extended key usage lacks %sAuth): issue one with georep certs", certFile, role, role)
	}
	if now := time.Now(); now.After(leaf.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("%s expired at %s: issue a new one with georep certs", certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return cert, nil
}

// caPool parses every certificate in a PEM file into a pool, refusing a file
// with none: an empty pool would reject every peer with an unhelpful error.
func caPool(data []byte, file string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, fmt.Errorf("CA file %s is empty", file)
		}
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}
