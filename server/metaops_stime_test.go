package server

import (
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// TestMetaOpsStime: a MetaOps batch that carries a stime records it once
// every entry applied, as SetStime would; a batch with a failing entry
// leaves the recorded stime alone; a malformed stime refuses the whole
// batch before anything is applied.
func TestMetaOpsStime(t *testing.T) {
	b, _ := openBackend(t)
	c := serve(t, New(b, Options{}), overPipe, testLogger(t, nil))
	f := gfid.New()
	if resp, err := c.EntryOps(callCtx(t), &pb.EntryOpsRequest{Entries: []*pb.Entry{
		{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: f.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("file"), Stat: regStat(0o644)},
	}}); err != nil || resp.GetResults()[0].GetErrno() != 0 {
		t.Fatalf("create: %v %v", err, resp)
	}
	master := gfid.New()
	mode := func(m uint32) *pb.MetaEntry { return &pb.MetaEntry{Gfid: f.Bytes(), Mode: proto.Uint32(m)} }
	missing := &pb.MetaEntry{Gfid: gfid.New().Bytes(), Mode: proto.Uint32(0o600)}
	stimeOf := func() *pb.Timestamp {
		t.Helper()
		resp, err := c.Stime(callCtx(t), &pb.StimeRequest{MasterUuid: master.Bytes()})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStime()
	}

	steps := []struct {
		name    string
		entries []*pb.MetaEntry
		sec     int64
		wantSet bool
		wantSec int64
	}{
		{"all applied", []*pb.MetaEntry{mode(0o600)}, 1_800_000_000, true, 1_800_000_000},
		{"one failed", []*pb.MetaEntry{mode(0o640), missing}, 1_800_000_100, false, 1_800_000_000},
		{"no entries", nil, 1_800_000_200, true, 1_800_000_200},
	}
	for _, s := range steps {
		resp, err := c.MetaOps(callCtx(t), &pb.MetaOpsRequest{Entries: s.entries,
			Stime: &pb.SetStimeRequest{MasterUuid: master.Bytes(), Stime: &pb.Timestamp{Sec: s.sec}}})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if resp.GetStimeSet() != s.wantSet {
			t.Errorf("%s: stime_set = %v, want %v (results %v)", s.name, resp.GetStimeSet(), s.wantSet, resp.GetResults())
		}
		if got := stimeOf().GetSec(); got != s.wantSec {
			t.Errorf("%s: recorded stime %d, want %d", s.name, got, s.wantSec)
		}
	}

	// Without a stime the answer says nothing was recorded.
	resp, err := c.MetaOps(callCtx(t), &pb.MetaOpsRequest{Entries: []*pb.MetaEntry{mode(0o644)}})
	if err != nil || resp.GetStimeSet() {
		t.Fatalf("meta ops without a stime: %v, stime_set %v", err, resp.GetStimeSet())
	}

	// A malformed stime is refused before the entries run.
	_, err = c.MetaOps(callCtx(t), &pb.MetaOpsRequest{Entries: []*pb.MetaEntry{mode(0o700)},
		Stime: &pb.SetStimeRequest{MasterUuid: []byte{1}, Stime: &pb.Timestamp{Sec: 1}}})
	wantStatus(t, err, codes.InvalidArgument, "stime.master_uuid")
	st, err := c.Lstat(callCtx(t), &pb.LstatRequest{Gfid: f.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.GetStat().GetMode() & 0o7777; got != 0o644 {
		t.Errorf("mode after a refused batch = %#o, want 0644 (the batch must not run)", got)
	}
}

// TestVolumeInfoFreeBytes: VolumeInfo says how much the slave's
// filesystem can still take, as statfs sees it.
func TestVolumeInfoFreeBytes(t *testing.T) {
	b, dir := openBackend(t)
	c := serve(t, New(b, Options{}), overPipe, testLogger(t, nil))
	info, err := c.VolumeInfo(callCtx(t), &pb.VolumeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.FreeBytes == nil {
		t.Fatal("VolumeInfo has no free_bytes")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	want := st.Bavail * uint64(st.Bsize)
	// Other tests write on the same filesystem meanwhile.
	if got := info.GetFreeBytes(); got > want+64<<20 || got+64<<20 < want {
		t.Errorf("free_bytes = %d, statfs says %d", got, want)
	}
}
