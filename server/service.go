package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// The versions this slave speaks. A master with a different major version
// of either is refused at Handshake; minor differences are compatible.
const (
	ProtocolMajor = 1
	ProtocolMinor = 0
	ObjectMajor   = 1
	ObjectMinor   = 0
)

// Options configures a Service.
type Options struct {
	// SoftwareVersion is the georep version reported in Handshake.
	SoftwareVersion string
	// Logger receives session events (handshakes, refusals); nil discards.
	Logger *slog.Logger
	// Now is the clock used for foreign-mark expiry; nil means time.Now.
	Now func() time.Time
}

// Service implements the georep.v1 Slave service over one backend root.
// Requests are checked here; per-entry problems inside a batch are the
// backend's to report, one result per entry.
type Service struct {
	pb.UnimplementedSlaveServer

	backend *backend.Backend
	version string
	logger  *slog.Logger
	now     func() time.Time

	// keepAlives counts accepted keep-alives for this process, as gsyncd's
	// last_keep_alive did.
	keepAlives atomic.Uint64
	// alive gets a token on every KeepAlive so WatchKeepAlive can restart
	// its timer; buffered so KeepAlive never waits for the watcher.
	alive chan struct{}
	// tunnels counts the RsyncTunnel calls running (tunnel.go).
	tunnels atomic.Int32
	// putStreams counts the PutFiles calls running, and openFiles is the
	// process's open-file limit: they size each stream's commit queue.
	putStreams atomic.Int32
	openFiles  uint64

	// afterFlush, set by tests, runs in commitBatch between the flush and
	// the install, with the stream's context.
	afterFlush func(context.Context)
}

var _ pb.SlaveServer = (*Service)(nil)

// New returns a Service serving b. The caller keeps ownership of b.
func New(b *backend.Backend, opts Options) *Service {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	// Go raises the soft limit to the hard one at start-up; a limit that
	// cannot be read is taken as the traditional 1024.
	openFiles := uint64(1024)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		openFiles = lim.Cur
	}
	return &Service{
		backend:   b,
		version:   opts.SoftwareVersion,
		logger:    logger,
		now:       now,
		alive:     make(chan struct{}, 1),
		openFiles: openFiles,
	}
}

// KeepAliveTimeoutError ends a session whose master stopped sending
// keep-alives (gsyncd's slave --timeout).
type KeepAliveTimeoutError struct {
	Timeout time.Duration
}

func (e *KeepAliveTimeoutError) Error() string {
	return fmt.Sprintf("no keep-alive from the master for %v; ending session", e.Timeout)
}

// KeepAlives returns how many keep-alives this Service has accepted.
func (s *Service) KeepAlives() uint64 { return s.keepAlives.Load() }

// WatchKeepAlive blocks until ctx is done (returning nil) or until timeout
// passes without a KeepAlive (returning a *KeepAliveTimeoutError). The
// timer starts when WatchKeepAlive is called. The caller owns the goroutine
// that runs it and stops it by cancelling ctx.
func (s *Service) WatchKeepAlive(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("keep-alive timeout must be positive, got %v", timeout)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.alive:
			timer.Reset(timeout)
		case <-timer.C:
			return &KeepAliveTimeoutError{Timeout: timeout}
		}
	}
}

