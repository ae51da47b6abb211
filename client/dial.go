package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/codec"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server"
)

// MaxMsgSize bounds one gRPC message each way: a batch of 100,000 small
// entries fits, a runaway peer does not.
const MaxMsgSize = 64 << 20

// Options configures how a master reaches its slave.
type Options struct {
	// SSHCommand is the ssh program and its options, split on spaces
	// (--ssh-command). Empty means DefaultSSHCommand(StateDir).
	SSHCommand string
	// RemoteGeorep is the georep program on the slave host (--remote-georep).
	RemoteGeorep string
	// LocalGeorep is the georep program run for a local slave; empty means
	// this executable.
	LocalGeorep string
	// StateDir is the session's state directory; the ssh ControlMaster
	// socket lives there.
	StateDir string
	// SlaveTimeout is passed to the slave as --timeout; zero leaves the
	// slave's default.
	SlaveTimeout time.Duration
	// Master identifies this master at Handshake.
	Master *pb.VolumeMark
	// Claim, with Master, asks the Handshake to claim the slave root for
	// Master (see Session.Claim); nil leaves that to VolumeInfo and
	// KeepAlive.
	Claim *pb.Claim
	// Logger receives connection events; nil discards.
	Logger *slog.Logger
	// Alongside, when set, is called with the connection's client once
	// its transport is up, just before the Handshake goes: read-only calls
	// it starts travel with the Handshake instead of a round trip after
	// it. It must not block, and what it starts must end with the
	// connection or a context of its own. If the Handshake then fails,
	// their answers are worth nothing.
	Alongside func(pb.SlaveClient)

	// CertFile and KeyFile are this master's client certificate and key,
	// and CAFile the CA the slave's certificate must chain to (mTLS only).
	CertFile, KeyFile, CAFile string
	// ServerName is the name the slave's certificate must carry; empty means
	// the URL's host (mTLS only).
	ServerName string
}

// Conn is one established connection to a slave, handshake done.
type Conn struct {
	// Slave is the service client.
	Slave pb.SlaveClient
	// Info is what the slave said about itself at Handshake.
	Info *pb.HandshakeResponse
	// RTT is how long the Handshake took: a round trip to the slave and
	// its answer, the connection's latency as the master first meets it.
	RTT time.Duration

	cc   *grpc.ClientConn
	proc *procConn
	url  SlaveURL
	// opts are the options the connection was dialled with: the data
	// plane's rsync reaches the slave the same way.
	opts Options
	// sshOpts are the ssh options Dial added to the ssh command
	// (cipherOption's), for rsync's ssh too.
	sshOpts []string
}

// Close ends the connection and, for ssh and local slaves, the child process.
func (c *Conn) Close() error {
	err := c.cc.Close()
	if c.proc != nil {
		_ = c.proc.Close()
	}
	return err
}

// Finish closes a connection whose calls have all been answered, without
// the wait for the remote side's goodbye that Close makes. Over ssh that
// wait is a network round trip that tells the master nothing more: the
// slave has acknowledged what the master needed. A local slave's
// connection closes as with Close, since its goodbye costs nothing.
func (c *Conn) Finish() error {
	if c.proc != nil && c.url.Kind == KindSSH {
		c.proc.finish()
	}
	return c.Close()
}

// Process returns the child process behind an ssh or local connection
// (nil for mTLS); tests use it to cut the connection.
func (c *Conn) Process() *os.Process {
	if c.proc == nil {
		return nil
	}
	return c.proc.cmd.Process
}

// Explain turns an RPC error on this connection into words an operator can
// act on, adding what the ssh or slave process said when it died.
func (c *Conn) Explain(err error) error {
	if err == nil || c.proc == nil {
		return err
	}
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		return err
	}
	if why := explainProc(c.url, c.proc, 2*time.Second); why != nil {
		return fmt.Errorf("%w (%v)", why, err)
	}
	return err
}

// DefaultSSHCommand is the ssh command used when --ssh-command is not
// given: never prompt, notice a dead peer within a minute, and keep a
// ControlMaster socket in the state dir so the data plane can reuse the
// authenticated connection.
//
// The socket is ssh-%C (ssh's hash of host, port and user) in the state
// dir; where that would pass a Unix socket path's 108 bytes (a state dir
// of more than 62), it is just "ssh" (one session, one slave: unique
// enough); past that, there is no ControlMaster: ssh would refuse every
// connection ("ControlPath too long"), and without one each data-plane
// connection logs in on its own.
func DefaultSSHCommand(stateDir string) string {
	args := []string{"ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"}
	if stateDir == "" {
		return strings.Join(args, " ")
	}
	sock := filepath.Join(stateDir, "ssh-%C")
	if len(sock)-len("%C")+sshHashLen >= unixPathMax {
		sock = filepath.Join(stateDir, "ssh")
	}
	// A space would split the option; %, an ssh token.
	if len(sock) < unixPathMax && !strings.ContainsAny(stateDir, " \t%") {
		args = append(args, "-o", "ControlMaster=auto", "-o", "ControlPath="+sock, "-o", "ControlPersist=no")
	}
	return strings.Join(args, " ")
}

