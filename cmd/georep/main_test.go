package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/pipeconn"
	"github.com/georep/georep/internal/testbuf"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server"
)

// buildGeorep builds the georep binary into a temporary directory, with
// extra go build arguments (such as -ldflags) before the package.
func buildGeorep(t *testing.T, extra ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "georep")
	args := append(append([]string{"build", "-o", bin}, extra...), ".")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build georep: %v\n%s", err, out)
	}
	return bin
}

// slaveProc is a `georep slave --stdio` child and a gRPC client speaking to
// it over its stdin/stdout, as a master does through ssh.
type slaveProc struct {
	cmd    *exec.Cmd
	stderr *testbuf.Buffer
	conn   *pipeconn.Conn
	cc     *grpc.ClientConn
	client pb.SlaveClient
	exited chan struct{}
	err    error // Wait's result, valid once exited is closed
}

func startSlave(t *testing.T, bin string, args ...string) *slaveProc {
	t.Helper()
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatalf("create stdin pipe: %v", err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatalf("create stdout pipe: %v", err)
	}
	p := &slaveProc{stderr: &testbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"slave"}, args...)...)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = stdinR, stdoutW, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	// The child holds its ends now; ours must go so EOF can propagate.
	stdinR.Close()
	stdoutW.Close()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("slave stderr:\n%s", p.stderr.String())
		}
	})

	p.conn = pipeconn.New(stdoutR, stdinW)
	var once sync.Once
	p.cc, err = grpc.NewClient("passthrough:///slave",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(server.MaxMessageSize), grpc.MaxCallRecvMsgSize(server.MaxMessageSize)),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			var c net.Conn
			once.Do(func() { c = p.conn })
			if c == nil {
				return nil, errors.New("the slave's stdio is gone; it cannot be redialled")
			}
			return c, nil
		}))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() { p.cc.Close() })
	p.client = pb.NewSlaveClient(p.cc)
	return p
}

// waitExit waits for the child to exit and returns its exit code.
func (p *slaveProc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		t.Fatalf("slave still running after %v; stderr:\n%s", within, p.stderr.String())
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode()
	default:
		t.Fatalf("wait for slave: %v", p.err)
		return -1
	}
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func handshake(t *testing.T, c pb.SlaveClient) *pb.HandshakeResponse {
	t.Helper()
	resp, err := c.Handshake(callCtx(t), &pb.HandshakeRequest{
		Protocol: &pb.Version{Major: server.ProtocolMajor, Minor: server.ProtocolMinor},
		Object:   &pb.Version{Major: server.ObjectMajor, Minor: server.ObjectMinor},
	})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return resp
}

func TestSlaveStdioSession(t *testing.T) {
	bin := buildGeorep(t)
	root := t.TempDir()
	p := startSlave(t, bin, "--root", root, "--stdio", "--log-level", "debug")

	hs := handshake(t, p.client)
	if hs.GetRoot() != root {
		t.Errorf("handshake root = %q, want %q", hs.GetRoot(), root)
	}
	if hs.GetSoftwareVersion() == "" {
		t.Error("handshake carries no software version")
	}

	dir, file := gfid.New(), gfid.New()
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	resp, err := p.client.EntryOps(callCtx(t), &pb.EntryOpsRequest{Entries: []*pb.Entry{
		{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: dir.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("docs"),
			Stat: &pb.Stat{Mode: syscall.S_IFDIR | 0o750, Uid: uid, Gid: gid}},
		{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: file.Bytes(), ParentGfid: dir.Bytes(), Name: []byte("read me.txt"),
			Stat: &pb.Stat{Mode: syscall.S_IFREG | 0o640, Uid: uid, Gid: gid}},
	}})
	if err != nil {
		t.Fatalf("entry ops: %v", err)
	}
	if len(resp.GetResults()) != 2 {
		t.Fatalf("%d results for 2 entries", len(resp.GetResults()))
	}
	for i, r := range resp.GetResults() {
		if r.GetErrno() != 0 {
			t.Errorf("entry %d: %s: %s", i, r.GetCode(), r.GetMessage())
		}
	}
	tests := []struct {
		path string
		mode os.FileMode
	}{
		{"docs", os.ModeDir | 0o750},
		{"docs/read me.txt", 0o640},
	}
	for _, tc := range tests {
		fi, err := os.Lstat(filepath.Join(root, tc.path))
		if err != nil {
			t.Errorf("%s not on disk: %v", tc.path, err)
			continue
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s mode = %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
	}

	info, err := p.client.VolumeInfo(callCtx(t), &pb.VolumeInfoRequest{})
	if err != nil {
		t.Fatalf("volume info: %v", err)
	}
	if !bytes.Equal(info.GetNative().GetUuid(), hs.GetNative().GetUuid()) {
		t.Errorf("volume info native uuid %x differs from the handshake's %x", info.GetNative().GetUuid(), hs.GetNative().GetUuid())
	}

	// The master going away (its end of stdin closing) ends the session
	// cleanly.
	if err := p.cc.Close(); err != nil {
		t.Fatalf("close client: %v", err)
	}
	if code := p.waitExit(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code = %d after the master hung up, want 0; stderr:\n%s", code, p.stderr.String())
	}
	logs := p.stderr.String()
	for _, want := range []string{"slave serving over stdio", "master closed the connection", "level=DEBUG"} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, logs)
		}
	}
}