// Handshake checks the master's versions and describes this slave.
func (s *Service) Handshake(ctx context.Context, req *pb.HandshakeRequest) (*pb.HandshakeResponse, error) {
	if req.GetProtocol() == nil {
		return nil, invalid("protocol version is required")
	}
	if req.GetObject() == nil {
		return nil, invalid("object version is required")
	}
	var masterUUID gfid.GFID
	if req.GetMaster() != nil {
		var err error
		if masterUUID, err = checkMark("master", req.GetMaster()); err != nil {
			return nil, err
		}
	}
	ours := &pb.Version{Major: ProtocolMajor, Minor: ProtocolMinor}
	ourObject := &pb.Version{Major: ObjectMajor, Minor: ObjectMinor}
	if req.GetProtocol().GetMajor() != ProtocolMajor {
		msg := fmt.Sprintf("protocol major version mismatch: master %s, slave %s",
			versionString(req.GetProtocol()), versionString(ours))
		s.logger.Warn("refused master", "reason", msg)
		return nil, status.Error(codes.FailedPrecondition, msg)
	}
	if req.GetObject().GetMajor() != ObjectMajor {
		msg := fmt.Sprintf("object major version mismatch: master %s, slave %s",
			versionString(req.GetObject()), versionString(ourObject))
		s.logger.Warn("refused master", "reason", msg)
		return nil, status.Error(codes.FailedPrecondition, msg)
	}
	attrs := []any{"protocol", versionString(req.GetProtocol()), "object", versionString(req.GetObject())}
	if m := req.GetMaster(); m != nil {
		attrs = append(attrs, "master_uuid", masterUUID.String(), "holder", m.GetHolder())
	}
	var claim *pb.ClaimResult
	if c := req.GetClaim(); c != nil {
		var err error
		if claim, err = s.claim(ctx, req.GetMaster(), c); err != nil {
			return nil, err
		}
		attrs = append(attrs, "claimed", claim.GetClaimed(), "force", c.GetForce(), "other_holders", len(claim.GetOthers()))
	}
	s.logger.Info("master handshake", attrs...)
	return &pb.HandshakeResponse{
		Claim:              claim,
		Protocol:           ours,
		Object:             ourObject,
		Native:             s.backend.NativeMark(),
		Root:               s.backend.Root(),
		Privileged:         s.backend.Privileged(),
		SoftwareVersion:    s.version,
		Compressions:       compressions(),
		Rsync:              hasRsync(),
		StagedCreates:      true,
		SingleMessageFiles: true,
		FileBatches:        true,
		ContentDigests:     digest.Kinds(),
	}, nil
}

// EntryOps applies a batch of namespace changes.
func (s *Service) EntryOps(ctx context.Context, req *pb.EntryOpsRequest) (*pb.EntryOpsResponse, error) {
	if err := checkBatch("entries", len(req.GetEntries())); err != nil {
		return nil, err
	}
	return &pb.EntryOpsResponse{Results: s.backend.EntryOps(ctx, req.GetEntries())}, nil
}

// MetaOps applies a batch of attribute changes.
func (s *Service) MetaOps(ctx context.Context, req *pb.MetaOpsRequest) (*pb.MetaOpsResponse, error) {
	if err := checkBatch("entries", len(req.GetEntries())); err != nil {
		return nil, err
	}
	var master gfid.GFID
	if st := req.GetStime(); st != nil {
		var err error
		if master, err = parseUUID("stime.master_uuid", st.GetMasterUuid()); err != nil {
			return nil, err
		}
		if err := checkTimestamp("stime.stime", st.GetStime(), true); err != nil {
			return nil, err
		}
	}
	resp := &pb.MetaOpsResponse{Results: s.backend.MetaOps(ctx, req.GetEntries())}
	if req.GetStime() == nil {
		return resp, nil
	}
	for _, r := range resp.Results {
		if r.GetErrno() != 0 {
			return resp, nil
		}
	}
	// A failure here is the master's SetStime to meet and report.
	if err := s.backend.SetStime(master, req.GetStime().GetStime()); err != nil {
		s.logger.Warn("stime sent with meta ops not recorded; the master sets it again", "master_uuid", master.String(), "err", err)
		return resp, nil
	}
	resp.StimeSet = true
	return resp, nil
}

// Stime returns a master's recorded sync time.
func (s *Service) Stime(ctx context.Context, req *pb.StimeRequest) (*pb.StimeResponse, error) {
	master, err := parseUUID("master_uuid", req.GetMasterUuid())
	if err != nil {
		return nil, err
	}
	ts, found, err := s.backend.Stime(master)
	if err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.StimeResponse{Found: found, Stime: ts}, nil
}

