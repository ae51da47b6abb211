package server

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// errnoCode maps an error a filesystem reports to the gRPC code a master
// can act on; anything else is Internal.
func errnoCode(errno syscall.Errno) codes.Code {
	switch errno {
	case syscall.ENOENT:
		return codes.NotFound
	case syscall.EINVAL, syscall.ENAMETOOLONG:
		return codes.InvalidArgument
	case syscall.EPERM, syscall.EACCES:
		return codes.PermissionDenied
	case syscall.EEXIST:
		return codes.AlreadyExists
	case syscall.ENOTDIR, syscall.EISDIR, syscall.ENOTEMPTY:
		return codes.FailedPrecondition
	case syscall.ENOSPC:
		return codes.ResourceExhausted
	default:
		return codes.Internal
	}
}

// statusFromBackend turns a backend error into a gRPC status error that
// keeps the backend's message (it names the object and the operation).
func statusFromBackend(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return status.Error(errnoCode(errno), err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}
