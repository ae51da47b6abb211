package server

// rsync mode's RPCs: StageFiles prepares a staging directory whose basis
// files rsync deltas against, InstallStaged installs what rsync delivered
// by GFID (server/backend/stage.go does the work).

import (
	"context"
	"errors"
	"fmt"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// hasRsync reports whether this slave can serve rsync mode: an rsync
// program on PATH for its daemon (internal/rsyncd).
func hasRsync() bool {
	_, err := exec.LookPath("rsync")
	return err == nil
}

// entryResult turns a per-item error into its wire form.
func entryResult(op string, g []byte, err error) *pb.EntryResult {
	if err == nil {
		return &pb.EntryResult{}
	}
	e := unix.EIO
	var en unix.Errno
	if errors.As(err, &en) {
		e = en
	}
	return &pb.EntryResult{Errno: int32(e), Code: unix.ErrnoName(e), Message: op + " gfid " + gfidText(g) + ": " + err.Error()}
}

// StageFiles makes a staging directory holding each named file's current
// content as the basis of an rsync transfer.
func (s *Service) StageFiles(ctx context.Context, req *pb.StageFilesRequest) (*pb.StageFilesResponse, error) {
	if err := checkBatch("gfids", len(req.GetGfids())); err != nil {
		return nil, err
	}
	gs := make([]gfid.GFID, len(req.GetGfids()))
	for i, b := range req.GetGfids() {
		g, err := parseGFID(fmt.Sprintf("gfids[%d]", i), b)
		if err != nil {
			return nil, err
		}
		gs[i] = g
	}
	stage, errs, err := s.backend.StageFiles(gs)
	if err != nil {
		return nil, statusFromBackend(err)
	}
	resp := &pb.StageFilesResponse{Stage: stage, Results: make([]*pb.EntryResult, len(errs))}
	for i, e := range errs {
		resp.Results[i] = entryResult("STAGE", req.GetGfids()[i], e)
	}
	return resp, nil
}

// InstallStaged installs files rsync delivered into a staging directory.
func (s *Service) InstallStaged(ctx context.Context, req *pb.InstallStagedRequest) (*pb.InstallStagedResponse, error) {
	if req.GetStage() == "" {
		return nil, invalid("stage is required")
	}
	if err := checkBatch("files", len(req.GetFiles())); err != nil {
		return nil, err
	}
	files := make([]backend.StagedFile, len(req.GetFiles()))
	for i, f := range req.GetFiles() {
		field := fmt.Sprintf("files[%d]", i)
		g, err := parseGFID(field+".gfid", f.GetGfid())
		if err != nil {
			return nil, err
		}
		sf := backend.StagedFile{GFID: g, Size: f.GetSize(), Stat: f.GetStat(), Discard: f.GetDiscard()}
		sf.LinkParent, sf.LinkName, sf.Create, err = fileNames(f.GetLinkParentGfid(), f.GetLinkName(), f.GetCreateParentGfid(), f.GetCreateName())
		if err != nil {
			return nil, invalid("%s: %v", field, err)
		}
		files[i] = sf
	}
	res, err := s.backend.InstallStaged(req.GetStage(), files, req.GetFinish(), s.session(ctx))
	if err != nil && res == nil {
		return nil, statusFromBackend(err)
	}
	if err != nil {
		// The files are done; only removing the staging directory failed.
		s.logger.Warn("staging directory left behind; a later StageFiles sweeps it", "stage", req.GetStage(), "err", err)
	}
	resp := &pb.InstallStagedResponse{Results: make([]*pb.PutFilesResponse, len(res))}
	for i, r := range res {
		g := req.GetFiles()[i].GetGfid()
		resp.Results[i] = &pb.PutFilesResponse{Gfid: g, Result: entryResult("INSTALL", g, r.Err), BytesWritten: r.Written}
	}
	return resp, nil
}

// StageFiles routes to the named volume's Service.
func (v *Volumes) StageFiles(ctx context.Context, req *pb.StageFilesRequest) (*pb.StageFilesResponse, error) {
	return route(ctx, v, req, (*Service).StageFiles)
}

// InstallStaged routes to the named volume's Service.
func (v *Volumes) InstallStaged(ctx context.Context, req *pb.InstallStagedRequest) (*pb.InstallStagedResponse, error) {
	return route(ctx, v, req, (*Service).InstallStaged)
}
