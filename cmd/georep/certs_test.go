package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/georep/georep/internal/certs"
)

func TestCertsCommand(t *testing.T) {
	bin := buildGeorep(t)
	dir := filepath.Join(t.TempDir(), "pki")
	run := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"certs"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exitErr *exec.ExitError
		switch {
		case err == nil:
			return stdout.String(), stderr.String(), 0
		case errors.As(err, &exitErr):
			return stdout.String(), stderr.String(), exitErr.ExitCode()
		default:
			t.Fatalf("run georep certs: %v", err)
			return "", "", -1
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	tests := []struct {
		name      string
		args      []string
		code      int
		wantOut   []string
		wantFiles []string
		notOut    []string
	}{
		{"first run makes the CA", []string{"--dir", dir, "--server-names", "slave.example.com,192.0.2.7", "--clients", "m1,m2"}, 0,
			[]string{"created " + p("ca.crt"), "created " + p("ca.key"), "wrote   " + p("server.crt") + " (the slave's certificate for slave.example.com, 192.0.2.7)",
				"wrote   " + p("m2.key"), "georep slave --listen 0.0.0.0:7070 --cert " + p("server.crt") + " --key " + p("server.key") + " --ca " + p("ca.crt") + " --allow m1,m2",
				"grpcs://slave.example.com:7070/NAME with --cert " + p("m1.crt") + " --key " + p("m1.key") + " --ca " + p("ca.crt")},
			[]string{"ca.crt", "ca.key", "server.crt", "server.key", "m1.crt", "m1.key", "m2.crt", "m2.key"}, nil},
		{"a later run keeps the CA", []string{"--dir", dir, "--clients", "m3"}, 0,
			[]string{"kept    " + p("ca.crt"), "wrote   " + p("m3.crt"), "grpcs://HOST:7070/NAME"},
			[]string{"m3.crt", "m3.key"}, []string{"ca.key", "server.crt"}},
		{"no dir", []string{"--clients", "m1"}, 2, nil, nil, nil},
		{"nothing to issue", []string{"--dir", dir}, 2, nil, nil, nil},
		{"reserved client name", []string{"--dir", dir, "--clients", "ca"}, 1, nil, nil, nil},
	}
	wantErr := map[string]string{
		"no dir":               "georep: --dir is required",
		"nothing to issue":     "georep: nothing to issue: pass --server-names",
		"reserved client name": `client name "ca" is reserved`,
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit code = %d, want %d; stderr:\n%s", code, tc.code, errOut)
			}
			if w := wantErr[tc.name]; w != "" && !strings.Contains(errOut, w) {
				t.Errorf("stderr = %q, want it to contain %q", errOut, w)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notOut {
				if strings.Contains(out, w) {
					t.Errorf("stdout mentions %q, which this run did not write:\n%s", w, out)
				}
			}
			for _, f := range tc.wantFiles {
				if _, err := os.Stat(p(f)); err != nil {
					t.Errorf("%s not written: %v", f, err)
				}
			}
		})
	}

	// The files are a working set: the server certificate chains to the CA.
	caPEM, err := os.ReadFile(p(certs.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	srvPEM, err := os.ReadFile(p(certs.ServerCertFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.ParseCertificatePEM(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := certs.ParseCertificatePEM(srvPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CheckSignatureFrom(ca); err != nil {
		t.Errorf("server.crt is not signed by ca.crt: %v", err)
	}
}
