package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/georep/georep/internal/digest"
	pb "github.com/georep/georep/proto/georep/v1"
)

const xxh128 = pb.ContentDigest_CONTENT_DIGEST_XXH3_128

// sumOf is k's digest of content.
func sumOf(k pb.ContentDigest, content string) []byte {
	return digest.Append(nil, k, []byte(content))
}

// wholeWith is whole with k's digest, which h names.
func wholeWith(k pb.ContentDigest, h *pb.FileHeader, content string) *pb.FileHeader {
	h = whole(h, content)
	h.Digest = k
	h.Trailer.Digest = sumOf(k, content)
	return h
}

func headerWith(k pb.ContentDigest, g []byte, size int64) *pb.PutFilesRequest {
	req := header(g, size)
	req.GetHeader().Digest = k
	return req
}

func trailerWith(k pb.ContentDigest, content string) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Trailer{Trailer: &pb.FileTrailer{Digest: sumOf(k, content)}}}
}

// TestHandshakeContentDigests: the slave offers both digests, so a master
// picks XXH3-128.
func TestHandshakeContentDigests(t *testing.T) {
	b, _ := openBackend(t)
	c := serve(t, New(b, Options{}), overTCP, testLogger(t, nil))
	hs, err := c.Handshake(callCtx(t), &pb.HandshakeRequest{Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor}})
	if err != nil {
		t.Fatal(err)
	}
	got := hs.GetContentDigests()
	if !slices.Contains(got, pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED) || !slices.Contains(got, xxh128) {
		t.Errorf("content_digests %v, want BLAKE3-256 and XXH3-128", got)
	}
	if p := digest.Preferred(got); p != xxh128 {
		t.Errorf("a master would pick %v, want XXH3-128", p)
	}
}

// TestPutFilesDigests: over a real stream, each digest kind installs files
// sent in parts (chunks over a hole), single-message and batched; a
// damaged chunk, a digest of the wrong length or of the other kind fail
// only their file with EBADMSG naming the digest; a header naming a digest
// the slave does not know fails only its file with EINVAL. Kinds mix
// freely on one stream.
func TestPutFilesDigests(t *testing.T) {
	b3 := pb.ContentDigest_CONTENT_DIGEST_UNSPECIFIED
	for _, tr := range transports() {
		for _, k := range []pb.ContentDigest{b3, xxh128} {
			t.Run(fmt.Sprintf("%s/%s", tr, digest.Name(k)), func(t *testing.T) {
				other := b3
				if k == b3 {
					other = xxh128
				}
				b, dir := openBackend(t)
				c := serve(t, New(b, Options{}), tr, testLogger(t, nil))
				ctx := callCtx(t)
				x := createFile(t, c, "x")
				big := strings.Repeat("0123456789abcdef", 80_000) // 1.25 MB: two chunks
				holey := "\x00\x00\x00\x00" + big + "\x00\x00tail\x00"
				short := wholeWith(k, &pb.FileHeader{Gfid: x.Bytes()}, "short digest")
				short.Trailer.Digest = short.Trailer.Digest[:len(short.Trailer.Digest)-1]
				otherKind := wholeWith(k, &pb.FileHeader{Gfid: x.Bytes()}, "other kind")
				otherKind.Trailer.Digest = sumOf(other, "other kind")
				unknown := wholeWith(k, createHeader("unknown"), "unknown digest")
				unknown.Digest = 7
				shortInBatch := wholeWith(k, createHeader("short"), "short in a batch")
				shortInBatch.Trailer.Digest = shortInBatch.Trailer.Digest[:5]
				unknownInBatch := wholeWith(k, createHeader("unknown"), "unknown in a batch")
				unknownInBatch.Digest = 7
				type file struct {
					desc string
					msgs []*pb.PutFilesRequest
					code string
					msg  string // in the result's message
				}
				files := []file{
					{"chunks around holes", []*pb.PutFilesRequest{headerWith(k, x.Bytes(), int64(len(holey))),
						chunk(4, big[:1<<20]), chunk(4+1<<20, big[1<<20:]), chunk(int64(len(holey)-5), "tail"),
						trailerWith(k, holey)}, "", ""},
					{"damaged chunk", []*pb.PutFilesRequest{headerWith(k, x.Bytes(), 5), chunk(0, "hellO"),
						trailerWith(k, "hello")}, "EBADMSG", digest.Name(k) + " digest mismatch"},
					{"single message", []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Header{
						Header: wholeWith(k, createHeader("single"), "one message")}}}, "", ""},
					{"short digest", []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Header{Header: short}}}, "EBADMSG", "bytes, want"},
					{"the other kind's digest", []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Header{Header: otherKind}}},
						"EBADMSG", digest.Name(k)},
					{"unknown digest", []*pb.PutFilesRequest{{Part: &pb.PutFilesRequest_Header{Header: unknown}}},
						"EINVAL", "content digest 7"},
					{"unknown digest, in parts", []*pb.PutFilesRequest{headerWith(7, x.Bytes(), 3), chunk(0, "abc"),
						trailerWith(k, "abc")}, "EINVAL", "does not verify"},
					{"short digest in a batch", []*pb.PutFilesRequest{batch(shortInBatch)}, "EBADMSG", "bytes, want"},
					{"unknown digest in a batch", []*pb.PutFilesRequest{batch(unknownInBatch)}, "EINVAL", "content digest 7"},
					{"batch", []*pb.PutFilesRequest{batch(wholeWith(k, createHeader("b1"), "first"),
						wholeWith(other, createHeader("b2"), "second, other kind"), wholeWith(k, createHeader("b3"), ""))}, "", ""},
				}
				stream, err := c.PutFiles(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var want []file // one per result
				for _, f := range files {
					for _, m := range f.msgs {
						if err := stream.Send(m); err != nil {
							t.Fatalf("%s: send: %v", f.desc, err)
						}
					}
					want = append(want, f)
					if bt := f.msgs[0].GetBatch(); bt != nil {
						for range bt.GetFiles()[1:] {
							want = append(want, f)
						}
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				for i, f := range want {
					resp, err := stream.Recv()
					if err != nil {
						t.Fatalf("result %d (%s): %v", i, f.desc, err)
					}
					r := resp.GetResult()
					if r.GetCode() != f.code || !strings.Contains(r.GetMessage(), f.msg) {
						t.Errorf("%s: %s %q, want %q mentioning %q", f.desc, r.GetCode(), r.GetMessage(), f.code, f.msg)
					}
				}
				if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
					t.Errorf("after the last result: %v, want EOF", err)
				}
				for name, content := range map[string]string{"x": holey, "single": "one message", "b1": "first",
					"b2": "second, other kind", "b3": ""} {
					data, err := os.ReadFile(filepath.Join(dir, name))
					if err != nil || string(data) != content {
						t.Errorf("%s holds %d bytes (%v), want %d", name, len(data), err, len(content))
					}
				}
				for _, name := range []string{"unknown", "short"} {
					if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("a refused new file left %s: %v", name, err)
					}
				}
				waitTmpEmpty(t, dir)
			})
		}
	}
}
