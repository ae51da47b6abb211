// Package transfer is the master's data sender: it streams file content,
// read fd-relative beneath the master root, to a slave's PutFiles RPC by
// GFID, many files pipelined over each stream and several streams in
// parallel, and reports one result per file. A file the slave already has
// goes as a delta (only the blocks its BlockSums do not match, see
// delta.go). Files that change while being read are abandoned and
// reported as retryable, never installed torn.
package transfer

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/index"
)

const (
	// MaxChunk is the largest chunk the slave accepts (1 MiB).
	MaxChunk = 1 << 20
	// pipelineDepth bounds the files sent on one stream whose results have
	// not come back yet.
	pipelineDepth = 1024
	zeroBlock     = 64 << 10
	// batchFiles and batchBytes bound one FileBatch (the slave refuses
	// more): its files, and their content in all.
	batchFiles = 256
	batchBytes = MaxChunk
)

// ErrChanged reports a file that changed (size, mtime, ctime or inode)
// while it was being sent: the slave discarded it and kept its previous
// content. Send it again.
var ErrChanged = errors.New("the file changed while it was being sent; send it again")

// Item is one file whose whole content is to be sent.
type Item struct {
	// GFID is the file's identity on the slave.
	GFID gfid.GFID
	// RelPath is the file's path beneath the master root ('/'-separated).
	// No component may be a symlink.
	RelPath string
	// LinkParent and LinkName (optional) are one of the file's names on the
	// slave, letting it replace the content atomically.
	LinkParent gfid.GFID
	LinkName   []byte
	// Stat (optional) is the mode, owner and times to give the new
	// content; nil takes them from the file as it is opened.
	Stat *pb.Stat
	// New says the slave has no previous content worth a delta (the file
	// was just created there), so the content goes whole without asking
	// for block sums. Sending whole is always correct; this only saves a
	// round trip.
	New bool
	// Create says the slave has no file with this GFID: the transfer
	// creates it at LinkParent/LinkName (required) with Stat, complete or
	// not at all. The slave refuses with EEXIST when the name is taken or
	// the GFID exists elsewhere, and ENOENT without the parent directory;
	// the caller then makes the file with an entry op and sends it again
	// without Create. A create is always sent whole.
	Create bool
	// Size (optional) is the file's size when it was scanned: a hint for
	// planning the transfer, never trusted for the content.
	Size int64
	// Key and Dev (optional, together) are the master object the scan
	// found at RelPath: its index key and filesystem. The file opened at
	// RelPath must be that object; another one (a rename or a new file
	// took the name since the scan) is never sent as this GFID's content:
	// the item fails as moved (os.ErrNotExist) and the slave keeps what it
	// had.
	Key index.Key
	Dev uint64
}

// Check reports, for a file opened at it.RelPath and fstat'd as st,
// whether it is the object it was scanned as: nil when it is, or when it
// names no object (Key unset). The inode number alone would not do: a
// freed inode is soon reused, so a file made since can have the number;
// the file handle (its generation included) cannot be another object's.
func (it *Item) Check(fd int, st *unix.Stat_t) error {
	if it.Key == "" {
		return nil
	}
	if st.Dev == it.Dev {
		k, err := index.KeyOf(fd, "", st)
		if err != nil {
			return fmt.Errorf("identify %s: %w", it.RelPath, err)
		}
		if k == it.Key {
			return nil
		}
	}
	return fmt.Errorf("%s is no longer the file scanned there (moved or replaced since): %w", it.RelPath, os.ErrNotExist)
}

// Result is the outcome of one Item.
type Result struct {
	// Err is nil when the slave installed the content. ErrChanged, a
	// *RemoteError (the slave's errno), a local read error or a broken
	// stream otherwise.
	Err error
	// Sent is how many content bytes were sent for the file.
	Sent int64
	// Written is how many content bytes the slave reports it wrote.
	Written int64
	// Delta is true when the content went as a delta against the slave's
	// previous content.
	Delta bool
}

