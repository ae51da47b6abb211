// Package dirfd owns path safety for the slave: a Dir holds an open
// directory file descriptor, and every operation names exactly one path
// component beneath it, validated first and then used in a single *at system
// call that never follows a symbolic link. No other package in georep builds
// a path from wire input.
package dirfd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// NameMax is the longest single path component Linux accepts (NAME_MAX).
const NameMax = 255

// openat2 may fail with EAGAIN when a rename races the lookup; a few retries
// are enough in practice, and a bound keeps a hostile renamer from spinning us.
const openRetries = 16

// resolveFlags confine every open to the directory's own subtree and refuse
// any symbolic link, including /proc magic links.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Rename flags, passed through to renameat2(2).
const (
	// RenameReplace lets the rename replace an existing target (plain rename).
	RenameReplace = 0
	// RenameNoReplace fails with EEXIST when the target exists.
	RenameNoReplace = unix.RENAME_NOREPLACE
	// RenameExchange swaps source and target atomically.
	RenameExchange = unix.RENAME_EXCHANGE
)

// ValidName reports whether name is a single usable path component: not
// empty, not "." or "..", without '/' or NUL, at most NameMax bytes. The
// error wraps EINVAL.
func ValidName[T ~string | ~[]byte](name T) error {
	switch {
	case len(name) == 0:
		return fmt.Errorf("name is empty: %w", unix.EINVAL)
	case len(name) > NameMax:
		return fmt.Errorf("name is %d bytes, longer than %d: %w", len(name), NameMax, unix.EINVAL)
	case string(name) == "." || string(name) == "..":
		return fmt.Errorf("name %q is not a plain component: %w", string(name), unix.EINVAL)
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/':
			return fmt.Errorf("name %q contains '/': %w", string(name), unix.EINVAL)
		case 0:
			return fmt.Errorf("name %q contains NUL: %w", string(name), unix.EINVAL)
		}
	}
	return nil
}

// Dir is an open directory. Its methods are safe for concurrent use; Close
// must not race with other calls.
type Dir struct {
	fd        int
	closeOnce sync.Once
	closeErr  error
}

// Open opens the directory at path (an operator-supplied path, such as the
// slave root) with O_RDONLY|O_DIRECTORY so that fsync and f*xattr work on it.
func Open(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", path, err)
	}
	return &Dir{fd: fd}, nil
}

// Fd returns the directory's file descriptor, owned by d.
func (d *Dir) Fd() int { return d.fd }

// Close closes the descriptor. It is idempotent.
func (d *Dir) Close() error {
	d.closeOnce.Do(func() {
		if err := unix.Close(d.fd); err != nil {
			d.closeErr = fmt.Errorf("close directory fd %d: %w", d.fd, err)
		}
	})
	return d.closeErr
}

func opErr(op, name string, err error) error {
	return fmt.Errorf("%s %q: %w", op, name, err)
}

func (d *Dir) openat2(name string, flags uint64, mode uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_NOFOLLOW | unix.O_CLOEXEC, Mode: mode, Resolve: resolveFlags}
	var err error
	for range openRetries {
		var fd int
		fd, err = unix.Openat2(d.fd, name, &how)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			break
		}
	}
	return -1, err
}

// OpenDir opens the subdirectory name. A symbolic link at name is refused
// (ELOOP), as is anything that is not a directory (ENOTDIR).
func (d *Dir) OpenDir(name string) (*Dir, error) {
	if err := ValidName(name); err != nil {
		return nil, opErr("open directory", name, err)
	}
	fd, err := d.openat2(name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, opErr("open directory", name, err)
	}
	return &Dir{fd: fd}, nil
}

// OpenBeneath opens the directory at rel, a relative path of several
// components each valid by ValidName (for the backend's own fixed-depth
// layouts, such as its index buckets). openat2 refuses a symlink or escape at
// every component, so this is as safe as opening one component at a time.
func (d *Dir) OpenBeneath(rel string) (*Dir, error) {
	for _, c := range strings.Split(rel, "/") {
		if err := ValidName(c); err != nil {
			return nil, opErr("open directory", rel, err)
		}
	}
	fd, err := d.openat2(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, opErr("open directory", rel, err)
	}
	return &Dir{fd: fd}, nil
}

// CreateExclFd is CreateExcl returning the raw descriptor, which the caller
// must close: the hot create path skips the os.File machinery.
func (d *Dir) CreateExclFd(name string, mode uint32) (int, error) {
	if err := ValidName(name); err != nil {
		return -1, opErr("create", name, err)
	}
	fd, err := d.openat2(name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, uint64(mode))
	if err != nil {
		return -1, opErr("create", name, err)
	}
	return fd, nil
}

