package rsyncd

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNoSpecialFilesInStage: a client asking for devices or specials by any
// spelling (-D, -a -D, --devices, --specials) is refused, and nothing but
// regular files, directories and (munged) symlinks ever lands in the stage:
// a FIFO or device node there would be opened by InstallStaged's checks
// or sit under the slave root with the daemon's (possibly root) owner.
func TestNoSpecialFilesInStage(t *testing.T) {
	tests := []struct {
		name string
		opts []string
	}{
		{name: "-D", opts: []string{"-rD"}},
		{name: "-a -D", opts: []string{"-aD"}},
		{name: "archive", opts: []string{"-a"}},
		{name: "--devices", opts: []string{"-r", "--devices"}},
		{name: "--specials", opts: []string{"-r", "--specials"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newSlaveTree(t)
			src := t.TempDir()
			if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
			// /dev/null's numbers: a character device rsync would recreate.
			if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, "plain"), []byte("plain\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out := rsyncTo(t, st, append(tt.opts, src+"/", "slave::georep/s2/")...)
			err := filepath.WalkDir(filepath.Join(st.root, StageDir), func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if m := d.Type(); m&(fs.ModeNamedPipe|fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket) != 0 {
					t.Errorf("rsync (exit %d) made %s (%v) in the stage:\n%s", code, p, m, out)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
