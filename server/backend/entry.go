package backend

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// entry is a validated pb.Entry.
type entry struct {
	op     pb.EntryOp
	x, p   gfid.GFID
	name   string
	p2     gfid.GFID
	name2  string
	st     *pb.Stat
	typ    uint32 // S_IFMT of the object to create, when the op creates
	target string
	desc   string
}

// pathMax bounds a symlink target (PATH_MAX, including the NUL).
const pathMax = 4096

func describe(e *pb.Entry) string {
	s := fmt.Sprintf("%s gfid=%s parent=%s name=%q", shortOp(e.GetOp()), gfidText(e.GetGfid()),
		gfidText(e.GetParentGfid()), e.GetName())
	if e.GetOp() == pb.EntryOp_ENTRY_OP_RENAME {
		s += fmt.Sprintf(" -> parent=%s name=%q", gfidText(e.GetNewParentGfid()), e.GetNewName())
	}
	return s
}

func shortOp(op pb.EntryOp) string {
	n := op.String()
	if len(n) > len("ENTRY_OP_") {
		return n[len("ENTRY_OP_"):]
	}
	return n
}

func gfidText(b []byte) string {
	if len(b) == gfid.Size {
		return gfid.GFID(b).String()
	}
	return fmt.Sprintf("%x", b)
}

func result(r pb.Resolution, msg string) *pb.EntryResult {
	return &pb.EntryResult{Resolution: r, Message: msg}
}

func errnoResult(e unix.Errno, msg string) *pb.EntryResult {
	return &pb.EntryResult{Errno: int32(e), Code: unix.ErrnoName(e), Message: msg}
}

// errResult turns err into a result; errors without an errno count as EIO.
func errResult(desc string, err error) *pb.EntryResult {
	e := unix.EIO
	var en unix.Errno
	if errors.As(err, &en) {
		e = en
	}
	return errnoResult(e, desc+": "+err.Error())
}

