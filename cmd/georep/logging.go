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
func newLogger(cfg logConfig, stderr io.Writer) (*slog.Logger, io.Writer, func() error, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.Level)); err != nil {
		return nil, nil, nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", cfg.Level)
	}
	w, closeFn := stderr, func() error { return nil }
	if cfg.File != "" {
		f, err := os.OpenFile(cfg.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("open --log-file: %w", err)
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
		return nil, nil, nil, fmt.Errorf("--log-format %q: use text or json", cfg.Format)
	}
	return slog.New(h), w, closeFn, nil
}

// routeGRPCLogs sends grpc-go's own warnings and errors to w (grpc-go's
// info logs are per-connection chatter). grpclog is process-global and must
// be set before any gRPC call, so only a command's entry point calls this.
func routeGRPCLogs(w io.Writer) {
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, w, w))
}