// Retryable reports whether sending the item again may succeed without
// anyone's intervention: it changed while being read, or the stream broke.
func (r Result) Retryable() bool {
	if errors.Is(r.Err, ErrChanged) {
		return true
	}
	switch status.Code(r.Err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// RemoteError is a file the slave refused or failed to install.
type RemoteError struct {
	Errno   unix.Errno
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return fmt.Sprintf("slave: %s: %s", e.Code, e.Message) }

// Unwrap lets errors.Is match the errno (unix.ENOSPC, unix.ENOENT...).
func (e *RemoteError) Unwrap() error { return e.Errno }

// Stats counts what a Send moved.
type Stats struct {
	// Files is how many files the slave installed.
	Files int64
	// Failed is how many files were not installed.
	Failed int64
	// DataBytes is the content sent (holes excluded; for a delta, only
	// the literal bytes).
	DataBytes int64
	// WireBytes is the size of every message sent, as encoded by protobuf
	// (before HTTP/2 framing), BlockSums requests and answers included.
	WireBytes int64
	// DeltaFiles is how many installed files went as a delta.
	DeltaFiles int64
	// SumsAhead is how many deltas began with block sums from
	// Options.SumsAhead rather than a BlockSums call.
	SumsAhead int64
	// WholeRetries is how many delta files failed their digest (the
	// slave's content changed meanwhile) and were sent again whole.
	WholeRetries int64
	// Messages is how many PutFiles messages were sent: each costs
	// framing and a wake-up on both ends, whatever its size.
	Messages int64
	// Responses is how many PutFiles messages came back (one per file, or
	// one per slave commit with FileBatches).
	Responses int64
}

// Options tunes Send.
type Options struct {
	// Jobs is how many streams run in parallel (--sync-jobs); 0 means 1.
	Jobs int
	// ChunkSize is the size of a content chunk, at most MaxChunk; 0 means
	// MaxChunk.
	ChunkSize int
	// Logger receives per-file failures at debug level; nil discards.
	Logger *slog.Logger
	// Installed, when set, is called once for each file the slave
	// installed, with the content bytes sent for it (for progress and
	// metrics). It is called from the streams' goroutines, concurrently.
	Installed func(it Item, sent int64)
	// WholeFile turns the delta transfer off: every file goes whole.
	WholeFile bool
	// Compression is how chunks may be encoded: COMPRESSION_ZSTD (the
	// slave must have offered it at Handshake) compresses each chunk that
	// shrinks by at least a tenth; the zero value sends them as they are.
	Compression pb.Compression
	// BwLimit caps the bytes per second all of Send's streams together
	// put on the wire; 0 means no cap.
	BwLimit int64
	// SingleMessage sends a file that fits one chunk as one message, its
	// header carrying the chunk and the trailer, instead of three. Only
	// for a slave whose Handshake set single_message_files.
	SingleMessage bool
	// FileBatches sends consecutive files of at most one chunk several to
	// a message (a FileBatch of up to 256 files and 1 MiB), and asks the
	// slave for one message of results per commit instead of one per
	// file. It implies SingleMessage. Only for a slave whose Handshake
	// set file_batches.
	FileBatches bool
	// Digest is the whole-file digest each trailer carries (for whole
	// files, small files and deltas alike): the zero value is BLAKE3-256,
	// which every slave verifies; CONTENT_DIGEST_XXH3_128, several times
	// cheaper on both ends, only for a slave whose Handshake listed it
	// (see digest.Preferred).
	Digest pb.ContentDigest
	// More, when set, brings further connections to the same slave while
	// the first pass runs (each its own ssh channel, say, with its own
	// flow-control window): each one that arrives gets Jobs streams of its
	// own, taking files from the same queue. They must have been made with
	// the same Handshake answers. Send does not close them.
	More <-chan pb.SlaveClient
	// SumsAhead, when set, is asked first for the block sums of a file
	// about to go as a delta, in blocks of blockSize: sums the caller
	// fetched before (see the syncer's sumsAhead). It returns nil when it
	// has none for g, and Send then asks the slave. Sums that no longer
	// match the slave's content cost a whole send, as any stale sums do:
	// the slave's digest check catches them.
	SumsAhead func(ctx context.Context, g gfid.GFID, blockSize int) *pb.BlockSumsResponse

	// hooks are test probes; nil in production.
	hooks *hooks
}

// hooks let tests act at exact points of a transfer.
type hooks struct {
	// afterChunk runs after a chunk of it at off was sent.
	afterChunk func(it Item, off int64)
	// corrupt may alter a chunk after it was hashed, before it is sent.
	corrupt func(it Item, data []byte)
	// afterSums runs once the slave's block sums of it arrived.
	afterSums func(it Item)
	// afterRead runs once a file of at most one chunk was read, before
	// the check that it did not change meanwhile.
	afterRead func(it Item)
}

// sender is one Send call's shared state.
type sender struct {
	root    int
	opts    Options
	chunk   int
	log     *slog.Logger
	limit   *limiter // nil: no cap
	items   []Item
	results []Result
	// whole marks items to send whole, never as a delta; set between passes.
	whole []bool

	files, failed, data, wire, deltas, ahead, msgs, resps atomic.Int64
}

// Send sends the content of items, read beneath root (an open directory),
// to slave and returns one Result per item, index-aligned. The error is
// for a call that could not start (bad options); per-file failures are in
// the results.
func Send(ctx context.Context, slave pb.SlaveClient, root *os.File, items []Item, opts Options) ([]Result, Stats, error) {
	if opts.ChunkSize < 0 || opts.ChunkSize > MaxChunk {
		return nil, Stats{}, fmt.Errorf("chunk size %d: must be between 1 and %d bytes", opts.ChunkSize, MaxChunk)
	}
	switch opts.Compression {
	case pb.Compression_COMPRESSION_UNSPECIFIED, pb.Compression_COMPRESSION_ZSTD:
	default:
		return nil, Stats{}, fmt.Errorf("compression %v: only zstd or none can be sent", opts.Compression)
	}
	if !digest.Known(opts.Digest) {
		return nil, Stats{}, fmt.Errorf("%s: only BLAKE3-256 or XXH3-128 can be sent", digest.Name(opts.Digest))
	}
	if opts.BwLimit < 0 {
		return nil, Stats{}, fmt.Errorf("bandwidth limit %d bytes/s: must not be negative (0: no limit)", opts.BwLimit)
	}
	s := &sender{root: int(root.Fd()), opts: opts, chunk: opts.ChunkSize, log: opts.Logger,
		items: items, results: make([]Result, len(items)), whole: make([]bool, len(items)), limit: newLimiter(opts.BwLimit)}
	if s.chunk == 0 {
		s.chunk = MaxChunk
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	all := make([]int, len(items))
	for i := range all {
		all[i] = i
	}
	s.run(ctx, slave, all, opts.More)
	// A delta whose digest failed met a slave content that changed after
	// its block sums; the whole file does not depend on it.
	var again []int
	for i, r := range s.results {
		if r.Delta && errors.Is(r.Err, unix.EBADMSG) {
			again = append(again, i)
			s.results[i] = Result{}
			s.whole[i] = true
			s.failed.Add(-1)
		}
	}
	if len(again) > 0 {
		s.log.Debug("delta digests failed; sending those files whole", "files", len(again))
		s.run(ctx, slave, again, nil)
	}
	st := Stats{Files: s.files.Load(), Failed: s.failed.Load(), DataBytes: s.data.Load(), WireBytes: s.wire.Load(),
		DeltaFiles: s.deltas.Load(), SumsAhead: s.ahead.Load(), WholeRetries: int64(len(again)), Messages: s.msgs.Load(), Responses: s.resps.Load()}
	return s.results, st, nil
}

// run sends the items indexed by idx over opts.Jobs streams, and as many
// more on each connection that comes from more while there is work left.
// The work is queued whole before the workers start, so a worker that
// finds nothing ready has really run out (and sends its batch, see
// worker).
func (s *sender) run(ctx context.Context, slave pb.SlaveClient, idx []int, more <-chan pb.SlaveClient) {
	next := make(chan int, len(idx))
	for _, i := range idx {
		next <- i
	}
	close(next)
	start := func(wg *sync.WaitGroup, c pb.SlaveClient) {
		for range max(s.opts.Jobs, 1) {
			wg.Go(func() { s.worker(ctx, c, next) })
		}
	}
	var first, late sync.WaitGroup
	start(&first, slave)
	// The first connection's workers end when the queue is empty; a
	// connection that comes after that has nothing to do.
	drained := make(chan struct{})
	go func() { first.Wait(); close(drained) }()
	for more != nil {
		select {
		case c, ok := <-more:
			if !ok {
				more = nil
			} else if len(next) > 0 {
				s.log.Debug("another connection to the slave joins the transfer", "files_left", len(next))
				start(&late, c)
			}
		case <-drained:
			more = nil
		}
	}
	<-drained
	late.Wait()
}

func (s *sender) fail(i int, err error) {
	s.results[i].Err = err
	s.failed.Add(1)
	s.log.Debug("file content not sent", "path", s.items[i].RelPath, "gfid", s.items[i].GFID, "err", err)
}

// worker sends the items it takes from next over one stream, opening a
// fresh stream after one breaks.
func (s *sender) worker(ctx context.Context, slave pb.SlaveClient, next <-chan int) {
	var st *stream
	defer func() {
		if st != nil {
			st.finish()
		}
	}()
	// run queues all the work before the workers start, so a batch never
	// waits on a feeder: it is sent when full, before another kind of
	// file, or by finish once the queue is empty.
	for i := range next {
		if err := ctx.Err(); err != nil {
			s.fail(i, fmt.Errorf("not sent: %w", err))
			continue
		}
		if st == nil {
			var err error
			if st, err = s.openStream(ctx, slave); err != nil {
				s.fail(i, err)
				continue
			}
		}
		if err := st.sendFile(i); err != nil {
			// The stream is broken: this item and those in flight failed.
			st.finish()
			st = nil
		}
	}
}

// stream is one PutFiles stream and its receiver.
type stream struct {
	s        *sender
	ctx      context.Context // the stream's, for its BlockSums calls
	slave    pb.SlaveClient
	cancel   context.CancelFunc
	ps       pb.Slave_PutFilesClient
	inflight chan int // items whose trailer was sent, in order
	recvDone chan struct{}
	// broken is set (before recvDone closes) when Recv failed.
	broken error
	// changed marks items abandoned because they changed; written by the
	// sending goroutine before the item enters inflight.
	changed map[int]bool
	mu      sync.Mutex
	// buf is the read buffer; a chunk's message is encoded by Send before
	// it returns (no stats handler keeps it), so the next read may reuse it.
	buf []byte
	// zc compresses chunks when the slave takes zstd; nil otherwise.
	zc *compressor
	// small is what single-message files taught about compressing.
	small smallCompression
	// batch gathers single-message files until they are sent together
	// (Options.FileBatches).
	batch fileBatch
	// asked is set once a message of this stream asked the slave for
	// batched results.
	asked bool
	// hash is the running digest of the file being sent in chunks or as a
	// delta, reset for each: one per stream, as a BLAKE3 hasher is big.
	hash hash.Hash
}

// fileBatch is the files a stream gathered for its next FileBatch. Their
// content lives in one arena until the batch is sent, so gathering costs
// no allocation per file.
type fileBatch struct {
	idx   []int                  // items, in order
	sizes []int64                // their content sizes
	files []*pb.FileHeader       // their headers, each with chunk and trailer
	sums  [][digest.MaxSize]byte // their digests, referenced by the trailers
	arena []byte                 // their content, batchBytes long once used
	used  int                    // content bytes of the arena taken
}

func (s *sender) openStream(ctx context.Context, slave pb.SlaveClient) (*stream, error) {
	sctx, cancel := context.WithCancel(ctx)
	ps, err := slave.PutFiles(sctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open a PutFiles stream to the slave: %w", err)
	}
	st := &stream{s: s, ctx: sctx, slave: slave, cancel: cancel, ps: ps, inflight: make(chan int, pipelineDepth),
		recvDone: make(chan struct{}), changed: map[int]bool{}}
	if s.opts.Compression == pb.Compression_COMPRESSION_ZSTD {
		if st.zc, err = newCompressor(); err != nil {
			cancel()
			return nil, err
		}
	}
	go st.receive()
	return st, nil
}

// receive matches each result to the oldest item in flight.
func (st *stream) receive() {
	defer close(st.recvDone)
	for st.broken == nil {
		resp, err := st.ps.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				st.broken = fmt.Errorf("the PutFiles stream to the slave broke: %w", err)
			}
			break
		}
		st.s.resps.Add(1)
		// One file's result, or (batch_results) several in order.
		results := resp.GetResults()
		if len(results) == 0 {
			st.broken = st.result(resp)
			continue
		}
		if len(resp.GetGfid()) > 0 || resp.GetResult() != nil {
			st.broken = errors.New("the slave sent one message with both a file's result and a batch of results")
			break
		}
		for _, r := range results {
			if len(r.GetResults()) > 0 {
				st.broken = errors.New("the slave sent a batch of results inside a batch of results")
			} else {
				st.broken = st.result(r)
			}
			if st.broken != nil {
				break
			}
		}
	}
	if st.broken == nil {
		st.broken = errors.New("the slave ended the PutFiles stream before answering every file")
	}
	st.cancel() // stops a sender blocked in Send
}

// result applies one file's result to the oldest item in flight. An error
// means the stream cannot be trusted any more.
func (st *stream) result(resp *pb.PutFilesResponse) error {
	s := st.s
	i, ok := <-st.inflight
	if !ok {
		return errors.New("the slave sent more results than files")
	}
	if gfid.GFID(resp.GetGfid()) != s.items[i].GFID || len(resp.GetGfid()) != gfid.Size {
		err := fmt.Errorf("the slave answered for gfid %x where %s was expected", resp.GetGfid(), s.items[i].GFID)
		s.fail(i, err)
		return err
	}
	s.results[i].Written = resp.GetBytesWritten()
	st.mu.Lock()
	changed := st.changed[i]
	delete(st.changed, i)
	st.mu.Unlock()
	r := resp.GetResult()
	switch {
	case changed:
		s.fail(i, fmt.Errorf("%s: %w", s.items[i].RelPath, ErrChanged))
	case r.GetErrno() != 0:
		s.fail(i, &RemoteError{Errno: unix.Errno(r.GetErrno()), Code: r.GetCode(), Message: r.GetMessage()})
	default:
		s.files.Add(1)
		if s.results[i].Delta {
			s.deltas.Add(1)
		}
		if s.opts.Installed != nil {
			s.opts.Installed(s.items[i], s.results[i].Sent)
		}
	}
	return nil
}

// finish ends the stream: the files gathered are sent, then no more; once
// the receiver is done, the files still in flight never got an answer and
// fail.
func (st *stream) finish() {
	defer st.zc.close()
	_ = st.flush() // a failure failed the batch's files
	st.ps.CloseSend()
	close(st.inflight)
	<-st.recvDone
	for i := range st.inflight {
		st.s.fail(i, st.broken)
	}
	st.cancel()
}

func (st *stream) send(req *pb.PutFilesRequest) error {
	if st.s.opts.FileBatches && !st.asked {
		req.BatchResults, st.asked = true, true
	}
	n := req.SizeVT()
	if err := st.s.limit.wait(st.ctx, n); err != nil {
		return err
	}
	st.s.wire.Add(int64(n))
	st.s.msgs.Add(1)
	return st.ps.Send(req)
}

// sendData sends data, item i's content at off, as a chunk: compressed
// when that is on and shrinks it enough.
func (st *stream) sendData(i int, off int64, data []byte, z *fileCompression) error {
	c := &pb.FileChunk{Offset: off, Data: data}
	st.compressChunk(c, z)
	if err := st.send(&pb.PutFilesRequest{Part: &pb.PutFilesRequest_Chunk{Chunk: c}}); err != nil {
		return err
	}
	st.s.data.Add(int64(len(data)))
	st.s.results[i].Sent += int64(len(data))
	return nil
}

// compressChunk encodes c's data when compression is on and shrinks it
// enough.
func (st *stream) compressChunk(c *pb.FileChunk, z *fileCompression) {
	if st.zc == nil {
		return
	}
	if enc, ok := st.zc.compress(z, c.Data); ok {
		c.Compression, c.Length, c.Data = pb.Compression_COMPRESSION_ZSTD, uint32(len(c.Data)), enc
	}
}

// smallSkip is how many small files go as they are after giveUpAfter in
// a row did not shrink, before one is tried again.
const smallSkip = 64

// smallCompression counts across a stream's single-chunk files: one small
// file says little about the next, but a tree of incompressible small
// files (media, archives) costs a zstd attempt each for nothing.
type smallCompression struct {
	misses int // files in a row that did not shrink
	skip   int // files still to send without trying
}

// chunkOf is data, a whole small file's content, as its only chunk.
func (st *stream) chunkOf(data []byte) *pb.FileChunk {
	c := &pb.FileChunk{Data: data}
	if st.zc == nil || len(data) < compressMin {
		return c
	}
	if st.small.skip > 0 {
		st.small.skip--
		return c
	}
	st.compressChunk(c, &fileCompression{})
	if c.Compression != pb.Compression_COMPRESSION_UNSPECIFIED {
		st.small.misses = 0
		return c
	}
	if st.small.misses++; st.small.misses >= giveUpAfter {
		st.small.skip = smallSkip
	}
	return c
}

// streamErr is the reason a Send failed: the receiver's, when it has one.
func (st *stream) streamErr(err error) error {
	select {
	case <-st.recvDone:
		return st.broken
	default:
	}
	if errors.Is(err, io.EOF) {
		st.cancel()
		<-st.recvDone
		return st.broken
	}
	return fmt.Errorf("send to the slave: %w", err)
}

// sendFile sends item i. A non-nil error means the stream is broken (the
// item's result is set); local problems only fail the item.
func (st *stream) sendFile(i int) error {
	s := st.s
	it := s.items[i]
	fd, err := openBeneath(s.root, it.RelPath)
	if err != nil {
		s.fail(i, err)
		return nil
	}
	defer unix.Close(fd)
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		s.fail(i, fmt.Errorf("stat %s: %w", it.RelPath, err))
		return nil
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		s.fail(i, fmt.Errorf("%s is not a regular file (mode %#o): %w", it.RelPath, before.Mode, unix.EINVAL))
		return nil
	}
	if err := it.Check(fd, &before); err != nil {
		s.fail(i, err)
		return nil
	}
	stat := it.Stat
	if stat == nil {
		stat = &pb.Stat{Mode: before.Mode, Uid: before.Uid, Gid: before.Gid,
			Atime: &pb.Timestamp{Sec: before.Atim.Sec, Nsec: uint32(before.Atim.Nsec)},
			Mtime: &pb.Timestamp{Sec: before.Mtim.Sec, Nsec: uint32(before.Mtim.Nsec)}}
	}
	var sums *pb.BlockSumsResponse
	// A sparse file goes whole: that path skips its holes, while the delta
	// would send or copy them as zeros and leave the slave's copy dense.
	// A new file has nothing on the slave to delta against.
	dense := before.Blocks*512 >= before.Size
	if dense && !it.New && !it.Create && st.wantsSums(i, before.Size) {
		// The gathered files go first: not held back for a round trip,
		// and ahead of this file on the stream.
		if err := st.flush(); err != nil {
			s.fail(i, err)
			return err
		}
		sums = st.blockSums(i, before.Size)
	}
	h := &pb.FileHeader{Gfid: it.GFID.Bytes(), Size: before.Size, Stat: stat, Delta: sums != nil, Digest: s.opts.Digest}
	switch {
	case it.Create:
		h.CreateParentGfid, h.CreateName = it.LinkParent.Bytes(), it.LinkName
	case len(it.LinkName) > 0:
		h.LinkParentGfid, h.LinkName = it.LinkParent.Bytes(), it.LinkName
	}
	s.results[i].Delta = sums != nil
	header := &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: h}}
	var sum []byte
	var changed bool
	if sums == nil && dense && (s.opts.SingleMessage || s.opts.FileBatches) && before.Size <= int64(s.chunk) {
		if s.opts.FileBatches {
			return st.addToBatch(i, fd, &before, h)
		}
		return st.sendSingle(i, fd, &before, header)
	}
	// Whatever was gathered goes ahead of this file's messages.
	if err := st.flush(); err != nil {
		s.fail(i, err)
		return err
	}
	if sums != nil {
		if err := st.send(header); err != nil {
			s.fail(i, st.streamErr(err))
			return err
		}
		sum, changed, err = st.sendDelta(i, fd, before.Size, sums)
	} else {
		sum, changed, err = st.sendContent(i, fd, before.Size, dense, header)
	}
	if err != nil {
		s.fail(i, st.streamErr(err))
		return err
	}
	if !changed && !unchangedSince(fd, &before) {
		changed = true
	}
	if changed {
		st.mu.Lock()
		st.changed[i] = true
		st.mu.Unlock()
	}
	tr := &pb.FileTrailer{Digest: sum, Abandon: changed}
	if err := st.send(&pb.PutFilesRequest{Part: &pb.PutFilesRequest_Trailer{Trailer: tr}}); err != nil {
		s.fail(i, st.streamErr(err))
		return err
	}
	select {
	case st.inflight <- i:
	case <-st.recvDone:
		s.fail(i, st.broken)
		return st.broken
	}
	return nil
}

