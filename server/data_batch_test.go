package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// whole makes h a whole file: content as its chunk (none when empty) and
// the trailer with its digest.
func whole(h *pb.FileHeader, content string) *pb.FileHeader {
	h.Size = int64(len(content))
	if content != "" {
		h.Chunk = &pb.FileChunk{Data: []byte(content)}
	}
	sum := blake3.Sum256([]byte(content))
	h.Trailer = &pb.FileTrailer{Digest: sum[:]}
	return h
}

// createHeader is the header of a new file at name in the slave root.
func createHeader(name string) *pb.FileHeader {
	return &pb.FileHeader{Gfid: gfid.New().Bytes(), CreateParentGfid: gfid.Root.Bytes(), CreateName: []byte(name), Stat: regStat(0o640)}
}

func batch(files ...*pb.FileHeader) *pb.PutFilesRequest {
	return &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Batch{Batch: &pb.FileBatch{Files: files}}}
}

// createFile makes an empty file name in the slave root with an entry op.
func createFile(t *testing.T, c pb.SlaveClient, name string) gfid.GFID {
	t.Helper()
	g := gfid.New()
	r, err := c.EntryOps(callCtx(t), &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
		Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte(name), Stat: regStat(0o644)}}})
	if err != nil || r.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create %s: %v %v", name, err, r)
	}
	return g
}

// TestPutFilesBatch: a slave offers file_batches at Handshake; each file
// of a FileBatch is taken as a single-message file: its own result, in
// order with the stream's other files, refused files (a taken name, a
// missing parent, an unknown GFID, a bad digest) failing alone and good
// ones installed. Results come one a message unless the master asked for
// batch_results; then several to a message, none with a result of its own.
func TestPutFilesBatch(t *testing.T) {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	text := strings.Repeat("a compressible small file ", 100)
	for _, tr := range transports() {
		for _, batched := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batch_results=%v", tr, batched), func(t *testing.T) {
				b, dir := openBackend(t)
				c := serve(t, New(b, Options{}), tr, testLogger(t, nil))
				ctx := callCtx(t)
				hs, err := c.Handshake(ctx, &pb.HandshakeRequest{Protocol: &pb.Version{Major: ProtocolMajor}, Object: &pb.Version{Major: ObjectMajor}})
				if err != nil {
					t.Fatal(err)
				}
				if !hs.GetFileBatches() || !hs.GetSingleMessageFiles() {
					t.Fatalf("Handshake: file_batches %v, single_message_files %v; want both", hs.GetFileBatches(), hs.GetSingleMessageFiles())
				}
				x := createFile(t, c, "x")
				createFile(t, c, "taken")
				orphan := createHeader("orphan")
				orphan.CreateParentGfid = gfid.New().Bytes()
				bad := whole(&pb.FileHeader{Gfid: x.Bytes()}, "new x")
				bad.Trailer.Digest[0] ^= 1
				zipped := whole(createHeader("z"), text)
				zipped.Chunk = &pb.FileChunk{Data: enc.EncodeAll([]byte(text), nil), Compression: pb.Compression_COMPRESSION_ZSTD, Length: uint32(len(text))}
				msgs := []*pb.PutFilesRequest{
					batch(
						whole(createHeader("a"), "alpha"),
						whole(createHeader("taken"), "beta"),                     // EEXIST
						whole(&pb.FileHeader{Gfid: gfid.New().Bytes()}, "gamma"), // ENOENT: unknown gfid
						whole(orphan, "delta"),                                   // ENOENT: no parent
						bad,                                                      // EBADMSG
						whole(createHeader("e"), ""),
						zipped,
					),
					header(x.Bytes(), 9), chunk(0, "x content"), trailer("x content"),
					batch(whole(createHeader("b"), "bravo"), whole(createHeader("c"), "charlie")),
				}
				msgs[0].BatchResults = batched
				stream, err := c.PutFiles(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					if err := stream.Send(m); err != nil {
						t.Fatalf("send: %v", err)
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatal(err)
				}
				var got []string
				responses := 0
				for {
					resp, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatalf("after %d results: %v", len(got), err)
					}
					responses++
					rs := resp.GetResults()
					switch {
					case !batched && len(rs) > 0:
						t.Fatalf("a batch of %d results, though the master did not ask for batch_results", len(rs))
					case batched && len(rs) == 0:
						t.Fatalf("a single result (%v), though the master asked for batch_results", resp)
					case len(rs) > 0 && (resp.GetGfid() != nil || resp.GetResult() != nil):
						t.Fatalf("a batch of results with a result of its own: %v", resp)
					case len(rs) == 0:
						rs = []*pb.PutFilesResponse{resp}
					}
					for _, r := range rs {
						if len(r.GetResults()) > 0 {
							t.Fatalf("results nested in a result: %v", r)
						}
						got = append(got, r.GetResult().GetCode())
					}
				}
				want := []string{"", "EEXIST", "ENOENT", "ENOENT", "EBADMSG", "", "", "", "", ""}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("result codes %q, want %q", got, want)
				}
				if !batched && responses != len(want) {
					t.Errorf("%d responses, want one per file (%d)", responses, len(want))
				}
				t.Logf("%d results in %d responses", len(got), responses)
				for name, content := range map[string]string{"a": "alpha", "taken": "", "x": "x content", "e": "", "z": text,
					"b": "bravo", "c": "charlie"} {
					data, err := os.ReadFile(filepath.Join(dir, name))
					if err != nil || string(data) != content {
						t.Errorf("%s holds %q (%v), want %q", name, data, err, content)
					}
				}
				if _, err := os.Lstat(filepath.Join(dir, "orphan")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a create without its parent left a name: %v", err)
				}
				waitTmpEmpty(t, dir)
			})
		}
	}
}

