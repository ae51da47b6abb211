package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/status"
	pb "github.com/georep/georep/proto/georep/v1"
)

// State is a session's health, with gsyncd's names.
type State = status.State

// The states a session passes through.
const (
	StateInitializing = status.Initializing
	StateActive       = status.Active
	StateFaulty       = status.Faulty
	StateStopped      = status.Stopped
)

// Dialer opens one connection to the slave; Dial is the production one.
type Dialer func(ctx context.Context) (*Conn, error)

// SessionOptions configures a Session.
type SessionOptions struct {
	// Master is this master's volume mark, sent at Handshake and with every
	// KeepAlive so the slave knows who holds it.
	Master *pb.VolumeMark
	// KeepAliveInterval is how often a KeepAlive is sent (default 10s).
	KeepAliveInterval time.Duration
	// MarkTimeout is how long the foreign mark a KeepAlive leaves stays
	// valid on the slave (default 6 keep-alive intervals).
	MarkTimeout time.Duration
	// Force takes over a slave root whose foreign mark belongs to another
	// master (--force).
	Force bool
	// DialTimeout bounds one connection attempt, handshake and claim
	// included (default 30s): a dial into a black hole (a TLS handshake
	// whose packets vanish) must fail and back off, not hang.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between reconnects
	// (defaults 1s and 60s); the wait doubles after each failed attempt.
	BackoffMin, BackoffMax time.Duration
	// GiveUpAfter (optional) ends the reconnecting: once the slave has
	// been unreachable this long (every attempt since the last connection
	// failed), Connect and Do return the last failure instead of trying
	// again. Zero retries for as long as the caller's context lasts.
	GiveUpAfter time.Duration
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
	// OnState, when set, is told every state change (status, metrics).
	OnState func(State, error)
}

// Session keeps a master connected to its slave: it dials, checks that no
// other master holds the slave root, sends keep-alives, and when the
// connection breaks turns Faulty and reconnects with capped exponential
// backoff. Work runs through Do, which retries it on a new connection, so
// it must be idempotent — every Slave RPC is.
type Session struct {
	dial Dialer
	opts SessionOptions
	log  *slog.Logger

	mu      sync.Mutex
	conn    *Conn
	state   State
	lastErr error
	// reconnects counts connections made after the first.
	reconnects int
	// stopKA stops the keep-alive goroutine of the current connection.
	stopKA func()
	// downSince is when the first attempt failed since the last
	// connection was made (zero while none has).
	downSince time.Time
	// session is the claim session (pb.Claim.session) of the connection
	// being made or in use, and of the extra connections dialled beside
	// it; each connection attempt makes a new one.
	session []byte
}