// unchangedSince reports whether fd still has before's size, mtime, ctime
// and inode: what was read from it is one version of the file. A failed
// fstat counts as changed.
func unchangedSince(fd int, before *unix.Stat_t) bool {
	var after unix.Stat_t
	return unix.Fstat(fd, &after) == nil && after.Size == before.Size && after.Mtim == before.Mtim &&
		after.Ctim == before.Ctim && after.Ino == before.Ino
}

// sendSingle sends item i, a dense file of at most one chunk, as one
// message: its header carrying the content and the trailer. The file is
// read and checked unchanged before anything is sent, so a file that
// changes meanwhile is not sent at all (ErrChanged) and the slave never
// sees it. A non-nil error means the stream is broken.
func (st *stream) sendSingle(i int, fd int, before *unix.Stat_t, header *pb.PutFilesRequest) error {
	s := st.s
	if st.buf == nil {
		st.buf = make([]byte, s.chunk)
	}
	buf := st.buf[:before.Size]
	sum, ok := st.readWhole(i, fd, before, buf, new([digest.MaxSize]byte))
	if !ok {
		return nil
	}
	h := header.GetHeader()
	h.Trailer = &pb.FileTrailer{Digest: sum}
	if len(buf) > 0 {
		h.Chunk = st.chunkOf(buf)
	}
	if err := st.send(header); err != nil {
		s.fail(i, st.streamErr(err))
		return err
	}
	return st.sent(i, int64(len(buf)))
}