func validName(field string, n []byte) error {
	if err := dirfd.ValidName(n); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func validateEntry(e *pb.Entry) (entry, error) {
	v := entry{op: e.GetOp(), desc: describe(e)}
	var err error
	if v.x, err = gfid.FromBytes(e.GetGfid()); err != nil {
		return v, fmt.Errorf("gfid: %v: %w", err, unix.EINVAL)
	}
	if v.p, err = gfid.FromBytes(e.GetParentGfid()); err != nil {
		return v, fmt.Errorf("parent gfid: %v: %w", err, unix.EINVAL)
	}
	if err := validName("name", e.GetName()); err != nil {
		return v, err
	}
	v.name = string(e.GetName())
	if v.x == gfid.Root {
		return v, fmt.Errorf("the root directory cannot be created, moved or removed: %w", unix.EINVAL)
	}
	if v.p == gfid.Root && v.name == ReservedDir {
		return v, fmt.Errorf("%q is a reserved name: %w", ReservedDir, unix.EPERM)
	}
	v.st = e.GetStat()
	mode := v.st.GetMode() & unix.S_IFMT
	needStat := false
	switch v.op {
	case pb.EntryOp_ENTRY_OP_CREATE:
		needStat = true
		if mode != 0 && mode != unix.S_IFREG {
			return v, fmt.Errorf("CREATE with file type %#o, want a regular file: %w", mode, unix.EINVAL)
		}
		v.typ = unix.S_IFREG
	case pb.EntryOp_ENTRY_OP_MKDIR:
		needStat = true
		if mode != 0 && mode != unix.S_IFDIR {
			return v, fmt.Errorf("MKDIR with file type %#o, want a directory: %w", mode, unix.EINVAL)
		}
		v.typ = unix.S_IFDIR
	case pb.EntryOp_ENTRY_OP_MKNOD:
		needStat = true
		switch mode {
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
		default:
			return v, fmt.Errorf("MKNOD with file type %#o, want a device, FIFO, socket or regular file: %w", mode, unix.EINVAL)
		}
		v.typ = mode
	case pb.EntryOp_ENTRY_OP_SYMLINK:
		needStat = true
		if mode != 0 && mode != unix.S_IFLNK {
			return v, fmt.Errorf("SYMLINK with file type %#o: %w", mode, unix.EINVAL)
		}
		v.typ = unix.S_IFLNK
	case pb.EntryOp_ENTRY_OP_LINK:
		if v.st != nil {
			if v.typ, err = recreateType(mode); err != nil {
				return v, err
			}
			if v.typ == unix.S_IFDIR {
				return v, fmt.Errorf("LINK of a directory: %w", unix.EPERM)
			}
		}
	case pb.EntryOp_ENTRY_OP_RENAME:
		if v.p2, err = gfid.FromBytes(e.GetNewParentGfid()); err != nil {
			return v, fmt.Errorf("new parent gfid: %v: %w", err, unix.EINVAL)
		}
		if err := validName("new name", e.GetNewName()); err != nil {
			return v, err
		}
		v.name2 = string(e.GetNewName())
		if v.p2 == gfid.Root && v.name2 == ReservedDir {
			return v, fmt.Errorf("%q is a reserved name: %w", ReservedDir, unix.EPERM)
		}
		if v.st != nil {
			if v.typ, err = recreateType(mode); err != nil {
				return v, err
			}
		}
	case pb.EntryOp_ENTRY_OP_UNLINK, pb.EntryOp_ENTRY_OP_RMDIR:
	default:
		return v, fmt.Errorf("unknown entry op %d: %w", v.op, unix.EINVAL)
	}
	if needStat && v.st == nil {
		return v, fmt.Errorf("%s needs a stat: %w", shortOp(v.op), unix.EINVAL)
	}
	if v.st != nil {
		if err := validTimes(v.st.GetAtime(), v.st.GetMtime()); err != nil {
			return v, err
		}
	}
	if v.typ == unix.S_IFLNK {
		t := e.GetLinkTarget()
		switch {
		case len(t) == 0:
			return v, fmt.Errorf("symlink target is empty: %w", unix.EINVAL)
		case len(t) >= pathMax:
			return v, fmt.Errorf("symlink target is %d bytes, the limit is %d: %w", len(t), pathMax-1, unix.ENAMETOOLONG)
		}
		for _, c := range t {
			if c == 0 {
				return v, fmt.Errorf("symlink target contains NUL: %w", unix.EINVAL)
			}
		}
		v.target = string(t)
	}
	return v, nil
}

// recreateType is the type to recreate a vanished LINK or RENAME source as.
func recreateType(mode uint32) (uint32, error) {
	switch mode {
	case 0:
		return unix.S_IFREG, nil
	case unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		return mode, nil
	}
	return 0, fmt.Errorf("unknown file type %#o in stat: %w", mode, unix.EINVAL)
}

func validTimes(ts ...*pb.Timestamp) error {
	for _, t := range ts {
		if t != nil && t.GetNsec() >= 1e9 {
			return fmt.Errorf("timestamp nanoseconds %d out of range: %w", t.GetNsec(), unix.EINVAL)
		}
	}
	return nil
}

func (b *Backend) applyEntry(pe *pb.Entry) *pb.EntryResult {
	e, err := validateEntry(pe)
	if err != nil {
		return errResult(e.desc, err)
	}
	s, err := b.lock()
	if err != nil {
		return errResult(e.desc, err)
	}
	defer b.unlock(s)
	defer b.purgeVictims(s)
	var r *pb.EntryResult
	switch e.op {
	case pb.EntryOp_ENTRY_OP_CREATE, pb.EntryOp_ENTRY_OP_MKNOD, pb.EntryOp_ENTRY_OP_MKDIR, pb.EntryOp_ENTRY_OP_SYMLINK:
		r = b.create(s, e)
	case pb.EntryOp_ENTRY_OP_LINK:
		r = b.link(s, e)
	case pb.EntryOp_ENTRY_OP_RENAME:
		r = b.rename(s, e)
	case pb.EntryOp_ENTRY_OP_UNLINK:
		r = b.remove(s, e, false)
	case pb.EntryOp_ENTRY_OP_RMDIR:
		r = b.remove(s, e, true)
	}
	if r.Errno != 0 || r.Resolution != pb.Resolution_RESOLUTION_UNSPECIFIED {
		b.log.Debug("entry reconciled", "entry", e.desc, "code", r.Code, "resolution", r.Resolution, "message", r.Message)
	}
	return r
}

// lstatOpt lstat's name in d; exists is false when nothing is there.
func lstatOpt(d *dirfd.Dir, name string) (st unix.Stat_t, exists bool, err error) {
	st, err = d.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return st, false, nil
	}
	return st, err == nil, err
}

