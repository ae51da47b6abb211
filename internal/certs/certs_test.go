package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCertificatePEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(readBytes(t, filepath.Join(dir, CACertFile))) {
		t.Fatal("ca.crt holds no certificate")
	}
	return pool
}

func TestGenerateWritesVerifiableChain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := Generate(dir, []string{"slave.example.com", "127.0.0.1", "localhost", "::1", "localhost"}, []string{"m1", "m_2.b-c"}); err != nil {
		t.Fatal(err)
	}

	modes := []struct {
		file string
		mode os.FileMode
	}{
		{CACertFile, 0o644}, {CAKeyFile, 0o600},
		{ServerCertFile, 0o644}, {ServerKeyFile, 0o600},
		{"m1.crt", 0o644}, {"m1.key", 0o600},
		{"m_2.b-c.crt", 0o644}, {"m_2.b-c.key", 0o600},
	}
	for _, m := range modes {
		fi, err := os.Stat(filepath.Join(dir, m.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != m.mode {
			t.Errorf("%s mode = %o, want %o", m.file, got, m.mode)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(modes) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want exactly the %d certificate files (no temporaries)", names, len(modes))
	}

	ca := readCert(t, filepath.Join(dir, CACertFile))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate is not a signing CA: IsCA=%v usage=%v", ca.IsCA, ca.KeyUsage)
	}
	roots := caPool(t, dir)

	srv := readCert(t, filepath.Join(dir, ServerCertFile))
	if want := []string{"slave.example.com", "localhost"}; !slices.Equal(srv.DNSNames, want) {
		t.Errorf("server DNS SANs = %v, want %v", srv.DNSNames, want)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("server IP SANs = %v, want %v", ips, want)
	}
	if len(srv.URIs) != 0 || len(srv.EmailAddresses) != 0 {
		t.Errorf("server has unasked SANs: %v %v", srv.URIs, srv.EmailAddresses)
	}
	for _, name := range []string{"slave.example.com", "localhost", "127.0.0.1", "::1"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example.com"}); err == nil {
		t.Error("server certificate verifies for a name that was not asked for")
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("server certificate is usable as a client certificate")
	}

	for _, name := range []string{"m1", "m_2.b-c"} {
		c := readCert(t, filepath.Join(dir, ClientCertFile(name)))
		if c.Subject.CommonName != name || !slices.Equal(c.DNSNames, []string{name}) {
			t.Errorf("client %s: CN=%q SANs=%v", name, c.Subject.CommonName, c.DNSNames)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("client %s does not verify: %v", name, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Errorf("client %s is usable as a server certificate", name)
		}
		key, err := ParsePrivateKeyPEM(readBytes(t, filepath.Join(dir, ClientKeyFile(name))))
		if err != nil {
			t.Fatal(err)
		}
		if !key.Public().(*ecdsa.PublicKey).Equal(c.PublicKey) {
			t.Errorf("client %s key does not match its certificate", name)
		}
	}
}

func TestGenerateReusesCAAndReissuesOnlyWhatIsAsked(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, []string{"a.example"}, []string{"m1", "m2"}); err != nil {
		t.Fatal(err)
	}
	before := map[string][]byte{}
	for _, f := range []string{CACertFile, CAKeyFile, ServerCertFile, "m1.crt", "m1.key", "m2.crt"} {
		before[f] = readBytes(t, filepath.Join(dir, f))
	}
	oldServer := readCert(t, filepath.Join(dir, ServerCertFile))

	tests := []struct {
		name        string
		serverNames []string
		clients     []string
		same        []string // files that must keep their bytes
		changed     []string // files that must be re-issued
	}{
		{"new server names", []string{"b.example"}, nil, []string{CACertFile, CAKeyFile, "m1.crt", "m1.key", "m2.crt"}, []string{ServerCertFile}},
		{"one client again", nil, []string{"m2"}, []string{CACertFile, CAKeyFile, "m1.crt", "m1.key"}, []string{"m2.crt"}},
		{"nothing asked", nil, nil, []string{CACertFile, CAKeyFile, "m1.crt", "m1.key"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snapshot := map[string][]byte{}
			for _, f := range tc.changed {
				snapshot[f] = readBytes(t, filepath.Join(dir, f))
			}
			if err := Generate(dir, tc.serverNames, tc.clients); err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.same {
				if !bytes.Equal(readBytes(t, filepath.Join(dir, f)), before[f]) {
					t.Errorf("%s changed", f)
				}
			}
			for _, f := range tc.changed {
				if bytes.Equal(readBytes(t, filepath.Join(dir, f)), snapshot[f]) {
					t.Errorf("%s was not re-issued", f)
				}
			}
		})
	}

	// Everything issued by later runs still chains to the original CA.
	roots := caPool(t, dir)
	srv := readCert(t, filepath.Join(dir, ServerCertFile))
	if srv.SerialNumber.Cmp(oldServer.SerialNumber) == 0 {
		t.Error("re-issued server certificate kept its serial number")
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: "b.example"}); err != nil {
		t.Errorf("re-issued server certificate does not chain to the reused CA: %v", err)
	}
	if slices.Contains(srv.DNSNames, "a.example") {
		t.Errorf("re-issued server certificate still names a.example: %v", srv.DNSNames)
	}
}

