package transfer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// createItem is a create of the master file rel at name in the slave root.
func createItem(rel, name string, stat *pb.Stat) Item {
	return Item{GFID: gfid.New(), RelPath: rel, LinkParent: gfid.Root, LinkName: []byte(name), Stat: stat,
		New: true, Create: true}
}

// TestSendCreates: items with Create make their files on the slave in one
// step, over real gRPC, with content, attributes and identity; refusals
// come back as the slave's errno and leave nothing behind.
func TestSendCreates(t *testing.T) {
	mtime := &pb.Timestamp{Sec: 1_000_000_000, Nsec: 42}
	tests := []struct {
		name  string
		size  int
		stat  *pb.Stat // nil: the file's own
		setup func(t *testing.T, e *env, it *Item)
		errno unix.Errno // 0: created
		// twice sends the item a second time (a replay after a lost answer).
		twice bool
	}{
		{name: "small", size: 4096},
		{name: "with stat", size: 100, stat: &pb.Stat{Mode: unix.S_IFREG | 0o751, Uid: 12, Gid: 34, Atime: mtime, Mtime: mtime}},
		{name: "multi-chunk", size: 3<<20 + 17},
		{name: "replayed", size: 4096, twice: true},
		{name: "name taken", size: 10, errno: unix.EEXIST,
			setup: func(t *testing.T, e *env, it *Item) { e.create(t, string(it.LinkName)) }},
		{name: "gfid exists elsewhere", size: 10, errno: unix.EEXIST,
			setup: func(t *testing.T, e *env, it *Item) { it.GFID = e.create(t, "elsewhere") }},
		{name: "parent missing", size: 10, errno: unix.ENOENT,
			setup: func(t *testing.T, e *env, it *Item) { it.LinkParent = gfid.New() }},
		{name: "reserved name", size: 10, errno: unix.EPERM,
			setup: func(t *testing.T, e *env, it *Item) { it.LinkName = []byte(".georep") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			data := randomBytes(tc.size, uint64(tc.size))
			writeFile(t, filepath.Join(e.master, "src"), data)
			it := createItem("src", "dst", tc.stat)
			if tc.setup != nil {
				tc.setup(t, e, &it)
			}
			var before []byte
			dst := filepath.Join(e.slave, string(it.LinkName))
			if tc.errno != 0 {
				before, _ = os.ReadFile(dst)
			}
			rs, st := e.send(t, []Item{it}, Options{ChunkSize: 1 << 20})
			if tc.errno != 0 {
				var re *RemoteError
				if !errors.As(rs[0].Err, &re) || re.Errno != tc.errno {
					t.Fatalf("result %v, want the slave's %v", rs[0].Err, tc.errno)
				}
				if rs[0].Retryable() {
					t.Error("a refused create is reported retryable")
				}
				if got, _ := os.ReadFile(dst); !bytes.Equal(got, before) {
					t.Errorf("%s changed: %d bytes", dst, len(got))
				}
				waitTmpEmpty(t, e.slave)
				return
			}
			wantOK(t, rs)
			if st.Files != 1 || st.DeltaFiles != 0 {
				t.Errorf("stats %+v, want one whole file", st)
			}
			if tc.twice {
				wantOK(t, must(e.send(t, []Item{it}, Options{})))
			}
			sst := lstat(t, dst)
			if got := readFile(t, dst); !bytes.Equal(got, data) {
				t.Fatalf("content differs: %d bytes, want %d", len(got), len(data))
			}
			want := tc.stat
			if want == nil {
				m := lstat(t, filepath.Join(e.master, "src"))
				want = &pb.Stat{Mode: m.Mode, Uid: m.Uid, Gid: m.Gid, Mtime: &pb.Timestamp{Sec: m.Mtim.Sec, Nsec: uint32(m.Mtim.Nsec)}}
			}
			if sst.Mode != want.GetMode() || sst.Uid != want.GetUid() || sst.Gid != want.GetGid() ||
				sst.Mtim.Sec != want.GetMtime().GetSec() || sst.Mtim.Nsec != int64(want.GetMtime().GetNsec()) {
				t.Errorf("slave file mode %#o owner %d:%d mtime %v, want %v", sst.Mode, sst.Uid, sst.Gid, sst.Mtim, want)
			}
			if sst.Nlink != 2 {
				t.Errorf("nlink %d, want 2 (name and index link)", sst.Nlink)
			}
			resp, err := e.client.Lstat(ctxFor(t), &pb.LstatRequest{Gfid: it.GFID.Bytes()})
			if err != nil {
				t.Fatalf("the new file is not found by its gfid: %v", err)
			}
			if resp.GetStat().GetIno() != sst.Ino {
				t.Errorf("gfid index is inode %d, the name inode %d", resp.GetStat().GetIno(), sst.Ino)
			}
			waitTmpEmpty(t, e.slave)
		})
	}
}

// TestSendCreateChangedDuringTransfer: a new file written to while it is
// sent is abandoned: no name, no gfid on the slave; sent again, it is made.
func TestSendCreateChangedDuringTransfer(t *testing.T) {
	e := newEnv(t, "")
	data := randomBytes(3<<20, 7)
	mp := filepath.Join(e.master, "m")
	writeFile(t, mp, data)
	it := createItem("m", "f", nil)
	touched := false
	opts := Options{ChunkSize: 1 << 20, hooks: &hooks{afterChunk: func(_ Item, off int64) {
		if touched {
			return
		}
		touched = true
		f, err := os.OpenFile(mp, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("changed!"), 2<<20); err != nil {
			t.Error(err)
		}
		copy(data[2<<20:], "changed!")
	}}}
	rs, _ := e.send(t, []Item{it}, opts)
	if !errors.Is(rs[0].Err, ErrChanged) {
		t.Fatalf("result %v, want ErrChanged", rs[0].Err)
	}
	waitTmpEmpty(t, e.slave)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(e.slave, "f"), &st); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("an abandoned create left a name: %v", err)
	}
	if _, err := e.client.Lstat(ctxFor(t), &pb.LstatRequest{Gfid: it.GFID.Bytes()}); err == nil {
		t.Fatal("an abandoned create left its gfid")
	}
	opts.hooks = nil
	wantOK(t, must(e.send(t, []Item{it}, opts)))
	if got := readFile(t, filepath.Join(e.slave, "f")); !bytes.Equal(got, data) {
		t.Fatalf("content differs after the resend")
	}
}
