package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

const (
	// commitBatchBytes bounds the content of one group commit: the files
	// flushed to disk by one sync and then installed. Its files are
	// bounded by the stream's queue (commitQueueFor).
	commitBatchBytes = 64 << 20
	// commitQueueMin and commitQueueMax bound how many received files may
	// wait for a stream's committer; each holds an open temp.
	commitQueueMin = 128
	commitQueueMax = 1024
	// batchFiles and batchBytes bound one FileBatch: its files and the
	// chunk data they carry in all.
	batchFiles = 256
	batchBytes = backend.MaxChunk
)

// compressions are the FileChunk encodings this slave decodes, advertised
// at Handshake.
func compressions() []pb.Compression { return []pb.Compression{pb.Compression_COMPRESSION_ZSTD} }

// PutFiles receives whole-file content for files addressed by GFID: per
// file a header, chunks and a trailer (or all three in one header, or
// several such headers in one FileBatch), answered with one result once
// the file is installed or refused: one PutFilesResponse each, or one for
// each commit batch when the master set batch_results. A file's own failure (unknown
// GFID, bad chunk, digest mismatch, full disk) is its result; only a
// stream that breaks the message order fails the call. Whatever file is
// open when the stream ends or breaks is discarded, its old content kept.
//
// Receiving and installing overlap: this goroutine writes and verifies
// each file's temp and hands it to a committer, which takes every file
// waiting, makes the batch durable with one flush (group commit), then
// installs and answers them in order. Under load batches grow by
// themselves; a lone file is flushed at once; a FileBatch's files go in
// one commit (its rest is already received, only not yet begun).
func (s *Service) PutFiles(stream pb.Slave_PutFilesServer) error {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(backend.MaxChunk),
		zstd.WithDecoderLowmem(true))
	if err != nil {
		return fmt.Errorf("start a zstd decoder: %w", err)
	}
	defer dec.Close()
	n := s.putStreams.Add(1)
	defer s.putStreams.Add(-1)
	ready := make(chan *incomingFile, commitQueueFor(s.openFiles, int(n)))
	stop := make(chan struct{}) // closed when the committer gives up
	committed := make(chan error, 1)
	// batched is set by the receiver from the master's batch_results
	// before it hands over the first file it came with.
	var batched atomic.Bool
	go func() { committed <- s.commitFiles(stream, ready, stop, &batched) }()
	rerr := s.receiveFiles(stream, dec, ready, stop, &batched)
	close(ready)
	cerr := <-committed
	if rerr != nil {
		return rerr
	}
	return cerr
}

// receiveFiles reads the stream and passes every finished file to ready.
func (s *Service) receiveFiles(stream pb.Slave_PutFilesServer, dec *zstd.Decoder, ready chan<- *incomingFile, stop <-chan struct{},
	batched *atomic.Bool) error {
	var cur *incomingFile
	defer func() {
		if cur != nil {
			cur.abort()
		}
	}()
	var buf []byte // decoded chunk, reused
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if cur != nil {
				return invalid("the stream ended inside the content of %s (no trailer); it was discarded", cur.desc)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetBatchResults() {
			batched.Store(true)
		}
		switch p := req.GetPart().(type) {
		case *pb.PutFilesRequest_Header:
			if cur != nil {
				return invalid("a header came while the content of %s had no trailer yet: end each file with a trailer", cur.desc)
			}
			cur = s.beginFile(p.Header)
			// A small file may come whole in its header (the slave
			// offered single_message_files): chunk, then trailer.
			if c := p.Header.GetChunk(); c != nil {
				buf = cur.write(dec, c, buf)
			}
			if t := p.Header.GetTrailer(); t != nil {
				if !s.endFile(cur, t, ready, stop) {
					return nil // the committer's error ends the call
				}
				cur = nil
			}
		case *pb.PutFilesRequest_Chunk:
			if cur == nil {
				return invalid("a chunk came outside a file: send a header first")
			}
			buf = cur.write(dec, p.Chunk, buf)
		case *pb.PutFilesRequest_Copy:
			if cur == nil {
				return invalid("a copy came outside a file: send a header first")
			}
			cur.copy(p.Copy)
		case *pb.PutFilesRequest_Trailer:
			if cur == nil {
				return invalid("a trailer came outside a file: send a header first")
			}
			if !s.endFile(cur, p.Trailer, ready, stop) {
				return nil // the committer's error ends the call
			}
			cur = nil
		case *pb.PutFilesRequest_Batch:
			if cur != nil {
				return invalid("a file batch came while the content of %s had no trailer yet: end each file with a trailer", cur.desc)
			}
			if err := checkFileBatch(p.Batch); err != nil {
				return err
			}
			// Each file is what a single-message header is: begun,
			// written, ended and handed over before the next.
			files := p.Batch.GetFiles()
			for k, h := range files {
				f := s.beginFile(h)
				f.more = k < len(files)-1
				if c := h.GetChunk(); c != nil {
					buf = f.write(dec, c, buf)
				}
				if !s.endFile(f, h.GetTrailer(), ready, stop) {
					return nil // the committer's error ends the call
				}
			}
		default:
			return invalid("a PutFiles message must carry a header, a chunk, a copy, a trailer or a file batch")
		}
	}
}

