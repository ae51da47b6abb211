package backend

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// replicatedXattrPrefix is the only namespace meta ops may touch.
const replicatedXattrPrefix = "user."

// reservedXattrPrefix is where an unprivileged backend keeps identities and
// marks; the wire may neither set nor remove them.
const reservedXattrPrefix = "user.georep."

// xattrNameMax is XATTR_NAME_MAX.
const xattrNameMax = 255

func validXattrName(n string) error {
	switch {
	case !strings.HasPrefix(n, replicatedXattrPrefix) || len(n) == len(replicatedXattrPrefix):
		return fmt.Errorf("xattr %q: only user.* attributes are replicated: %w", n, unix.EINVAL)
	case strings.HasPrefix(n, reservedXattrPrefix):
		return fmt.Errorf("xattr %q: user.georep.* is reserved for the slave: %w", n, unix.EPERM)
	case len(n) > xattrNameMax:
		return fmt.Errorf("xattr name of %d bytes exceeds %d: %w", len(n), xattrNameMax, unix.EINVAL)
	case strings.IndexByte(n, 0) >= 0:
		return fmt.Errorf("xattr name %q contains NUL: %w", n, unix.EINVAL)
	}
	return nil
}

func validateMeta(e *pb.MetaEntry) (gfid.GFID, error) {
	g, err := gfid.FromBytes(e.GetGfid())
	if err != nil {
		return g, fmt.Errorf("gfid: %v: %w", err, unix.EINVAL)
	}
	if err := validTimes(e.GetAtime(), e.GetMtime()); err != nil {
		return g, err
	}
	for _, x := range e.GetSetXattrs() {
		if err := validXattrName(x.GetName()); err != nil {
			return g, err
		}
		if len(x.GetValue()) > dirfd.XattrSizeMax {
			return g, fmt.Errorf("xattr %q: value of %d bytes exceeds %d: %w", x.GetName(), len(x.GetValue()), dirfd.XattrSizeMax, unix.E2BIG)
		}
	}
	for _, n := range e.GetRemoveXattrs() {
		if err := validXattrName(n); err != nil {
			return g, err
		}
	}
	return g, nil
}

func (b *Backend) applyMeta(e *pb.MetaEntry) *pb.EntryResult {
	desc := "META gfid=" + gfidText(e.GetGfid())
	g, err := validateMeta(e)
	if err != nil {
		return errResult(desc, err)
	}
	s, err := b.lock()
	if err != nil {
		return errResult(desc, err)
	}
	defer b.unlock(s)
	n, err := b.node(s, g)
	if err != nil {
		return errResult(desc, err)
	}
	if err := b.meta(n, e); err != nil {
		b.log.Debug("meta op failed", "gfid", g, "err", err)
		return errResult(desc, err)
	}
	return result(pb.Resolution_RESOLUTION_UNSPECIFIED, "")
}

// meta applies e to n: owner first (chown clears set-id bits), then mode,
// xattrs, and times last.
func (b *Backend) meta(n node, e *pb.MetaEntry) error {
	if e.Uid != nil || e.Gid != nil {
		uid, gid := -1, -1
		if e.Uid != nil {
			uid = int(e.GetUid())
		}
		if e.Gid != nil {
			gid = int(e.GetGid())
		}
		same := (uid < 0 || uint32(uid) == n.st.Uid) && (gid < 0 || uint32(gid) == n.st.Gid)
		// Unprivileged, only a no-op chown is possible; skip it.
		if b.canChown || !same {
			if err := n.chown(uid, gid); err != nil {
				return fmt.Errorf("set owner %d:%d: %w", uid, gid, err)
			}
		}
	}
	if e.Mode != nil && !n.isSymlink() {
		// Only permission bits: a master may send a whole st_mode.
		if err := n.chmod(e.GetMode() & 0o7777); err != nil {
			return fmt.Errorf("set mode %#o: %w", e.GetMode(), err)
		}
	}
	if err := b.metaXattrs(n, e); err != nil {
		return err
	}
	if times, set := timespecs(e.GetAtime(), e.GetMtime()); set {
		if err := n.utimes(times[0], times[1]); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

func (b *Backend) metaXattrs(n node, e *pb.MetaEntry) error {
	if e.GetReplaceXattrs() {
		keep := make(map[string]bool, len(e.GetSetXattrs()))
		for _, x := range e.GetSetXattrs() {
			keep[x.GetName()] = true
		}
		names, err := n.listXattr()
		if err != nil {
			return fmt.Errorf("list xattrs: %w", err)
		}
		for _, name := range names {
			if !strings.HasPrefix(name, replicatedXattrPrefix) || strings.HasPrefix(name, reservedXattrPrefix) || keep[name] {
				continue
			}
			if err := n.removeXattr(name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("remove xattr %q: %w", name, err)
			}
		}
	}
	for _, x := range e.GetSetXattrs() {
		if err := n.setXattr(x.GetName(), x.GetValue()); err != nil {
			return fmt.Errorf("set xattr %q: %w", x.GetName(), err)
		}
	}
	for _, name := range e.GetRemoveXattrs() {
		if err := n.removeXattr(name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("remove xattr %q: %w", name, err)
		}
	}
	return nil
}