// unixPathMax is the size of sun_path in a Unix socket address, its
// terminating NUL included; sshHashLen is the length of ssh's %C.
const (
	unixPathMax = 108
	sshHashLen  = 40
)

// SSHArgv builds the ssh command line that runs the slave on u's host.
func SSHArgv(u SlaveURL, opts Options) []string {
	sshCmd := opts.SSHCommand
	if sshCmd == "" {
		sshCmd = DefaultSSHCommand(opts.StateDir)
	}
	argv := strings.Fields(sshCmd)
	if u.Port != 0 {
		argv = append(argv, "-p", strconv.Itoa(u.Port))
	}
	if u.User != "" {
		argv = append(argv, "-l", u.User)
	}
	remote := opts.RemoteGeorep
	if remote == "" {
		remote = "georep"
	}
	// "--" ends ssh's options so a host can never be read as one (the URL
	// parser also refuses a leading '-'). ssh joins the rest into one string
	// for the remote shell, so each word is quoted.
	argv = append(argv, "--", u.Host)
	rcmd := []string{shellQuote(remote), "slave", "--stdio", "--root", shellQuote(u.Path)}
	if opts.SlaveTimeout > 0 {
		rcmd = append(rcmd, "--timeout", opts.SlaveTimeout.String())
	}
	return append(argv, strings.Join(rcmd, " "))
}

// LocalArgv builds the command line of a local child slave.
func LocalArgv(u SlaveURL, opts Options) ([]string, error) {
	prog := opts.LocalGeorep
	if prog == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the georep executable for a local slave: %w", err)
		}
		prog = exe
	}
	argv := []string{prog, "slave", "--stdio", "--root", u.Path}
	if opts.SlaveTimeout > 0 {
		argv = append(argv, "--timeout", opts.SlaveTimeout.String())
	}
	return argv, nil
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Dial connects to the slave at u and performs the Handshake. For ssh and
// local slaves it starts a child process whose stdio carries one gRPC
// connection; that connection is not redialled: when it breaks, the caller
// dials again (a new process, a new handshake).
func Dial(ctx context.Context, u SlaveURL, opts Options) (*Conn, error) {
	switch u.Kind {
	case KindSSH:
		argv := SSHArgv(u, opts)
		extra := cipherOption(ctx, argv)
		if len(extra) > 0 && opts.Logger != nil {
			opts.Logger.Debug("ssh: AES-GCM first, this CPU runs it in hardware", slog.String("option", extra[1]))
		}
		c, err := dialProc(ctx, u, withOptions(argv, extra), opts)
		if err != nil {
			return nil, err
		}
		c.sshOpts = extra
		return c, nil
	case KindLocal:
		argv, err := LocalArgv(u, opts)
		if err != nil {
			return nil, err
		}
		return dialProc(ctx, u, argv, opts)
	case KindMTLS:
		return DialTLS(ctx, u, opts)
	default:
		return nil, fmt.Errorf("dial %s: unknown transport %s", u, u.Kind)
	}
}

// transportTuning sizes flow-control windows and buffers for a session's
// long data streams, as the slave does (server.StreamWindow and friends),
// and encodes messages with georep's codec, as the slave does.
func transportTuning() []grpc.DialOption {
	return []grpc.DialOption{
		codec.DialOption(),
		grpc.WithInitialWindowSize(server.StreamWindow),
		grpc.WithInitialConnWindowSize(server.ConnWindow),
		grpc.WithWriteBufferSize(server.IOBuffer),
		grpc.WithReadBufferSize(server.IOBuffer),
	}
}

