package syncer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/testsshd"
)

// TestOnceGivesUpOnUnreachableSlave: a --once run whose slave cannot be
// reached (ssh to a port of 127.0.0.1 nothing listens on) ends with the
// last failure once GiveUpAfter has passed, instead of retrying for as
// long as it is left running (it did: a cron job would hang for ever).
func TestOnceGivesUpOnUnreachableSlave(t *testing.T) {
	tr := newTrees(t)
	var err error
	if tr.url, err = client.ParseSlaveURL(fmt.Sprintf("ssh://nobody@127.0.0.1:%d/srv", testsshd.FreePort(t))); err != nil {
		t.Fatal(err)
	}
	cfg := tr.config("")
	cfg.GiveUpAfter = 2 * time.Second
	cfg.Dial.SSHCommand = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
	start := time.Now()
	logs, err := runOnce(cfg)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "giving up") || !strings.Contains(err.Error(), "cannot reach sshd") {
		t.Fatalf("Run: %v; want it to give up, saying why\n%s", err, logs)
	}
	// The operator reads why, not which call first needed the connection.
	var gaveUp *client.GaveUpError
	if !errors.As(err, &gaveUp) || !strings.HasPrefix(err.Error(), "the slave has been unreachable for ") {
		t.Errorf("Run: %q; want a *client.GaveUpError that starts by saying so", err)
	}
	if took < cfg.GiveUpAfter || took > cfg.GiveUpAfter+30*time.Second {
		t.Errorf("Run gave up after %v; want soon after %v", took, cfg.GiveUpAfter)
	}
	if !strings.Contains(logs, "slave unreachable; retrying") {
		t.Errorf("no retry logged before giving up:\n%s", logs)
	}
}

// TestGiveUpAfter: only --once gives up, by default after
// OnceGiveUpAfter, which --once's help and the README state as 2 minutes.
func TestGiveUpAfter(t *testing.T) {
	tests := []struct {
		cfg  Config
		want time.Duration
	}{
		{Config{}, 0},
		{Config{GiveUpAfter: time.Second}, 0},
		{Config{Once: true}, 2 * time.Minute},
		{Config{Once: true, GiveUpAfter: time.Second}, time.Second},
	}
	for _, tc := range tests {
		if got := giveUpAfter(tc.cfg); got != tc.want {
			t.Errorf("giveUpAfter(once=%v, GiveUpAfter=%v) = %v, want %v", tc.cfg.Once, tc.cfg.GiveUpAfter, got, tc.want)
		}
	}
}
