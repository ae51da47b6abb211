package dirfd

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// XattrSizeMax is the largest extended attribute value Linux stores
// (XATTR_SIZE_MAX); no read is ever sized beyond it.
const XattrSizeMax = 65536

// xattrListMax bounds a listxattr result (XATTR_LIST_MAX).
const xattrListMax = 65536

// xattrArgs is the kernel's struct xattr_args for setxattrat/getxattrat.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func fchmodat2(dirfd int, name string, mode uint32, flags int) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_FCHMODAT2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(mode), uintptr(flags), 0, 0)
	runtime.KeepAlive(p)
	if e != 0 {
		return e
	}
	return nil
}

func setxattrat(dirfd int, name, attr string, value []byte, flags int) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	args := xattrArgs{size: uint32(len(value)), flags: uint32(flags)}
	if len(value) > 0 {
		// No call between taking the address and the system call, so the
		// buffer cannot move in between.
		args.value = uint64(uintptr(unsafe.Pointer(&value[0])))
	}
	_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(value)
	runtime.KeepAlive(p)
	runtime.KeepAlive(a)
	if e != 0 {
		return e
	}
	return nil
}

func getxattrat(dirfd int, name, attr string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{size: uint32(len(buf))}
	if len(buf) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
	}
	r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	runtime.KeepAlive(buf)
	runtime.KeepAlive(p)
	runtime.KeepAlive(a)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func listxattrat(dirfd int, name string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var bp unsafe.Pointer
	if len(buf) > 0 {
		bp = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(bp), uintptr(len(buf)), 0)
	runtime.KeepAlive(buf)
	runtime.KeepAlive(p)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func removexattrat(dirfd int, name, attr string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	a, err := unix.BytePtrFromString(attr)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(a)), 0, 0)
	runtime.KeepAlive(p)
	runtime.KeepAlive(a)
	if e != 0 {
		return e
	}
	return nil
}

// readBounded calls get with a small buffer first (identities are 16 bytes),
// then with the size the kernel reports, never beyond limit. A value that
// grows between the calls is retried a few times.
func readBounded(limit int, get func([]byte) (int, error)) ([]byte, error) {
	buf := make([]byte, 256)
	for range 4 {
		n, err := get(buf)
		if err == nil {
			return buf[:n:n], nil
		}
		if !errors.Is(err, unix.ERANGE) {
			return nil, err
		}
		size, err := get(nil)
		if err != nil {
			return nil, err
		}
		if size > limit {
			return nil, fmt.Errorf("value of %d bytes exceeds the %d-byte limit: %w", size, limit, unix.E2BIG)
		}
		buf = make([]byte, size)
	}
	return nil, fmt.Errorf("value kept changing size while read: %w", unix.ERANGE)
}

func splitList(buf []byte) []string {
	var names []string
	for _, n := range strings.Split(string(buf), "\x00") {
		if n != "" {
			names = append(names, n)
		}
	}
	return names
}

// SetXattr sets attribute attr of name itself (never a symlink's target);
// flags is 0, unix.XATTR_CREATE or unix.XATTR_REPLACE.
func (d *Dir) SetXattr(name, attr string, value []byte, flags int) error {
	if err := ValidName(name); err != nil {
		return opErr("setxattr", name, err)
	}
	if len(value) > XattrSizeMax {
		return opErr("setxattr", name, fmt.Errorf("value of %d bytes exceeds %d: %w", len(value), XattrSizeMax, unix.E2BIG))
	}
	err := setxattrat(d.fd, name, attr, value, flags)
	if errors.Is(err, unix.ENOSYS) {
		err = unix.Lsetxattr(d.procPath(name), attr, value, flags)
	}
	if err != nil {
		return fmt.Errorf("setxattr %s on %q: %w", attr, name, err)
	}
	return nil
}

// GetXattr returns attribute attr of name itself, at most XattrSizeMax bytes.
func (d *Dir) GetXattr(name, attr string) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return nil, opErr("getxattr", name, err)
	}
	v, err := readBounded(XattrSizeMax, func(b []byte) (int, error) {
		n, err := getxattrat(d.fd, name, attr, b)
		if errors.Is(err, unix.ENOSYS) {
			return unix.Lgetxattr(d.procPath(name), attr, b)
		}
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("getxattr %s on %q: %w", attr, name, err)
	}
	return v, nil
}

// ListXattr returns the attribute names of name itself.
func (d *Dir) ListXattr(name string) ([]string, error) {
	if err := ValidName(name); err != nil {
		return nil, opErr("listxattr", name, err)
	}
	v, err := readBounded(xattrListMax, func(b []byte) (int, error) {
		n, err := listxattrat(d.fd, name, b)
		if errors.Is(err, unix.ENOSYS) {
			return unix.Llistxattr(d.procPath(name), b)
		}
		return n, err
	})
	if err != nil {
		return nil, fmt.Errorf("listxattr on %q: %w", name, err)
	}
	return splitList(v), nil
}

// RemoveXattr removes attribute attr of name itself.
func (d *Dir) RemoveXattr(name, attr string) error {
	if err := ValidName(name); err != nil {
		return opErr("removexattr", name, err)
	}
	err := removexattrat(d.fd, name, attr)
	if errors.Is(err, unix.ENOSYS) {
		err = unix.Lremovexattr(d.procPath(name), attr)
	}
	if err != nil {
		return fmt.Errorf("removexattr %s on %q: %w", attr, name, err)
	}
	return nil
}

// SetXattrSelf sets attribute attr of the directory itself.
func (d *Dir) SetXattrSelf(attr string, value []byte, flags int) error {
	if len(value) > XattrSizeMax {
		return fmt.Errorf("setxattr %s on directory: value of %d bytes exceeds %d: %w", attr, len(value), XattrSizeMax, unix.E2BIG)
	}
	if err := unix.Fsetxattr(d.fd, attr, value, flags); err != nil {
		return fmt.Errorf("setxattr %s on directory: %w", attr, err)
	}
	return nil
}

// GetXattrSelf returns attribute attr of the directory itself.
func (d *Dir) GetXattrSelf(attr string) ([]byte, error) {
	v, err := readBounded(XattrSizeMax, func(b []byte) (int, error) { return unix.Fgetxattr(d.fd, attr, b) })
	if err != nil {
		return nil, fmt.Errorf("getxattr %s on directory: %w", attr, err)
	}
	return v, nil
}

// ListXattrSelf returns the attribute names of the directory itself.
func (d *Dir) ListXattrSelf() ([]string, error) {
	v, err := readBounded(xattrListMax, func(b []byte) (int, error) { return unix.Flistxattr(d.fd, b) })
	if err != nil {
		return nil, fmt.Errorf("listxattr on directory: %w", err)
	}
	return splitList(v), nil
}

// RemoveXattrSelf removes attribute attr of the directory itself.
func (d *Dir) RemoveXattrSelf(attr string) error {
	if err := unix.Fremovexattr(d.fd, attr); err != nil {
		return fmt.Errorf("removexattr %s on directory: %w", attr, err)
	}
	return nil
}
