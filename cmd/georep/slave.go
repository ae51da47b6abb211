package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/georep/georep/internal/gcfloor"
	"github.com/georep/georep/internal/pipeconn"
	"github.com/georep/georep/server"
	"github.com/georep/georep/server/backend"
)

// gracefulStopWait bounds how long a stopping slave lets in-flight calls
// finish before cutting them off.
const gracefulStopWait = 10 * time.Second

// slaveConfig is everything `georep slave` is configured with; every flag
// is bound here and nowhere else; the --listen (mTLS) flags live in Listen.
type slaveConfig struct {
	Root    string
	Stdio   bool
	Timeout time.Duration
	Listen  listenConfig
	Log     logConfig
}

func (c *slaveConfig) bindFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.Root, "root", "", "the slave root: the existing, writable directory the replica is kept in (required with --stdio; with --listen, or --volume)")
	fs.BoolVar(&c.Stdio, "stdio", false, "serve the gRPC API over stdin/stdout, for a master that starts this command through ssh (this or --listen)")
	fs.DurationVar(&c.Timeout, "timeout", 0, "with --stdio: end the session when the master sends no keep-alive for this long, e.g. 1m (0: never; the session still ends when stdin closes)")
	c.Listen.bindFlags(cmd)
	fs.StringVar(&c.Log.Level, "log-level", "info", "least severe log level written: debug, info, warn or error (debug logs every call)")
	fs.StringVar(&c.Log.Format, "log-format", "text", "log line format: text or json")
	fs.StringVar(&c.Log.File, "log-file", "", "append logs to this file instead of stderr (stdout is never used: with --stdio it is the gRPC wire)")
}

// check rejects a configuration that cannot work, before anything is opened.
func (c *slaveConfig) check() error {
	switch {
	case c.Stdio && c.Listen.Addr != "":
		return &usageError{errors.New("--stdio and --listen are exclusive: --stdio serves one master through ssh, --listen serves masters over mTLS")}
	case !c.Stdio && c.Listen.Addr == "":
		return &usageError{errors.New("one of --stdio or --listen is required: --stdio for a master that runs this command through ssh, --listen HOST:PORT for masters connecting over mTLS")}
	}
	if c.Timeout < 0 {
		return &usageError{fmt.Errorf("--timeout %v: must not be negative", c.Timeout)}
	}
	if c.Listen.Addr != "" {
		return c.Listen.check(c.Root, c.Timeout)
	}
	if c.Root == "" {
		return &usageError{errors.New("--root is required: the directory the replica is kept in")}
	}
	if set := c.Listen.setFlags(); len(set) > 0 {
		return &usageError{fmt.Errorf("%s apply to --listen only: --stdio serves the one --root through ssh", strings.Join(set, ", "))}
	}
	return nil
}

