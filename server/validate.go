package server

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// MaxBatch bounds the entries of one EntryOps or MetaOps request and the
// names of one Purge: large enough for any sensible batch, small enough that
// one request cannot pin the slave's memory or hold the tree for minutes.
const MaxBatch = 100_000

// invalid returns an InvalidArgument status with a message that names the
// offending field.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// parseGFID checks a 16-byte identity field from the wire.
func parseGFID(field string, b []byte) (gfid.GFID, error) {
	g, err := gfid.FromBytes(b)
	if err != nil {
		return g, invalid("%s: %v", field, err)
	}
	return g, nil
}

// parseUUID checks a 16-byte volume uuid field; it has the same shape as a
// GFID, so it is checked the same way.
func parseUUID(field string, b []byte) (gfid.GFID, error) {
	u, err := gfid.FromBytes(b)
	if err != nil {
		return u, invalid("%s: volume uuid: %v", field, err)
	}
	return u, nil
}

// checkTimestamp checks that ts is present (when required) and well formed.
func checkTimestamp(field string, ts *pb.Timestamp, required bool) error {
	if ts == nil {
		if required {
			return invalid("%s is required", field)
		}
		return nil
	}
	if ts.GetNsec() >= 1e9 {
		return invalid("%s: nsec must be below 1,000,000,000, got %d", field, ts.GetNsec())
	}
	return nil
}

// checkMark checks a volume mark a master sent (its own, in Handshake or
// KeepAlive) and returns the volume's uuid.
func checkMark(field string, m *pb.VolumeMark) (gfid.GFID, error) {
	u, err := parseUUID(field+".uuid", m.GetUuid())
	if err != nil {
		return u, err
	}
	if err := checkTimestamp(field+".mark", m.GetMark(), false); err != nil {
		return u, err
	}
	return u, checkTimestamp(field+".expires", m.GetExpires(), false)
}

// checkBatch bounds the size of a batch.
func checkBatch(field string, n int) error {
	if n > MaxBatch {
		return invalid("%s: %d items in one request, at most %d allowed: split the batch", field, n, MaxBatch)
	}
	return nil
}

// checkName checks that a name field is present; that it is a single path
// component is the backend's to check, where the name is used.
func checkName(field string, name []byte) error {
	if len(name) == 0 {
		return invalid("%s is required", field)
	}
	return nil
}

// versionString formats a version as "major.minor" for messages.
func versionString(v *pb.Version) string {
	return fmt.Sprintf("%d.%d", v.GetMajor(), v.GetMinor())
}
