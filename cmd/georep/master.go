package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/spf13/cobra"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/gcfloor"
	"github.com/georep/georep/syncer"
)

// masterGCFloor is the heap below which the master's garbage collector
// waits (see gcfloor): a first crawl's plan of a 20,000-file tree is about
// 60 MiB, and collecting it on its way up cost the crawl a sixth of its
// CPU. Trees whose plan is larger are paced as before.
const masterGCFloor = 128 << 20

// masterConfig is everything `georep master` is configured with; every flag
// is bound here and nowhere else.
type masterConfig struct {
	Root            string
	Slave           string
	State           string
	Once            bool
	SyncMode        string
	Detector        string
	ChangeInterval  time.Duration
	ChangeSettle    time.Duration
	SyncJobs        int
	SSHChannels     int
	BwLimit         string
	Compress        string
	IgnoreDeletes   bool
	AllowMassDelete bool
	Force           bool
	Excludes        []string
	SSHCommand      string
	RemoteGeorep    string
	Cert, Key, CA   string
	ServerName      string
	KeepAlive       time.Duration
	SlaveTimeout    time.Duration
	GiveUpAfter     time.Duration
	MetricsAddr     string
	Log             logConfig
	Progress        string
}

func (c *masterConfig) bindFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.Root, "root", "", "the master tree to replicate (required)")
	fs.StringVar(&c.Slave, "slave", "", "the slave URL: /path, file:///path, [user@]host:/path, ssh://[user@]host[:port]/path or grpcs://host:port[/NAME] (required)")
	fs.StringVar(&c.State, "state", "", "the session's state directory: index, change journal, status (required; one per session)")
	fs.BoolVar(&c.Once, "once", false, "bring the slave to the master's state as of start-up, then exit (0 when everything synced; 1 when something failed, or the slave stayed unreachable for --give-up-after)")
	fs.DurationVar(&c.GiveUpAfter, "give-up-after", syncer.OnceGiveUpAfter, "with --once: how long the slave may stay unreachable (every connection attempt failing) before the run exits 1 (without --once it does nothing: a running session never gives up, it shows Faulty and keeps retrying)")
	fs.StringVar(&c.SyncMode, "sync-mode", syncer.SyncNative, "how file data moves: native (gRPC streams over the session's connection, whole files and block deltas) or rsync (rsync into the slave's staging area, through the session's ssh ControlMaster or, for grpcs:// slaves, a gRPC tunnel)")
	fs.StringVar(&c.Detector, "change-detector", syncer.DetectorChangelog, "how changes are found in continuous mode: changelog (fanotify/inotify, live) or xsync (a full Hybrid Crawl per --change-interval)")
	fs.DurationVar(&c.ChangeInterval, "change-interval", syncer.DefaultChangeInterval, "how long live changes are gathered into one batch at most (xsync: the time between crawls)")
	fs.DurationVar(&c.ChangeSettle, "change-settle", syncer.DefaultChangeSettle, "cut a batch of live changes before --change-interval once none came for this long, so a burst is replicated as soon as it ends (changelog; 0: cut only at --change-interval)")
	fs.IntVar(&c.SyncJobs, "sync-jobs", 3, "file data streams in parallel")
	fs.IntVar(&c.SSHChannels, "ssh-data-channels", syncer.DefaultSSHDataChannels, "extra ssh sessions to the slave host for a batch's data when the round trip is 20ms or more and the batch 64MiB or more, each with --sync-jobs streams: one ssh channel carries at most 2MiB per round trip (native mode; 0: never)")
	fs.StringVar(&c.BwLimit, "bwlimit", "0", "cap the data plane's bandwidth per session, in bytes per second with a unit: 512KiB, 10MiB, 1.5MB (0: no cap)")
	fs.StringVar(&c.Compress, "compress", syncer.CompressAuto, "compress file data on the wire: auto (zstd when the slave accepts it, chunk by chunk where it shrinks the data), zstd (the same, and fail if the slave cannot) or none")
	fs.BoolVar(&c.IgnoreDeletes, "ignore-deletes", false, "do not propagate deletions on the master to the slave")
	fs.BoolVar(&c.AllowMassDelete, "allow-mass-delete", false, "confirm that an emptied (or replaced) master root should empty the slave; without it the session halts as Faulty")
	fs.BoolVar(&c.Force, "force", false, "take over a slave root that another master's session holds")
	fs.StringArrayVar(&c.Excludes, "exclude", nil, "gitignore-style pattern of paths never replicated (repeatable)")
	fs.StringVar(&c.SSHCommand, "ssh-command", "", "ssh program and options used to reach an ssh slave (default: ssh with BatchMode, ServerAliveInterval and a ControlMaster socket in --state)")
	fs.StringVar(&c.RemoteGeorep, "remote-georep", "georep", "the georep program on the slave host (ssh slaves)")
	fs.StringVar(&c.Cert, "cert", "", "this master's client certificate (grpcs:// slaves)")
	fs.StringVar(&c.Key, "key", "", "the key of --cert (grpcs:// slaves)")
	fs.StringVar(&c.CA, "ca", "", "the CA that signed the slave's certificate (grpcs:// slaves)")
	fs.StringVar(&c.ServerName, "server-name", "", "the name to verify the slave's certificate against (default: the URL's host)")
	fs.DurationVar(&c.KeepAlive, "keepalive-interval", 10*time.Second, "how often the master tells the slave it is alive")
	fs.DurationVar(&c.SlaveTimeout, "slave-timeout", 0, "passed to an ssh or local slave as --timeout (0: the slave's default)")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port, logged at start)")
	fs.StringVar(&c.Log.Level, "log-level", "info", "least severe log level written: debug, info, warn or error")
	fs.StringVar(&c.Log.Format, "log-format", "text", "log line format: text or json")
	fs.StringVar(&c.Log.File, "log-file", "", "append logs to this file instead of stderr")
	fs.StringVar(&c.Progress, "progress", progressAuto, "draw a progress bar on stderr during --once and the first crawl: auto (only on a terminal), true or false")
	fs.Lookup("progress").NoOptDefVal = progressOn
}

