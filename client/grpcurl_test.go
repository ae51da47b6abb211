package client

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// findGrpcurl returns the grpcurl program: on PATH, or where `make tools`
// installs it. A missing grpcurl fails the test: the README promises that
// stock grpcurl can inspect a slave, and this test is what keeps it true.
func findGrpcurl(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "grpcurl")
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return p
			}
		}
	}
	t.Fatalf("grpcurl is not on PATH nor in $(go env GOPATH)/bin: install it with `make tools` " +
		"(go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)")
	return ""
}

// readmeGrpcurlCommands returns the grpcurl command lines of the README's
// "## grpcurl" section, so the test runs what users are told to run.
func readmeGrpcurlCommands(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatalf("read the README: %v", err)
	}
	_, section, found := strings.Cut(string(data), "\n## grpcurl\n")
	if !found {
		t.Fatal(`the README has no "## grpcurl" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var cmds []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "grpcurl ") {
			cmds = append(cmds, line)
		}
	}
	return cmds
}

// shellWords splits a README command line the way sh would for the
// quoting it uses: spaces separate words, single quotes group them.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestGrpcurlAgainstListenSlave runs the README's grpcurl commands, with
// its certificate paths and address pointed at a real `georep slave
// --listen` serving two volumes, and checks each answers as described.
func TestGrpcurlAgainstListenSlave(t *testing.T) {
	grpcurl := findGrpcurl(t)
	pki := newMTLSPKI(t)
	d := startListenSlave(t, "127.0.0.1:0", append(pki.serverArgs(), "--allow", "m1",
		"--volume", "backup="+t.TempDir(), "--volume", "archive="+t.TempDir())...)

	run := func(t *testing.T, args []string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, grpcurl, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// README placeholders → this test's slave.
	localize := func(t *testing.T, line string) []string {
		t.Helper()
		words := shellWords(t, line)[1:]
		for i, w := range words {
			if rest, ok := strings.CutPrefix(w, "certs/"); ok {
				words[i] = pki.path(rest)
			}
			if w == "slave.example.com:7070" {
				words[i] = d.addr
			}
		}
		return words
	}

	// What each README command must show, by its last word.
	want := map[string][]string{
		"list":                        {"georep.v1.Slave", "grpc.health.v1.Health"},
		"georep.v1.Slave":             {"georep.v1.Slave is a service:", "rpc Handshake", "// Handshake compares protocol and object versions"},
		"georep.v1.Slave/VolumeInfo":  {`"native": {`, `"uuid": "`},
		"grpc.health.v1.Health/Check": {`"status": "SERVING"`},
	}
	seen := map[string]bool{}
	for _, line := range readmeGrpcurlCommands(t) {
		args := localize(t, line)
		last := args[len(args)-1]
		wants, known := want[last]
		if !known {
			t.Errorf("README command %q is not covered by this test; add what it must show", line)
			continue
		}
		seen[last] = true
		t.Run(last, func(t *testing.T) {
			out, err := run(t, args)
			if err != nil {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("%s printed no %q:\n%s", line, w, out)
				}
			}
			// The README says the volume header may only be left out when
			// the slave serves one root: this one serves two.
			if i := indexOf(args, "-H"); i >= 0 && last == "georep.v1.Slave/VolumeInfo" {
				bare := append(append([]string{}, args[:i]...), args[i+2:]...)
				out, err := run(t, bare)
				var exitErr *exec.ExitError
				if !errors.As(err, &exitErr) || !strings.Contains(out, "this slave serves several volumes (archive, backup)") {
					t.Errorf("VolumeInfo without -H on a two-volume slave: %v\n%s\nwant a failure listing archive, backup", err, out)
				}
			}
		})
	}
	for cmd := range want {
		if !seen[cmd] {
			t.Errorf("the README's grpcurl section shows no command ending in %q", cmd)
		}
	}
}

func indexOf(words []string, w string) int {
	for i, x := range words {
		if x == w {
			return i
		}
	}
	return -1
}