func dialProc(ctx context.Context, u SlaveURL, argv []string, opts Options) (*Conn, error) {
	proc, err := startProc(argv, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to slave %s: %w", u, err)
	}
	d := &procDialer{conn: proc, explain: func(p *procConn) error {
		if why := explainProc(u, p, time.Second); why != nil {
			return why
		}
		return fmt.Errorf("connection to slave %s closed", u)
	}}
	cc, err := grpc.NewClient("passthrough:///georep-slave", append([]grpc.DialOption{
		grpc.WithContextDialer(d.dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMsgSize), grpc.MaxCallSendMsgSize(MaxMsgSize)),
	}, transportTuning()...)...)
	if err != nil {
		_ = proc.Close()
		return nil, fmt.Errorf("connect to slave %s: %w", u, err)
	}
	c := &Conn{Slave: pb.NewSlaveClient(cc), cc: cc, proc: proc, url: u, opts: opts}
	if err := c.handshake(ctx, opts); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, opts Options) error {
	req := &pb.HandshakeRequest{
		Protocol: &pb.Version{Major: server.ProtocolMajor, Minor: server.ProtocolMinor},
		Object:   &pb.Version{Major: server.ObjectMajor, Minor: server.ObjectMinor},
		Master:   opts.Master,
		// Offered so the slave knows; the master picks from the answer.
		Compressions: []pb.Compression{pb.Compression_COMPRESSION_ZSTD},
	}
	if opts.Master != nil {
		req.Claim = opts.Claim
	}
	// A child that dies before answering (ssh refused, georep missing) is
	// reported at once rather than when ctx expires.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.proc != nil {
		go func() {
			select {
			case <-c.proc.exited:
				cancel()
			case <-hctx.Done():
			}
		}()
	}
	// The transport first (ssh's login, the slave's start, its HTTP/2
	// settings), so that the Handshake's own time is one round trip.
	waitReady(hctx, c.cc)
	if opts.Alongside != nil && c.cc.GetState() == connectivity.Ready {
		opts.Alongside(c.Slave)
	}
	start := time.Now()
	info, err := c.Slave.Handshake(hctx, req)
	c.RTT = time.Since(start)
	if err != nil {
		if c.proc != nil {
			if why := explainProc(c.url, c.proc, time.Second); why != nil {
				return fmt.Errorf("handshake with slave %s: %w", c.url, why)
			}
			// Still running (a prompt nobody answers, a hung host): say
			// what it printed.
			if tail := lastLines(c.proc.stderr.String(), 5); tail != "" {
				return fmt.Errorf("handshake with slave %s: %w; the %s process said:\n%s", c.url, err, c.url.Kind, tail)
			}
		}
		return fmt.Errorf("handshake with slave %s: %w", c.url, err)
	}
	c.Info = info
	return nil
}

// waitReady waits until cc's transport is up, has failed, or ctx ends;
// the caller's next call reports a failure.
func waitReady(ctx context.Context, cc *grpc.ClientConn) {
	cc.Connect()
	for {
		switch st := cc.GetState(); st {
		case connectivity.Ready, connectivity.TransientFailure, connectivity.Shutdown:
			return
		default:
			if !cc.WaitForStateChange(ctx, st) {
				return
			}
		}
	}
}

// explainProc describes why a child process ended, from its exit status and
// the last lines of its stderr. It returns nil while the process runs.
func explainProc(u SlaveURL, p *procConn, wait time.Duration) error {
	exited, code, _ := p.exitStatus(wait)
	if !exited {
		return nil
	}
	tail := lastLines(p.stderr.String(), 5)
	said := ""
	if tail != "" {
		said = "; it said:\n" + tail
	}
	lower := strings.ToLower(tail)
	var hint string
	switch {
	case code == 127 || strings.Contains(lower, "command not found"):
		hint = fmt.Sprintf("georep is not installed on %s (or not at the path given by --remote-georep); install it there with `georep slave install %s`", u.Host, u.Host)
	case strings.Contains(lower, "permission denied (publickey"):
		hint = fmt.Sprintf("%s refused the ssh key; add this master's public key to ~/.ssh/authorized_keys of %s on %s (see deploy/ for the forced-command line)", u.Host, userOr(u.User), u.Host)
	case strings.Contains(lower, "host key verification failed"):
		hint = fmt.Sprintf("the host key of %s is unknown or changed; check it and add it to known_hosts (ssh-keyscan %s)", u.Host, u.Host)
	case strings.Contains(lower, "could not resolve hostname"):
		hint = fmt.Sprintf("the slave host name %s does not resolve", u.Host)
	case strings.Contains(lower, "connection refused") || strings.Contains(lower, "timed out") || strings.Contains(lower, "no route to host"):
		hint = fmt.Sprintf("cannot reach sshd on %s", u.Host)
	case strings.Contains(lower, "slave root"):
		hint = "the slave refused its root directory"
	}
	who := "the slave process"
	if u.Kind == KindSSH {
		who = "ssh to " + u.Host
	}
	msg := fmt.Sprintf("%s exited with status %d", who, code)
	if hint != "" {
		msg += ": " + hint
	}
	return errors.New(msg + said)
}

func userOr(u string) string {
	if u == "" {
		return "the login user"
	}
	return u
}