// NewSession returns a session that dials with d. Nothing is dialled until
// the first Do or Connect.
func NewSession(d Dialer, opts SessionOptions) *Session {
	if opts.KeepAliveInterval <= 0 {
		opts.KeepAliveInterval = 10 * time.Second
	}
	if opts.MarkTimeout <= 0 {
		opts.MarkTimeout = 6 * opts.KeepAliveInterval
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 30 * time.Second
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = 60 * time.Second
		if opts.BackoffMax < opts.BackoffMin {
			opts.BackoffMax = opts.BackoffMin
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Session{dial: d, opts: opts, log: log, state: StateInitializing}
}

// State returns the session's state and the error that made it Faulty.
func (s *Session) State() (State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.lastErr
}

// Reconnects returns how many times the session reconnected.
func (s *Session) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

func (s *Session) setState(st State, err error) {
	s.mu.Lock()
	changed := s.state != st
	s.state, s.lastErr = st, err
	s.mu.Unlock()
	if changed {
		if err != nil {
			s.log.Warn("session state", "state", string(st), "err", err)
		} else {
			s.log.Info("session state", "state", string(st))
		}
	}
	if s.opts.OnState != nil {
		s.opts.OnState(st, err)
	}
}

// HeldError refuses a master while another master's mark is valid on the
// slave root: two masters writing one replica would corrupt it.
type HeldError struct {
	Holder  string
	UUID    gfid.GFID
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("the slave root is held by another master (%s, volume %s) until %s; "+
		"stop that session, wait for its mark to expire, or take over with --force",
		e.Holder, e.UUID, e.Expires.UTC().Format(time.RFC3339))
}

// Connect returns the current connection, dialling one when there is none.
// A refusal that waiting cannot fix (another master holds the root, a
// version mismatch) is returned at once; other failures are retried with
// backoff until ctx ends or, with GiveUpAfter, until the slave has been
// unreachable that long.
func (s *Session) Connect(ctx context.Context) (*Conn, error) {
	s.mu.Lock()
	if s.conn != nil {
		c := s.conn
		s.mu.Unlock()
		return c, nil
	}
	first := s.reconnects == 0 && s.state == StateInitializing
	s.mu.Unlock()

	wait := s.opts.BackoffMin
	for attempt := 1; ; attempt++ {
		c, err := s.connectOnce(ctx)
		if err == nil {
			s.mu.Lock()
			s.conn = c
			s.downSince = time.Time{}
			if !first {
				s.reconnects++
			}
			s.stopKA = s.startKeepAlive(c)
			s.mu.Unlock()
			s.setState(StateActive, nil)
			return c, nil
		}
		if permanent(err) {
			s.setState(StateFaulty, err)
			return nil, err
		}
		s.setState(StateFaulty, err)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to slave: %w (last error: %v)", ctx.Err(), err)
		}
		if limit := s.opts.GiveUpAfter; limit > 0 {
			down := s.unreachableFor()
			if down >= limit {
				return nil, &GaveUpError{Down: down.Round(time.Second), Last: err}
			}
			// The last attempt comes as the time runs out, not a whole
			// backoff after it.
			wait = min(wait, limit-down)
		}
		s.log.Warn("slave unreachable; retrying", "attempt", attempt, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to slave: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, s.opts.BackoffMax)
	}
}

// GaveUpError is what a session returns once its slave has stayed
// unreachable for SessionOptions.GiveUpAfter: Last is the last attempt's
// failure.
type GaveUpError struct {
	Down time.Duration
	Last error
}

func (e *GaveUpError) Error() string {
	return fmt.Sprintf("the slave has been unreachable for %v, giving up: %v", e.Down, e.Last)
}

func (e *GaveUpError) Unwrap() error { return e.Last }

// unreachableFor returns how long every attempt has failed since the last
// connection was made, starting the clock at the first failure.
func (s *Session) unreachableFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downSince.IsZero() {
		s.downSince = time.Now()
	}
	return time.Since(s.downSince)
}

// Extra dials one more connection to the slave beside the session's own
// (for ssh, another channel: its own flow-control window), claimed for
// this master as the first was, with keep-alives of its own. It is not
// redialled: when it breaks, its user fails over to the session. The
// returned function stops the keep-alives and closes it.
func (s *Session) Extra(ctx context.Context) (*Conn, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := s.claim(ctx, c); err != nil {
		c.Close()
		return nil, nil, err
	}
	stop := s.keepAliveLoop(c, func(err error) {
		s.log.Debug("keep-alive on an extra connection failed", "err", err)
	})
	return c, func() error { stop(); return c.Close() }, nil
}

// permanent reports whether a dial failure is one reconnecting cannot fix.
func permanent(err error) bool {
	var held *HeldError
	if errors.As(err, &held) {
		return true
	}
	return grpcstatus.Code(errors.Unwrap(err)) == codes.FailedPrecondition || grpcstatus.Code(err) == codes.FailedPrecondition
}

func (s *Session) connectOnce(ctx context.Context) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.DialTimeout)
	defer cancel()
	// A new session for each connection: once it has claimed the root, a
	// slave process still serving a connection this master lost installs
	// nothing more (see pb.Claim.session).
	session := make([]byte, claimSessionSize)
	_, _ = rand.Read(session) // never fails (crypto/rand)
	s.mu.Lock()
	s.session = session
	s.mu.Unlock()
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.claim(ctx, c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Claim is what a dialler puts in Options.Claim so that the Handshake
// claims the slave root for this session's master in the same round trip,
// with the claim session of the connection being made (see
// pb.Claim.session): a new one for each connection after a lost one, the
// same for the extra connections beside it.
func (s *Session) Claim() *pb.Claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &pb.Claim{TimeoutSeconds: markSeconds(s.opts.MarkTimeout), Force: s.opts.Force, Session: s.session}
}

// claimSessionSize is the length of a claim's session.
const claimSessionSize = 16

// claim makes sure this master holds the slave root: the Handshake did it
// when the slave knew Options.Claim; otherwise the slave's foreign marks
// are checked for another master, then this master's own mark is left
// with a first KeepAlive.
func (s *Session) claim(ctx context.Context, c *Conn) error {
	if s.opts.Master == nil {
		return nil
	}
	if r := c.Info.GetClaim(); r != nil {
		held := s.holders(r.GetOthers())
		if !r.GetClaimed() {
			if held == nil {
				return fmt.Errorf("the slave refused this master's claim on its root without naming a holder")
			}
			return held
		}
		return nil
	}
	info, err := c.Slave.VolumeInfo(ctx, &pb.VolumeInfoRequest{})
	if err != nil {
		return fmt.Errorf("read the slave's volume marks: %w", c.Explain(err))
	}
	if held := s.holders(info.GetForeign()); held != nil && !s.opts.Force {
		return held
	}
	return s.keepAlive(ctx, c)
}

