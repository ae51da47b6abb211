package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/georep/georep/internal/testbin"
)

func TestGeorepFilesSent(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want int
	}{
		{"batches summed, other lines ignored", `{"time":"t","level":"INFO","msg":"session state","state":"Active"}
{"time":"t","level":"INFO","msg":"batch applied","crawl":"Hybrid Crawl","entries":20006,"data":20004,"meta":20006,"failed":0}
not json at all
{"time":"t","level":"INFO","msg":"batch applied","crawl":"Hybrid Crawl","entries":2,"data":3,"meta":2,"failed":0}
`, 20007},
		{"a batch with no data", `{"msg":"batch applied","entries":1,"data":0}`, 0},
		{"no batch line", `{"msg":"slave in sync"}` + "\ngeorep: error\n", -1},
		{"text log format", `time=t level=INFO msg="batch applied" data=5`, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := georepFilesSent([]byte(tt.out)); got != tt.want {
				t.Errorf("georepFilesSent = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRsyncFilesSent(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want int
	}{
		{"grouped digits", "Number of files: 20,010 (reg: 20,004, dir: 6)\nNumber of regular files transferred: 20,004\nTotal file size: 1 bytes\n", 20004},
		{"small", "Number of regular files transferred: 7\n", 7},
		{"absent", "sent 10 bytes  received 20 bytes\n", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rsyncFilesSent([]byte(tt.out)); got != tt.want {
				t.Errorf("rsyncFilesSent = %d, want %d", got, tt.want)
			}
		})
	}
}

// writeTree makes n small files under root/d.
func writeTree(t *testing.T, root string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(root, "d", fmt.Sprintf("f%d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFilesSentFromRealTools holds the parsers to what the real tools
// print: rsync --stats, and georep master's JSON log on a local slave.
func TestFilesSentFromRealTools(t *testing.T) {
	georep, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		argv  func(master, slave, state string) []string
		parse func([]byte) int
	}{
		{"rsync", func(master, slave, _ string) []string {
			return []string{"rsync", "-aHAX", "--numeric-ids", "--stats", master + "/", slave + "/"}
		}, rsyncFilesSent},
		{"georep", func(master, slave, state string) []string {
			return []string{georep, "master", "--once", "--progress=false", "--log-format", "json",
				"--root", master, "--slave", slave, "--state", state}
		}, georepFilesSent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			master, slave, state := filepath.Join(dir, "m"), filepath.Join(dir, "s"), filepath.Join(dir, "st")
			writeTree(t, master, 12)
			for _, d := range []string{slave, state} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			argv := tt.argv(master, slave, state)
			run := func() []byte {
				t.Helper()
				out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
				if err != nil {
					t.Fatalf("%v: %v\n%s", argv, err, out)
				}
				return out
			}
			if got := tt.parse(run()); got != 12 {
				t.Errorf("first sync: %d files sent, want 12", got)
			}
			if err := os.WriteFile(filepath.Join(master, "d", "f3"), []byte("changed, longer"), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := tt.parse(run()); got != 1 {
				t.Errorf("after one change: %d files sent, want 1", got)
			}
		})
	}
}