// checkFileBatch checks a FileBatch's shape before any of its files is
// begun, so a malformed batch fails the stream having touched nothing:
// 1 to batchFiles files, each with its trailer, and at most batchBytes
// of chunk data in all. Each file's own fields are its result's to judge.
func checkFileBatch(b *pb.FileBatch) error {
	files := b.GetFiles()
	switch {
	case len(files) == 0:
		return invalid("a file batch holds no file: send at least one, or none at all")
	case len(files) > batchFiles:
		return invalid("a file batch holds %d files, more than %d: split it", len(files), batchFiles)
	}
	data := 0
	for i, h := range files {
		if h == nil || h.GetTrailer() == nil {
			return invalid("file %d of a file batch has no trailer: a batch carries whole files, each ending with its trailer", i)
		}
		if data += len(h.GetChunk().GetData()); data > batchBytes {
			return invalid("a file batch carries more than %d bytes of chunk data (at file %d): split it", batchBytes, i)
		}
	}
	return nil
}

// endFile checks f's trailer and hands f to the committer. It returns
// false, with f discarded, when the committer gave up.
func (s *Service) endFile(f *incomingFile, t *pb.FileTrailer, ready chan<- *incomingFile, stop <-chan struct{}) bool {
	f.verify(t)
	select {
	case ready <- f:
		return true
	case <-stop:
		f.abort()
		return false
	}
}

// commitQueueFor is the queue of received files for a stream when it is
// the streams-th open on a slave allowed openFiles descriptors. A longer
// queue makes bigger group commits, fewer flushes: each syncfs costs a
// journal commit and a device cache flush however little it writes, and
// with 128 files a queue, 20,000 small files took 80 of them where 1024
// takes 42 (initial sync 1.94 -> 1.90 s, medians of six). A stream holds
// up to twice its queue open (one batch committing, one queued), so the
// streams together keep to half the limit, never below the 128 that was
// always the queue.
func commitQueueFor(openFiles uint64, streams int) int {
	per := openFiles / 4 / uint64(max(streams, 1))
	return int(min(max(per, commitQueueMin), commitQueueMax))
}

// commitFiles flushes, installs and answers the files from ready in
// batches, in order. After a failed Send it discards what still comes.
func (s *Service) commitFiles(stream pb.Slave_PutFilesServer, ready <-chan *incomingFile, stop chan<- struct{}, batched *atomic.Bool) error {
	var err error
	batch := make([]*incomingFile, 0, cap(ready))
	for f := range ready {
		if err != nil {
			f.abort()
			continue
		}
		batch = append(batch[:0], f)
		size := f.written()
	gather:
		for len(batch) < cap(ready) && size < commitBatchBytes {
			var g *incomingFile
			var ok bool
			if batch[len(batch)-1].more {
				// The rest of a FileBatch is already here, only not
				// begun yet: one flush and one answer for all of it.
				g, ok = <-ready
			} else {
				select {
				case g, ok = <-ready:
				default:
				}
			}
			if !ok {
				break gather
			}
			batch = append(batch, g)
			size += g.written()
		}
		if err = s.commitBatch(stream, batch, batched.Load()); err != nil {
			close(stop)
		}
	}
	return err
}