func (c *masterConfig) check() (client.SlaveURL, error) {
	for _, f := range []struct{ name, val string }{{"--root", c.Root}, {"--slave", c.Slave}, {"--state", c.State}} {
		if f.val == "" {
			return client.SlaveURL{}, &usageError{fmt.Errorf("%s is required", f.name)}
		}
	}
	u, err := client.ParseSlaveURL(c.Slave)
	if err != nil {
		return u, &usageError{err}
	}
	if c.SyncMode != syncer.SyncNative && c.SyncMode != syncer.SyncRsync {
		return u, &usageError{fmt.Errorf("--sync-mode %q: accepted values are native and rsync", c.SyncMode)}
	}
	if _, err := parseBwLimit(c.BwLimit); err != nil {
		return u, &usageError{err}
	}
	if c.Compress != syncer.CompressAuto && c.Compress != syncer.CompressZstd && c.Compress != syncer.CompressNone {
		return u, &usageError{fmt.Errorf("--compress %q: accepted values are auto, zstd and none", c.Compress)}
	}
	if c.Detector != syncer.DetectorChangelog && c.Detector != syncer.DetectorXsync {
		return u, &usageError{fmt.Errorf("--change-detector %q: accepted values are changelog and xsync", c.Detector)}
	}
	if c.Progress != progressAuto && c.Progress != progressOn && c.Progress != progressOff {
		return u, &usageError{fmt.Errorf("--progress %q: accepted values are auto, true and false", c.Progress)}
	}
	if c.SyncJobs < 1 || c.SyncJobs > 64 {
		return u, &usageError{fmt.Errorf("--sync-jobs %d: must be 1 to 64", c.SyncJobs)}
	}
	if c.SSHChannels < 0 || c.SSHChannels > 8 {
		return u, &usageError{fmt.Errorf("--ssh-data-channels %d: must be 0 to 8", c.SSHChannels)}
	}
	if c.ChangeInterval < 10*time.Millisecond || c.ChangeInterval > time.Minute {
		return u, &usageError{fmt.Errorf("--change-interval %v: must be between 10ms and 1m", c.ChangeInterval)}
	}
	if c.GiveUpAfter < time.Second || c.GiveUpAfter > 24*time.Hour {
		return u, &usageError{fmt.Errorf("--give-up-after %v: must be between 1s and 24h", c.GiveUpAfter)}
	}
	if c.ChangeSettle < 0 || c.ChangeSettle > time.Minute {
		return u, &usageError{fmt.Errorf("--change-settle %v: must be between 0 (off) and 1m", c.ChangeSettle)}
	}
	if err := checkMetricsAddr(c.MetricsAddr); err != nil {
		return u, &usageError{err}
	}
	if inside, err := within(c.State, c.Root); err != nil {
		return u, &usageError{err}
	} else if inside {
		return u, &usageError{fmt.Errorf("--state %s is inside --root %s: the session's own index and journal would be replicated, and change with every sync; keep it outside the tree (e.g. /var/lib/georep/NAME)", c.State, c.Root)}
	}
	if u.Kind == client.KindLocal {
		if inside, err := within(u.Path, c.Root); err != nil {
			return u, &usageError{err}
		} else if inside {
			return u, &usageError{fmt.Errorf("slave %s is inside --root %s: the replica would replicate itself without end; put it outside the tree", u.Path, c.Root)}
		}
	}
	if u.Kind == client.KindMTLS && (c.Cert == "" || c.Key == "" || c.CA == "") {
		return u, &usageError{errors.New("a grpcs:// slave needs --cert, --key and --ca (georep certs makes them)")}
	}
	return u, nil
}