// OpenFile opens name with flags (O_NOFOLLOW and O_CLOEXEC are always
// added); with O_CREAT, mode is the permission of a new file.
func (d *Dir) OpenFile(name string, flags int, mode uint32) (*os.File, error) {
	if err := ValidName(name); err != nil {
		return nil, opErr("open", name, err)
	}
	fd, err := d.openat2(name, uint64(flags), uint64(mode))
	if err != nil {
		return nil, opErr("open", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// OpenTmpfile opens a new regular file without a name (O_TMPFILE) on d's
// filesystem, its inode allocated near d as a file created in d would be.
// It vanishes when closed, or at a crash, unless LinkFile names it first.
// A filesystem without O_TMPFILE says EOPNOTSUPP (older kernels EISDIR).
func (d *Dir) OpenTmpfile(mode uint32) (*os.File, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, fmt.Errorf("open an unnamed file: %w", err)
	}
	return os.NewFile(uintptr(fd), "(unnamed)"), nil
}

// LinkFile gives the open regular file f the name name in d, never
// replacing anything (EEXIST when the name is taken): linkat with
// AT_EMPTY_PATH, or, for a caller the kernel refuses that to (it wants
// CAP_DAC_READ_SEARCH before Linux 6.10), through f's /proc/self/fd link,
// which names the open file itself and not a path that could be swapped.
func (d *Dir) LinkFile(f *os.File, name string) error {
	if err := ValidName(name); err != nil {
		return opErr("link", name, err)
	}
	fd := int(f.Fd())
	err := unix.Linkat(fd, "", d.fd, name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
		err = d.linkProc(fd, name)
	}
	if err != nil {
		return fmt.Errorf("link open file to %q: %w", name, err)
	}
	return nil
}

// linkProc is LinkFile through /proc/self/fd.
func (d *Dir) linkProc(fd int, name string) error {
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), d.fd, name, unix.AT_SYMLINK_FOLLOW)
}

// CreateExcl creates the regular file name, failing if anything exists
// there (a planted symlink included), and opens it for writing.
func (d *Dir) CreateExcl(name string, mode uint32) (*os.File, error) {
	return d.OpenFile(name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, mode)
}

// Lstat returns the attributes of name without following a symlink.
func (d *Dir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := ValidName(name); err != nil {
		return st, opErr("lstat", name, err)
	}
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, opErr("lstat", name, err)
	}
	return st, nil
}

// Stat returns the attributes of the directory itself.
func (d *Dir) Stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return st, fmt.Errorf("fstat directory: %w", err)
	}
	return st, nil
}

// Mkdir creates the directory name with permission mode (before umask).
func (d *Dir) Mkdir(name string, mode uint32) error {
	if err := ValidName(name); err != nil {
		return opErr("mkdir", name, err)
	}
	if err := unix.Mkdirat(d.fd, name, mode); err != nil {
		return opErr("mkdir", name, err)
	}
	return nil
}

// Mknod creates a device node, FIFO, socket or empty regular file; mode
// carries the type bits.
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	if err := ValidName(name); err != nil {
		return opErr("mknod", name, err)
	}
	if err := unix.Mknodat(d.fd, name, mode, int(dev)); err != nil {
		return opErr("mknod", name, err)
	}
	return nil
}

// Symlink creates the symbolic link name holding target verbatim. The
// target is data: it is never resolved.
func (d *Dir) Symlink(target, name string) error {
	if err := ValidName(name); err != nil {
		return opErr("symlink", name, err)
	}
	if err := unix.Symlinkat(target, d.fd, name); err != nil {
		return opErr("symlink", name, err)
	}
	return nil
}

// Readlink returns the target of the symbolic link name.
func (d *Dir) Readlink(name string) (string, error) {
	if err := ValidName(name); err != nil {
		return "", opErr("readlink", name, err)
	}
	// Linux targets are at most PATH_MAX-1 bytes; one byte more tells a
	// truncated read apart.
	buf := make([]byte, unix.PathMax+1)
	n, err := unix.Readlinkat(d.fd, name, buf)
	if err != nil {
		return "", opErr("readlink", name, err)
	}
	if n > unix.PathMax {
		return "", opErr("readlink", name, unix.ENAMETOOLONG)
	}
	return string(buf[:n]), nil
}