// TestPutFilesBatchRefused: a malformed batch (empty, a file without its
// trailer, a batch while a file is open, more than 256 files or 1 MiB of
// data) fails the stream with InvalidArgument, like the other order
// errors, before any of its files is begun: none of them is installed and
// no temp is left.
func TestPutFilesBatchRefused(t *testing.T) {
	x := gfid.New()
	many := make([]*pb.FileHeader, batchFiles+1)
	for i := range many {
		many[i] = whole(createHeader(fmt.Sprintf("m%d", i)), "m")
	}
	big := strings.Repeat("b", batchBytes/2+1)
	tests := []struct {
		name string
		msgs []*pb.PutFilesRequest
		want string
	}{
		{"empty batch", []*pb.PutFilesRequest{batch()}, "holds no file"},
		{"file without trailer", []*pb.PutFilesRequest{batch(whole(createHeader("a"), "alpha"),
			&pb.FileHeader{Gfid: x.Bytes(), Size: 1, Chunk: &pb.FileChunk{Data: []byte("y")}})}, "file 1 of a file batch has no trailer"},
		{"batch while a file is open", []*pb.PutFilesRequest{header(x.Bytes(), 1), batch(whole(createHeader("a"), "alpha"))},
			"had no trailer yet"},
		{"batch after a chunk", []*pb.PutFilesRequest{header(x.Bytes(), 2), chunk(0, "y"), batch(whole(createHeader("a"), "alpha"))},
			"had no trailer yet"},
		{"257 files", []*pb.PutFilesRequest{batch(many...)}, "more than 256"},
		{"over 1 MiB of data", []*pb.PutFilesRequest{batch(whole(createHeader("a"), big), whole(createHeader("b"), big))},
			"more than 1048576 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := sendMalformed(t, x, "x", tc.msgs, true)
			wantStatus(t, err, codes.InvalidArgument, tc.want)
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != "x" && e.Name() != ".georep" {
					t.Errorf("a refused batch installed %s", e.Name())
				}
			}
			if got, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || len(got) != 0 {
				t.Errorf("x holds %q (%v), want it untouched", got, err)
			}
			waitTmpEmpty(t, dir)
		})
	}
}

