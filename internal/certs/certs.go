// Package certs issues the certificates georep's mTLS transport uses: a private CA,
// one server certificate for the slave and one client certificate per master.
//
// Files in the target directory:
//
//	ca.crt, ca.key           the CA; created once, then only ever read
//	server.crt, server.key   the slave's certificate, SANs exactly the names asked for
//	NAME.crt, NAME.key       a master's client certificate, CN=NAME and DNS SAN NAME
//
// Generate is safe to run again: the CA is reused (never overwritten), and a server or
// client certificate is re-issued only when it is asked for again. Keys are written
// mode 0600 and certificates 0644, each through a temporary file renamed into place,
// so a reader never sees half a file.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the certificate directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// Validity periods. The CA outlives many leaf rotations; leaves are short enough that
// rotation is a routine act, and start an hour early to tolerate clock skew.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 2 * 365 * 24 * time.Hour
	clockSkew    = time.Hour
)

// ClientCertFile and ClientKeyFile name a client's files inside the directory.
func ClientCertFile(name string) string { return name + ".crt" }

// ClientKeyFile names the private key file of client name.
func ClientKeyFile(name string) string { return name + ".key" }

// Generate makes sure dir holds a CA, and issues a server certificate for serverNames
// (when any are given) and a client certificate for each of clients. Names that parse
// as IP addresses become IP SANs, the rest DNS SANs. Existing server or client files
// are replaced only for the names passed in this call; the CA is never replaced.
func Generate(dir string, serverNames []string, clients []string) error {
	if dir == "" {
		return errors.New("certificate directory is empty: pass --dir")
	}
	dnsNames, ips, err := splitServerNames(serverNames)
	if err != nil {
		return err
	}
	clients, err = checkClientNames(clients)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("unable to create certificate directory: %w", err)
	}

	ca, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return err
	}

	if len(serverNames) > 0 {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: serverNames[0]},
			DNSNames:    dnsNames,
			IPAddresses: ips,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if err := issue(dir, ServerCertFile, ServerKeyFile, tmpl, ca, caKey); err != nil {
			return fmt.Errorf("unable to issue the server certificate: %w", err)
		}
	}
	for _, name := range clients {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: name},
			DNSNames:    []string{name},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(dir, ClientCertFile(name), ClientKeyFile(name), tmpl, ca, caKey); err != nil {
			return fmt.Errorf("unable to issue the client certificate for %q: %w", name, err)
		}
	}
	return nil
}

// splitServerNames sorts names into DNS and IP SANs, keeping order and dropping repeats.
func splitServerNames(names []string) ([]string, []net.IP, error) {
	var dnsNames []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		if addr, err := netip.ParseAddr(n); err == nil {
			if addr.Zone() != "" {
				return nil, nil, fmt.Errorf("server name %q: an IP address in a certificate cannot carry a zone", n)
			}
			ips = append(ips, addr.AsSlice())
			continue
		}
		if err := checkDNSName(n); err != nil {
			return nil, nil, err
		}
		dnsNames = append(dnsNames, n)
	}
	return dnsNames, ips, nil
}

func checkDNSName(n string) error {
	if n == "" {
		return errors.New("a server name is empty")
	}
	if len(n) > 253 {
		return fmt.Errorf("server name %q is longer than 253 characters", n)
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 1 {
			continue // a leading wildcard label
		}
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("server name %q is not a valid DNS name or IP address", n)
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("server name %q is not a valid DNS name or IP address", n)
			}
		}
	}
	return nil
}

