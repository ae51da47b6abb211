package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		data string
		mode os.FileMode
		sync bool
	}{{"first\n", 0o600, false}, {"second, longer\n", 0o644, true}} {
		if err := Write(dir, "f.json", []byte(tc.data), tc.mode, tc.sync); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "f.json"))
		if err != nil || string(got) != tc.data {
			t.Fatalf("content %q, %v; want %q", got, err, tc.data)
		}
		fi, _ := os.Stat(filepath.Join(dir, "f.json"))
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("mode %v, want %v", fi.Mode().Perm(), tc.mode)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("directory holds %d entries, want only the file (no temporaries)", len(ents))
		}
	}
	if err := Write(filepath.Join(dir, "missing"), "f", nil, 0o644, false); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}