func newSlaveCommand() *cobra.Command {
	var cfg slaveConfig
	cmd := &cobra.Command{
		Use:   "slave (--stdio --root DIR [--timeout DUR] | --listen HOST:PORT --cert F --key F --ca F [--allow NAME...] (--root DIR | --volume NAME=DIR...))",
		Short: "Serve a slave root to a georep master",
		Long: `Serve a slave root to a georep master over the georep.v1 Slave gRPC API.

With --stdio the API runs over this process's stdin/stdout, which is how a
master reaches a slave through ssh: put
  restrict,command="georep slave --stdio --root /srv/replica" ssh-ed25519 AAAA...
in the slave user's authorized_keys. The command exits 0 when the master
closes the connection, and 1 with a message when it fails, including when
--timeout passes without a keep-alive from the master. SIGINT and SIGTERM
stop it cleanly.

With --listen the slave is a daemon serving masters over gRPC with mutual
TLS 1.3: it presents --cert/--key, admits only masters whose certificate the
--ca signed (and, with --allow, that name an allowed identity), and serves
one --root, or several roots by name with --volume NAME=DIR; a master picks
one with the slave URL grpcs://host:port/NAME. The certificate, key and CA
are re-read when they change on disk (every --reload-interval) and at once on
SIGHUP, without dropping connections. georep certs makes the files.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.check(); err != nil {
				return err
			}
			// Under a forced command (authorized_keys command="georep slave
			// --stdio --root R") a master's rsync asks for the daemon; it
			// gets the pinned root's staging area, never another.
			if cfg.Stdio && sshRsyncRequest() {
				return execRsyncd(cmd.Context(), cfg.Root)
			}
			if cfg.Listen.Addr != "" {
				return runListen(cmd.Context(), cfg, cmd.ErrOrStderr())
			}
			return runSlave(cmd.Context(), cfg, cmd.ErrOrStderr())
		},
	}
	cfg.bindFlags(cmd)
	bindConfigFile(cmd, "slave")
	cmd.AddCommand(newSlaveInstallCommand())
	cmd.AddCommand(newSlaveRsyncdCommand())
	return cmd
}

// checkRoot resolves --root and explains what is wrong with it, if anything,
// in terms an operator can fix.
func checkRoot(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve --root %q: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("slave root %s does not exist: create it (mkdir -p %s) or fix --root", abs, abs)
	case err != nil:
		return "", fmt.Errorf("cannot examine slave root %s: %w", abs, err)
	case !fi.IsDir():
		return "", fmt.Errorf("slave root %s is not a directory: --root must name a directory", abs)
	}
	if err := unix.Access(abs, unix.W_OK|unix.X_OK); err != nil {
		return "", fmt.Errorf("slave root %s is not writable by uid %d (%w): fix its owner or mode, or run as its owner", abs, os.Getuid(), err)
	}
	return abs, nil
}

// slaveGCFloor is the heap below which a slave's garbage collector waits
// (see gcfloor). A slave keeps little (the files in its commit queues),
// but every message it receives is a fresh buffer, 200 MiB of them in a
// 200 MiB initial sync: at GOGC=100 a collection every few MiB.
const slaveGCFloor = 64 << 20

// runSlave serves one session over stdin/stdout until the master hangs up
// (nil), the keep-alive timeout passes (error), or a signal arrives (nil).
func runSlave(ctx context.Context, cfg slaveConfig, stderr io.Writer) error {
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	gcfloor.Set(gcCtx, slaveGCFloor)
	logger, closeLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return &usageError{err}
	}
	defer closeLog()
	routeGRPCLogs(logger)

	root, err := checkRoot(cfg.Root)
	if err != nil {
		return err
	}
	b, err := backend.Open(root, backend.Options{Logger: logger.With("component", "backend")})
	if err != nil {
		return fmt.Errorf("open slave root %s: %w", root, err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			logger.Warn("closing the slave root", "root", root, "err", err)
		}
	}()

	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The master going away is how a session ends: a write to its closed
	// stdout (the transport's goodbye, a last log line) must fail with
	// EPIPE, not kill the slave with SIGPIPE before it closes the root.
	signal.Ignore(syscall.SIGPIPE)

	svc := server.New(b, server.Options{SoftwareVersion: softwareVersion(), Logger: logger})
	gs := server.NewGRPCServer(svc, logger)
	conn := pipeconn.New(pollable(os.Stdin, unix.Stdin, "stdin"), pollable(os.Stdout, unix.Stdout, "stdout"))
	defer conn.Close()

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(pipeconn.NewListener(conn)) }()
	// With no --timeout there is no watcher, and a nil channel never
	// delivers, so the select below ignores it.
	var watchErr chan error
	if cfg.Timeout > 0 {
		watchErr = make(chan error, 1)
		go func() { watchErr <- svc.WatchKeepAlive(ctx, cfg.Timeout) }()
	}
	logger.Info("slave serving over stdio", "root", root, "version", softwareVersion(), "timeout", cfg.Timeout)

	var result error
	wait := time.Duration(0)
	select {
	case <-conn.Done():
		logger.Info("the master closed the connection; ending session", "keep_alives", svc.KeepAlives())
	case err := <-serveErr:
		serveErr <- err // stop below waits for it again
		result = fmt.Errorf("serving gRPC over stdio: %w", err)
	case err := <-watchErr:
		watchErr <- err
		result = err
	case <-ctx.Done():
		logger.Info("stopping on signal", "keep_alives", svc.KeepAlives())
		wait = gracefulStopWait
	}
	if result != nil {
		logger.Error("slave session failed", "err", result)
	}

	stop(gs, wait)
	cancel()
	// ErrServerStopped only means the stop above won the race with Serve.
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) && result == nil {
		result = fmt.Errorf("serving gRPC over stdio: %w", err)
	}
	if watchErr != nil {
		<-watchErr
	}
	return result
}

// stop lets in-flight calls finish for up to wait, then cuts off whatever
// is left; it returns once the server has stopped.
func stop(gs *grpc.Server, wait time.Duration) {
	if wait <= 0 {
		gs.Stop()
		return
	}
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		gs.Stop() // also makes the GracefulStop above return
		<-done
	}
}

// pollable returns a File for standard fd that Go's poller manages, so that
// closing it interrupts a blocked Read or Write. A pipe or socket inherited
// from ssh is usually in blocking mode, and a blocking Read on it would
// hold the fd open and keep the gRPC server from ever stopping. If the mode
// cannot be changed, the original File is used.
func pollable(orig *os.File, fd int, name string) *os.File {
	if err := unix.SetNonblock(fd, true); err != nil {
		return orig
	}
	return os.NewFile(uintptr(fd), name)
}
