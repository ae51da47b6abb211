package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/georep/georep/internal/certs"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/tlsconfig"
)

// testPKI issues a CA, a server certificate for 127.0.0.1 and client
// certificates for m1 and m2 into a fresh directory.
func testPKI(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, []string{"127.0.0.1"}, []string{"m1", "m2"}); err != nil {
		t.Fatalf("generate certificates: %v", err)
	}
	return dir
}

func tlsArgs(dir string) []string {
	return []string{"--cert", filepath.Join(dir, certs.ServerCertFile), "--key", filepath.Join(dir, certs.ServerKeyFile),
		"--ca", filepath.Join(dir, certs.CACertFile)}
}

// listenDaemon is a running `georep slave --listen` child.
type listenDaemon struct {
	cmd    *exec.Cmd
	stderr *testbuf.Buffer
	addr   string
	exited chan struct{}
	err    error
}

var listeningLine = regexp.MustCompile(`listening on (\S+?)"`)

// startListen starts `georep slave --listen 127.0.0.1:0 args...` and waits
// for the address it reports.
func startListen(t *testing.T, bin string, args ...string) *listenDaemon {
	t.Helper()
	d := &listenDaemon{stderr: &testbuf.Buffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(bin, append([]string{"slave", "--listen", "127.0.0.1:0"}, args...)...)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("slave stderr:\n%s", d.stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := listeningLine.FindStringSubmatch(d.stderr.String()); m != nil {
			d.addr = m[1]
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("slave exited before listening: %v\n%s", d.err, d.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("slave did not report its address within 30s:\n%s", d.stderr.String())
		}
	}
}

func (d *listenDaemon) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(within):
		t.Fatalf("slave still running after %v; stderr:\n%s", within, d.stderr.String())
	}
	var exitErr *exec.ExitError
	switch {
	case d.err == nil:
		return 0
	case errors.As(d.err, &exitErr):
		return exitErr.ExitCode()
	default:
		t.Fatalf("wait for slave: %v", d.err)
		return -1
	}
}

func TestSlaveListenRefusesBadCommandLine(t *testing.T) {
	bin := buildGeorep(t)
	pki := testPKI(t)
	base := t.TempDir()
	other := t.TempDir()
	emptyCA := filepath.Join(t.TempDir(), "empty.crt")
	if err := os.WriteFile(emptyCA, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key, ca := tlsArgs(pki)[1], tlsArgs(pki)[3], tlsArgs(pki)[5]
	listen := []string{"--listen", "127.0.0.1:0"}
	with := func(extra ...string) []string {
		return append(append(append([]string{}, listen...), tlsArgs(pki)...), extra...)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"stdio and listen", append([]string{"--stdio", "--root", base}, listen...), 2, "--stdio and --listen are exclusive"},
		{"no cert", append(listen, "--key", key, "--ca", ca, "--root", base), 2, "--listen needs --cert: the slave's certificate"},
		{"no key", append(listen, "--cert", cert, "--ca", ca, "--root", base), 2, "--listen needs --key"},
		{"no ca", append(listen, "--cert", cert, "--key", key, "--root", base), 2, "--listen needs --ca"},
		{"bad address", []string{"--listen", "7070", "--cert", cert, "--key", key, "--ca", ca, "--root", base}, 2, `--listen "7070": want HOST:PORT`},
		{"no root", with(), 2, "--listen needs --root DIR (one root) or --volume NAME=DIR"},
		{"root and volume", with("--root", base, "--volume", "a="+other), 2, "--root and --volume are exclusive"},
		{"volume without dir", with("--volume", "a"), 2, `--volume "a": want NAME=DIR`},
		{"bad volume name", with("--volume", "-a="+base), 2, `volume name "-a" is not allowed`},
		{"volume twice", with("--volume", "a="+base, "--volume", "a="+other), 2, "volume a is given twice"},
		{"same directory twice", with("--volume", "a="+base, "--volume", "b="+base), 1, "volumes a and b are the same directory"},
		{"timeout", with("--root", base, "--timeout", "1m"), 2, "--timeout applies to --stdio sessions only"},
		{"cert with stdio", []string{"--stdio", "--root", base, "--cert", cert, "--allow", "m1"}, 2, "--cert, --allow apply to --listen only"},
		{"unusable CA", []string{"--listen", "127.0.0.1:0", "--cert", cert, "--key", key, "--ca", emptyCA, "--root", base}, 1,
			"load the slave's TLS files (--cert, --key, --ca): CA file " + emptyCA + " is empty"},
		{"missing root", with("--volume", "a="+filepath.Join(base, "missing")), 1, "slave root " + filepath.Join(base, "missing") + " does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"slave"}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("run: %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
			}
			if exitErr.ExitCode() != tc.code {
				t.Errorf("exit code = %d, want %d", exitErr.ExitCode(), tc.code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.want)
			}
		})
	}
}

// TestSlaveListenLogsIdentityPerConnection: the verified master identity is
// logged once per connection, however many calls it carries.
func TestSlaveListenLogsIdentityPerConnection(t *testing.T) {
	bin := buildGeorep(t)
	pki := testPKI(t)
	d := startListen(t, bin, append(tlsArgs(pki), "--root", t.TempDir(), "--allow", "m1")...)
	cfg, err := tlsconfig.Client(filepath.Join(pki, "m1.crt"), filepath.Join(pki, "m1.key"), filepath.Join(pki, certs.CACertFile), "")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i := range 3 {
		resp, err := healthpb.NewHealthClient(cc).Check(callCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check %d: %v", i, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health status = %v, want SERVING", resp.GetStatus())
		}
	}
	if n := strings.Count(d.stderr.String(), `msg="master connected" identity=m1`); n != 1 {
		t.Errorf("%d 'master connected identity=m1' lines for one connection of 3 calls, want 1:\n%s", n, d.stderr.String())
	}
}

func TestSlaveListenSignals(t *testing.T) {
	bin := buildGeorep(t)
	pki := testPKI(t)
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := startListen(t, bin, append(tlsArgs(pki), "--volume", "a="+t.TempDir(), "--volume", "b="+t.TempDir())...)
			// SIGHUP reloads and keeps serving.
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(d.stderr.String(), `msg="certificate loaded"`) {
				if time.Now().After(deadline) {
					t.Fatalf("no reload logged after SIGHUP:\n%s", d.stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			select {
			case <-d.exited:
				t.Fatalf("SIGHUP stopped the slave: %v", d.err)
			default:
			}
			if err := d.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			if code := d.waitExit(t, 30*time.Second); code != 0 {
				t.Fatalf("exit code = %d after %s, want 0", code, tc.name)
			}
			if !strings.Contains(d.stderr.String(), "stopping on signal") {
				t.Errorf("stderr lacks the stop message:\n%s", d.stderr.String())
			}
		})
	}
}
