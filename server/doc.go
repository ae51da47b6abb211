// Package server is the slave daemon's gRPC face: it implements the
// georep.v1 Slave service over a backend.Backend, checks every request
// before the backend sees it, maps backend errors to gRPC status codes, and
// builds the grpc.Server (health, reflection, logging, panic recovery,
// keep-alive policy) that every slave transport serves.
package server
