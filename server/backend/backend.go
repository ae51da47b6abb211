// Package backend is the slave's replica tree: an identity-addressed view of
// a directory (the slave root) in which every object is found by its GFID,
// every name from the wire is resolved fd-relative beneath the root, and the
// reserved directory .georep/ holds the GFID index and the slave's state.
package backend

import (
	"context"
	"log/slog"
	"time"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// ReservedDir is the name of the slave's state directory at the root. It is
// never reachable through the API.
const ReservedDir = ".georep"

// Options configures a Backend.
type Options struct {
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
}

// Backend is one slave root. Its methods are safe for concurrent use.
type Backend struct{}

// Open opens (and on first use initialises) the slave root at dir.
func Open(dir string, opts Options) (*Backend, error) { panic("TODO: implement") }

// Close releases the root's file descriptors.
func (b *Backend) Close() error { panic("TODO: implement") }

// Root returns the absolute path of the slave root.
func (b *Backend) Root() string { panic("TODO: implement") }

// Privileged reports whether identities live in trusted.* (running as root)
// rather than user.* extended attributes.
func (b *Backend) Privileged() bool { panic("TODO: implement") }

// EntryOps applies entries in order and returns one result per entry.
func (b *Backend) EntryOps(ctx context.Context, entries []*pb.Entry) []*pb.EntryResult {
	panic("TODO: implement")
}

// MetaOps applies meta entries in order and returns one result per entry.
func (b *Backend) MetaOps(ctx context.Context, entries []*pb.MetaEntry) []*pb.EntryResult {
	panic("TODO: implement")
}

// Stime returns the sync time recorded for master.
func (b *Backend) Stime(master gfid.GFID) (ts *pb.Timestamp, found bool, err error) {
	panic("TODO: implement")
}

// SetStime durably records master's sync time.
func (b *Backend) SetStime(master gfid.GFID, ts *pb.Timestamp) error { panic("TODO: implement") }

// Xtime returns the change mark recorded for master on object obj.
func (b *Backend) Xtime(master, obj gfid.GFID) (ts *pb.Timestamp, found bool, err error) {
	panic("TODO: implement")
}

// SetXtime durably records master's change mark on object obj.
func (b *Backend) SetXtime(master, obj gfid.GFID, ts *pb.Timestamp) error {
	panic("TODO: implement")
}

// NativeMark returns the root's native volume mark (made once per root).
func (b *Backend) NativeMark() *pb.VolumeMark { panic("TODO: implement") }

// SetForeignMark durably records a master's volume mark; m.Expires says
// until when it is valid.
func (b *Backend) SetForeignMark(m *pb.VolumeMark) error { panic("TODO: implement") }

// ForeignMarks returns the foreign marks valid at now and removes expired ones.
func (b *Backend) ForeignMarks(now time.Time) ([]*pb.VolumeMark, error) {
	panic("TODO: implement")
}

// Entries lists the directory dir, sorted by name, without .georep/.
func (b *Backend) Entries(ctx context.Context, dir gfid.GFID) ([]*pb.DirEntry, error) {
	panic("TODO: implement")
}

// LstatGFID returns the attributes of the object g.
func (b *Backend) LstatGFID(g gfid.GFID) (*pb.LstatResponse, error) { panic("TODO: implement") }

// LstatName returns the attributes of the object at (parent, name).
func (b *Backend) LstatName(parent gfid.GFID, name []byte) (*pb.LstatResponse, error) {
	panic("TODO: implement")
}

// GFID returns the identity at (parent, name); ok is false when the object
// carries none.
func (b *Backend) GFID(parent gfid.GFID, name []byte) (g gfid.GFID, ok bool, err error) {
	panic("TODO: implement")
}

// Purge force-removes the named children of parent (all children when names
// is empty) and returns how many objects were removed.
func (b *Backend) Purge(ctx context.Context, parent gfid.GFID, names [][]byte) (uint64, error) {
	panic("TODO: implement")
}