// holders looks at the foreign marks of other masters: with Force it
// warns of each one taken over; it returns the first as a HeldError.
func (s *Session) holders(marks []*pb.VolumeMark) *HeldError {
	var first *HeldError
	for _, m := range marks {
		if bytes.Equal(m.GetUuid(), s.opts.Master.GetUuid()) {
			continue
		}
		g, _ := gfid.FromBytes(m.GetUuid())
		held := &HeldError{Holder: m.GetHolder(), UUID: g,
			Expires: time.Unix(m.GetExpires().GetSec(), int64(m.GetExpires().GetNsec()))}
		if s.opts.Force {
			s.log.Warn("taking over a slave root held by another master (--force)", "holder", held.Holder, "volume", held.UUID)
		}
		if first == nil {
			first = held
		}
	}
	return first
}

func markSeconds(d time.Duration) uint32 { return uint32(max(1, d/time.Second)) }

func (s *Session) keepAlive(ctx context.Context, c *Conn) error {
	req := &pb.KeepAliveRequest{}
	if s.opts.Master != nil {
		req.Mark = s.opts.Master
		req.TimeoutSeconds = markSeconds(s.opts.MarkTimeout)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.KeepAliveInterval+5*time.Second)
	defer cancel()
	if _, err := c.Slave.KeepAlive(ctx, req); err != nil {
		return fmt.Errorf("keep-alive: %w", c.Explain(err))
	}
	return nil
}

// startKeepAlive runs the keep-alive loop of the session's connection; the
// returned function stops it and waits for it. A failed keep-alive drops
// the connection.
func (s *Session) startKeepAlive(c *Conn) func() {
	return s.keepAliveLoop(c, func(err error) {
		s.log.Warn("keep-alive failed", "err", err)
		s.drop(c, err)
	})
}

// keepAliveLoop sends a keep-alive on c every interval until the returned
// function is called (it waits for the loop to end) or one fails: then
// failed is told, and the loop ends.
func (s *Session) keepAliveLoop(c *Conn, failed func(error)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.opts.KeepAliveInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.keepAlive(ctx, c); err != nil {
					if ctx.Err() == nil {
						failed(err)
					}
					return
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// drop forgets a broken connection so the next Connect dials anew.
func (s *Session) drop(c *Conn, err error) {
	s.mu.Lock()
	if s.conn != c {
		s.mu.Unlock()
		return
	}
	s.conn = nil
	stop := s.stopKA
	s.stopKA = nil
	s.mu.Unlock()
	// stop may be called from the keep-alive goroutine itself: do not wait
	// for it there.
	go func() {
		if stop != nil {
			stop()
		}
		c.Close()
	}()
	s.setState(StateFaulty, err)
}

// Do runs fn with a connection, reconnecting and running fn again when the
// connection breaks (codes.Unavailable, or the transport closing). Other
// errors are returned as they are.
func (s *Session) Do(ctx context.Context, fn func(ctx context.Context, c *Conn) error) error {
	for {
		c, err := s.Connect(ctx)
		if err != nil {
			return err
		}
		err = fn(ctx, c)
		if err == nil || !broken(err) || ctx.Err() != nil {
			return err
		}
		s.drop(c, c.Explain(err))
	}
}

func broken(err error) bool {
	switch grpcstatus.Code(err) {
	case codes.Unavailable:
		return true
	case codes.Canceled:
		// A closed client connection reports Canceled; a cancelled caller
		// is caught by Do's ctx check.
		return true
	}
	return false
}

// Close stops the keep-alives and closes the connection.
func (s *Session) Close() error {
	return s.close((*Conn).Close)
}

// Finish is Close for a session whose every call has been answered and
// will have no more: the connection ends without waiting for the slave's
// goodbye (see Conn.Finish).
func (s *Session) Finish() error {
	return s.close((*Conn).Finish)
}

func (s *Session) close(closeConn func(*Conn) error) error {
	s.mu.Lock()
	c, stop := s.conn, s.stopKA
	s.conn, s.stopKA = nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	var err error
	if c != nil {
		err = closeConn(c)
	}
	s.setState(StateStopped, nil)
	return err
}
