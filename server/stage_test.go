package server

import (
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func TestStageFilesAndInstallStagedChecks(t *testing.T) {
	b, _ := openBackend(t)
	c := serve(t, New(b, Options{}), overPipe, testLogger(t, nil))
	ctx := callCtx(t)
	x := gfid.New()
	r, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: []*pb.Entry{{Op: pb.EntryOp_ENTRY_OP_CREATE,
		Gfid: x.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("f"), Stat: regStat(0o644)}}})
	if err != nil || r.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create: %v %v", err, r)
	}
	_, err = c.StageFiles(ctx, &pb.StageFilesRequest{Gfids: [][]byte{{1, 2}}})
	wantStatus(t, err, codes.InvalidArgument, "gfids[0]")

	staged, err := c.StageFiles(ctx, &pb.StageFilesRequest{Gfids: [][]byte{x.Bytes(), gfid.New().Bytes()}})
	if err != nil {
		t.Fatal(err)
	}
	if staged.GetStage() == "" || staged.GetResults()[0].GetErrno() != 0 || staged.GetResults()[1].GetCode() != "ENOENT" {
		t.Fatalf("StageFiles = %v, want a stage, success then ENOENT", staged)
	}
	tests := []struct {
		name string
		req  *pb.InstallStagedRequest
		code codes.Code
		want string // the file's result code on success
	}{
		{"no stage", &pb.InstallStagedRequest{}, codes.InvalidArgument, ""},
		{"escaping stage", &pb.InstallStagedRequest{Stage: "../gfid", Files: []*pb.StagedFile{{Gfid: x.Bytes()}}}, codes.InvalidArgument, ""},
		{"half a hint", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes(), LinkName: []byte("f")}}}, codes.InvalidArgument, ""},
		{"half a create", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes(), CreateName: []byte("g")}}}, codes.InvalidArgument, ""},
		{"create and hint", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes(), Stat: regStat(0o644),
			LinkParentGfid: gfid.Root.Bytes(), LinkName: []byte("f"), CreateParentGfid: gfid.Root.Bytes(), CreateName: []byte("g")}}}, codes.InvalidArgument, ""},
		{"create without a stat", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: gfid.New().Bytes(),
			CreateParentGfid: gfid.Root.Bytes(), CreateName: []byte("g")}}}, codes.InvalidArgument, ""},
		{"create at the reserved name", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: gfid.New().Bytes(), Stat: regStat(0o644),
			CreateParentGfid: gfid.Root.Bytes(), CreateName: []byte(".georep")}}}, codes.PermissionDenied, ""},
		{"create, nothing delivered", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: gfid.New().Bytes(), Stat: regStat(0o644),
			CreateParentGfid: gfid.Root.Bytes(), CreateName: []byte("g")}}}, codes.OK, "EBADMSG"},
		{"identical basis", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes(), Size: 0}}}, codes.OK, ""},
		{"discard", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes(), Discard: true}}, Finish: true}, codes.OK, "ECANCELED"},
		{"finished stage", &pb.InstallStagedRequest{Stage: staged.GetStage(), Files: []*pb.StagedFile{{Gfid: x.Bytes()}}}, codes.NotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.InstallStaged(ctx, tc.req)
			if tc.code != codes.OK {
				wantStatus(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetResults()[0].GetResult().GetCode(); got != tc.want {
				t.Errorf("result %q (%s), want %q", got, resp.GetResults()[0].GetResult().GetMessage(), tc.want)
			}
		})
	}
}
