// Package gfid defines the GFID: the 16-byte identity every replicated
// object carries, the same on master and slave.
package gfid

import (
	"encoding/hex"
	"fmt"

	"github.com/google/uuid"
)

// Size is the length of a GFID in bytes.
const Size = 16

// GFID is an object identity. The zero GFID is never valid.
type GFID [Size]byte

// Root is the fixed GFID of a replicated tree's root directory
// (00000000-0000-0000-0000-000000000001), as in GlusterFS.
var Root = GFID{15: 1}

// New returns a fresh random GFID.
func New() GFID { return GFID(uuid.New()) }

// FromBytes checks that b is a valid GFID on the wire: exactly 16 bytes and
// not all zero.
func FromBytes(b []byte) (GFID, error) {
	var g GFID
	if len(b) != Size {
		return g, fmt.Errorf("gfid must be %d bytes, got %d", Size, len(b))
	}
	copy(g[:], b)
	if g.IsZero() {
		return g, fmt.Errorf("gfid must not be all zero")
	}
	return g, nil
}

// Parse reads the canonical 36-character form.
func Parse(s string) (GFID, error) {
	u, err := uuid.Parse(s)
	if err != nil {
		return GFID{}, fmt.Errorf("parse gfid %q: %w", s, err)
	}
	return FromBytes(u[:])
}

// IsZero reports whether g is the zero GFID.
func (g GFID) IsZero() bool { return g == GFID{} }

// Bytes returns a copy of g for the wire.
func (g GFID) Bytes() []byte { b := g; return b[:] }

// String returns the canonical form, for example
// 00000000-0000-0000-0000-000000000001.
func (g GFID) String() string { return uuid.UUID(g).String() }

// Hex returns the 32 lowercase hex digits without dashes.
func (g GFID) Hex() string { return hex.EncodeToString(g[:]) }