func (b *Backend) parentDir(s *scope, p gfid.GFID, what string) (*dirfd.Dir, error) {
	d, err := b.resolveDir(s, p, 0)
	if err != nil {
		return nil, fmt.Errorf("%s %s not found: %w", what, p, err)
	}
	return d, nil
}

// create serves CREATE, MKNOD, MKDIR and SYMLINK.
func (b *Backend) create(s *scope, e entry) *pb.EntryResult {
	pd, err := b.parentDir(s, e.p, "parent directory")
	if err != nil {
		return errResult(e.desc, err)
	}
	xo, err := b.lookup(s, e.x)
	if err != nil {
		return errResult(e.desc, err)
	}
	cur, exists, err := lstatOpt(pd, e.name)
	if err != nil {
		return errResult(e.desc, err)
	}
	if exists && b.holds(pd, e.name, cur, e.x, xo) {
		if xo.kind == absent {
			// Identity present but index lost (a crash between placing and
			// indexing): repair it.
			if err := b.reindex(s, e, pd, cur); err != nil {
				return errResult(e.desc, err)
			}
		}
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already there")
	}
	if xo.kind != absent {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED,
			e.desc+": the gfid already exists under another name; a later RENAME or LINK puts it in place")
	}
	return b.createAt(s, e, pd, e.p, e.name, cur, exists, pb.Resolution_RESOLUTION_UNSPECIFIED)
}

func (b *Backend) reindex(s *scope, e entry, pd *dirfd.Dir, cur unix.Stat_t) error {
	if cur.Mode&unix.S_IFMT == unix.S_IFDIR {
		return b.setDirIndex(s, e.x, e.p, e.name)
	}
	return b.linkIndex(s, e.x, pd, e.name)
}

// createAt makes e's object (type e.typ) with identity e.x at name in pd
// (the directory pg), replacing what is there (cur, if exists). res is the
// resolution when nothing was replaced.
func (b *Backend) createAt(s *scope, e entry, pd *dirfd.Dir, pg gfid.GFID, name string,
	cur unix.Stat_t, exists bool, res pb.Resolution) *pb.EntryResult {
	t, dir, err := b.makeObject(s, e)
	if err != nil {
		return errResult(e.desc, err)
	}
	replaced, didReplace, err := b.place(s, b.tmp, t, e.typ == unix.S_IFDIR, pd, name, cur, exists)
	if err != nil {
		b.discardTemp(s, t)
		if dir != nil {
			dir.Close()
		}
		return errResult(e.desc, err)
	}
	if dir != nil {
		if err := b.setDirIndex(s, e.x, pg, name); err != nil {
			dir.Close()
			return errResult(e.desc, err)
		}
		b.dirs.put(s, dirKey(e.x), dir)
	}
	return placedResult(e.desc, res, replaced, didReplace)
}