// readWhole reads item i, a dense file of at most one chunk, into buf
// (its size), and returns its digest, kept in space. It reports false,
// with the item failed, when the file cannot be read or changed while it
// was read.
func (st *stream) readWhole(i int, fd int, before *unix.Stat_t, buf []byte, space *[digest.MaxSize]byte) ([]byte, bool) {
	s := st.s
	it := s.items[i]
	for n := 0; n < len(buf); {
		m, err := unix.Pread(fd, buf[n:], int64(n))
		if err != nil {
			s.fail(i, fmt.Errorf("read %s at offset %d: %w", it.RelPath, n, err))
			return nil, false
		}
		if m == 0 {
			s.fail(i, fmt.Errorf("%s: %w", it.RelPath, ErrChanged)) // shrank under us
			return nil, false
		}
		n += m
	}
	if s.opts.hooks != nil && s.opts.hooks.afterRead != nil {
		s.opts.hooks.afterRead(it)
	}
	if !unchangedSince(fd, before) {
		s.fail(i, fmt.Errorf("%s: %w", it.RelPath, ErrChanged))
		return nil, false
	}
	sum := digest.Append(space[:0], s.opts.Digest, buf)
	if s.opts.hooks != nil && s.opts.hooks.corrupt != nil {
		s.opts.hooks.corrupt(it, buf)
	}
	return sum, true
}