// Link makes newName in newDir a hard link to name in d. A symlink at name is
// linked itself, never its target.
func (d *Dir) Link(name string, newDir *Dir, newName string) error {
	if err := ValidName(name); err != nil {
		return opErr("link", name, err)
	}
	if err := ValidName(newName); err != nil {
		return opErr("link", newName, err)
	}
	if err := unix.Linkat(d.fd, name, newDir.fd, newName, 0); err != nil {
		return fmt.Errorf("link %q to %q: %w", name, newName, err)
	}
	return nil
}

// Rename moves name in d to newName in newDir with renameat2 flags
// (RenameReplace, RenameNoReplace or RenameExchange).
func (d *Dir) Rename(name string, newDir *Dir, newName string, flags uint) error {
	if err := ValidName(name); err != nil {
		return opErr("rename", name, err)
	}
	if err := ValidName(newName); err != nil {
		return opErr("rename", newName, err)
	}
	if err := unix.Renameat2(d.fd, name, newDir.fd, newName, flags); err != nil {
		return fmt.Errorf("rename %q to %q: %w", name, newName, err)
	}
	return nil
}

// Unlink removes the non-directory name.
func (d *Dir) Unlink(name string) error {
	if err := ValidName(name); err != nil {
		return opErr("unlink", name, err)
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return opErr("unlink", name, err)
	}
	return nil
}

// Rmdir removes the empty directory name.
func (d *Dir) Rmdir(name string) error {
	if err := ValidName(name); err != nil {
		return opErr("rmdir", name, err)
	}
	if err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err != nil {
		return opErr("rmdir", name, err)
	}
	return nil
}

// ReadDirNames returns the names in the directory, without "." and "..", in
// directory order. It reads through a fresh descriptor so concurrent readers
// do not share a directory offset.
func (d *Dir) ReadDirNames() ([]string, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen directory for listing: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list directory: %w", err)
	}
	return names, nil
}

// Fsync flushes the directory (its entries and attributes) to stable storage.
func (d *Dir) Fsync() error {
	if err := unix.Fsync(d.fd); err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	return nil
}

// Syncfs flushes the whole filesystem holding the directory.
func (d *Dir) Syncfs() error {
	if err := unix.Syncfs(d.fd); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}

// Chmod sets the permission bits of name without following a symlink
// (fchmodat2 with AT_SYMLINK_NOFOLLOW; Linux refuses a symlink with
// EOPNOTSUPP).
func (d *Dir) Chmod(name string, mode uint32) error {
	if err := ValidName(name); err != nil {
		return opErr("chmod", name, err)
	}
	if err := fchmodat2(d.fd, name, mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return opErr("chmod", name, err)
	}
	return nil
}

// Chown sets the owner of name itself (a symlink is changed, not its
// target); -1 leaves an id unchanged.
func (d *Dir) Chown(name string, uid, gid int) error {
	if err := ValidName(name); err != nil {
		return opErr("chown", name, err)
	}
	if err := unix.Fchownat(d.fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return opErr("chown", name, err)
	}
	return nil
}

// Utimes sets the access and modification times of name itself; a
// Timespec with Nsec unix.UTIME_OMIT leaves that time unchanged.
func (d *Dir) Utimes(name string, atime, mtime unix.Timespec) error {
	if err := ValidName(name); err != nil {
		return opErr("utimes", name, err)
	}
	if err := unix.UtimesNanoAt(d.fd, name, []unix.Timespec{atime, mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return opErr("utimes", name, err)
	}
	return nil
}

// ChmodSelf sets the permission bits of the directory itself.
func (d *Dir) ChmodSelf(mode uint32) error {
	if err := unix.Fchmod(d.fd, mode); err != nil {
		return fmt.Errorf("chmod directory: %w", err)
	}
	return nil
}

// ChownSelf sets the owner of the directory itself; -1 leaves an id unchanged.
func (d *Dir) ChownSelf(uid, gid int) error {
	if err := unix.Fchown(d.fd, uid, gid); err != nil {
		return fmt.Errorf("chown directory: %w", err)
	}
	return nil
}

// UtimesSelf sets the times of the directory itself.
func (d *Dir) UtimesSelf(atime, mtime unix.Timespec) error {
	if err := unix.UtimesNanoAt(d.fd, "", []unix.Timespec{atime, mtime}, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("utimes directory: %w", err)
	}
	return nil
}

// procPath names name beneath d through d's own /proc magic link: only used
// when the *xattrat system calls are missing, always with l*xattr so the
// final component is never followed.
func (d *Dir) procPath(name string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
}
