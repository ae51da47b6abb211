package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// The version of the volume mark format this backend writes.
const (
	markMajor = 1
	markMinor = 0
)

func (b *Backend) stimeAttr(master gfid.GFID) string {
	return b.ns + ".georep.stime." + master.String()
}
func (b *Backend) xtimeAttr(master gfid.GFID) string {
	return b.ns + ".georep.xtime." + master.String()
}
func (b *Backend) markPrefix() string { return b.ns + ".georep.mark." }

// sessionAttr holds the session (pb.Claim.session) of the master
// connection that last claimed the root.
func (b *Backend) sessionAttr() string { return b.ns + ".georep.session" }

// SessionSize is the length of a claim's session.
const SessionSize = 16

// timestampSize is the on-disk form of a time mark: int64 seconds and
// uint32 nanoseconds, big-endian.
const timestampSize = 12

func encodeTimestamp(ts *pb.Timestamp) ([]byte, error) {
	if ts == nil {
		return nil, fmt.Errorf("timestamp is missing: %w", unix.EINVAL)
	}
	if ts.GetNsec() >= 1e9 {
		return nil, fmt.Errorf("timestamp nanoseconds %d out of range: %w", ts.GetNsec(), unix.EINVAL)
	}
	v := make([]byte, timestampSize)
	binary.BigEndian.PutUint64(v[0:8], uint64(ts.GetSec()))
	binary.BigEndian.PutUint32(v[8:12], ts.GetNsec())
	return v, nil
}

func decodeTimestamp(v []byte) (*pb.Timestamp, error) {
	if len(v) != timestampSize {
		return nil, fmt.Errorf("stored time mark is %d bytes, want %d: %w", len(v), timestampSize, unix.EBADMSG)
	}
	ts := &pb.Timestamp{Sec: int64(binary.BigEndian.Uint64(v[0:8])), Nsec: binary.BigEndian.Uint32(v[8:12])}
	if ts.Nsec >= 1e9 {
		return nil, fmt.Errorf("stored time mark has nanoseconds %d: %w", ts.Nsec, unix.EBADMSG)
	}
	return ts, nil
}

func uuidString(b []byte) string {
	u, err := uuid.FromBytes(b)
	if err != nil {
		return fmt.Sprintf("%x", b)
	}
	return u.String()
}

func cloneMark(m *pb.VolumeMark) *pb.VolumeMark { return proto.Clone(m).(*pb.VolumeMark) }

// loadNativeMark reads .georep/volume-id, making it on first use: a temp
// file renamed into place without replacing, so racing creators (two
// slaves opening a fresh root) agree on the first one.
func (b *Backend) loadNativeMark() (*pb.VolumeMark, error) {
	for range 3 {
		m, err := b.readVolumeID()
		if err == nil {
			return m, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return nil, err
		}
		if err := b.createVolumeID(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("volume id in %s/%s keeps vanishing: %w", ReservedDir, volumeIDName, unix.EAGAIN)
}

func (b *Backend) readVolumeID() (*pb.VolumeMark, error) {
	f, err := b.state.OpenFile(volumeIDName, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 128))
	if err != nil {
		return nil, fmt.Errorf("read volume id: %w", err)
	}
	u, err := uuid.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("volume id file %s/%s/%s is corrupt (%v); move it away to make a new identity: %w",
			b.root, ReservedDir, volumeIDName, err, unix.EBADMSG)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat volume id: %w", err)
	}
	return &pb.VolumeMark{
		Uuid:    u[:],
		Version: &pb.Version{Major: markMajor, Minor: markMinor},
		Mark:    &pb.Timestamp{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)},
	}, nil
}

func (b *Backend) createVolumeID() error {
	t := "." + volumeIDName + "." + tempName()
	f, err := b.state.CreateExcl(t, 0o644)
	if err != nil {
		return fmt.Errorf("create volume id: %w", err)
	}
	defer b.state.Unlink(t) // gone after a successful rename; cleanup otherwise
	_, err = f.WriteString(uuid.New().String() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write volume id: %w", err)
	}
	err = b.state.Rename(t, b.state, volumeIDName, dirfd.RenameNoReplace)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("install volume id: %w", err)
	}
	if err := b.state.Fsync(); err != nil {
		return fmt.Errorf("install volume id: %w", err)
	}
	return nil
}

func (b *Backend) encodeForeignMark(m *pb.VolumeMark) (string, []byte, error) {
	u, err := gfid.FromBytes(m.GetUuid())
	if err != nil {
		return "", nil, fmt.Errorf("foreign mark uuid: %v: %w", err, unix.EINVAL)
	}
	if m.GetExpires() == nil || (m.GetExpires().GetSec() == 0 && m.GetExpires().GetNsec() == 0) {
		return "", nil, fmt.Errorf("foreign mark of %s has no expiry: %w", u, unix.EINVAL)
	}
	v, err := proto.Marshal(m)
	if err != nil {
		return "", nil, fmt.Errorf("encode foreign mark: %w", err)
	}
	if len(v) > dirfd.XattrSizeMax {
		return "", nil, fmt.Errorf("foreign mark is %d bytes: %w", len(v), unix.E2BIG)
	}
	return b.markPrefix() + u.String(), v, nil
}

