// Package testbin builds the georep binary for tests that run it as a real
// process (a local slave child, the forced command behind a test sshd).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles ./cmd/georep of this module into dir and returns the
// binary's path. Call it from TestMain so a package builds it once.
func Build(dir string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root with go list: %w", err)
	}
	root := strings.TrimSpace(string(out))
	bin := filepath.Join(dir, "georep")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/georep")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/georep: %w\n%s", err, out)
	}
	return bin, nil
}