// waitTmpEmpty polls until the slave's .georep/tmp is empty: the committer
// discards a failed stream's files on its own goroutine.
func waitTmpEmpty(t *testing.T, dir string) {
	t.Helper()
	tmp := filepath.Join(dir, ".georep", "tmp")
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %d entries (first %s)", tmp, len(ents), ents[0].Name())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FuzzCheckFileBatch: whatever bytes arrive as a FileBatch, the check
// never panics, refuses only with InvalidArgument, and what it accepts
// holds 1 to 256 files, each with its trailer, and at most 1 MiB of data.
func FuzzCheckFileBatch(f *testing.F) {
	seed := func(files ...*pb.FileHeader) {
		b, err := proto.Marshal(&pb.FileBatch{Files: files})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed()
	seed(whole(createHeader("a"), "alpha"), whole(&pb.FileHeader{Gfid: gfid.New().Bytes()}, ""))
	seed(&pb.FileHeader{Gfid: gfid.New().Bytes(), Chunk: &pb.FileChunk{Data: []byte("no trailer")}})
	// Digests: XXH3-128, one of the wrong length and an unknown kind are
	// each their file's result (EBADMSG, EINVAL), never the batch's.
	short := wholeWith(pb.ContentDigest_CONTENT_DIGEST_XXH3_128, createHeader("s"), "short")
	short.Trailer.Digest = short.Trailer.Digest[:3]
	unknown := wholeWith(pb.ContentDigest_CONTENT_DIGEST_XXH3_128, createHeader("u"), "unknown")
	unknown.Digest = 99
	seed(wholeWith(pb.ContentDigest_CONTENT_DIGEST_XXH3_128, createHeader("x"), "xxh"), short, unknown)
	f.Fuzz(func(t *testing.T, data []byte) {
		var b pb.FileBatch
		if err := proto.Unmarshal(data, &b); err != nil {
			return
		}
		err := checkFileBatch(&b)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("refused with %v, want InvalidArgument", err)
			}
			return
		}
		files := b.GetFiles()
		if len(files) == 0 || len(files) > batchFiles {
			t.Fatalf("accepted a batch of %d files", len(files))
		}
		n := 0
		for i, h := range files {
			if h.GetTrailer() == nil {
				t.Fatalf("accepted file %d without a trailer", i)
			}
			n += len(h.GetChunk().GetData())
		}
		if n > batchBytes {
			t.Fatalf("accepted %d bytes of data", n)
		}
	})
}

// TestCommitQueueFor: a stream's commit queue grows to commitQueueMax when
// the open-file limit has room for every stream's, and never drops below
// the commitQueueMin it always had.
func TestCommitQueueFor(t *testing.T) {
	tests := []struct {
		name      string
		openFiles uint64
		streams   int
		want      int
	}{
		{name: "ample limit, the default three streams", openFiles: 1 << 20, streams: 3, want: commitQueueMax},
		{name: "this machine's 20000, three streams", openFiles: 20000, streams: 3, want: commitQueueMax},
		{name: "20000, ten streams share it", openFiles: 20000, streams: 10, want: 500},
		{name: "4096, one stream", openFiles: 4096, streams: 1, want: commitQueueMax},
		{name: "4096, 64 streams: the floor", openFiles: 4096, streams: 64, want: commitQueueMin},
		{name: "the traditional 1024, one stream", openFiles: 1024, streams: 1, want: 256},
		{name: "1024, three streams", openFiles: 1024, streams: 3, want: commitQueueMin},
		{name: "no stream counted", openFiles: 1 << 20, streams: 0, want: commitQueueMax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := commitQueueFor(tc.openFiles, tc.streams); got != tc.want {
				t.Errorf("commitQueueFor(%d, %d) = %d, want %d", tc.openFiles, tc.streams, got, tc.want)
			}
		})
	}
}