// commitBatch makes the verified files of batch durable with one flush,
// installs them and sends every file's result in order: each in its own
// message, or all in one when batched (the master asked for that).
func (s *Service) commitBatch(stream pb.Slave_PutFilesServer, batch []*incomingFile, batched bool) error {
	var ws []*backend.FileWriter
	for _, f := range batch {
		if f.err == nil {
			ws = append(ws, f.w)
		}
	}
	if len(ws) > 0 {
		if err := s.backend.SyncPuts(ws); err != nil {
			for _, f := range batch {
				if f.err == nil {
					f.err = err
				}
			}
		}
	}
	if s.afterFlush != nil {
		s.afterFlush(stream.Context())
	}
	// A master that went away during the flush (a syncfs can take seconds)
	// sends this content again if it still needs it. Installed now, it
	// could land over what a newer session of that master has installed
	// meanwhile, through another slave process on this root.
	if err := stream.Context().Err(); err != nil {
		for _, f := range batch {
			f.abort()
		}
		return statusFromBackend(fmt.Errorf("the master went away before its files were installed: %w", err))
	}
	// The flush may have failed some; the rest go in under one lock.
	ws, idx := ws[:0], make([]int, 0, len(ws))
	for i, f := range batch {
		if f.err == nil {
			ws, idx = append(ws, f.w), append(idx, i)
		}
	}
	if len(ws) > 0 {
		for j, err := range s.backend.InstallAll(ws, s.session(stream.Context())) {
			batch[idx[j]].err = err
		}
	}
	var all *pb.PutFilesResponse
	if batched {
		all = &pb.PutFilesResponse{Results: make([]*pb.PutFilesResponse, 0, len(batch))}
	}
	for i, f := range batch {
		resp := f.response()
		if r := resp.GetResult(); r.GetErrno() != 0 {
			s.logger.Info("file content not installed", "gfid", gfidText(resp.GetGfid()),
				"code", r.GetCode(), "message", r.GetMessage())
		}
		if all != nil {
			all.Results = append(all.Results, resp)
			continue
		}
		if err := stream.Send(resp); err != nil {
			for _, g := range batch[i+1:] {
				g.abort()
			}
			return err
		}
	}
	if all != nil {
		return stream.Send(all)
	}
	return nil
}

// incomingFile is the file a PutFiles stream is receiving.
type incomingFile struct {
	gfid []byte
	desc string
	w    *backend.FileWriter
	// err is the file's first failure; later chunks are read and dropped
	// until its trailer, which gets the failure as its result.
	err error
	// more says the file came in a FileBatch whose next file follows at
	// once (the receiver has it in hand).
	more bool
}

func gfidText(b []byte) string {
	if g, err := gfid.FromBytes(b); err == nil {
		return g.String()
	}
	return fmt.Sprintf("%x", b)
}

func (s *Service) beginFile(h *pb.FileHeader) *incomingFile {
	f := &incomingFile{gfid: h.GetGfid(), desc: "gfid " + gfidText(h.GetGfid())}
	if len(h.GetCreateName()) > 0 {
		f.desc = fmt.Sprintf("new file gfid %s at %q in %s", gfidText(h.GetGfid()), h.GetCreateName(), gfidText(h.GetCreateParentGfid()))
	}
	ph, err := putHeader(h)
	if err == nil {
		f.w, err = s.backend.BeginPut(ph)
	}
	f.err = err
	return f
}

// putHeader checks a header's fields; a bad one is its file's EINVAL.
func putHeader(h *pb.FileHeader) (backend.PutHeader, error) {
	g, err := gfid.FromBytes(h.GetGfid())
	if err != nil {
		return backend.PutHeader{}, fmt.Errorf("gfid: %v: %w", err, unix.EINVAL)
	}
	ph := backend.PutHeader{GFID: g, Size: h.GetSize(), Stat: h.GetStat(), Delta: h.GetDelta(), Digest: h.GetDigest()}
	ph.LinkParent, ph.LinkName, ph.Create, err = fileNames(h.GetLinkParentGfid(), h.GetLinkName(), h.GetCreateParentGfid(), h.GetCreateName())
	return ph, err
}

// fileNames reads the names a file's content arrives with: a link hint
// (one of its names) or, for a new file, where to create it; each pair
// set together or not at all, never both. A bad one is EINVAL. The
// backend checks the name itself.
func fileNames(linkParent, linkName, createParent, createName []byte) (parent gfid.GFID, name string, create bool, err error) {
	hasParent, hasName := len(linkParent) > 0, len(linkName) > 0
	cParent, cName := len(createParent) > 0, len(createName) > 0
	switch {
	case hasParent != hasName:
		return parent, "", false, fmt.Errorf("link hint: set link_parent_gfid and link_name together, or neither: %w", unix.EINVAL)
	case cParent != cName:
		return parent, "", false, fmt.Errorf("create: set create_parent_gfid and create_name together, or neither: %w", unix.EINVAL)
	case cParent && hasParent:
		return parent, "", false, fmt.Errorf("create: a new file takes no link hint (its create name is its only name): %w", unix.EINVAL)
	case hasParent:
		if parent, err = gfid.FromBytes(linkParent); err != nil {
			return parent, "", false, fmt.Errorf("link_parent_gfid: %v: %w", err, unix.EINVAL)
		}
		return parent, string(linkName), false, nil
	case cParent:
		if parent, err = gfid.FromBytes(createParent); err != nil {
			return parent, "", false, fmt.Errorf("create_parent_gfid: %v: %w", err, unix.EINVAL)
		}
		return parent, string(createName), true, nil
	}
	return parent, "", false, nil
}