// sent accounts for item i, whose size bytes of content (all of it) just
// went out whole, and puts it in flight. A non-nil error means the stream
// is broken.
func (st *stream) sent(i int, size int64) error {
	s := st.s
	s.data.Add(size)
	s.results[i].Sent += size
	if s.opts.hooks != nil && s.opts.hooks.afterChunk != nil && size > 0 {
		s.opts.hooks.afterChunk(s.items[i], 0)
	}
	select {
	case st.inflight <- i:
		return nil
	case <-st.recvDone:
		s.fail(i, st.broken)
		return st.broken
	}
}

// addToBatch reads item i, a dense file of at most one chunk, into the
// stream's batch, under the same rules as sendSingle: a file that changed
// while it was read never joins. A full batch is sent at once. A non-nil
// error means the stream is broken.
func (st *stream) addToBatch(i int, fd int, before *unix.Stat_t, h *pb.FileHeader) error {
	b := &st.batch
	if len(b.idx) == batchFiles || b.used+int(before.Size) > batchBytes {
		if err := st.flush(); err != nil {
			st.s.fail(i, err)
			return err
		}
	}
	if b.arena == nil {
		b.arena = make([]byte, batchBytes)
		b.sums = make([][digest.MaxSize]byte, batchFiles)
	}
	buf := b.arena[b.used : b.used+int(before.Size)]
	sum, ok := st.readWhole(i, fd, before, buf, &b.sums[len(b.idx)])
	if !ok {
		return nil
	}
	h.Trailer = &pb.FileTrailer{Digest: sum}
	if len(buf) > 0 {
		c := st.chunkOf(buf)
		if c.Compression != pb.Compression_COMPRESSION_UNSPECIFIED {
			// The encoder's output is reused by the next file: keep this
			// one's in its own slot (it is smaller than what it encodes).
			c.Data = buf[:copy(buf, c.Data)]
		}
		h.Chunk = c
	}
	b.idx = append(b.idx, i)
	b.sizes = append(b.sizes, before.Size)
	b.files = append(b.files, h)
	b.used += len(buf)
	if len(b.idx) == batchFiles || b.used == batchBytes {
		return st.flush()
	}
	return nil
}

