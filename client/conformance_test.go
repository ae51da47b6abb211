package client

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbin"
	pb "github.com/georep/georep/proto/georep/v1"
)

// georepBin is the binary every transport runs as its slave; built once
// in TestMain.
var georepBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "georep-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	georepBin, err = testbin.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// transport is one way into a slave for the conformance suite: it returns
// a connected client for a slave serving root.
type transport struct {
	name string
	dial func(t *testing.T, root string) *Conn
}

// runConformance holds the Slave-service expectations every transport
// must meet: the same assertions, whichever way in.
func runConformance(t *testing.T, tr transport) {
	t.Run(tr.name, func(t *testing.T) {
		root := t.TempDir()
		c := tr.dial(t, root)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		t.Run("handshake", func(t *testing.T) {
			if c.Info.GetProtocol().GetMajor() != 1 {
				t.Errorf("protocol major = %d, want 1", c.Info.GetProtocol().GetMajor())
			}
			if c.Info.GetRoot() != root {
				t.Errorf("slave root = %q, want %q", c.Info.GetRoot(), root)
			}
			if len(c.Info.GetNative().GetUuid()) != gfid.Size {
				t.Errorf("native mark uuid has %d bytes, want %d", len(c.Info.GetNative().GetUuid()), gfid.Size)
			}
		})

		dir, file, link := gfid.New(), gfid.New(), gfid.New()
		batch := []*pb.Entry{
			{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: dir.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: []byte("d"),
				Stat: &pb.Stat{Mode: 0o40755}},
			{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: file.Bytes(), ParentGfid: dir.Bytes(), Name: []byte("f é"),
				Stat: &pb.Stat{Mode: 0o100640}},
			{Op: pb.EntryOp_ENTRY_OP_SYMLINK, Gfid: link.Bytes(), ParentGfid: dir.Bytes(), Name: []byte("l"),
				Stat: &pb.Stat{Mode: 0o120777}, LinkTarget: []byte("../outside/target")},
		}
		t.Run("entry ops", func(t *testing.T) {
			for round := 0; round < 2; round++ { // the second round replays the batch
				resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: batch})
				if err != nil {
					t.Fatalf("round %d: EntryOps: %v", round, c.Explain(err))
				}
				if len(resp.GetResults()) != len(batch) {
					t.Fatalf("round %d: %d results for %d entries", round, len(resp.GetResults()), len(batch))
				}
				for i, r := range resp.GetResults() {
					if r.GetErrno() != 0 {
						t.Errorf("round %d entry %d: errno %d %s: %s", round, i, r.GetErrno(), r.GetCode(), r.GetMessage())
					}
				}
			}
			st, err := os.Lstat(filepath.Join(root, "d", "f é"))
			if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o640 {
				t.Errorf("created file: %v, %v", st, err)
			}
			if target, err := os.Readlink(filepath.Join(root, "d", "l")); err != nil || target != "../outside/target" {
				t.Errorf("symlink target = %q, %v; want verbatim ../outside/target", target, err)
			}
		})

		t.Run("entries", func(t *testing.T) {
			resp, err := c.Slave.Entries(ctx, &pb.EntriesRequest{Gfid: dir.Bytes()})
			if err != nil {
				t.Fatalf("Entries: %v", err)
			}
			got := map[string][]byte{}
			for _, e := range resp.GetEntries() {
				got[string(e.GetName())] = e.GetGfid()
			}
			if !bytes.Equal(got["f é"], file.Bytes()) || !bytes.Equal(got["l"], link.Bytes()) || len(got) != 2 {
				t.Errorf("Entries(d) = %v, want f é and l with their gfids", got)
			}
		})

		t.Run("stime", func(t *testing.T) {
			master := gfid.New()
			want := &pb.Timestamp{Sec: 1_700_000_000, Nsec: 123456789}
			if _, err := c.Slave.SetStime(ctx, &pb.SetStimeRequest{MasterUuid: master.Bytes(), Stime: want}); err != nil {
				t.Fatalf("SetStime: %v", err)
			}
			got, err := c.Slave.Stime(ctx, &pb.StimeRequest{MasterUuid: master.Bytes()})
			if err != nil {
				t.Fatalf("Stime: %v", err)
			}
			if !got.GetFound() || got.GetStime().GetSec() != want.Sec || got.GetStime().GetNsec() != want.Nsec {
				t.Errorf("Stime = %v, want %v", got, want)
			}
		})

		t.Run("keepalive and volume info", func(t *testing.T) {
			mark := &pb.VolumeMark{Uuid: gfid.New().Bytes(), Version: &pb.Version{Major: 1},
				Mark: &pb.Timestamp{Sec: time.Now().Unix()}, Holder: "conformance"}
			var last uint64
			for i := 0; i < 3; i++ {
				resp, err := c.Slave.KeepAlive(ctx, &pb.KeepAliveRequest{Mark: mark, TimeoutSeconds: 60})
				if err != nil {
					t.Fatalf("KeepAlive: %v", err)
				}
				if resp.GetCount() <= last {
					t.Errorf("keep-alive count went from %d to %d", last, resp.GetCount())
				}
				last = resp.GetCount()
			}
			info, err := c.Slave.VolumeInfo(ctx, &pb.VolumeInfoRequest{})
			if err != nil {
				t.Fatalf("VolumeInfo: %v", err)
			}
			if !bytes.Equal(info.GetNative().GetUuid(), c.Info.GetNative().GetUuid()) {
				t.Errorf("VolumeInfo native uuid differs from Handshake's")
			}
			found := false
			for _, f := range info.GetForeign() {
				found = found || bytes.Equal(f.GetUuid(), mark.Uuid)
			}
			if !found {
				t.Errorf("foreign mark sent with KeepAlive is not in VolumeInfo: %v", info.GetForeign())
			}
		})

		t.Run("invalid argument", func(t *testing.T) {
			_, err := c.Slave.Entries(ctx, &pb.EntriesRequest{Gfid: []byte{1, 2, 3}})
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("Entries with a 3-byte gfid: %v, want InvalidArgument", err)
			}
		})
	})
}

func dialLocal(t *testing.T, root string) *Conn {
	t.Helper()
	u, err := ParseSlaveURL(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, u, Options{LocalGeorep: georepBin})
	if err != nil {
		t.Fatalf("dial local slave: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestConformance(t *testing.T) {
	for _, tr := range []transport{
		{name: "local", dial: dialLocal},
		{name: "ssh", dial: dialSSHForced},
		{name: "mtls", dial: dialMTLS},
	} {
		runConformance(t, tr)
	}
}
