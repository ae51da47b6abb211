package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/georep/georep/internal/tlsconfig"
	"github.com/georep/georep/server"
	"github.com/georep/georep/server/backend"
)

// listenConfig is the --listen (mTLS daemon) part of slaveConfig.
type listenConfig struct {
	Addr           string
	Cert, Key, CA  string
	Allow          []string
	Volumes        []string // NAME=DIR
	ReloadInterval time.Duration
}

func (c *listenConfig) bindFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.Addr, "listen", "", "serve masters over gRPC with mutual TLS on HOST:PORT, e.g. 0.0.0.0:7070 (port 0 picks a free port; the log says which)")
	fs.StringVar(&c.Cert, "cert", "", "with --listen: the slave's certificate (server.crt from georep certs)")
	fs.StringVar(&c.Key, "key", "", "with --listen: the slave's private key (server.key)")
	fs.StringVar(&c.CA, "ca", "", "with --listen: the CA masters' certificates must be signed by (ca.crt)")
	fs.StringSliceVar(&c.Allow, "allow", nil, "with --listen: admit only masters whose certificate names one of these (CN or SAN); repeatable or comma-separated (default: every certificate the CA signed)")
	fs.StringArrayVar(&c.Volumes, "volume", nil, "with --listen: serve directory DIR as volume NAME (NAME=DIR, repeatable); masters select it with grpcs://host:port/NAME")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", tlsconfig.DefaultPollInterval, "with --listen: how often the certificate, key and CA files are checked for changes (SIGHUP reloads at once)")
}

// setFlags names the listen-only flags that were given, so --stdio can refuse
// them instead of silently ignoring a certificate the operator meant to use.
func (c *listenConfig) setFlags() []string {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"--cert", c.Cert != ""}, {"--key", c.Key != ""}, {"--ca", c.CA != ""}, {"--allow", len(c.Allow) > 0}, {"--volume", len(c.Volumes) > 0}} {
		if f.set {
			set = append(set, f.name)
		}
	}
	return set
}

// check validates the --listen configuration; root and timeout are the
// slave's --root and --timeout.
func (c *listenConfig) check(root string, timeout time.Duration) error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return &usageError{fmt.Errorf("--listen %q: want HOST:PORT, e.g. 0.0.0.0:7070 or [::]:7070", c.Addr)}
	}
	for _, f := range []struct{ flag, value, what string }{
		{"--cert", c.Cert, "the slave's certificate (server.crt from georep certs)"},
		{"--key", c.Key, "the slave's private key (server.key from georep certs)"},
		{"--ca", c.CA, "the CA that signs masters' certificates (ca.crt from georep certs)"},
	} {
		if f.value == "" {
			return &usageError{fmt.Errorf("--listen needs %s: %s", f.flag, f.what)}
		}
	}
	switch {
	case root == "" && len(c.Volumes) == 0:
		return &usageError{errors.New("--listen needs --root DIR (one root) or --volume NAME=DIR (one or more named roots)")}
	case root != "" && len(c.Volumes) > 0:
		return &usageError{errors.New("--root and --volume are exclusive: to serve several roots, name each one with --volume NAME=DIR")}
	}
	if _, err := c.volumes(root); err != nil {
		return &usageError{err}
	}
	if timeout > 0 {
		return &usageError{errors.New("--timeout applies to --stdio sessions only: a --listen daemon serves until it is stopped, and each master's foreign mark expires on its own")}
	}
	if c.ReloadInterval <= 0 {
		return &usageError{fmt.Errorf("--reload-interval %v: must be positive", c.ReloadInterval)}
	}
	return nil
}

// volume is one slave root a daemon serves; Name "" is an unnamed --root.
type volume struct{ Name, Dir string }