// SetStime records a master's sync time.
func (s *Service) SetStime(ctx context.Context, req *pb.SetStimeRequest) (*pb.SetStimeResponse, error) {
	master, err := parseUUID("master_uuid", req.GetMasterUuid())
	if err != nil {
		return nil, err
	}
	if err := checkTimestamp("stime", req.GetStime(), true); err != nil {
		return nil, err
	}
	if err := s.backend.SetStime(master, req.GetStime()); err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.SetStimeResponse{}, nil
}

// Xtime returns an object's recorded change mark.
func (s *Service) Xtime(ctx context.Context, req *pb.XtimeRequest) (*pb.XtimeResponse, error) {
	master, err := parseUUID("master_uuid", req.GetMasterUuid())
	if err != nil {
		return nil, err
	}
	obj, err := parseGFID("gfid", req.GetGfid())
	if err != nil {
		return nil, err
	}
	ts, found, err := s.backend.Xtime(master, obj)
	if err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.XtimeResponse{Found: found, Xtime: ts}, nil
}

// SetXtime records an object's change mark.
func (s *Service) SetXtime(ctx context.Context, req *pb.SetXtimeRequest) (*pb.SetXtimeResponse, error) {
	master, err := parseUUID("master_uuid", req.GetMasterUuid())
	if err != nil {
		return nil, err
	}
	obj, err := parseGFID("gfid", req.GetGfid())
	if err != nil {
		return nil, err
	}
	if err := checkTimestamp("xtime", req.GetXtime(), true); err != nil {
		return nil, err
	}
	if err := s.backend.SetXtime(master, obj, req.GetXtime()); err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.SetXtimeResponse{}, nil
}

// KeepAlive counts the master's sign of life and records its volume mark,
// if it sent one, as a foreign mark until the timeout passes.
func (s *Service) KeepAlive(ctx context.Context, req *pb.KeepAliveRequest) (*pb.KeepAliveResponse, error) {
	// Any keep-alive, even one refused below, shows the master is there.
	select {
	case s.alive <- struct{}{}:
	default: // a token is already waiting; the watcher will reset its timer
	}
	if m := req.GetMark(); m != nil {
		if req.GetTimeoutSeconds() == 0 {
			return nil, invalid("timeout_seconds must be above 0 when a mark is sent: it says how long the mark stays valid")
		}
		if _, err := checkMark("mark", m); err != nil {
			return nil, err
		}
		if err := s.backend.SetForeignMark(s.foreignMark(m, req.GetTimeoutSeconds())); err != nil {
			return nil, statusFromBackend(err)
		}
	}
	return &pb.KeepAliveResponse{Count: s.keepAlives.Add(1)}, nil
}

// foreignMark is master's mark as the slave records it: valid for
// timeoutSeconds from now.
func (s *Service) foreignMark(m *pb.VolumeMark, timeoutSeconds uint32) *pb.VolumeMark {
	expires := s.now().Add(time.Duration(timeoutSeconds) * time.Second)
	return &pb.VolumeMark{
		Uuid:    m.GetUuid(),
		Version: m.GetVersion(),
		Mark:    m.GetMark(),
		Retval:  m.GetRetval(),
		Expires: &pb.Timestamp{Sec: expires.Unix(), Nsec: uint32(expires.Nanosecond())},
		Holder:  m.GetHolder(),
	}
}

