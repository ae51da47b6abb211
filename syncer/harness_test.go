package syncer

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/server/backend"
	"github.com/georep/georep/syncer/index"
)

// trees is a session's three directories beneath one temp dir: the
// master root, a local slave root (served by a child georep) and the
// state directory.
type trees struct {
	master, slave, state string
	url                  client.SlaveURL
}

// newTrees makes the three directories (and dirs, relative to the master
// root) and parses the slave's URL.
func newTrees(t *testing.T, dirs ...string) trees {
	t.Helper()
	base := t.TempDir()
	tr := trees{master: filepath.Join(base, "m"), slave: filepath.Join(base, "s"), state: filepath.Join(base, "state")}
	all := []string{tr.master, tr.slave, tr.state}
	for _, d := range dirs {
		all = append(all, filepath.Join(tr.master, d))
	}
	for _, d := range all {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if tr.url, err = client.ParseSlaveURL(tr.slave); err != nil {
		t.Fatal(err)
	}
	return tr
}

// config is a --once session of tr through the georep binary bin.
func (tr trees) config(bin string) Config {
	return Config{Root: tr.master, StateDir: tr.state, Slave: tr.url, Dial: client.Options{LocalGeorep: bin}, Once: true}
}

// runOnce runs cfg with its logs collected, within two minutes, and
// returns the logs and Run's error.
func runOnce(cfg Config) (string, error) {
	var logs testbuf.Buffer
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := Run(ctx, cfg)
	return logs.String(), err
}

// mustRunOnce runs cfg as runOnce does and fails the test, naming the
// step what, unless Run succeeds; it returns the logs.
func mustRunOnce(t *testing.T, cfg Config, what string) string {
	t.Helper()
	logs, err := runOnce(cfg)
	if err != nil {
		t.Fatalf("%s: Run: %v\n%s", what, err, logs)
	}
	return logs
}

// mustConverge runs cfg with its debug logs collected, within two
// minutes, and fails the test, naming the step what, unless Run succeeds
// and the slave then matches the master; it returns the logs.
func (tr trees) mustConverge(t *testing.T, cfg Config, what string) string {
	t.Helper()
	var logs testbuf.Buffer
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Run(ctx, cfg); err != nil {
		t.Fatalf("%s: Run: %v\n%s", what, err, logs.String())
	}
	if !treecmp.Compare(t, tr.master, tr.slave, treecmp.Options{}) {
		t.Fatalf("%s: the slave differs from the master", what)
	}
	return logs.String()
}

// stimes reads the stime the session's index holds and the one the slave
// recorded for its master, in nanoseconds (0: none).
func (tr trees) stimes(t *testing.T) (indexNS, slaveNS int64) {
	t.Helper()
	db, err := index.Open(filepath.Join(tr.state, index.FileName), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *index.Tx) error { indexNS, _ = tx.Stime(); return nil }); err != nil {
		t.Fatal(err)
	}
	id, err := masterID(tr.state)
	if err != nil {
		t.Fatal(err)
	}
	b, err := backend.Open(tr.slave, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ts, _, err := b.Stime(id)
	if err != nil {
		t.Fatal(err)
	}
	if ts != nil {
		slaveNS = ts.GetSec()*1e9 + int64(ts.GetNsec())
	}
	return indexNS, slaveNS
}