// volumes lists the roots to serve: --root alone is one unnamed root,
// otherwise each --volume NAME=DIR.
func (c *listenConfig) volumes(root string) ([]volume, error) {
	if root != "" {
		return []volume{{Dir: root}}, nil
	}
	var out []volume
	seen := map[string]bool{}
	for _, v := range c.Volumes {
		name, dir, ok := strings.Cut(v, "=")
		if !ok || dir == "" {
			return nil, fmt.Errorf("--volume %q: want NAME=DIR, e.g. --volume backup=/srv/backup", v)
		}
		if err := server.CheckVolumeName(name); err != nil {
			return nil, fmt.Errorf("--volume %q: %w", v, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("--volume %q: volume %s is given twice", v, name)
		}
		seen[name] = true
		out = append(out, volume{Name: name, Dir: dir})
	}
	return out, nil
}

// runListen serves the slave roots to masters over mTLS until a signal
// stops it (nil) or serving fails (error).
func runListen(ctx context.Context, cfg slaveConfig, stderr io.Writer) (result error) {
	logger, closeLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return &usageError{err}
	}
	defer closeLog()
	routeGRPCLogs(logger)

	vols, err := cfg.Listen.volumes(cfg.Root)
	if err != nil {
		return &usageError{err}
	}
	services := map[string]*server.Service{}
	seenDirs := map[string]string{}
	for _, v := range vols {
		dir, err := checkRoot(v.Dir)
		if err != nil {
			return err
		}
		// Two backends on one tree would each think they own its index.
		if other, dup := seenDirs[dir]; dup {
			return fmt.Errorf("volumes %s and %s are the same directory %s: serve each directory once", other, v.Name, dir)
		}
		seenDirs[dir] = v.Name
		vlog := logger
		if v.Name != "" {
			vlog = logger.With("volume_name", v.Name)
		}
		b, err := backend.Open(dir, backend.Options{Logger: vlog.With("component", "backend")})
		if err != nil {
			return fmt.Errorf("open slave root %s: %w", dir, err)
		}
		defer func() {
			if err := b.Close(); err != nil {
				logger.Warn("closing the slave root", "root", dir, "err", err)
			}
		}()
		services[v.Name] = server.New(b, server.Options{SoftwareVersion: softwareVersion(), Logger: vlog})
		logger.Info("serving slave root", "volume_name", v.Name, "root", dir)
	}
	router, err := server.NewVolumes(services)
	if err != nil {
		return err
	}

	reloader, err := tlsconfig.Server(cfg.Listen.Cert, cfg.Listen.Key, cfg.Listen.CA, cfg.Listen.Allow, logger.With("component", "tls"))
	if err != nil {
		return fmt.Errorf("load the slave's TLS files (--cert, --key, --ca): %w", err)
	}

	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// SIGHUP is caught before the port opens: its default action would kill
	// a daemon an operator only meant to make re-read its certificate.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	lis, err := net.Listen("tcp", cfg.Listen.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (--listen): %w", cfg.Listen.Addr, err)
	}
	creds := &identityLogger{TransportCredentials: credentials.NewTLS(reloader.Config()), logger: logger}
	gs := server.NewGRPCServer(router, logger, grpc.Creds(creds))

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stops the goroutines below
	wg.Go(func() { reloader.Run(ctx, cfg.Listen.ReloadInterval) })
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				logger.Info("SIGHUP: reloading the certificate, key and CA")
				_ = reloader.Reload() // a failure is logged and the old files stay in service
			}
		}
	})

	serveErr := make(chan error, 1)
	go func() { serveErr <- gs.Serve(lis) }()
	// Tests and operators using port 0 read the bound address from this line.
	logger.Info("slave listening on "+lis.Addr().String(), "volumes", router.Names(), "allow", cfg.Listen.Allow,
		"version", softwareVersion())

	wait := time.Duration(0)
	select {
	case err := <-serveErr:
		serveErr <- err
		result = fmt.Errorf("serving gRPC on %s: %w", lis.Addr(), err)
		logger.Error("slave failed", "err", result)
	case <-ctx.Done():
		logger.Info("stopping on signal")
		wait = gracefulStopWait
	}
	stop(gs, wait)
	if err := <-serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) && result == nil {
		result = fmt.Errorf("serving gRPC on %s: %w", lis.Addr(), err)
	}
	return result
}

// identityLogger logs each connection's verified master identity once, when
// its TLS handshake completes, rather than on every call; and says why a
// handshake was refused, with the peer's address, which grpc-go only logs
// at a level georep discards.
type identityLogger struct {
	credentials.TransportCredentials
	logger *slog.Logger
}

func (c *identityLogger) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.logger.Warn("refused a connection: TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		return nil, nil, err
	}
	identity := ""
	if ti, ok := info.(credentials.TLSInfo); ok {
		identity = tlsconfig.PeerIdentity(ti.State)
	}
	c.logger.Info("master connected", "identity", identity, "remote", raw.RemoteAddr().String())
	return conn, info, nil
}

func (c *identityLogger) Clone() credentials.TransportCredentials {
	return &identityLogger{TransportCredentials: c.TransportCredentials.Clone(), logger: c.logger}
}