func placedResult(desc string, res pb.Resolution, replaced gfid.GFID, didReplace bool) *pb.EntryResult {
	if !didReplace {
		return result(res, "")
	}
	r := result(pb.Resolution_RESOLUTION_REPLACED_CONFLICT, desc+": replaced an object of another identity")
	if res != pb.Resolution_RESOLUTION_UNSPECIFIED {
		r.Message += " (" + shortResolution(res) + ")"
	}
	if !replaced.IsZero() {
		r.ReplacedGfid = replaced.Bytes()
		r.Message += " " + replaced.String()
	} else {
		r.Message += " (it carried no gfid)"
	}
	return r
}

func shortResolution(r pb.Resolution) string {
	n := r.String()
	if len(n) > len("RESOLUTION_") {
		return n[len("RESOLUTION_"):]
	}
	return n
}

// discardTemp removes a half-made object from tmp along with its index link.
func (b *Backend) discardTemp(s *scope, t string) {
	if _, err := b.removeTree(s, b.tmp, t); err != nil {
		b.log.Warn("cannot remove a half-made object; the next open removes it", "tmp", t, "err", err)
	}
}

// makeObject creates e's object in .georep/tmp under a fresh name, with its
// identity, mode, owner and times, and (non-directories) its index link. A
// directory comes back open.
func (b *Backend) makeObject(s *scope, e entry) (string, *dirfd.Dir, error) {
	t := tempName()
	mode := e.st.GetMode() & 0o7777
	uid, gid := int(e.st.GetUid()), int(e.st.GetGid())
	times, setTimes := timespecs(e.st.GetAtime(), e.st.GetMtime())
	successful := false
	var dir *dirfd.Dir
	defer func() {
		if !successful {
			if dir != nil {
				dir.Close()
			}
			b.discardTemp(s, t)
		}
	}()
	switch e.typ {
	case unix.S_IFREG:
		fd, err := b.tmp.CreateExclFd(t, 0o600)
		if err != nil {
			return "", nil, fmt.Errorf("create file: %w", err)
		}
		err = b.fileAttrs(fd, e.x, mode, uid, gid, times, setTimes)
		if cerr := unix.Close(fd); err == nil && cerr != nil {
			err = fmt.Errorf("close new file: %w", cerr)
		}
		if err != nil {
			return "", nil, err
		}
	case unix.S_IFDIR:
		if err := b.tmp.Mkdir(t, 0o700); err != nil {
			return "", nil, fmt.Errorf("create directory: %w", err)
		}
		var err error
		if dir, err = b.tmp.OpenDir(t); err != nil {
			return "", nil, fmt.Errorf("open new directory: %w", err)
		}
		if err := dir.SetXattrSelf(b.gfidAttr, e.x.Bytes(), 0); err != nil {
			return "", nil, fmt.Errorf("give directory its gfid: %w", err)
		}
		if b.canChown {
			if err := dir.ChownSelf(uid, gid); err != nil {
				return "", nil, fmt.Errorf("set directory owner: %w", err)
			}
		}
		if err := dir.ChmodSelf(mode); err != nil {
			return "", nil, fmt.Errorf("set directory mode: %w", err)
		}
		if setTimes {
			if err := dir.UtimesSelf(times[0], times[1]); err != nil {
				return "", nil, fmt.Errorf("set directory times: %w", err)
			}
		}
	default:
		if e.typ == unix.S_IFLNK {
			if err := b.tmp.Symlink(e.target, t); err != nil {
				return "", nil, fmt.Errorf("create symlink: %w", err)
			}
		} else if err := b.tmp.Mknod(t, e.typ|0o600, e.st.GetRdev()); err != nil {
			return "", nil, fmt.Errorf("create node: %w", err)
		}
		if b.canCarryXattr(e.typ) {
			if err := b.tmp.SetXattr(t, b.gfidAttr, e.x.Bytes(), 0); err != nil {
				return "", nil, fmt.Errorf("give object its gfid: %w", err)
			}
		}
		if b.canChown {
			if err := b.tmp.Chown(t, uid, gid); err != nil {
				return "", nil, fmt.Errorf("set owner: %w", err)
			}
		}
		if e.typ != unix.S_IFLNK {
			if err := b.tmp.Chmod(t, mode); err != nil {
				return "", nil, fmt.Errorf("set mode: %w", err)
			}
		}
		if setTimes {
			if err := b.tmp.Utimes(t, times[0], times[1]); err != nil {
				return "", nil, fmt.Errorf("set times: %w", err)
			}
		}
	}
	if e.typ != unix.S_IFDIR {
		if err := b.linkIndex(s, e.x, b.tmp, t); err != nil {
			return "", nil, err
		}
	}
	successful = true
	return t, dir, nil
}

