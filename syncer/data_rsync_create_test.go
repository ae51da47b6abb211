package syncer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/syncer/transfer"
)

// TestRsyncStagedCreates: in rsync mode a new file goes to the slave with
// no entry op, made at its name by InstallStaged; to a slave whose
// Handshake does not offer staged creates (a georep before them) the
// create is not sent but refused as the data plane refuses a taken name,
// so the batch makes it with an entry op and sends it again, while the
// batch's other files go at once. The slave and rsync are real; only the
// master's copy of the Handshake's answer is changed.
func TestRsyncStagedCreates(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t)
	cfg := tr.config(bin)
	cfg.SyncMode = SyncRsync
	if err := os.WriteFile(filepath.Join(tr.master, "old"), []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	tr.mustConverge(t, cfg, "seed")
	changed := bytes.Repeat([]byte("changed "), 1000)
	if err := os.WriteFile(filepath.Join(tr.master, "old"), changed, 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := bytes.Repeat([]byte("new file "), 3000)
	if err := os.WriteFile(filepath.Join(tr.master, "new"), fresh, 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.Open(tr.master)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	st, err := statBeneath(int(root.Fd()), "new")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg.SyncJobs = 1
	m := &master{cfg: cfg, log: slog.New(slog.DiscardHandler), obs: nopObserver{}, root: root}
	c, err := client.Dial(ctx, tr.url, client.Options{LocalGeorep: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Info.GetStagedCreates() {
		t.Fatalf("the slave's Handshake does not offer staged creates")
	}
	oldItem := transfer.Item{GFID: slaveGFID(t, filepath.Join(tr.slave, "old")), RelPath: "old", LinkParent: gfid.Root,
		LinkName: []byte("old"), Size: int64(len(changed))}
	newItem := transfer.Item{GFID: gfid.New(), RelPath: "new", LinkParent: gfid.Root, LinkName: []byte("new"),
		Size: int64(len(fresh)), New: true, Create: true, Stat: st}

	c.Info.StagedCreates = false // as a slave before staged creates answers
	res, err := m.sendRsync(ctx, c, []transfer.Item{oldItem, newItem})
	if err != nil {
		t.Fatalf("sendRsync: %v", err)
	}
	if res[0].Err != nil {
		t.Errorf("the changed file: %v, want it sent", res[0].Err)
	}
	if got := mustReadFile(t, filepath.Join(tr.slave, "old")); !bytes.Equal(got, changed) {
		t.Errorf("the slave's old holds %d bytes, want the %d changed", len(got), len(changed))
	}
	if !errors.Is(res[1].Err, errNoStagedCreates) || !refusedCreate(res[1].Err) {
		t.Errorf("the create to an older slave: %v, want it refused as a create (errNoStagedCreates)", res[1].Err)
	}
	if _, err := os.Lstat(filepath.Join(tr.slave, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the older slave got the new file anyway: %v", err)
	}

	c.Info.StagedCreates = true
	res, err = m.sendRsync(ctx, c, []transfer.Item{newItem})
	if err != nil {
		t.Fatalf("sendRsync: %v", err)
	}
	if res[0].Err != nil || res[0].Written != int64(len(fresh)) {
		t.Fatalf("the staged create: %v, %d bytes written; want %d", res[0].Err, res[0].Written, len(fresh))
	}
	p := filepath.Join(tr.slave, "new")
	if got := mustReadFile(t, p); !bytes.Equal(got, fresh) {
		t.Errorf("the slave's new holds %d bytes, want %d", len(got), len(fresh))
	}
	if g := slaveGFID(t, p); g != newItem.GFID {
		t.Errorf("the new file carries gfid %s, want %s", g, newItem.GFID)
	}
	if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the new file's mode: %v (%v), want 0600 from the stat", fi.Mode(), err)
	}
	left, err := os.ReadDir(filepath.Join(tr.slave, ".georep", "stage"))
	if err != nil || len(left) != 0 {
		t.Errorf("stages left behind: %d (%v)", len(left), err)
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
