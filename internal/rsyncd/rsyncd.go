// Package rsyncd runs the slave's rsync daemon for --sync-mode rsync: an
// "rsync --server --daemon" on stdio whose only module, georep, is the
// slave's staging area (<root>/.georep/stage) and which can do nothing there
// but write new files.
package rsyncd

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
)

// Module is the one module the daemon serves (client.RsyncModule is the
// same name, seen from the master).
const Module = "georep"

// StageDir is the module's directory, relative to the slave root.
const StageDir = ".georep/stage"

// refused are the client options the daemon turns down. Everything that
// deletes, writes into an existing inode (--inplace, --append,
// --write-devices), reads or writes outside the stage directory
// (--*-dest, --partial-dir, --temp-dir, --backup-dir) or makes the daemon
// write files of the client's choosing (--log-file, batches) is refused, as
// are extended attributes and ACLs (a client must not set an identity
// xattr on a staged file); the master never needs any of them. "D" is
// listed apart from "devices" and "specials": rsync 3.5 refuses the long
// names but still takes -D (and -a's -D), which made device nodes and
// FIFOs in the stage.
var refused = []string{
	"delete*", "remove-source-files",
	"inplace", "append*", "write-devices",
	"link-dest", "copy-dest", "compare-dest", "partial-dir", "temp-dir",
	"backup*", "suffix",
	"log-file*", "write-batch", "only-write-batch", "read-batch",
	"devices", "specials", "D", "xattrs", "acls",
}

// Config returns the rsyncd.conf text for a daemon serving stage (an
// absolute directory) as the georep module, run by uid:gid.
//
// use chroot = no: chroot needs root and buys nothing here, since the module
// path is fixed by the slave and rsync then sanitizes every name the client
// sends to stay beneath it (no "..", no absolute paths), while munge
// symlinks = yes turns any symlink a client uploads into one that points at
// "/rsyncd-munged/...", so nothing written later can pass through it.
func Config(stage string, uid, gid int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# georep slave rsync daemon: the staging area only, write-only\n")
	// Global parameters: no syslog, no DNS, no daemon-side state files.
	fmt.Fprintf(&b, "log file = /dev/stderr\n")
	fmt.Fprintf(&b, "reverse lookup = no\n")
	fmt.Fprintf(&b, "[%s]\n", Module)
	fmt.Fprintf(&b, "path = %s\n", stage)
	fmt.Fprintf(&b, "comment = georep staging area\n")
	fmt.Fprintf(&b, "use chroot = no\n")
	fmt.Fprintf(&b, "munge symlinks = yes\n")
	fmt.Fprintf(&b, "read only = no\n")
	fmt.Fprintf(&b, "write only = yes\n")
	fmt.Fprintf(&b, "list = no\n")
	fmt.Fprintf(&b, "numeric ids = yes\n")
	// Run as whoever the slave runs as: as root rsync would otherwise drop to
	// "nobody", which cannot write the staging area.
	fmt.Fprintf(&b, "uid = %d\n", uid)
	fmt.Fprintf(&b, "gid = %d\n", gid)
	fmt.Fprintf(&b, "transfer logging = no\n")
	fmt.Fprintf(&b, "max connections = 0\n")
	fmt.Fprintf(&b, "refuse options = %s\n", strings.Join(refused, " "))
	return b.String()
}

// ConfigFile is where the daemon's configuration lives, relative to the
// slave root. It is a state file, rewritten only when its text changes.
// (A memfd passed as /dev/fd/N would avoid it, but rsync 3.5 resolves
// --config component by component itself, following the magic link to
// "/memfd:... (deleted)", which does not exist; a pipe fails the same way.)
const ConfigFile = ".georep/rsyncd.conf"

// Command returns an unstarted rsync daemon serving root's staging area
// on its stdin and stdout ("rsync --server --daemon ."). It makes the
// staging directory and the configuration when they are missing, through
// dirfd, refusing a symlink anywhere beneath root. The caller sets Stdin,
// Stdout and Stderr, starts it and waits for it.
func Command(ctx context.Context, root string) (*exec.Cmd, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("rsync daemon: slave root %s: %w", root, err)
	}
	rsync, err := exec.LookPath("rsync")
	if err != nil {
		return nil, fmt.Errorf("rsync daemon: install rsync on the slave (needed by --sync-mode rsync): %w", err)
	}
	conf := Config(filepath.Join(root, StageDir), os.Getuid(), os.Getgid())
	if err := prepare(root, conf); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, rsync, "--server", "--daemon", "--config="+filepath.Join(root, ConfigFile), ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd, nil
}

// prepare makes <root>/.georep/stage (0700) and writes the configuration
// when it differs, all through dirfd, so a symlink planted at .georep, stage
// or the config file is refused rather than followed.
func prepare(root, conf string) error {
	rd, err := dirfd.Open(root)
	if err != nil {
		return fmt.Errorf("rsync daemon: open the slave root: %w", err)
	}
	defer rd.Close()
	gd, err := mkdirOpen(rd, ".georep")
	if err != nil {
		return err
	}
	defer gd.Close()
	sd, err := mkdirOpen(gd, "stage")
	if err != nil {
		return err
	}
	sd.Close()
	return writeConfig(gd, filepath.Base(ConfigFile), conf)
}

func mkdirOpen(d *dirfd.Dir, name string) (*dirfd.Dir, error) {
	if err := d.Mkdir(name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("rsync daemon: make the staging area %s: %w", StageDir, err)
	}
	sub, err := d.OpenDir(name)
	if err != nil {
		return nil, fmt.Errorf("rsync daemon: open the staging area %s (a symlink is refused): %w", StageDir, err)
	}
	return sub, nil
}

// writeConfig leaves name in d holding conf: unchanged when it already
// does, else replaced atomically (rename of a fresh file), so daemons
// starting at the same time each read a whole file.
func writeConfig(d *dirfd.Dir, name, conf string) error {
	if f, err := d.OpenFile(name, unix.O_RDONLY, 0); err == nil {
		cur, rerr := io.ReadAll(io.LimitReader(f, int64(len(conf))+1))
		f.Close()
		if rerr == nil && string(cur) == conf {
			return nil
		}
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("rsync daemon: name its config: %w", err)
	}
	tmp := fmt.Sprintf("%s.%x", name, rnd)
	f, err := d.CreateExcl(tmp, 0o600)
	if err != nil {
		return fmt.Errorf("rsync daemon: write its config %s: %w", ConfigFile, err)
	}
	_, werr := f.WriteString(conf)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = d.Unlink(tmp)
		return fmt.Errorf("rsync daemon: write its config %s: %w", ConfigFile, err)
	}
	if err := d.Rename(tmp, d, name, dirfd.RenameReplace); err != nil {
		_ = d.Unlink(tmp)
		return fmt.Errorf("rsync daemon: put its config %s in place: %w", ConfigFile, err)
	}
	return nil
}
