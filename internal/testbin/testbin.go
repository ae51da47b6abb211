// Package testbin builds the georep binary for tests that run it as a real
// process (a local slave child, the forced command behind a test sshd),
// and runs a test binary's own tests as child processes.
package testbin

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

// Child is a test binary running one of its own tests in a child
// process, for tests of what happens when a test process is killed.
type Child struct {
	Cmd *exec.Cmd
	// Fields are the words after the tag of the line the child reported.
	Fields []string
	// Stderr collects the child's stderr; read it after Cmd.Wait.
	Stderr bytes.Buffer
}

// StartChild runs the calling binary's test named test again, in a child
// process with env ("NAME=value") added, and waits for it to print a line
// starting with tag, its report of what it set up. The child is left
// running, and killed when ctx ends; one that ends or stays silent before
// reporting fails t.
func StartChild(ctx context.Context, t testing.TB, test, env, tag string) *Child {
	t.Helper()
	c := &Child{Cmd: exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.count=1")}
	c.Cmd.Env = append(os.Environ(), env)
	c.Cmd.Stderr = &c.Stderr
	out, err := c.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Cmd.Start(); err != nil {
		t.Fatalf("start %s as a child: %v", test, err)
	}
	reported := make(chan []string, 1)
	go func() {
		defer close(reported)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == tag {
				reported <- f[1:]
				// Drained until the child ends, so it never blocks writing.
				_, _ = io.Copy(io.Discard, out)
				return
			}
		}
	}()
	select {
	case f, ok := <-reported:
		if ok {
			c.Fields = f
			return c
		}
	case <-ctx.Done():
	}
	_ = c.Cmd.Process.Kill()
	_ = c.Cmd.Wait()
	t.Fatalf("%s, as a child, reported no %s line: %v\n%s", test, tag, c.Cmd.ProcessState, c.Stderr.String())
	return nil
}