func TestGenerateRefusesHalfACA(t *testing.T) {
	src := t.TempDir()
	if err := Generate(src, []string{"localhost"}, nil); err != nil {
		t.Fatal(err)
	}
	otherCA := t.TempDir()
	if err := Generate(otherCA, nil, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		files map[string]string // destination file -> source path
		want  string
	}{
		{"cert without key", map[string]string{CACertFile: filepath.Join(src, CACertFile)}, "but no " + CAKeyFile},
		{"key without cert", map[string]string{CAKeyFile: filepath.Join(src, CAKeyFile)}, "but no " + CACertFile},
		{"key of another CA", map[string]string{CACertFile: filepath.Join(src, CACertFile), CAKeyFile: filepath.Join(otherCA, CAKeyFile)}, "does not belong to"},
		{"leaf as CA", map[string]string{CACertFile: filepath.Join(src, ServerCertFile), CAKeyFile: filepath.Join(src, ServerKeyFile)}, "is not a CA certificate"},
		{"garbage cert", map[string]string{CACertFile: "", CAKeyFile: filepath.Join(src, CAKeyFile)}, "unable to parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for dst, from := range tc.files {
				data := []byte("not a certificate\n")
				if from != "" {
					data = readBytes(t, from)
				}
				if err := os.WriteFile(filepath.Join(dir, dst), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := Generate(dir, []string{"localhost"}, []string{"m1"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Generate error = %v, want one containing %q", err, tc.want)
			}
			for dst, from := range tc.files {
				if from == "" {
					continue
				}
				if !bytes.Equal(readBytes(t, filepath.Join(dir, dst)), readBytes(t, from)) {
					t.Errorf("%s was modified", dst)
				}
			}
			for _, f := range []string{ServerCertFile, "m1.crt"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s was issued despite the broken CA", f)
				}
			}
		})
	}
}

func TestGenerateReusesSEC1CAKey(t *testing.T) {
	// A CA made elsewhere (openssl writes "EC PRIVATE KEY") is reused, not replaced.
	src := t.TempDir()
	if err := Generate(src, nil, nil); err != nil {
		t.Fatal(err)
	}
	key, err := ParsePrivateKeyPEM(readBytes(t, filepath.Join(src, CAKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caCert := readBytes(t, filepath.Join(src, CACertFile))
	if err := os.WriteFile(filepath.Join(dir, CACertFile), caCert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir, []string{"localhost"}, []string{"m1"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBytes(t, filepath.Join(dir, CACertFile)), caCert) {
		t.Error("ca.crt changed")
	}
	if _, err := readCert(t, filepath.Join(dir, "m1.crt")).Verify(x509.VerifyOptions{Roots: caPool(t, dir), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not chain to the reused CA: %v", err)
	}
}

func TestGenerateRejectsBadNames(t *testing.T) {
	tests := []struct {
		name        string
		serverNames []string
		clients     []string
		want        string
	}{
		{"empty client", nil, []string{""}, "client name is empty"},
		{"client with slash", nil, []string{"a/b"}, "may contain only"},
		{"client dotdot", nil, []string{".."}, "must not start with"},
		{"hidden client", nil, []string{".m1"}, "must not start with"},
		{"option-like client", nil, []string{"-m1"}, "must not start with"},
		{"client with space", nil, []string{"m 1"}, "may contain only"},
		{"client with NUL", nil, []string{"m\x001"}, "may contain only"},
		{"client named ca", nil, []string{"ca"}, "reserved"},
		{"client named server", nil, []string{"server"}, "reserved"},
		{"long client", nil, []string{strings.Repeat("a", 65)}, "longer than 64"},
		{"empty server name", []string{""}, nil, "server name is empty"},
		{"server name with space", []string{"a b"}, nil, "not a valid DNS name"},
		{"server name leading dash", []string{"-a.example"}, nil, "not a valid DNS name"},
		{"server name empty label", []string{"a..example"}, nil, "not a valid DNS name"},
		{"server IP with zone", []string{"fe80::1%eth0"}, nil, "zone"},
		{"server name too long", []string{strings.Repeat("a.", 127) + "aa"}, nil, "longer than 253"},
		{"misplaced wildcard", []string{"a.*.example"}, nil, "not a valid DNS name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			err := Generate(dir, tc.serverNames, tc.clients)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Generate error = %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Error("a rejected request still created the directory")
			}
		})
	}
	if err := Generate("", []string{"x"}, nil); err == nil {
		t.Error("Generate with an empty directory succeeded")
	}
}

func TestGenerateWildcardAndIPOnly(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, []string{"*.slaves.example", "192.0.2.7"}, nil); err != nil {
		t.Fatal(err)
	}
	srv := readCert(t, filepath.Join(dir, ServerCertFile))
	if !slices.Equal(srv.DNSNames, []string{"*.slaves.example"}) || len(srv.IPAddresses) != 1 || !srv.IPAddresses[0].Equal(net.ParseIP("192.0.2.7")) {
		t.Fatalf("SANs = %v %v", srv.DNSNames, srv.IPAddresses)
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: caPool(t, dir), DNSName: "s1.slaves.example"}); err != nil {
		t.Errorf("wildcard does not verify: %v", err)
	}
	key, err := ParsePrivateKeyPEM(readBytes(t, filepath.Join(dir, ServerKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := key.(*ecdsa.PrivateKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("server key is %T, want ECDSA P-256", key)
	}
}