// claim carries out a Handshake's claim for master: a first keep-alive
// with its mark, refused while another master holds the root. A claim
// made with a session fences this connection's installs with it.
func (s *Service) claim(ctx context.Context, m *pb.VolumeMark, c *pb.Claim) (*pb.ClaimResult, error) {
	if m == nil {
		return nil, invalid("a claim needs the master's volume mark (master)")
	}
	if c.GetTimeoutSeconds() == 0 {
		return nil, invalid("claim.timeout_seconds must be above 0: it says how long the mark stays valid")
	}
	others, claimed, err := s.backend.ClaimForeignMark(s.foreignMark(m, c.GetTimeoutSeconds()), s.now(), c.GetForce(), c.GetSession())
	if err != nil {
		return nil, statusFromBackend(err)
	}
	if claimed {
		s.setSession(ctx, c.GetSession())
		// The claim is the master's first keep-alive.
		select {
		case s.alive <- struct{}{}:
		default:
		}
		s.keepAlives.Add(1)
	}
	return &pb.ClaimResult{Claimed: claimed, Others: others}, nil
}

// VolumeInfo returns the native mark and the unexpired foreign marks.
func (s *Service) VolumeInfo(ctx context.Context, req *pb.VolumeInfoRequest) (*pb.VolumeInfoResponse, error) {
	foreign, err := s.backend.ForeignMarks(s.now())
	if err != nil {
		return nil, statusFromBackend(err)
	}
	resp := &pb.VolumeInfoResponse{Native: s.backend.NativeMark(), Foreign: foreign}
	if free, err := s.backend.Free(); err == nil {
		resp.FreeBytes = &free
	}
	return resp, nil
}

// Entries lists a directory by GFID.
func (s *Service) Entries(ctx context.Context, req *pb.EntriesRequest) (*pb.EntriesResponse, error) {
	dir, err := parseGFID("gfid", req.GetGfid())
	if err != nil {
		return nil, err
	}
	entries, err := s.backend.Entries(ctx, dir)
	if err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.EntriesResponse{Entries: entries}, nil
}

// Lstat returns an object's attributes by GFID or by (parent GFID, name).
func (s *Service) Lstat(ctx context.Context, req *pb.LstatRequest) (*pb.LstatResponse, error) {
	byName := len(req.GetParentGfid()) > 0 || len(req.GetName()) > 0
	if len(req.GetGfid()) > 0 {
		if byName {
			return nil, invalid("set either gfid, or parent_gfid with name, not both")
		}
		g, err := parseGFID("gfid", req.GetGfid())
		if err != nil {
			return nil, err
		}
		resp, err := s.backend.LstatGFID(g)
		return resp, statusFromBackend(err)
	}
	if !byName {
		return nil, invalid("gfid, or parent_gfid with name, is required")
	}
	parent, err := parseGFID("parent_gfid", req.GetParentGfid())
	if err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	resp, err := s.backend.LstatName(parent, req.GetName())
	return resp, statusFromBackend(err)
}

// Gfid returns the identity at (parent GFID, name).
func (s *Service) Gfid(ctx context.Context, req *pb.GfidRequest) (*pb.GfidResponse, error) {
	parent, err := parseGFID("parent_gfid", req.GetParentGfid())
	if err != nil {
		return nil, err
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, err
	}
	g, ok, err := s.backend.GFID(parent, req.GetName())
	if err != nil {
		return nil, statusFromBackend(err)
	}
	if !ok {
		return &pb.GfidResponse{}, nil
	}
	return &pb.GfidResponse{Gfid: g.Bytes()}, nil
}

// Purge force-removes children of a directory.
func (s *Service) Purge(ctx context.Context, req *pb.PurgeRequest) (*pb.PurgeResponse, error) {
	parent, err := parseGFID("parent_gfid", req.GetParentGfid())
	if err != nil {
		return nil, err
	}
	if err := checkBatch("names", len(req.GetNames())); err != nil {
		return nil, err
	}
	for i, name := range req.GetNames() {
		if err := checkName(fmt.Sprintf("names[%d]", i), name); err != nil {
			return nil, err
		}
	}
	removed, err := s.backend.Purge(ctx, parent, req.GetNames())
	if err != nil {
		return nil, statusFromBackend(err)
	}
	return &pb.PurgeResponse{Removed: removed}, nil
}