func (b *Backend) fileAttrs(fd int, x gfid.GFID, mode uint32, uid, gid int, times [2]unix.Timespec, setTimes bool) error {
	if err := unix.Fsetxattr(fd, b.gfidAttr, x[:], 0); err != nil {
		return fmt.Errorf("give file its gfid: %w", err)
	}
	if b.canChown {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("set file owner: %w", err)
		}
	}
	// Explicit, after chown (which clears set-id bits): the umask must not matter.
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("set file mode: %w", err)
	}
	if setTimes {
		if err := unix.UtimesNanoAt(fd, "", times[:], unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("set file times: %w", err)
		}
	}
	return nil
}

// timespecs converts wire times, UTIME_OMIT for an unset one; set is false
// when both are unset.
func timespecs(a, m *pb.Timestamp) ([2]unix.Timespec, bool) {
	conv := func(t *pb.Timestamp) unix.Timespec {
		if t == nil {
			return unix.Timespec{Nsec: unix.UTIME_OMIT}
		}
		return unix.Timespec{Sec: t.GetSec(), Nsec: int64(t.GetNsec())}
	}
	return [2]unix.Timespec{conv(a), conv(m)}, a != nil || m != nil
}

// place moves srcName in src to name in dst, replacing what is there (cur,
// if exists) in the master's favour: a non-directory over a non-directory
// atomically, anything involving a directory by moving the old object to
// trash first. It reports the identity it displaced.
func (b *Backend) place(s *scope, src *dirfd.Dir, srcName string, srcIsDir bool,
	dst *dirfd.Dir, name string, cur unix.Stat_t, exists bool) (gfid.GFID, bool, error) {
	if !exists {
		if err := src.Rename(srcName, dst, name, dirfd.RenameNoReplace); err != nil {
			return gfid.GFID{}, false, err
		}
		return gfid.GFID{}, false, nil
	}
	y, hasY, err := b.gfidAt(dst, name, cur)
	if err != nil {
		return gfid.GFID{}, false, err
	}
	if !srcIsDir && cur.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := src.Rename(srcName, dst, name, dirfd.RenameReplace); err != nil {
			return gfid.GFID{}, false, err
		}
		if hasY {
			b.dropIndexIfOrphan(s, y, cur.Ino)
		}
		return y, true, nil
	}
	if _, err := b.toTrash(s, dst, name, cur); err != nil {
		return gfid.GFID{}, false, err
	}
	if err := src.Rename(srcName, dst, name, dirfd.RenameNoReplace); err != nil {
		return gfid.GFID{}, false, err
	}
	return y, true, nil
}

// link serves LINK: another name for an existing non-directory.
func (b *Backend) link(s *scope, e entry) *pb.EntryResult {
	pd, err := b.parentDir(s, e.p, "parent directory")
	if err != nil {
		return errResult(e.desc, err)
	}
	xo, err := b.lookup(s, e.x)
	if err != nil {
		return errResult(e.desc, err)
	}
	if xo.kind == isDir {
		return errResult(e.desc, fmt.Errorf("%s is a directory, which cannot be hard-linked: %w", e.x, unix.EPERM))
	}
	cur, exists, err := lstatOpt(pd, e.name)
	if err != nil {
		return errResult(e.desc, err)
	}
	if exists && b.holds(pd, e.name, cur, e.x, xo) {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already linked")
	}
	if xo.kind == absent {
		if e.st == nil {
			return errResult(e.desc, fmt.Errorf("gfid %s is gone and the entry has no stat to recreate it: %w", e.x, unix.ENOENT))
		}
		return b.createAt(s, e, pd, e.p, e.name, cur, exists, pb.Resolution_RESOLUTION_RECREATED)
	}
	replaced, didReplace, err := b.linkFromIndex(s, e.x, xo, pd, e.name, cur, exists)
	if err != nil {
		return errResult(e.desc, err)
	}
	return placedResult(e.desc, pb.Resolution_RESOLUTION_UNSPECIFIED, replaced, didReplace)
}