// checkClientNames validates client names and drops repeats. A name becomes a file
// name in dir, so it must be one harmless path component that cannot collide with
// the CA's or the server's files.
func checkClientNames(names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if err := checkClientName(n); err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

func checkClientName(n string) error {
	if n == "" {
		return errors.New("a client name is empty")
	}
	if len(n) > 64 {
		return fmt.Errorf("client name %q is longer than 64 characters", n)
	}
	if n[0] == '.' || n[0] == '-' {
		return fmt.Errorf("client name %q must not start with '.' or '-'", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("client name %q may contain only letters, digits, '.', '-' and '_'", n)
		}
	}
	if n == "ca" || n == "server" {
		return fmt.Errorf("client name %q is reserved: its files would replace the %s certificate", n, n)
	}
	return nil
}

// loadOrCreateCA returns the CA in dir, creating it when neither file exists.
// Half a CA is an error, not a reason to mint a new one: clients signed by the old CA
// would silently stop working.
func loadOrCreateCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return parseCA(certPEM, keyPEM, dir)
	case certErr == nil && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("found %s but no %s: restore the CA key, or move %s away to create a new CA (every certificate it signed must then be re-issued)", certPath, CAKeyFile, CACertFile)
	case errors.Is(certErr, fs.ErrNotExist) && keyErr == nil:
		return nil, nil, fmt.Errorf("found %s but no %s: restore the CA certificate, or move %s away to create a new CA", keyPath, CACertFile, CAKeyFile)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return createCA(dir)
	case certErr != nil:
		return nil, nil, fmt.Errorf("unable to read the CA certificate: %w", certErr)
	default:
		return nil, nil, fmt.Errorf("unable to read the CA key: %w", keyErr)
	}
}

func parseCA(certPEM, keyPEM []byte, dir string) (*x509.Certificate, crypto.Signer, error) {
	cert, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("unable to parse %s: %w", filepath.Join(dir, CACertFile), err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("%s is not a CA certificate (it may not sign certificates)", filepath.Join(dir, CACertFile))
	}
	key, err := ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("unable to parse %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not belong to %s", filepath.Join(dir, CAKeyFile), filepath.Join(dir, CACertFile))
	}
	return cert, key, nil
}

func createCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("unable to generate the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "georep CA", Organization: []string{"georep"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("unable to sign the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("unable to parse the new CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	// Link rather than rename: if another run created the CA meanwhile, keep theirs
	// and fail, instead of replacing a CA that may already have signed certificates.
	if err := writeFile(dir, CAKeyFile, keyPEM, 0o600, false); err != nil {
		return nil, nil, err
	}
	if err := writeFile(dir, CACertFile, encodeCert(der), 0o644, false); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// issue signs tmpl with the CA under a fresh key and writes key then certificate.
// The key goes first so a reader that sees the new certificate also finds its key.
func issue(dir, certName, keyName string, tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("unable to generate a key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(leafValidity)
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("unable to sign the certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeFile(dir, keyName, keyPEM, 0o600, true); err != nil {
		return err
	}
	return writeFile(dir, certName, encodeCert(der), 0o644, true)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("unable to draw a serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // never zero
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("unable to encode a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificatePEM returns the first certificate in a PEM file.
func ParseCertificatePEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// ParsePrivateKeyPEM reads a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key, so a CA
// made by openssl can be reused.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}

// writeFile writes data to dir/name through a temporary file in dir, fsyncing the
// file and then the directory so the result survives a crash. With replace false the
// final step is a hard link, which fails if name already exists.
func writeFile(dir, name string, data []byte, mode os.FileMode, replace bool) (err error) {
	final := filepath.Join(dir, name)
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("unable to create a temporary file for %s: %w", final, err)
	}
	tmp := f.Name()
	defer func() {
		if f != nil {
			f.Close()
		}
		// After a rename tmp no longer exists; after a link or a failure it must go.
		if rmErr := os.Remove(tmp); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) && err == nil {
			err = fmt.Errorf("unable to remove temporary file: %w", rmErr)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("unable to set the mode of %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("unable to write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("unable to sync %s: %w", tmp, err)
	}
	closeErr := f.Close()
	f = nil
	if closeErr != nil {
		return fmt.Errorf("unable to close %s: %w", tmp, closeErr)
	}
	if replace {
		if err := os.Rename(tmp, final); err != nil {
			return fmt.Errorf("unable to move %s into place: %w", final, err)
		}
	} else if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s appeared while it was being created (another georep certs run?): run again to reuse it", final)
		}
		return fmt.Errorf("unable to create %s: %w", final, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("unable to open %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("unable to sync directory %s: %w", dir, err)
	}
	return nil
}
