package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/codec"
	pb "github.com/georep/georep/proto/georep/v1"
)

// MaxMessageSize is the largest message a slave accepts: room for a batch of
// MaxBatch small entries (each about 100 bytes on the wire). A master must
// raise its own limits to match, with
// grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(server.MaxMessageSize),
// grpc.MaxCallRecvMsgSize(server.MaxMessageSize)).
const MaxMessageSize = 64 << 20

// Flow-control windows and socket buffers for both ends of a session.
// gRPC's defaults (64 KiB windows grown by BDP pings, 32 KiB buffers) are
// tuned for many small RPCs; a session is a few long streams moving the
// whole tree, where a small window stalls the sender for a window update
// every 64 KiB and small buffers cost a pipe or socket wakeup per 32 KiB.
const (
	StreamWindow = 8 << 20
	ConnWindow   = 32 << 20
	IOBuffer     = 256 << 10
)

// KeepaliveMinTime is the shortest HTTP/2 ping interval a slave tolerates
// from a master. gRPC's default (5 minutes) would answer a master pinging
// every 10 s with GOAWAY "too_many_pings"; a master should ping no more
// often than this.
const KeepaliveMinTime = 5 * time.Second

// NewGRPCServer returns a grpc.Server serving svc (a *Service, or a
// *Volumes routing to several) as georep.v1.Slave, with
// the standard health service (SERVING for "" and "georep.v1.Slave") and
// server reflection, so stock grpcurl can inspect a slave. Every call is
// logged at debug level (failures higher) and a panic in a handler becomes
// codes.Internal instead of killing the slave. opts are applied after the
// slave's own, so interceptors they chain run inside logging and recovery.
func NewGRPCServer(svc pb.SlaveServer, logger *slog.Logger, opts ...grpc.ServerOption) *grpc.Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(callLevel),
	}
	recoveryOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "panic in gRPC handler; the call failed, the slave keeps serving",
			"method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error in %s: %v", method, p)
	})
	base := []grpc.ServerOption{
		codec.ServerOption(),
		// Each connection's claim session, for the fence on installs.
		grpc.StatsHandler(connTagger{}),
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
		grpc.WriteBufferSize(IOBuffer),
		grpc.ReadBufferSize(IOBuffer),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		// Logging is outermost so it records the code recovery produced.
		grpc.ChainUnaryInterceptor(
			logging.UnaryServerInterceptor(slogAdapter(logger), logOpts...),
			recovery.UnaryServerInterceptor(recoveryOpt),
		),
		grpc.ChainStreamInterceptor(
			logging.StreamServerInterceptor(slogAdapter(logger), logOpts...),
			recovery.StreamServerInterceptor(recoveryOpt),
		),
	}
	s := grpc.NewServer(append(base, opts...)...)
	pb.RegisterSlaveServer(s, svc)

	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(pb.Slave_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)

	// Reflection serves georep.v1 with its comments, so grpcurl describe
	// shows the API's documentation; the generated code's copy has none.
	reflOpts := reflection.ServerOptions{Services: s}
	if r, err := pb.DocumentedResolver(); err == nil {
		reflOpts.DescriptorResolver = r
	} else {
		logger.Warn("server reflection will describe georep.v1 without comments", "err", err)
	}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(reflOpts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(reflOpts))
	return s
}

// callLevel picks the log level of a finished call: successes at debug, so
// a busy session does not log every batch; a master's mistakes at info;
// the slave's own failures at warn or error.
func callLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Canceled:
		return logging.LevelDebug
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition,
		codes.PermissionDenied, codes.Unauthenticated, codes.OutOfRange, codes.Unimplemented:
		return logging.LevelInfo
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return logging.LevelError
	default:
		return logging.LevelWarn
	}
}

// slogAdapter lets the middleware's logging interceptor write to slog.
func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
