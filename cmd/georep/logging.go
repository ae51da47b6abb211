package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc/grpclog"
)

// logConfig is the logging part of a subcommand's configuration.
type logConfig struct {
	Level  string // debug, info, warn, error
	Format string // text or json
	File   string // empty: stderr
}

// newLogger builds the process logger. Logs go to the log file or to
// stderr, never to stdout. The returned close function closes the log file.
func newLogger(cfg logConfig, stderr io.Writer) (*slog.Logger, func() error, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", cfg.Level)
	}
	w, closeFn := stderr, func() error { return nil }
	if cfg.File != "" {
		f, err := os.OpenFile(cfg.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("open --log-file: %w", err)
		}
		w, closeFn = f, f.Close
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(cfg.Format) {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		closeFn()
		return nil, nil, fmt.Errorf("--log-format %q: use text or json", cfg.Format)
	}
	return slog.New(h), closeFn, nil
}

// routeGRPCLogs sends grpc-go's own warnings and errors to l, as records
// of the command's log (component=grpc): written raw beside it they broke
// --log-format json, one unparseable line per failed dial. grpc-go's info
// logs are per-connection chatter and dropped. grpclog is process-global
// and must be set before any gRPC call, so only a command's entry point
// calls this.
func routeGRPCLogs(l *slog.Logger) {
	grpclog.SetLoggerV2(grpcLogger{l.With("component", "grpc")})
}

// grpcLogger is a grpclog.LoggerV2 writing to a slog.Logger.
type grpcLogger struct{ l *slog.Logger }

func (grpcLogger) Info(...any)             {}
func (grpcLogger) Infoln(...any)           {}
func (grpcLogger) Infof(string, ...any)    {}
func (grpcLogger) V(int) bool              { return false }
func (g grpcLogger) Warning(args ...any)   { g.l.Warn(fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any) { g.l.Warn(sprintln(args)) }
func (g grpcLogger) Warningf(format string, args ...any) {
	g.l.Warn(fmt.Sprintf(format, args...))
}
func (g grpcLogger) Error(args ...any)   { g.l.Error(fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any) { g.l.Error(sprintln(args)) }
func (g grpcLogger) Errorf(format string, args ...any) {
	g.l.Error(fmt.Sprintf(format, args...))
}

// Fatal logs and exits, as grpclog's contract says.
func (g grpcLogger) Fatal(args ...any)   { g.l.Error(fmt.Sprint(args...)); os.Exit(1) }
func (g grpcLogger) Fatalln(args ...any) { g.l.Error(sprintln(args)); os.Exit(1) }
func (g grpcLogger) Fatalf(format string, args ...any) {
	g.l.Error(fmt.Sprintf(format, args...))
	os.Exit(1)
}

func sprintln(args []any) string { return strings.TrimSuffix(fmt.Sprintln(args...), "\n") }
