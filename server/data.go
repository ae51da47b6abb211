package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// PutFiles receives whole-file content for files addressed by GFID: per
// file a header, chunks and a trailer, answered with one PutFilesResponse
// once the file is installed or refused. A file's own failure (unknown
// GFID, bad chunk, digest mismatch, full disk) is its result; only a
// stream that breaks the message order fails the call. Whatever file is
// open when the stream ends or breaks is discarded, its old content kept.
func (s *Service) PutFiles(stream pb.Slave_PutFilesServer) error {
	var cur *incomingFile
	defer func() {
		if cur != nil {
			cur.abort()
		}
	}()
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
		switch p := req.GetPart().(type) {
		case *pb.PutFilesRequest_Header:
			if cur != nil {
				return invalid("a header came while the content of %s had no trailer yet: end each file with a trailer", cur.desc)
			}
			cur = s.beginFile(p.Header)
		case *pb.PutFilesRequest_Chunk:
			if cur == nil {
				return invalid("a chunk came outside a file: send a header first")
			}
			cur.write(p.Chunk)
		case *pb.PutFilesRequest_Copy:
			if cur == nil {
				return invalid("a copy came outside a file: send a header first")
			}
			cur.copy(p.Copy)
		case *pb.PutFilesRequest_Trailer:
			if cur == nil {
				return invalid("a trailer came outside a file: send a header first")
			}
			resp := cur.finish(p.Trailer)
			cur = nil
			if r := resp.GetResult(); r.GetErrno() != 0 {
				s.logger.Info("file content not installed", "gfid", gfidText(resp.GetGfid()),
					"code", r.GetCode(), "message", r.GetMessage())
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		default:
			return invalid("a PutFiles message must carry a header, a chunk, a copy or a trailer")
		}
	}
}

// incomingFile is the file a PutFiles stream is receiving.
type incomingFile struct {
	gfid []byte
	desc string
	w    *backend.FileWriter
	// err is the file's first failure; later chunks are read and dropped
	// until its trailer, which gets the failure as its result.
	err error
}

func gfidText(b []byte) string {
	if g, err := gfid.FromBytes(b); err == nil {
		return g.String()
	}
	return fmt.Sprintf("%x", b)
}

func (s *Service) beginFile(h *pb.FileHeader) *incomingFile {
	f := &incomingFile{gfid: h.GetGfid(), desc: "gfid " + gfidText(h.GetGfid())}
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
	ph := backend.PutHeader{GFID: g, Size: h.GetSize(), Stat: h.GetStat(), Delta: h.GetDelta()}
	hasParent, hasName := len(h.GetLinkParentGfid()) > 0, len(h.GetLinkName()) > 0
	if hasParent != hasName {
		return ph, fmt.Errorf("link hint: set link_parent_gfid and link_name together, or neither: %w", unix.EINVAL)
	}
	if hasParent {
		if ph.LinkParent, err = gfid.FromBytes(h.GetLinkParentGfid()); err != nil {
			return ph, fmt.Errorf("link_parent_gfid: %v: %w", err, unix.EINVAL)
		}
		ph.LinkName = string(h.GetLinkName())
	}
	return ph, nil
}

func (f *incomingFile) write(c *pb.FileChunk) {
	if f.err != nil {
		return
	}
	if f.err = f.w.WriteAt(c.GetData(), c.GetOffset()); f.err != nil {
		f.w.Abort()
	}
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

func (f *incomingFile) finish(t *pb.FileTrailer) *pb.PutFilesResponse {
	resp := &pb.PutFilesResponse{Gfid: f.gfid, Result: &pb.EntryResult{}}
	if f.w != nil {
		resp.BytesWritten = f.w.Written()
	}
	switch {
	case f.err != nil:
	case t.GetAbandon():
		f.w.Abort()
		f.err = fmt.Errorf("the master abandoned the transfer (the file changed while it was read); previous content kept: %w", unix.ECANCELED)
	default:
		_, f.err = f.w.Commit(t.GetBlake3())
	}
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