// linkFromIndex gives non-directory x (found as xo) the name in pd.
func (b *Backend) linkFromIndex(s *scope, x gfid.GFID, xo object, pd *dirfd.Dir, name string,
	cur unix.Stat_t, exists bool) (gfid.GFID, bool, error) {
	if !exists {
		return gfid.GFID{}, false, xo.bucket.Link(x.String(), pd, name)
	}
	t := tempName()
	if err := xo.bucket.Link(x.String(), b.tmp, t); err != nil {
		return gfid.GFID{}, false, err
	}
	y, did, err := b.place(s, b.tmp, t, false, pd, name, cur, exists)
	if err != nil {
		b.tmp.Unlink(t)
	}
	return y, did, err
}

// rename serves RENAME, finding the source by identity.
func (b *Backend) rename(s *scope, e entry) *pb.EntryResult {
	pd2, err := b.parentDir(s, e.p2, "destination directory")
	if err != nil {
		return errResult(e.desc, err)
	}
	xo, err := b.lookup(s, e.x)
	if err != nil {
		return errResult(e.desc, err)
	}
	dst, dexists, err := lstatOpt(pd2, e.name2)
	if err != nil {
		return errResult(e.desc, err)
	}
	switch xo.kind {
	case isDir:
		return b.renameDir(s, e, xo, pd2, dst, dexists)
	case nondir:
		return b.renameNonDir(s, e, xo, pd2, dst, dexists)
	}
	if dexists && b.holds(pd2, e.name2, dst, e.x, xo) {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already renamed")
	}
	if e.st == nil {
		return errResult(e.desc, fmt.Errorf("gfid %s is gone and the entry has no stat to recreate it: %w", e.x, unix.ENOENT))
	}
	if e.typ == unix.S_IFLNK && e.target == "" {
		return errResult(e.desc, fmt.Errorf("gfid %s is a vanished symlink and the entry has no target to recreate it: %w", e.x, unix.ENOENT))
	}
	return b.createAt(s, e, pd2, e.p2, e.name2, dst, dexists, pb.Resolution_RESOLUTION_RECREATED)
}

func (b *Backend) renameDir(s *scope, e entry, xo object, pd2 *dirfd.Dir, dst unix.Stat_t, dexists bool) *pb.EntryResult {
	pp, pn, err := b.dirLocation(s, e.x)
	if err != nil {
		return errResult(e.desc, err)
	}
	if pp == e.p2 && pn == e.name2 {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already renamed")
	}
	inside, err := b.isAncestor(s, e.x, e.p2)
	if err != nil {
		return errResult(e.desc, err)
	}
	if inside {
		return errResult(e.desc, fmt.Errorf("cannot move directory %s into itself: %w", e.x, unix.EINVAL))
	}
	ppd, err := b.parentDir(s, pp, "current parent directory")
	if err != nil {
		return errResult(e.desc, err)
	}
	replaced, didReplace, err := b.place(s, ppd, pn, true, pd2, e.name2, dst, dexists)
	if err != nil {
		return errResult(e.desc, err)
	}
	if err := b.setDirIndex(s, e.x, e.p2, e.name2); err != nil {
		return errResult(e.desc, err)
	}
	return placedResult(e.desc, pb.Resolution_RESOLUTION_UNSPECIFIED, replaced, didReplace)
}