func TestSlaveKeepAliveTimeout(t *testing.T) {
	bin := buildGeorep(t)
	p := startSlave(t, bin, "--root", t.TempDir(), "--stdio", "--timeout", "1s")
	handshake(t, p.client)
	for i := range 2 {
		if _, err := p.client.KeepAlive(callCtx(t), &pb.KeepAliveRequest{}); err != nil {
			t.Fatalf("keep-alive %d: %v", i, err)
		}
	}
	// Then the master falls silent without hanging up.
	if code := p.waitExit(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code = %d after keep-alives stopped, want 1", code)
	}
	if want := "georep: no keep-alive from the master for 1s; ending session\n"; !strings.HasSuffix(p.stderr.String(), want) {
		t.Fatalf("stderr does not end with %q:\n%s", want, p.stderr.String())
	}
}

func TestSlaveStopsOnSignal(t *testing.T) {
	bin := buildGeorep(t)
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startSlave(t, bin, "--root", t.TempDir(), "--stdio")
			handshake(t, p.client) // the slave is up and serving
			if err := p.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatalf("signal: %v", err)
			}
			if code := p.waitExit(t, 30*time.Second); code != 0 {
				t.Fatalf("exit code = %d after %s, want 0", code, tc.name)
			}
			if !strings.Contains(p.stderr.String(), "stopping on signal") {
				t.Errorf("stderr lacks the stop message:\n%s", p.stderr.String())
			}
		})
	}
}

func TestSlaveRefusesBadCommandLine(t *testing.T) {
	bin := buildGeorep(t)
	base := t.TempDir()
	file := filepath.Join(base, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatalf("write %s: %v", file, err)
	}
	missing := filepath.Join(base, "missing")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing root", []string{"--root", missing, "--stdio"}, 1,
			fmt.Sprintf("georep: slave root %s does not exist: create it (mkdir -p %s) or fix --root\n", missing, missing)},
		{"root is a file", []string{"--root", file, "--stdio"}, 1,
			fmt.Sprintf("georep: slave root %s is not a directory", file)},
		{"no root", []string{"--stdio"}, 2, "georep: --root is required"},
		{"no transport", []string{"--root", base}, 2, "georep: one of --stdio or --listen is required"},
		{"unknown flag", []string{"--root", base, "--stdio", "--port", "1"}, 2, "unknown flag: --port"},
		{"bad log level", []string{"--root", base, "--stdio", "--log-level", "loud"}, 2, `--log-level "loud"`},
		{"bad log format", []string{"--root", base, "--stdio", "--log-format", "xml"}, 2, `--log-format "xml"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, append([]string{"slave"}, tc.args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) {
				t.Fatalf("run: %v, want a non-zero exit", err)
			}
			if exitErr.ExitCode() != tc.code {
				t.Errorf("exit code = %d, want %d", exitErr.ExitCode(), tc.code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout (the wire) got %q", stdout.String())
			}
		})
	}
}

func TestSlaveLogFile(t *testing.T) {
	bin := buildGeorep(t)
	logFile := filepath.Join(t.TempDir(), "slave.log")
	p := startSlave(t, bin, "--root", t.TempDir(), "--stdio", "--log-file", logFile, "--log-format", "json")
	handshake(t, p.client)
	p.cc.Close()
	if code := p.waitExit(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code = %d, want 0 (%v)", code, p.err)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("read log file: %v", err)
	}
	if !strings.Contains(string(logs), `"msg":"master handshake"`) {
		t.Errorf("log file lacks the JSON handshake line:\n%s", logs)
	}
	if p.stderr.String() != "" {
		t.Errorf("stderr got %q although logs go to --log-file", p.stderr.String())
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		name    string
		ldflags []string
		want    *regexp.Regexp
	}{
		{"from build info", nil, regexp.MustCompile(`^georep \S+ \(protocol 1\.0, go1\.\d+[^)]*\)\n$`)},
		{"from ldflags", []string{"-ldflags", "-X main.version=v9.8.7-test"}, regexp.MustCompile(`^georep v9\.8\.7-test \(protocol 1\.0, go1\.\d+[^)]*\)\n$`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bin := buildGeorep(t, tc.ldflags...)
			out, err := exec.Command(bin, "version").Output()
			if err != nil {
				t.Fatalf("georep version: %v", err)
			}
			if !tc.want.Match(out) {
				t.Fatalf("georep version printed %q, want %v", out, tc.want)
			}
		})
	}
}
