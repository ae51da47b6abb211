package backend

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// digestOfKind is digestOf with the hash kind names: the holes hashed as
// zeros, the digest in its wire form.
func digestOfKind(t testing.TB, k pb.ContentDigest, size int64, spans []putSpan) []byte {
	t.Helper()
	h, err := digest.New(k)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(logical(size, spans))
	return h.Sum(nil)
}

// TestVerifyDigests: Verify checks the digest kind the header names, its
// value and its length; each kind's right digest installs content with
// holes, and the wrong one (another kind's, a flipped bit, a short one)
// keeps the previous content (EBADMSG) with an error naming the kind.
func TestVerifyDigests(t *testing.T) {
	const size = 3<<20 + 5
	spans := []putSpan{
		{off: 4096, data: bytes.Repeat([]byte("data "), 300_000)}, // over a MaxChunk, so two writes
		{off: 2<<20 + 100, data: []byte("after a hole")},
	} // and a hole at the end
	kinds := []pb.ContentDigest{pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED, pb.ContentDigest_CONTENT_DIGEST_XXH3_128}
	for _, k := range kinds {
		other := kinds[0]
		if k == other {
			other = kinds[1]
		}
		good := digestOfKind(t, k, size, spans)
		flipped := bytes.Clone(good)
		flipped[len(flipped)-1] ^= 1
		tests := []struct {
			name   string
			digest []byte
			errno  unix.Errno
			msg    string // in the error
		}{
			{name: "right", digest: good},
			{name: "flipped bit", digest: flipped, errno: unix.EBADMSG, msg: digest.Name(k) + " digest mismatch"},
			{name: "other kind's digest", digest: digestOfKind(t, other, size, spans), errno: unix.EBADMSG, msg: digest.Name(k)},
			{name: "short", digest: good[:len(good)-1], errno: unix.EBADMSG, msg: fmt.Sprintf("has %d bytes", len(good)-1)},
			{name: "none", digest: nil, errno: unix.EBADMSG, msg: "has 0 bytes"},
		}
		for _, tc := range tests {
			t.Run(digest.Name(k)+"/"+tc.name, func(t *testing.T) {
				if len(good) != digest.Size(k) {
					t.Fatalf("%s digest of %d bytes, want %d", digest.Name(k), len(good), digest.Size(k))
				}
				b, dir := newBackend(t)
				x := gfid.New()
				old := []byte("previous content")
				writeOld(t, b, dir, x, "f", old)
				h := PutHeader{GFID: x, Size: size, LinkParent: gfid.Root, LinkName: "f", Digest: k}
				_, err := putContent(t, b, h, spans, tc.digest, nil)
				got := fileBytes(t, filepath.Join(dir, "f"))
				if tc.errno == 0 {
					if err != nil {
						t.Fatalf("put: %v", err)
					}
					if !bytes.Equal(got, logical(size, spans)) {
						t.Errorf("installed content differs from what was sent (%d bytes)", len(got))
					}
					if st := lstatPath(t, filepath.Join(dir, "f")); st.Blocks*512 >= size {
						t.Errorf("holes were filled: %d bytes allocated for %d", st.Blocks*512, size)
					}
				} else {
					if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), tc.msg) {
						t.Errorf("error %v, want %v mentioning %q", err, tc.errno, tc.msg)
					}
					if !bytes.Equal(got, old) {
						t.Errorf("content now %d bytes, want the previous %q", len(got), old)
					}
				}
				dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
			})
		}
	}
}

// TestPutUnknownDigest: a header naming a digest this build does not know
// is refused at BeginPut with EINVAL, before any temp exists.
func TestPutUnknownDigest(t *testing.T) {
	b, dir := newBackend(t)
	x := gfid.New()
	writeOld(t, b, dir, x, "f", []byte("kept"))
	for _, k := range []pb.ContentDigest{2, 99, -1} {
		w, err := b.BeginPut(PutHeader{GFID: x, Size: 4, Digest: k})
		if w != nil {
			w.Abort()
		}
		if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("digest %d: BeginPut error %v, want EINVAL saying the slave does not verify it", k, err)
		}
	}
	dirEmpty(t, filepath.Join(dir, ReservedDir, tmpDirName))
	if got := fileBytes(t, filepath.Join(dir, "f")); string(got) != "kept" {
		t.Errorf("content now %q, want kept", got)
	}
}