func (b *Backend) renameNonDir(s *scope, e entry, xo object, pd2 *dirfd.Dir, dst unix.Stat_t, dexists bool) *pb.EntryResult {
	var pd *dirfd.Dir
	var src unix.Stat_t
	srcFound := false
	if d, err := b.resolveDir(s, e.p, 0); err == nil {
		pd = d
		st, exists, err := lstatOpt(pd, e.name)
		if err != nil {
			return errResult(e.desc, err)
		}
		src, srcFound = st, exists && b.holds(pd, e.name, st, e.x, xo)
	}
	if dexists && b.holds(pd2, e.name2, dst, e.x, xo) {
		if !srcFound || (e.p == e.p2 && e.name == e.name2) {
			return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already renamed")
		}
		// Both names are links of x, where rename(2) would do nothing: the
		// source name must still go.
		if err := b.unlinkVerified(s, pd, e.name, src, e.x); err != nil {
			return errResult(e.desc, err)
		}
		return result(pb.Resolution_RESOLUTION_UNSPECIFIED, "")
	}
	if srcFound {
		replaced, didReplace, err := b.place(s, pd, e.name, false, pd2, e.name2, dst, dexists)
		if err != nil {
			return errResult(e.desc, err)
		}
		return placedResult(e.desc, pb.Resolution_RESOLUTION_UNSPECIFIED, replaced, didReplace)
	}
	replaced, didReplace, err := b.linkFromIndex(s, e.x, xo, pd2, e.name2, dst, dexists)
	if err != nil {
		return errResult(e.desc, err)
	}
	r := placedResult(e.desc, pb.Resolution_RESOLUTION_LINKED_FROM_INDEX, replaced, didReplace)
	if !didReplace {
		r = result(pb.Resolution_RESOLUTION_LINKED_FROM_INDEX, e.desc+": the source name did not hold the gfid; linked the new name from the index")
	}
	return r
}

// remove serves UNLINK and RMDIR: only while the name still holds the gfid.
func (b *Backend) remove(s *scope, e entry, rmdir bool) *pb.EntryResult {
	pd, err := b.resolveDir(s, e.p, 0)
	if errors.Is(err, unix.ENOENT) {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": parent directory is gone")
	}
	if err != nil {
		return errResult(e.desc, err)
	}
	cur, exists, err := lstatOpt(pd, e.name)
	if err != nil {
		return errResult(e.desc, err)
	}
	if !exists {
		return result(pb.Resolution_RESOLUTION_ALREADY_APPLIED, e.desc+": already gone")
	}
	xo, err := b.lookup(s, e.x)
	if err != nil {
		return errResult(e.desc, err)
	}
	if !b.holds(pd, e.name, cur, e.x, xo) {
		what := "an object without a gfid"
		if y, ok, _ := b.gfidAt(pd, e.name, cur); ok {
			what = "gfid " + y.String()
		}
		return result(pb.Resolution_RESOLUTION_GFID_MISMATCH_KEPT, e.desc+": the name now holds "+what+"; nothing removed")
	}
	isDirObj := cur.Mode&unix.S_IFMT == unix.S_IFDIR
	if !rmdir {
		if isDirObj {
			return errResult(e.desc, fmt.Errorf("%s is a directory: %w", e.x, unix.EISDIR))
		}
		if err := b.unlinkVerified(s, pd, e.name, cur, e.x); err != nil {
			return errResult(e.desc, err)
		}
		return result(pb.Resolution_RESOLUTION_UNSPECIFIED, "")
	}
	if !isDirObj {
		return errResult(e.desc, fmt.Errorf("%s is not a directory: %w", e.x, unix.ENOTDIR))
	}
	if _, err := b.toTrash(s, pd, e.name, cur); err != nil {
		return errResult(e.desc, err)
	}
	return result(pb.Resolution_RESOLUTION_UNSPECIFIED, "")
}
