// Package digest makes the whole-file content digests of the native data
// plane (pb.ContentDigest): BLAKE3-256, what every slave verifies, and
// XXH3-128, several times cheaper and enough for what the digest guards
// against (corruption and bugs on an authenticated channel). The master
// and the slave both hash through here, so the two ends agree on each
// digest's bytes by construction.
package digest

import (
	"fmt"
	"hash"

	"github.com/zeebo/blake3"
	"github.com/zeebo/xxh3"

	pb "github.com/georep/georep/proto/georep/v1"
)

// MaxSize is the longest digest any kind makes.
const MaxSize = 32

// Kinds lists the digests this build makes and verifies, in the order a
// slave offers them at Handshake.
func Kinds() []pb.ContentDigest {
	return []pb.ContentDigest{pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED, pb.ContentDigest_CONTENT_DIGEST_XXH3_128}
}

// Known reports whether k is a digest this build makes.
func Known(k pb.ContentDigest) bool {
	return k == pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED || k == pb.ContentDigest_CONTENT_DIGEST_XXH3_128
}

// Name is k's name for messages.
func Name(k pb.ContentDigest) string {
	switch k {
	case pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED:
		return "BLAKE3-256"
	case pb.ContentDigest_CONTENT_DIGEST_XXH3_128:
		return "XXH3-128"
	}
	return fmt.Sprintf("content digest %d", int32(k))
}

// Size is the length of k's digest in bytes; 0 for an unknown kind.
func Size(k pb.ContentDigest) int {
	switch k {
	case pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED:
		return 32
	case pb.ContentDigest_CONTENT_DIGEST_XXH3_128:
		return 16
	}
	return 0
}

// Preferred is the digest a master uses with a slave that offered
// offered: XXH3-128 when listed, else BLAKE3-256, which every slave
// verifies.
func Preferred(offered []pb.ContentDigest) pb.ContentDigest {
	for _, k := range offered {
		if k == pb.ContentDigest_CONTENT_DIGEST_XXH3_128 {
			return k
		}
	}
	return pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED
}

// New returns a running hash of kind k; its Sum appends k's digest. An
// unknown kind is an error.
func New(k pb.ContentDigest) (hash.Hash, error) {
	switch k {
	case pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED:
		return blake3.New(), nil
	case pb.ContentDigest_CONTENT_DIGEST_XXH3_128:
		return new(xxh128), nil
	}
	return nil, fmt.Errorf("unknown content digest %d (this georep knows BLAKE3-256 and XXH3-128)", int32(k))
}

// Append appends k's digest of p to out, without a running hash (no
// allocation for XXH3-128). k must be known (see Known); an unknown kind
// panics.
func Append(out []byte, k pb.ContentDigest, p []byte) []byte {
	switch k {
	case pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED:
		sum := blake3.Sum256(p)
		return append(out, sum[:]...)
	case pb.ContentDigest_CONTENT_DIGEST_XXH3_128:
		sum := xxh3.Hash128(p).Bytes()
		return append(out, sum[:]...)
	}
	panic(fmt.Sprintf("digest.Append: unknown content digest %d", int32(k)))
}

// xxh128 is XXH3-128 as a hash.Hash: xxh3.Hasher's own Sum is the 64-bit
// hash, the wire carries the 128-bit one in canonical (big-endian) form.
type xxh128 struct{ xxh3.Hasher }

func (h *xxh128) Size() int { return 16 }

func (h *xxh128) Sum(b []byte) []byte {
	sum := h.Sum128().Bytes()
	return append(b, sum[:]...)
}