func newMasterCommand() *cobra.Command {
	var cfg masterConfig
	cmd := &cobra.Command{
		Use:   "master --root DIR --slave URL --state DIR [--once]",
		Short: "Replicate a master tree to a slave",
		Long: `Replicate the tree at --root to the slave at --slave, by identity (GFID).

With --once the slave is brought to the master's state as of start-up and
the command exits: 0 when everything synced, 1 with a summary otherwise
(also when the slave stays unreachable for --give-up-after, 2 minutes).
Without it the session runs until SIGINT or SIGTERM: a Hybrid Crawl at
start, then live changes (Changelog Crawl). Its state, including what
"georep status --state DIR" shows, lives in --state.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			u, err := cfg.check()
			if err != nil {
				return err
			}
			return runMaster(cmd.Context(), cfg, u, cmd.ErrOrStderr())
		},
	}
	cfg.bindFlags(cmd)
	bindConfigFile(cmd, "master")
	return cmd
}

func runMaster(ctx context.Context, cfg masterConfig, u client.SlaveURL, stderr io.Writer) error {
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	gcfloor.Set(gcCtx, masterGCFloor)
	var observers []syncer.Observer
	if wantProgress(cfg.Progress, stderr) {
		prog := newProgress(stderr, cfg.Once)
		observers, stderr = append(observers, prog), prog.logWriter(stderr)
	}
	logger, closeLog, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return &usageError{err}
	}
	defer closeLog()
	routeGRPCLogs(logger)
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return err
	}
	state, err := filepath.Abs(cfg.State)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	metricsObs, stopMetrics, err := startMetrics(ctx, cfg.MetricsAddr, logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	bwlimit, err := parseBwLimit(cfg.BwLimit)
	if err != nil {
		return err
	}
	err = syncer.Run(ctx, syncer.Config{
		Root: root, StateDir: state, Slave: u, Once: cfg.Once, Detector: cfg.Detector,
		ChangeInterval: cfg.ChangeInterval, ChangeSettle: cfg.ChangeSettle, SyncJobs: cfg.SyncJobs, SSHDataChannels: cfg.SSHChannels, SyncMode: cfg.SyncMode, BwLimit: bwlimit,
		Compress: cfg.Compress, IgnoreDeletes: cfg.IgnoreDeletes,
		AllowMassDelete: cfg.AllowMassDelete, Force: cfg.Force, Excludes: cfg.Excludes,
		KeepAliveInterval: cfg.KeepAlive, GiveUpAfter: cfg.GiveUpAfter, Logger: logger, Observer: multiObserver(append(observers, metricsObs)...),
		Dial: client.Options{SSHCommand: cfg.SSHCommand, RemoteGeorep: cfg.RemoteGeorep, StateDir: state,
			SlaveTimeout: cfg.SlaveTimeout, CertFile: cfg.Cert, KeyFile: cfg.Key, CAFile: cfg.CA, ServerName: cfg.ServerName,
			Logger: logger},
	})
	// syncer.Run already tells a requested stop (nil; for --once an error
	// saying it did not finish) from a failure.
	return logFailure(logger, cfg.Log, err)
}

// logFailure makes the reason a command ends a record of its log too,
// where the log is not plain text on stderr: a --log-file is where an
// operator looks (stderr still gets the usual line), and on stderr in
// JSON a plain line would be the one a log shipper cannot parse (there
// the record is the report).
func logFailure(logger *slog.Logger, cfg logConfig, err error) error {
	if err == nil || (cfg.File == "" && !strings.EqualFold(cfg.Format, "json")) {
		return err
	}
	logger.Error("georep stopped", "err", err.Error())
	if cfg.File == "" {
		return &loggedError{err}
	}
	return err
}

// parseBwLimit reads --bwlimit: bytes per second with a unit (KiB, MB...).
// A bare number other than 0 is refused: rsync reads one as KiB/s, a byte
// count would be read as bytes, and guessing wrong is a 1024-fold error.
func parseBwLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "0" || s == "" {
		return 0, nil
	}
	if strings.Trim(s, "0123456789.") == "" {
		return 0, fmt.Errorf("--bwlimit %q: say the unit, e.g. %sKiB or %sMB (bytes per second)", s, s, s)
	}
	n, err := humanize.ParseBytes(strings.TrimSuffix(strings.TrimSuffix(s, "/s"), "ps"))
	if err != nil {
		return 0, fmt.Errorf("--bwlimit %q: want bytes per second with a unit, e.g. 512KiB, 10MiB or 1.5MB: %w", s, err)
	}
	if n < 1024 || n > 1<<40 {
		return 0, fmt.Errorf("--bwlimit %q: must be between 1KiB and 1TiB per second (or 0 for no cap)", s)
	}
	return int64(n), nil
}

// within reports whether path is dir or beneath it, comparing real paths:
// symlinks are resolved for the part of each that exists, so a state
// directory reached through a symlink into the tree is caught too.
func within(path, dir string) (bool, error) {
	p, err := realPath(path)
	if err != nil {
		return false, err
	}
	d, err := realPath(dir)
	if err != nil {
		return false, err
	}
	rel, err := filepath.Rel(d, p)
	if err != nil {
		return false, nil
	}
	return rel == "." || rel != ".." && !strings.HasPrefix(rel, "../"), nil
}

// realPath is path made absolute with the symlinks of its longest existing
// prefix resolved; the rest (not created yet) is appended as written.
func realPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", path, err)
	}
	rest := ""
	for p := abs; ; p = filepath.Dir(p) {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if p == filepath.Dir(p) {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}
