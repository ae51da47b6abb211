package server

import (
	"context"
	"sync"

	"google.golang.org/grpc/stats"
)

// connState is what a slave remembers about one master connection for as
// long as it lasts: the session its Handshake claimed each root with
// (pb.Claim.session), which that connection's installs are fenced with.
type connState struct {
	mu       sync.Mutex
	sessions map[*Service][]byte
}

type connStateKey struct{}

// connTagger gives every connection a connState, reachable from the
// context of each call on it (a stats.Handler: gRPC derives every call's
// context from its connection's).
type connTagger struct{}

func (connTagger) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return context.WithValue(ctx, connStateKey{}, &connState{})
}
func (connTagger) HandleConn(context.Context, stats.ConnStats)                     {}
func (connTagger) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (connTagger) HandleRPC(context.Context, stats.RPCStats)                       {}

// setSession records that the call's connection claimed s's root with
// session. A server made without NewGRPCServer has no connection state:
// its connections are not fenced.
func (s *Service) setSession(ctx context.Context, session []byte) {
	cs, ok := ctx.Value(connStateKey{}).(*connState)
	if !ok {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.sessions == nil {
		cs.sessions = map[*Service][]byte{}
	}
	cs.sessions[s] = session
}

// session is the session the call's connection claimed s's root with; nil
// (no fence) when it claimed none.
func (s *Service) session(ctx context.Context) []byte {
	cs, ok := ctx.Value(connStateKey{}).(*connState)
	if !ok {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.sessions[s]
}
