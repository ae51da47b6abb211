package testsshd

import (
	"os/exec"
	"strings"
	"testing"
)

func TestSSHRunsCommands(t *testing.T) {
	s := Start(t, Options{})
	out, err := exec.Command("ssh", append(s.SSHArgs(), s.Host, "echo", "hello")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s\nsshd: %s", err, out, s.Log())
	}
	if got := strings.TrimSpace(string(out)); got != "hello" {
		t.Fatalf("ssh echo printed %q, want hello", got)
	}

	// A forced command replaces whatever the client asks for.
	s.SetAuthorizedKeyOptions(t, `restrict,command="echo forced"`)
	out, err = exec.Command("ssh", append(s.SSHArgs(), s.Host, "echo", "asked")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "forced" {
		t.Fatalf("forced command printed %q, want forced", got)
	}
}
