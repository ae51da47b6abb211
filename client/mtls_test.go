package client

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/certs"
	"github.com/georep/georep/internal/testbuf"
)

// mtlsPKI is a certificate directory made by certs.Generate: a CA, the
// slave's certificate for 127.0.0.1 and localhost, and client
// certificates for masters m1 and m2.
type mtlsPKI struct{ dir string }

func newMTLSPKI(t *testing.T) mtlsPKI {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, []string{"127.0.0.1", "localhost"}, []string{"m1", "m2"}); err != nil {
		t.Fatalf("generate certificates: %v", err)
	}
	return mtlsPKI{dir: dir}
}

func (p mtlsPKI) path(name string) string { return filepath.Join(p.dir, name) }

// serverArgs are the slave's certificate flags.
func (p mtlsPKI) serverArgs() []string {
	return []string{"--cert", p.path(certs.ServerCertFile), "--key", p.path(certs.ServerKeyFile), "--ca", p.path(certs.CACertFile)}
}

// clientOptions are a master's TLS options for client name.
func (p mtlsPKI) clientOptions(name string) Options {
	return Options{CertFile: p.path(certs.ClientCertFile(name)), KeyFile: p.path(certs.ClientKeyFile(name)), CAFile: p.path(certs.CACertFile)}
}

// listenSlave is a `georep slave --listen` daemon run as a child process.
type listenSlave struct {
	cmd    *exec.Cmd
	stderr *testbuf.Buffer
	addr   string // the address it bound, from its "listening on" log line
	exited chan struct{}
	err    error // Wait's result, valid once exited is closed
}

var listeningRE = regexp.MustCompile(`listening on (\S+?)"`)

// startListenSlave runs `georep slave --listen addr args...` and waits until
// it logs the address it bound (addr may use port 0). The daemon is
// killed when the test ends, and its log shown if the test failed.
func startListenSlave(t *testing.T, addr string, args ...string) *listenSlave {
	t.Helper()
	d, err := launchListenSlave(t, addr, args...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// launchListenSlave is startListenSlave returning its failure, for callers
// off the test's goroutine.
func launchListenSlave(t *testing.T, addr string, args ...string) (*listenSlave, error) {
	d := &listenSlave{stderr: &testbuf.Buffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(georepBin, append([]string{"slave", "--listen", addr, "--log-level", "debug"}, args...)...)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start georep slave --listen: %w", err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.kill()
		if t.Failed() {
			t.Logf("slave --listen %s stderr:\n%s", addr, d.stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(d.stderr.String()); m != nil {
			d.addr = m[1]
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("georep slave --listen exited before listening (%v); stderr:\n%s", d.err, d.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("georep slave --listen did not report its address within 30s; stderr:\n%s", d.stderr.String())
		}
	}
}

// kill SIGKILLs the daemon (if still running) and waits for it.
func (d *listenSlave) kill() {
	select {
	case <-d.exited:
	default:
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// signal sends sig to the daemon.
func (d *listenSlave) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to the slave: %v", sig, err)
	}
}

// url is the slave URL of the daemon, naming volume when not empty.
func (d *listenSlave) url(t *testing.T, volume string) SlaveURL {
	t.Helper()
	s := "grpcs://" + d.addr
	if volume != "" {
		s += "/" + volume
	}
	u, err := ParseSlaveURL(s)
	if err != nil {
		t.Fatalf("parse %s: %v", s, err)
	}
	return u
}

// waitExit waits for the daemon to exit and returns its exit code.
func (d *listenSlave) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(within):
		t.Fatalf("slave still running after %v", within)
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

// mtlsPoll polls cond every 20ms until it holds, failing the test after within.
func mtlsPoll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialMTLS is the conformance suite's mTLS transport: a `georep slave
// --listen` daemon on 127.0.0.1 serving root, reached as master m1.
func dialMTLS(t *testing.T, root string) *Conn {
	t.Helper()
	pki := newMTLSPKI(t)
	d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1", "--root", root)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := DialTLS(ctx, d.url(t, ""), pki.clientOptions("m1"))
	if err != nil {
		t.Fatalf("dial mTLS slave: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mtlsCtx is the deadline of one test step.
func mtlsCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
