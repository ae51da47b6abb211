package backend

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
)

// Removal is race-free: a name is first renamed into .georep/trash (where
// nothing else can touch it), then checked to be the inode we decided to
// remove; only then is it purged. Something else found there goes back.

// toTrash moves name in d, expected to be the inode of want, into the trash
// and returns its name there. The removal is purged when the entry ends
// (purgeVictims), so a directory moved out of it meanwhile survives.
func (b *Backend) toTrash(s *scope, d *dirfd.Dir, name string, want unix.Stat_t) (string, error) {
	t := tempName()
	if err := d.Rename(name, b.trash, t, dirfd.RenameNoReplace); err != nil {
		return "", fmt.Errorf("move %q to trash: %w", name, err)
	}
	st, err := b.trash.Lstat(t)
	if err != nil {
		return "", fmt.Errorf("check %q in trash: %w", name, err)
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		if err := b.trash.Rename(t, d, name, dirfd.RenameNoReplace); err != nil {
			b.log.Error("an object replaced during removal could not be put back; it stays in trash until the next open",
				"name", name, "trash", t, "err", err)
		}
		return "", fmt.Errorf("%q changed while being removed; nothing removed, retry: %w", name, unix.EAGAIN)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		// Cached fds of directories inside it would now point into trash.
		b.dirs.flush(s)
	}
	s.victims = append(s.victims, t)
	return t, nil
}

// purgeVictims purges what the current entry moved to trash.
func (b *Backend) purgeVictims(s *scope) {
	for _, t := range s.victims {
		if _, err := b.removeTree(s, b.trash, t); err != nil {
			b.log.Warn("purge of a removed object is incomplete; the next open finishes it", "trash", t, "err", err)
		}
	}
	s.victims = s.victims[:0]
}

// unlinkVerified removes non-directory name in d, but only the inode want
// (identity x): through the trash, free of the check-then-act race.
func (b *Backend) unlinkVerified(s *scope, d *dirfd.Dir, name string, want unix.Stat_t, x gfid.GFID) error {
	t, err := b.toTrash(s, d, name, want)
	if err != nil {
		return err
	}
	s.victims = s.victims[:len(s.victims)-1]
	if _, err = b.removeTree(s, b.trash, t); err != nil {
		return err
	}
	// removeTree cannot read an identity off every type (user.* on a
	// symlink); we know it here.
	b.dropIndexIfOrphan(s, x, want.Ino)
	return nil
}

// removeTree removes name in d and everything beneath it, fd-relative and
// never following a symlink, and drops the index entries of what it
// removed. It returns how many objects went.
func (b *Backend) removeTree(s *scope, d *dirfd.Dir, name string) (uint64, error) {
	st, err := d.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		var g gfid.GFID
		var hasG bool
		if st.Nlink >= 2 { // only then can an index link remain
			g, hasG, _ = b.gfidAt(d, name, st)
		}
		if err := d.Unlink(name); err != nil && !errors.Is(err, unix.ENOENT) {
			return 0, err
		}
		if hasG {
			b.dropIndexIfOrphan(s, g, st.Ino)
		}
		return 1, nil
	}
	sub, err := d.OpenDir(name)
	if err != nil {
		return 0, err
	}
	var g gfid.GFID
	hasG := false
	if v, err := sub.GetXattrSelf(b.gfidAttr); err == nil && len(v) == gfid.Size {
		g, hasG = gfid.GFID(v), true
	}
	n, err := b.emptyDir(s, sub)
	sub.Close()
	if err != nil {
		return n, err
	}
	if err := d.Rmdir(name); err != nil && !errors.Is(err, unix.ENOENT) {
		return n, err
	}
	if hasG {
		b.dropDirIndex(s, g)
	}
	return n + 1, nil
}

// emptyDir removes every child of d.
func (b *Backend) emptyDir(s *scope, d *dirfd.Dir) (uint64, error) {
	names, err := d.ReadDirNames()
	if err != nil {
		return 0, err
	}
	var total uint64
	var errs []error
	for _, n := range names {
		c, err := b.removeTree(s, d, n)
		total += c
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// purge force-removes children of parent whatever their identities.
func (b *Backend) purge(ctx context.Context, s *scope, parent gfid.GFID, raw [][]byte) (uint64, error) {
	pd, err := b.resolveDir(s, parent, 0)
	if err != nil {
		return 0, fmt.Errorf("purge in %s: directory not found: %w", parent, err)
	}
	var names []string
	if len(raw) == 0 {
		if names, err = pd.ReadDirNames(); err != nil {
			return 0, fmt.Errorf("purge in %s: %w", parent, err)
		}
		sort.Strings(names)
	}
	for _, r := range raw {
		if err := dirfd.ValidName(r); err != nil {
			return 0, fmt.Errorf("purge in %s: %w", parent, err)
		}
		if parent == gfid.Root && string(r) == ReservedDir {
			return 0, fmt.Errorf("purge in %s: %q is a reserved name: %w", parent, r, unix.EPERM)
		}
		names = append(names, string(r))
	}
	var total uint64
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("purge in %s stopped after %d objects: %w", parent, total, err)
		}
		if parent == gfid.Root && n == ReservedDir {
			continue
		}
		st, err := pd.Lstat(n)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return total, fmt.Errorf("purge %q in %s: %w", n, parent, err)
		}
		if _, err := b.toTrash(s, pd, n, st); err != nil {
			return total, fmt.Errorf("purge %q in %s: %w", n, parent, err)
		}
		for _, t := range s.victims {
			c, err := b.removeTree(s, b.trash, t)
			total += c
			if err != nil {
				s.victims = s.victims[:0]
				return total, fmt.Errorf("purge %q in %s: %w", n, parent, err)
			}
		}
		s.victims = s.victims[:0]
	}
	return total, nil
}