func (b *Backend) foreignMarks(now time.Time) ([]*pb.VolumeMark, error) {
	names, err := b.rootDir.ListXattrSelf()
	if err != nil {
		return nil, fmt.Errorf("list foreign marks: %w", err)
	}
	var marks []*pb.VolumeMark
	for _, n := range names {
		if !strings.HasPrefix(n, b.markPrefix()) {
			continue
		}
		v, err := b.rootDir.GetXattrSelf(n)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read foreign mark %s: %w", n, err)
		}
		m := &pb.VolumeMark{}
		expired := true
		if err := proto.Unmarshal(v, m); err != nil {
			b.log.Warn("removing an unreadable foreign mark", "xattr", n, "err", err)
		} else {
			exp := time.Unix(m.GetExpires().GetSec(), int64(m.GetExpires().GetNsec()))
			expired = !exp.After(now)
		}
		if !expired {
			marks = append(marks, m)
			continue
		}
		if err := b.rootDir.RemoveXattrSelf(n); err != nil && !errors.Is(err, unix.ENODATA) {
			return nil, fmt.Errorf("remove expired foreign mark %s: %w", n, err)
		}
	}
	return marks, nil
}

// ClaimForeignMark records m, as SetForeignMark does, unless another
// master's mark valid at now holds the root; force records it anyway. It
// returns the other masters' valid marks and whether m was recorded. The
// check and the write are one step under an exclusive flock of the root,
// so two slave processes (two masters dialling at once) cannot both see a
// free root and both claim it.
//
// A claim also records session (empty: none) as the root's session: from
// then on, installs fenced with any other session are refused (see
// fence). The exclusive flock waits for fenced installs under way.
func (b *Backend) ClaimForeignMark(m *pb.VolumeMark, now time.Time, force bool, session []byte) (others []*pb.VolumeMark, claimed bool, err error) {
	if n := len(session); n != 0 && n != SessionSize {
		return nil, false, fmt.Errorf("claim.session is %d bytes, want %d: %w", n, SessionSize, unix.EINVAL)
	}
	attr, v, err := b.encodeForeignMark(m)
	if err != nil {
		return nil, false, err
	}
	s, err := b.lock()
	if err != nil {
		return nil, false, err
	}
	defer b.unlock(s)
	if err := unix.Flock(b.rootDir.Fd(), unix.LOCK_EX); err != nil {
		return nil, false, fmt.Errorf("claim the slave root: lock it: %w", err)
	}
	defer func() { _ = unix.Flock(b.rootDir.Fd(), unix.LOCK_UN) }()
	marks, err := b.foreignMarks(now)
	if err != nil {
		return nil, false, fmt.Errorf("claim the slave root: %w", err)
	}
	for _, f := range marks {
		if !bytes.Equal(f.GetUuid(), m.GetUuid()) {
			others = append(others, f)
		}
	}
	if len(others) > 0 && !force {
		return others, false, nil
	}
	if err := b.rootDir.SetXattrSelf(attr, v, 0); err != nil {
		return others, false, fmt.Errorf("record foreign mark: %w", err)
	}
	if len(session) > 0 {
		err = b.rootDir.SetXattrSelf(b.sessionAttr(), session, 0)
	} else if err = b.rootDir.RemoveXattrSelf(b.sessionAttr()); errors.Is(err, unix.ENODATA) {
		err = nil
	}
	if err != nil {
		return others, false, fmt.Errorf("record the claim's session: %w", err)
	}
	if err := b.rootDir.Fsync(); err != nil {
		return others, false, fmt.Errorf("record foreign mark: %w", err)
	}
	return others, true, nil
}

// fence takes a shared flock of the root and checks that session is still
// the root's session (the last claim's); release drops the flock. A claim
// takes the flock exclusive, so it waits for installs under way, and each
// install after it sees its session. It is how a slave process of a
// master's lost connection, still holding files it received (a flush can
// take seconds, and a dead link can go unnoticed for minutes), cannot
// install them over what the master has sent through its new connection
// since. An empty session (a master that sent none) is not fenced. The
// caller holds b.mu exclusively: flock locks are per open file, so two
// goroutines of one process would share, not wait for, each other's.
func (b *Backend) fence(session []byte) (release func(), err error) {
	if len(session) == 0 {
		return func() {}, nil
	}
	fd := b.rootDir.Fd()
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		return nil, fmt.Errorf("lock the slave root: %w", err)
	}
	release = func() { _ = unix.Flock(fd, unix.LOCK_UN) }
	cur, err := b.rootDir.GetXattrSelf(b.sessionAttr())
	if err != nil && !errors.Is(err, unix.ENODATA) {
		release()
		return nil, fmt.Errorf("read the slave root's session: %w", err)
	}
	if !bytes.Equal(cur, session) {
		release()
		return nil, fmt.Errorf("this master connection's claim on the slave root was superseded by a newer one "+
			"(the master reconnected, or another master took the root): its files are not installed: %w", unix.ESTALE)
	}
	return release, nil
}
