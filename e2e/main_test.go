// Package e2e runs the real georep binary as a master replicating to a
// slave behind a real OpenSSH sshd, whose authorized_keys line pins the
// slave root with a forced command, and judges the replica with treecmp:
// the Master issue's acceptance tests.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/georep/georep/internal/testbin"
)

// georepBin is the binary TestMain builds once for every test.
var georepBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "georep-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	georepBin, err = testbin.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