// decodeChunk returns c's content: its data as it is, or decoded into buf
// (reused) for a compressed chunk. A chunk that claims or decodes to more
// than backend.MaxChunk bytes is refused before more than that is
// allocated, so a decompression bomb costs nothing.
func decodeChunk(dec *zstd.Decoder, c *pb.FileChunk, buf []byte) ([]byte, []byte, error) {
	switch c.GetCompression() {
	case pb.Compression_COMPRESSION_UNSPECIFIED:
		return c.GetData(), buf, nil
	case pb.Compression_COMPRESSION_ZSTD:
	default:
		return nil, buf, fmt.Errorf("chunk at offset %d: compression %d is not one this slave offered at handshake: %w",
			c.GetOffset(), c.GetCompression(), unix.EINVAL)
	}
	n := c.GetLength()
	if n > backend.MaxChunk {
		return nil, buf, fmt.Errorf("chunk at offset %d: decoded length %d exceeds %d bytes: %w", c.GetOffset(), n, backend.MaxChunk, unix.EINVAL)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, 0, max(int(n), 64<<10))
	}
	out, err := dec.DecodeAll(c.GetData(), buf[:0])
	if err != nil {
		return nil, buf, fmt.Errorf("chunk at offset %d: zstd data does not decode (at most %d bytes): %v: %w", c.GetOffset(), backend.MaxChunk, err, unix.EINVAL)
	}
	if len(out) != int(n) {
		return nil, buf, fmt.Errorf("chunk at offset %d: zstd data decodes to %d bytes, the chunk says %d: %w", c.GetOffset(), len(out), n, unix.EINVAL)
	}
	if cap(out) > cap(buf) {
		buf = out[:0]
	}
	return out, buf, nil
}

// write writes chunk c; buf is the decode buffer, returned for reuse.
func (f *incomingFile) write(dec *zstd.Decoder, c *pb.FileChunk, buf []byte) []byte {
	if f.err != nil {
		return buf
	}
	data, buf, err := decodeChunk(dec, c, buf)
	if err == nil {
		err = f.w.WriteAt(data, c.GetOffset())
	}
	if f.err = err; f.err != nil {
		f.w.Abort()
	}
	return buf
}

func (f *incomingFile) copy(c *pb.FileCopy) {
	if f.err != nil {
		return
	}
	if f.err = f.w.CopyAt(c.GetOffset(), c.GetLength(), c.GetSourceOffset()); f.err != nil {
		f.w.Abort()
	}
}

// BlockSums returns the block checksums of a file's current content, for
// a master that sends only what changed.
func (s *Service) BlockSums(ctx context.Context, req *pb.BlockSumsRequest) (*pb.BlockSumsResponse, error) {
	g, err := parseGFID("gfid", req.GetGfid())
	if err != nil {
		return nil, err
	}
	resp, err := s.backend.BlockSums(g, int(req.GetBlockSize()))
	return resp, statusFromBackend(err)
}

func (f *incomingFile) abort() {
	if f.w != nil {
		f.w.Abort()
	}
}

func (f *incomingFile) written() int64 {
	if f.w == nil {
		return 0
	}
	return f.w.Written()
}

// verify checks the trailer: an abandoned file is discarded, a received
// one must match its digest. Either way the file then waits for the
// committer.
func (f *incomingFile) verify(t *pb.FileTrailer) {
	switch {
	case f.err != nil:
	case t.GetAbandon():
		f.w.Abort()
		f.err = fmt.Errorf("the master abandoned the transfer (the file changed while it was read); previous content kept: %w", unix.ECANCELED)
	default:
		f.err = f.w.Verify(t.GetDigest())
	}
}

// response is the file's result; a failed file's temp is discarded.
func (f *incomingFile) response() *pb.PutFilesResponse {
	resp := &pb.PutFilesResponse{Gfid: f.gfid, Result: &pb.EntryResult{}, BytesWritten: f.written()}
	f.abort()
	if f.err != nil {
		e := unix.EIO
		var en unix.Errno
		if errors.As(f.err, &en) {
			e = en
		}
		resp.Result = &pb.EntryResult{Errno: int32(e), Code: unix.ErrnoName(e), Message: "PUT " + f.desc + ": " + f.err.Error()}
	}
	return resp
}