// flush sends the files gathered, if any: one as a single message, more
// as a FileBatch; then they are in flight, in order. A non-nil error
// means the stream is broken; every file of the batch failed with it.
func (st *stream) flush() error {
	b := &st.batch
	if len(b.idx) == 0 {
		return nil
	}
	req := &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Batch{Batch: &pb.FileBatch{Files: b.files}}}
	if len(b.idx) == 1 {
		req = &pb.PutFilesRequest{Part: &pb.PutFilesRequest_Header{Header: b.files[0]}}
	}
	err := st.send(req)
	idx, sizes := b.idx, b.sizes
	// The message is encoded by now: the arena and slices are free again.
	clear(b.files)
	b.idx, b.sizes, b.files, b.used = b.idx[:0], b.sizes[:0], b.files[:0], 0
	if err != nil {
		err = st.streamErr(err)
		for _, i := range idx {
			st.s.fail(i, err)
		}
		return err
	}
	for k, i := range idx {
		if err := st.sent(i, sizes[k]); err != nil {
			for _, j := range idx[k+1:] {
				st.s.fail(j, err)
			}
			return err
		}
	}
	return nil
}

// sendContent sends fd's data runs below size as chunks, hashing holes as
// zeros. changed is true when the file turned out shorter than size. A
// dense file (as many blocks as bytes) is read straight through, without
// asking where its holes are. header goes just before the first chunk
// (read and hashed by then), so a small file's header, chunk and trailer
// are sent back to back and share one write to the transport.
func (st *stream) sendContent(i int, fd int, size int64, dense bool, header *pb.PutFilesRequest) (sum []byte, changed bool, err error) {
	s := st.s
	it := s.items[i]
	hasher, err := st.fileHash()
	if err != nil {
		return nil, false, err
	}
	var zeros []byte
	var z fileCompression
	pos := int64(0) // end of what is hashed
	hashTo := func(end int64) {
		for pos < end {
			if zeros == nil {
				zeros = make([]byte, zeroBlock)
			}
			n := min(end-pos, int64(len(zeros)))
			hasher.Write(zeros[:n])
			pos += n
		}
	}
	if st.buf == nil {
		st.buf = make([]byte, s.chunk)
	}
	for off := int64(0); off < size && !changed; {
		d, end := off, size
		if !dense {
			var serr error
			d, serr = unix.Seek(fd, off, unix.SEEK_DATA)
			if errors.Is(serr, unix.ENXIO) {
				break // only a hole remains
			}
			if serr != nil {
				d = off // no SEEK_DATA here: read everything
			} else if hole, herr := unix.Seek(fd, d, unix.SEEK_HOLE); herr == nil {
				end = min(hole, size)
			}
		}
		for d < end {
			buf := st.buf[:min(end-d, int64(s.chunk))]
			n, rerr := unix.Pread(fd, buf, d)
			if rerr != nil {
				return nil, false, fmt.Errorf("read %s at offset %d: %w", it.RelPath, d, rerr)
			}
			if n == 0 {
				changed = true // shrank under us
				break
			}
			buf = buf[:n]
			hashTo(d)
			hasher.Write(buf)
			pos += int64(n)
			if s.opts.hooks != nil && s.opts.hooks.corrupt != nil {
				s.opts.hooks.corrupt(it, buf)
			}
			if header != nil {
				if err := st.send(header); err != nil {
					return nil, false, err
				}
				header = nil
			}
			if err := st.sendData(i, d, buf, &z); err != nil {
				return nil, false, err
			}
			if s.opts.hooks != nil && s.opts.hooks.afterChunk != nil {
				s.opts.hooks.afterChunk(it, d)
			}
			d += int64(n)
		}
		off = max(end, d)
	}
	if header != nil {
		if err := st.send(header); err != nil {
			return nil, false, err
		}
	}
	hashTo(size)
	return hasher.Sum(nil), changed, nil
}

// fileHash returns the stream's running digest (Options.Digest), reset
// for a new file.
func (st *stream) fileHash() (hash.Hash, error) {
	if st.hash == nil {
		h, err := digest.New(st.s.opts.Digest)
		if err != nil {
			return nil, err
		}
		st.hash = h
	}
	st.hash.Reset()
	return st.hash, nil
}

// openBeneath opens rel beneath root for reading: no symlink in any
// component, no escape, O_NONBLOCK so a FIFO planted there cannot hang us.
func openBeneath(root int, rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 16 {
		fd, err := unix.Openat2(root, rel, &how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			return -1, fmt.Errorf("open %s beneath the master root: %w", rel, err)
		}
	}
	return -1, fmt.Errorf("open %s beneath the master root: renames kept racing: %w", rel, unix.EAGAIN)
}
