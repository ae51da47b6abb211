package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/testfs"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/syncer/index"
)

// TestFirstBatchWithFailureFlushesSlave: SetStime is the slave's flush
// (syncfs) before the master's index records a batch, so a first batch that
// gives up on an item (no stime to advance to) must still send it — else
// the index believes in entries and files a slave crash could lose, and
// nothing would resend them. The slave's stime mark for this master
// appearing (at the epoch: it claims nothing) shows the call was made.
func TestFirstBatchWithFailureFlushesSlave(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	master, state := filepath.Join(base, "m"), filepath.Join(base, "state")
	slave := testfs.Tmpfs(t, "1m")
	for _, d := range []string{master, state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(master, "small"), []byte("fits"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(master, "big"), make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := client.ParseSlaveURL(slave)
	if err != nil {
		t.Fatal(err)
	}
	var logs testbuf.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err = Run(ctx, Config{Root: master, StateDir: state, Slave: u, Dial: client.Options{LocalGeorep: bin},
		Once: true, Retries: 1, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if !errors.Is(err, ErrFailures) {
		t.Fatalf("Run: %v, want ErrFailures (the big file cannot fit)\n%s", err, logs.String())
	}
	if got, err := os.ReadFile(filepath.Join(slave, "small")); err != nil || string(got) != "fits" {
		t.Fatalf("slave's small: %q, %v", got, err)
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Listxattr(slave, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	for _, n := range names {
		if strings.Contains(n, ".georep.stime.") {
			return
		}
	}
	t.Errorf("no stime mark on the slave root after a first batch with a failure (xattrs %v): SetStime, and its flush, was skipped", names)
}

// TestIndexWaitsForSetStime: the index transaction is built while SetStime
// is in flight but commits only once it succeeded. When SetStime fails
// (here its answer is replaced by an error after the real call), the run
// fails, the index records nothing of the batch, and the next run sends
// everything again and converges.
func TestIndexWaitsForSetStime(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d")
	for i := range 50 {
		if err := os.WriteFile(filepath.Join(tr.master, "d", fmt.Sprintf("f%02d", i)), []byte(fmt.Sprint("content ", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lost := errors.New("the SetStime answer was lost")
	for _, tc := range []struct {
		name  string
		after func(error) error
	}{
		{"SetStime fails", func(error) error { return lost }},
		{"SetStime succeeds", nil},
	} {
		cfg := tr.config(bin)
		cfg.Retries, cfg.afterSetStime = 1, tc.after
		logs, err := runOnce(cfg)
		db, derr := index.Open(filepath.Join(tr.state, index.FileName), index.Options{})
		if derr != nil {
			t.Fatal(derr)
		}
		var objects, stimed bool
		var stimeNS int64
		if verr := db.View(func(tx *index.Tx) error {
			objects = tx.HasObjects()
			stimeNS, stimed = tx.Stime()
			return nil
		}); verr != nil {
			t.Fatal(verr)
		}
		db.Close()
		if tc.after != nil {
			if !errors.Is(err, lost) {
				t.Fatalf("%s: Run = %v, want the SetStime error\n%s", tc.name, err, logs)
			}
			if objects || stimed {
				t.Fatalf("%s: the index holds objects (%v) or an stime (%v): it committed without the slave's flush", tc.name, objects, stimed)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: Run: %v\n%s", tc.name, err, logs)
		}
		if !objects || !stimed {
			t.Fatalf("%s: the index holds objects %v, stime %v; want both", tc.name, objects, stimed)
		}
		// The slave recorded the same stime (with the meta ops, or by
		// SetStime): the two never disagree after a run that succeeded.
		if idx, sl := tr.stimes(t); idx != stimeNS || sl != stimeNS {
			t.Fatalf("%s: index stime %d ns, slave stime %d ns; want both %d", tc.name, idx, sl, stimeNS)
		}
		if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
			t.Fatalf("%s: the slave differs from the master after the run that succeeded", tc.name)
		}
	}
}
