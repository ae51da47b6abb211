package plan

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	pb "github.com/georep/georep/proto/georep/v1"
)

// TestFusedCreates: with FuseCreates, a new single-link regular file with
// content is created by its data item (no CREATE entry op, and no meta op
// unless it has xattrs); every other new object keeps its entry op. Each
// plan, applied, reproduces the master.
func TestFusedCreates(t *testing.T) {
	type want struct {
		fused    bool // a Create data item and no placing entry op
		entry    pb.EntryOp
		meta     bool
		otherOps []pb.EntryOp // ops that must also be in the plan
	}
	tests := []struct {
		name   string
		before func(r *rig) // synced first
		change func(r *rig)
		file   string // the new file's path
		fuse   bool
		want   want
	}{
		{name: "file with content", fuse: true, file: "f",
			change: func(r *rig) { r.write("f", "content") },
			want:   want{fused: true}},
		{name: "option off", fuse: false, file: "f",
			change: func(r *rig) { r.write("f", "content") },
			want:   want{entry: pb.EntryOp_ENTRY_OP_CREATE, meta: true}},
		{name: "empty file", fuse: true, file: "f",
			change: func(r *rig) { r.write("f", "") },
			want:   want{entry: pb.EntryOp_ENTRY_OP_CREATE, meta: true}},
		{name: "hard-link group", fuse: true, file: "f",
			change: func(r *rig) {
				r.write("f", "content")
				r.must(os.Link(r.p("f"), r.p("g")))
			},
			want: want{entry: pb.EntryOp_ENTRY_OP_CREATE, meta: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_LINK}}},
		{name: "file with an xattr keeps its meta op", fuse: true, file: "f",
			change: func(r *rig) {
				r.write("f", "content")
				r.must(unix.Setxattr(r.p("f"), "user.colour", []byte("red"), 0))
			},
			want: want{fused: true, meta: true}},
		{name: "odd mode and times", fuse: true, file: "f",
			change: func(r *rig) {
				r.write("f", "content")
				r.must(os.Chmod(r.p("f"), 0o4751))
				r.must(os.Chtimes(r.p("f"), old(1), old(2)))
			},
			want: want{fused: true}},
		{name: "in a new directory", fuse: true, file: "d/e/f",
			change: func(r *rig) {
				r.must(os.MkdirAll(r.p("d/e"), 0o755))
				r.write("d/e/f", "content")
			},
			want: want{fused: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_MKDIR}}},
		{name: "name of a removed file", fuse: true, file: "f",
			before: func(r *rig) { r.write("f", "old file") },
			change: func(r *rig) {
				r.must(os.Remove(r.p("f")))
				r.write("f", "new file")
			},
			want: want{fused: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_UNLINK}}},
		{name: "name of a removed directory", fuse: true, file: "f",
			before: func(r *rig) {
				r.must(os.MkdirAll(r.p("f/sub"), 0o755))
				r.write("f/sub/x", "x")
			},
			change: func(r *rig) {
				r.must(os.RemoveAll(r.p("f")))
				r.write("f", "new file")
			},
			want: want{fused: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_RMDIR}}},
		{name: "name a renamed file left", fuse: true, file: "a",
			before: func(r *rig) { r.write("a", "known") },
			change: func(r *rig) {
				r.must(os.Rename(r.p("a"), r.p("b")))
				r.write("a", "new file")
			},
			want: want{fused: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_RENAME}}},
		{name: "name a renamed directory left, survivor moved out", fuse: true, file: "d",
			before: func(r *rig) {
				r.must(os.Mkdir(r.p("d"), 0o755))
				r.write("d/keep", "keep")
			},
			change: func(r *rig) {
				r.must(os.Rename(r.p("d/keep"), r.p("keep")))
				r.must(os.Remove(r.p("d")))
				r.write("d", "new file")
			},
			want: want{fused: true, otherOps: []pb.EntryOp{pb.EntryOp_ENTRY_OP_RENAME, pb.EntryOp_ENTRY_OP_RMDIR}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.opts.FuseCreates = tc.fuse
			if tc.before != nil {
				tc.before(r)
				r.sync()
			}
			tc.change(r)
			p, err := r.plan()
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			var st unix.Stat_t
			r.must(unix.Lstat(r.p(tc.file), &st))
			var item *DataItem
			for i := range p.Data {
				if p.Data[i].RelPath == tc.file {
					item = &p.Data[i]
				}
			}
			if st.Size > 0 && item == nil {
				t.Fatalf("no data item for %s in %d items", tc.file, len(p.Data))
			}
			if fused := item != nil && item.Create != nil; fused != tc.want.fused {
				t.Errorf("fused = %v, want %v", fused, tc.want.fused)
			}
			if item != nil && item.Create != nil {
				c := item.Create
				if c.GetMode() != st.Mode || c.GetUid() != st.Uid || c.GetGid() != st.Gid ||
					c.GetMtime().GetSec() != st.Mtim.Sec || int64(c.GetMtime().GetNsec()) != st.Mtim.Nsec {
					t.Errorf("create stat %v, want mode %#o owner %d:%d mtime %v", c, st.Mode, st.Uid, st.Gid, st.Mtim)
				}
				if !item.New {
					t.Error("a fused item is not marked new")
				}
			}
			ops := map[pb.EntryOp]int{}
			var fileOp pb.EntryOp
			for _, e := range p.Entries {
				ops[e.GetOp()]++
				if item != nil && string(e.GetGfid()) == string(item.GFID[:]) && fileOp == pb.EntryOp_ENTRY_OP_UNSPECIFIED {
					fileOp = e.GetOp()
				}
			}
			if item == nil {
				for _, e := range p.Entries {
					if string(e.GetName()) == tc.file {
						fileOp = e.GetOp()
					}
				}
			}
			want := tc.want.entry
			if tc.want.fused {
				want = pb.EntryOp_ENTRY_OP_UNSPECIFIED
			}
			if fileOp != want {
				t.Errorf("the file's entry op is %v, want %v (entries %v)", fileOp, want, describeAll(p.Entries))
			}
			for _, op := range tc.want.otherOps {
				if ops[op] == 0 {
					t.Errorf("no %v in the plan: %v", op, describeAll(p.Entries))
				}
			}
			meta := false
			for _, m := range p.Meta {
				if item != nil && string(m.GetGfid()) == string(item.GFID[:]) {
					meta = true
				}
			}
			if item != nil && meta != tc.want.meta {
				t.Errorf("meta op for the file = %v, want %v", meta, tc.want.meta)
			}
			// The plan, applied, reproduces the master; nothing is left.
			r.apply(p)
			r.must(r.db.Update(p.Commit))
			compareTrees(t, r.master, r.slave)
			again, err := r.plan()
			if err != nil {
				t.Fatal(err)
			}
			if !again.Empty() {
				t.Errorf("a second crawl still finds work: entries %v, %d meta, %d data",
					describeAll(again.Entries), len(again.Meta), len(again.Data))
			}
		})
	}
}
