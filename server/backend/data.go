package backend

// The data plane's slave side: new content for a regular file, addressed by
// GFID, is written into a temp (for a new file an unnamed O_TMPFILE inode
// in its parent directory, otherwise a file in .georep/tmp), hashed as it
// arrives, verified and flushed, and only then put in place. Until the install step nothing the
// replica shows has changed, so a broken stream, a digest mismatch or a full
// disk leaves the previous content intact.

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"os"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

const (
	// DigestSize is the length of the default content digest (BLAKE3-256,
	// PutHeader.Digest unset); see digest.Size for the others.
	DigestSize = 32
	// MaxChunk is the largest piece of content one WriteAt accepts.
	MaxChunk = 1 << 20
	// zeroBlock is how much of a hole is hashed at a time.
	zeroBlock = 64 << 10
	// createCheckMin is the smallest new file checked for a name or GFID
	// clash before its content is received (see BeginPut).
	createCheckMin = 1 << 20
)

// PutHeader describes the new content of a regular file.
type PutHeader struct {
	// GFID names the file; it must exist in the replica.
	GFID gfid.GFID
	// Size is the length of the new content; what WriteAt leaves unwritten
	// is a hole.
	Size int64
	// LinkParent and LinkName, when LinkName is set, are one of the file's
	// names: a hint that lets the content be renamed into place atomically.
	LinkParent gfid.GFID
	LinkName   string
	// Stat carries permission bits, owner and times to apply after the
	// content; nil keeps the file's own.
	Stat *pb.Stat
	// Delta opens the file's current content, so CopyAt can take unchanged
	// pieces from it.
	Delta bool
	// Create makes a new file: no file with GFID exists yet, and the
	// verified content, with Stat (required) and its identity, is put at
	// LinkParent/LinkName (required) with RENAME_NOREPLACE, then indexed.
	// The name taken, or GFID present elsewhere: EEXIST; no parent:
	// ENOENT. When the name already holds GFID (a repeated create), the
	// content is installed over it as for a hinted put.
	Create bool
	// Digest is the hash Verify's digest is made with; the zero value is
	// BLAKE3-256. One this build does not know: EINVAL.
	Digest pb.ContentDigest
}

// Install says how Commit put new content in place.
type Install int

const (
	// InstallNone: nothing was installed.
	InstallNone Install = iota
	// InstallRenamed: a new inode (the verified temp) was renamed over the
	// hinted name and the GFID index re-pointed to it.
	InstallRenamed
	// InstallInPlace: the content was copied into the existing inode through
	// the GFID index, so every hard link sees it and the inode is kept.
	InstallInPlace
	// InstallCreated: the file was new; the verified temp was put at its
	// name and indexed.
	InstallCreated
)

func (i Install) String() string {
	switch i {
	case InstallRenamed:
		return "renamed"
	case InstallInPlace:
		return "in place"
	case InstallCreated:
		return "created"
	}
	return "none"
}

// FileWriter receives one file's new content. WriteAt calls come with
// increasing offsets; Commit verifies and installs; Abort (always safe to
// call, also after Commit) discards the temp. A FileWriter is used by one
// goroutine.
type FileWriter struct {
	b       *Backend
	h       PutHeader
	f       *os.File // the temp, O_RDWR
	tmpName string
	hash    hash.Hash // of h.Digest
	zeros   []byte
	pos     int64 // end of the content hashed so far
	kicked  int64 // end of the content whose writeback was started
	written int64
	done    bool
	// verified: the digest matched; synced: SyncPuts flushed the temp.
	verified, synced bool
	// renamed: the temp's name is gone (renamed into place).
	renamed bool
	// old is the file's previous content (Delta only), read-only.
	old *os.File

	// installHook, set by tests, runs at named install steps; an error
	// makes that step fail.
	installHook func(step string) error
}

// validatePut checks a header from the wire.
func validatePut(h PutHeader) error {
	if h.Size < 0 {
		return fmt.Errorf("size %d is negative: %w", h.Size, unix.EINVAL)
	}
	if h.LinkName != "" {
		if err := dirfd.ValidName(h.LinkName); err != nil {
			return fmt.Errorf("link name: %w", err)
		}
	}
	if h.GFID == gfid.Root {
		return fmt.Errorf("the root is a directory: %w", unix.EISDIR)
	}
	if !digest.Known(h.Digest) {
		return fmt.Errorf("%s: the master asks for a digest this slave does not verify (it offers those of its Handshake): %w",
			digest.Name(h.Digest), unix.EINVAL)
	}
	if h.Create {
		// As a CREATE entry op checks its name and stat.
		switch {
		case h.LinkName == "":
			return fmt.Errorf("create needs a parent and a name: %w", unix.EINVAL)
		case h.LinkParent == gfid.Root && h.LinkName == ReservedDir:
			return fmt.Errorf("%q is a reserved name: %w", ReservedDir, unix.EPERM)
		case h.Stat == nil:
			return fmt.Errorf("create needs a stat (mode, owner, times): %w", unix.EINVAL)
		case h.Delta:
			return fmt.Errorf("a new file has no previous content to copy from: %w", unix.EINVAL)
		}
		if mode := h.Stat.GetMode() & unix.S_IFMT; mode != 0 && mode != unix.S_IFREG {
			return fmt.Errorf("create with file type %#o, want a regular file: %w", mode, unix.EINVAL)
		}
	}
	return validTimes(h.Stat.GetAtime(), h.Stat.GetMtime())
}

// BeginPut starts receiving new content for the regular file h.GFID: it
// checks the file exists and creates the temp (sized to h.Size, all hole).
// GFID absent: ENOENT; a directory: EISDIR; another non-regular file: EINVAL.
func (b *Backend) BeginPut(h PutHeader) (*FileWriter, error) {
	if err := validatePut(h); err != nil {
		return nil, fmt.Errorf("put content of %s: %w", h.GFID, err)
	}
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	var pd *dirfd.Dir // a create's parent directory
	var o object      // the file's index entry (not looked up for a small create)
	if h.Create {
		if pd, err = b.parentDir(s, h.LinkParent, "parent directory"); err != nil {
			return nil, fmt.Errorf("create %s: %w", h.GFID, err)
		}
		// Checked again at install, where a clash fails the file anyway;
		// refusing here spares receiving a big file that cannot go
		// anywhere, at the price of two lookups a small file need not pay.
		if h.Size >= createCheckMin {
			o, err := b.lookup(s, h.GFID)
			if err != nil {
				return nil, fmt.Errorf("put content of %s: %w", h.GFID, err)
			}
			if err := b.checkCreate(s, h, o); err != nil {
				return nil, fmt.Errorf("create %s: %w", h.GFID, err)
			}
		}
	} else {
		if o, err = b.lookup(s, h.GFID); err != nil {
			return nil, fmt.Errorf("put content of %s: %w", h.GFID, err)
		}
		if o.kind == absent && h.LinkName != "" {
			// Possibly a crash between placing and indexing; Commit heals
			// the index under the write lock if the hinted name holds it.
			if ok, err := b.hintHolds(s, h); err != nil || !ok {
				return nil, fmt.Errorf("put content of %s: no file with this gfid on the slave (create it first): %w", h.GFID, unix.ENOENT)
			}
		} else if err := checkRegular(h.GFID, o); err != nil {
			return nil, fmt.Errorf("put content of %s: %w", h.GFID, err)
		}
	}
	hasher, err := digest.New(h.Digest)
	if err != nil { // validatePut let only known digests through
		return nil, fmt.Errorf("put content of %s: %v: %w", h.GFID, err, unix.EINVAL)
	}
	w := &FileWriter{b: b, h: h, hash: hasher}
	if pd != nil {
		w.f = b.unnamedTemp(pd)
	}
	if w.f == nil {
		w.tmpName = tempName()
		f, err := b.tmp.OpenFile(w.tmpName, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("put content of %s: create temp in %s/%s: %w", h.GFID, ReservedDir, tmpDirName, err)
		}
		w.f = f
	}
	f := w.f
	successful := false
	if h.Delta {
		// Opened now, under the lock that found the index entry: every copy
		// reads this one inode, whatever renames happen meanwhile.
		if w.old, err = openIndexed(o, h.GFID); err != nil {
			w.discard()
			return nil, fmt.Errorf("put content of %s: open previous content to copy from: %w", h.GFID, err)
		}
	}
	defer func() {
		if !successful {
			w.discard()
		}
	}()
	// The identity goes on first, so it is flushed with the content. The
	// size is set by Verify, and only when the writes fall short of it.
	if err := unix.Fsetxattr(int(f.Fd()), b.gfidAttr, h.GFID[:], 0); err != nil {
		return nil, fmt.Errorf("put content of %s: give temp its gfid: %w", h.GFID, err)
	}
	successful = true
	return w, nil
}

// aclDefault is the xattr of a directory's default ACL.
const aclDefault = "system.posix_acl_default"

// unnamedTemp opens a new file's temp without a name (O_TMPFILE) in its
// parent directory pd, or returns nil where that cannot be done. In pd its
// inode is allocated beside its siblings, as a file created there would
// be, instead of every stream's temps crowding .georep/tmp (one ext4 block
// group, one directory lock), and install is a link where a named temp
// takes a rename out of .georep/tmp. A directory with a default ACL gets
// the named temp: an unnamed file would inherit the ACL, which a file made
// in .georep/tmp (as the CREATE entry op makes them) does not.
func (b *Backend) unnamedTemp(pd *dirfd.Dir) *os.File {
	if !b.tmpfile {
		return nil
	}
	if n, err := unix.Fgetxattr(pd.Fd(), aclDefault, nil); err == nil && n > 0 {
		return nil
	}
	f, err := pd.OpenTmpfile(0o600)
	if err != nil {
		return nil // the named temp still works; the probe at Open said it should not come to this
	}
	return f
}

// checkRegular refuses an absent GFID, a directory or a non-regular file.
func checkRegular(g gfid.GFID, o object) error {
	switch {
	case o.kind == absent:
		return fmt.Errorf("no file with this gfid on the slave (create it first): %w", unix.ENOENT)
	case o.kind == isDir:
		return fmt.Errorf("%s is a directory, not a regular file: %w", g, unix.EISDIR)
	case o.st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file (mode %#o): %w", g, o.st.Mode, unix.EINVAL)
	}
	return nil
}

// checkCreate refuses a create whose parent is missing (ENOENT) or whose
// GFID (found as o) exists but not at the name (EEXIST).
func (b *Backend) checkCreate(s *scope, h PutHeader, o object) error {
	pd, err := b.parentDir(s, h.LinkParent, "parent directory")
	if err != nil {
		return err
	}
	if o.kind == absent {
		return nil
	}
	cur, exists, err := lstatOpt(pd, h.LinkName)
	if err != nil {
		return err
	}
	if exists && b.holds(pd, h.LinkName, cur, h.GFID, o) {
		return checkRegular(h.GFID, o)
	}
	return fmt.Errorf("the gfid already exists under another name on the slave: %w", unix.EEXIST)
}

// hintHolds reports whether the hinted name is a regular file carrying h.GFID.
func (b *Backend) hintHolds(s *scope, h PutHeader) (bool, error) {
	pd, err := b.resolveDir(s, h.LinkParent, 0)
	if err != nil {
		return false, err
	}
	cur, exists, err := lstatOpt(pd, h.LinkName)
	if err != nil || !exists || cur.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, err
	}
	g, ok, err := b.gfidAt(pd, h.LinkName, cur)
	return ok && g == h.GFID, err
}

// Written returns how many bytes of content WriteAt has written.
func (w *FileWriter) Written() int64 { return w.written }

// WriteAt writes p at off. Offsets must not go back; the gap since the
// previous write is a hole (hashed as zeros).
func (w *FileWriter) WriteAt(p []byte, off int64) error {
	switch {
	case w.done || w.verified:
		return fmt.Errorf("content of %s: write after verify, commit or abort: %w", w.h.GFID, unix.EINVAL)
	case len(p) > MaxChunk:
		return fmt.Errorf("content of %s: chunk of %d bytes exceeds %d: %w", w.h.GFID, len(p), MaxChunk, unix.EINVAL)
	case off < w.pos:
		return fmt.Errorf("content of %s: chunk at offset %d goes back before %d: %w", w.h.GFID, off, w.pos, unix.EINVAL)
	case off > w.h.Size || int64(len(p)) > w.h.Size-off:
		return fmt.Errorf("content of %s: chunk [%d, %d) extends past the size %d: %w",
			w.h.GFID, off, off+int64(len(p)), w.h.Size, unix.EINVAL)
	}
	w.hashZeros(off)
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(int(w.f.Fd()), p[done:], off+int64(done))
		if err != nil {
			return fmt.Errorf("content of %s: write temp at offset %d: %w", w.h.GFID, off+int64(done), err)
		}
		done += n
	}
	w.hash.Write(p)
	w.pos = off + int64(len(p))
	w.written += int64(len(p))
	w.startWriteback()
	return nil
}

// writebackMin is how much written content of a temp waits before its
// writeback is started.
const writebackMin = 4 << 20

// startWriteback starts writing the temp's content received since the
// last call out to disk, once there is writebackMin of it, without
// waiting: the flush before install (SyncPuts) then finds most of a big
// file's pages written or in flight instead of starting them all. Small
// files never reach it; their flush is one syncfs for many anyway. It is
// only a hint: a failure shows at the flush.
func (w *FileWriter) startWriteback() {
	if w.pos-w.kicked < writebackMin {
		return
	}
	_ = unix.SyncFileRange(int(w.f.Fd()), w.kicked, w.pos-w.kicked, unix.SYNC_FILE_RANGE_WRITE)
	w.kicked = w.pos
}

// hashZeros hashes the hole from w.pos to end.
func (w *FileWriter) hashZeros(end int64) {
	for w.pos < end {
		if w.zeros == nil {
			w.zeros = make([]byte, zeroBlock)
		}
		n := min(end-w.pos, int64(len(w.zeros)))
		w.hash.Write(w.zeros[:n])
		w.pos += n
	}
}

// Commit verifies digest against the content received, flushes the temp to
// disk and installs it (see Install). On any error the previous content is
// intact. The temp is gone afterwards either way. It is Verify, SyncPuts of
// this one file and Install; a stream of many files batches the middle step.
func (w *FileWriter) Commit(digest []byte) (Install, error) {
	if err := w.Verify(digest); err != nil {
		return InstallNone, err
	}
	if err := w.b.SyncPuts([]*FileWriter{w}); err != nil {
		w.discard()
		return InstallNone, err
	}
	return w.Install()
}

// Verify checks want, a digest of the header's kind (PutHeader.Digest),
// against the content received. On a mismatch, or a digest of the wrong
// length, the temp is discarded (EBADMSG). A verified file waits for
// SyncPuts, then Install.
func (w *FileWriter) Verify(want []byte) error {
	if w.done || w.verified {
		return fmt.Errorf("content of %s: verify after commit, abort or verify: %w", w.h.GFID, unix.EINVAL)
	}
	end := w.pos // the temp's size: writes and copies only go forward
	w.hashZeros(w.h.Size)
	var buf [digest.MaxSize]byte
	if sum := w.hash.Sum(buf[:0]); len(want) != len(sum) || !bytes.Equal(sum, want) {
		w.discard()
		if len(want) != len(sum) {
			return fmt.Errorf("content of %s: the trailer's %s digest has %d bytes, want %d (a master bug?); previous content kept: %w",
				w.h.GFID, digest.Name(w.h.Digest), len(want), len(sum), unix.EBADMSG)
		}
		return fmt.Errorf("content of %s: %s digest mismatch (received %x, sender says %x): the content was damaged in transit; previous content kept: %w",
			w.h.GFID, digest.Name(w.h.Digest), sum, want, unix.EBADMSG)
	}
	// ftruncate, not writes of zeros: a tail no chunk covered stays a
	// hole. Not needed (a syscall per file saved) when the writes reached
	// the size, as a dense file's always do.
	if end < w.h.Size {
		if err := w.f.Truncate(w.h.Size); err != nil {
			w.discard()
			return fmt.Errorf("content of %s: size temp to %d bytes: %w", w.h.GFID, w.h.Size, err)
		}
	}
	if w.h.Create {
		// Now, after the last write moved the mtime, and before the flush,
		// so the new file's attributes are on disk with its content.
		if err := w.b.applyPutStat(int(w.f.Fd()), w.h.Stat, unix.Stat_t{}); err != nil {
			w.discard()
			return fmt.Errorf("create %s: %w", w.h.GFID, err)
		}
	}
	w.verified = true
	return nil
}

// syncfsMin is the smallest batch flushed with one syncfs: below it, an
// fsync per temp touches less of a filesystem other writers share.
const syncfsMin = 4

// SyncPuts makes the verified temps of ws durable, so that none is put in
// place before its content is on disk: a crash never shows a name with
// content that was not flushed. A batch takes one syncfs of the slave's
// filesystem (one journal commit for all of them) instead of an fsync
// each. On error nothing was installed and every temp of ws is discarded.
func (b *Backend) SyncPuts(ws []*FileWriter) error {
	for _, w := range ws {
		if w.done || !w.verified {
			return fmt.Errorf("content of %s: flush of a temp that is not verified: %w", w.h.GFID, unix.EINVAL)
		}
	}
	err := func() error {
		if len(ws) >= syncfsMin {
			// Through the batch's own temp, not the backend's tmp fd: no
			// backend lock is held across a flush that can take seconds
			// (installs and entry ops of every stream would wait), and the
			// writeback errors syncfs reports are counted per open file, so
			// a flush through a shared fd could be told of another batch's
			// failure while the batch it hit saw none. A file reports the
			// errors since its open and any not yet reported to anyone.
			if err := unix.Syncfs(int(ws[0].f.Fd())); err != nil {
				return fmt.Errorf("flush %d received files to disk: %w", len(ws), err)
			}
			return nil
		}
		for _, w := range ws {
			if err := w.f.Sync(); err != nil {
				return fmt.Errorf("content of %s: flush temp: %w", w.h.GFID, err)
			}
		}
		return nil
	}()
	for _, w := range ws {
		if err == nil {
			err = w.hook("sync")
		}
	}
	if err != nil {
		for _, w := range ws {
			w.discard()
		}
		return err
	}
	for _, w := range ws {
		w.synced = true
	}
	return nil
}

// Install puts a verified temp that SyncPuts made durable in place (see
// the Install values). On any error the previous content is intact. The
// temp is gone afterwards either way. It is not fenced: a slave serving a
// master's connections installs with InstallAll.
func (w *FileWriter) Install() (Install, error) {
	if err := w.installable(); err != nil {
		return InstallNone, fmt.Errorf("install content of %s: %w", w.h.GFID, err)
	}
	defer w.discard()
	s, err := w.b.lock()
	if err != nil {
		return InstallNone, err
	}
	defer w.b.unlock(s)
	how, err := w.install(s)
	if err != nil {
		return InstallNone, fmt.Errorf("install content of %s: %w", w.h.GFID, err)
	}
	return how, nil
}

// InstallAll installs ws, each verified and flushed by SyncPuts, in order,
// as Install would one by one, but under one hold of the write lock: a
// group commit of small files would otherwise take and release it, and
// wake whoever waits for it, once per file. errs[i] is ws[i]'s failure;
// every temp is gone afterwards. The installs are fenced with session
// (see fence): once a newer connection has claimed the root, every file
// fails with ESTALE and no name changes.
func (b *Backend) InstallAll(ws []*FileWriter, session []byte) (errs []error) {
	_, errs = b.installAll(ws, session)
	for i, err := range errs {
		if err != nil {
			errs[i] = fmt.Errorf("install content of %s: %w", ws[i].h.GFID, err)
		}
	}
	return errs
}

// installAll is InstallAll, also saying how each file was installed; its
// errors do not name the file.
func (b *Backend) installAll(ws []*FileWriter, session []byte) (hows []Install, errs []error) {
	hows, errs = make([]Install, len(ws)), make([]error, len(ws))
	for i, w := range ws {
		errs[i] = w.installable()
	}
	s, err := b.lock()
	var release func()
	if err == nil {
		if release, err = b.fence(session); err != nil {
			b.unlock(s)
		}
	}
	if err != nil {
		for i, w := range ws {
			if errs[i] == nil {
				errs[i] = err
			}
			w.discard()
		}
		return hows, errs
	}
	for i, w := range ws {
		if errs[i] != nil {
			continue
		}
		hows[i], errs[i] = w.install(s)
		w.release(s)
	}
	release()
	b.unlock(s)
	for _, w := range ws {
		w.discard() // those refused before the lock
	}
	return hows, errs
}

// installable refuses a temp that is not verified and flushed, or is gone.
func (w *FileWriter) installable() error {
	if w.done || !w.synced {
		return fmt.Errorf("a temp that is not verified and flushed: %w", unix.EINVAL)
	}
	return nil
}

// Abort discards the temp; the file keeps its previous content.
func (w *FileWriter) Abort() { w.discard() }

func (w *FileWriter) discard() {
	if w.done {
		return
	}
	if !w.close() {
		return
	}
	// Under the lock, so a closed backend's tmp fd is never used.
	s, err := w.b.rlock()
	if err != nil {
		return // closed: the next Open clears tmp
	}
	defer w.b.runlock(s)
	w.unlinkTemp()
}

// release is discard for a caller holding the backend's lock (s).
func (w *FileWriter) release(s *scope) {
	if !w.done && w.close() {
		w.unlinkTemp()
	}
}

// close closes the temp and the previous content and reports whether the
// temp still has a name in .georep/tmp to remove.
func (w *FileWriter) close() (named bool) {
	w.done = true
	w.f.Close()
	if w.old != nil {
		w.old.Close()
	}
	// Placed, or unnamed (closing it freed it): nothing to remove.
	return !w.renamed && w.tmpName != ""
}

func (w *FileWriter) unlinkTemp() {
	if err := w.b.tmp.Unlink(w.tmpName); err != nil && !errors.Is(err, unix.ENOENT) {
		w.b.log.Warn("cannot remove a data temp; the next open removes it", "tmp", w.tmpName, "err", err)
	}
}

func (w *FileWriter) hook(step string) error {
	if w.installHook == nil {
		return nil
	}
	return w.installHook(step)
}

// install puts the verified temp in place under the write lock.
func (w *FileWriter) install(s *scope) (Install, error) {
	b, g := w.b, w.h.GFID
	if w.h.Create {
		if done, err := w.createInstall(s); err != nil {
			return InstallNone, err
		} else if done {
			return InstallCreated, nil
		}
		// The name already holds the file: a repeated create, installed
		// over it as a hinted put (which also heals a lost index link).
	}
	o, err := b.lookup(s, g)
	if err != nil {
		return InstallNone, err
	}
	var pd *dirfd.Dir
	var cur unix.Stat_t
	hinted := false
	if w.h.LinkName != "" {
		if d, err := b.resolveDir(s, w.h.LinkParent, 0); err == nil {
			if st, exists, err := lstatOpt(d, w.h.LinkName); err == nil && exists {
				pd, cur, hinted = d, st, true
			}
		}
	}
	if o.kind == absent && hinted && cur.Mode&unix.S_IFMT == unix.S_IFREG {
		// The name carries the identity but the index lost it (a crash
		// between placing and indexing): repair, as CREATE does.
		if h, ok, _ := b.gfidAt(pd, w.h.LinkName, cur); ok && h == g {
			if err := b.linkIndex(s, g, pd, w.h.LinkName); err != nil {
				return InstallNone, err
			}
			if o, err = b.lookup(s, g); err != nil {
				return InstallNone, err
			}
		}
	}
	if err := checkRegular(g, o); err != nil {
		return InstallNone, err
	}
	// Atomic replacement is only right when the hinted name is the only
	// name: other hard links must see the new content too.
	if hinted && cur.Dev == o.st.Dev && cur.Ino == o.st.Ino && o.st.Nlink == 2 {
		done, err := w.renameInstall(s, o, pd)
		if done || err != nil {
			return InstallRenamed, err
		}
	}
	return InstallInPlace, w.inPlaceInstall(o)
}

// createInstall puts the temp of a new file at its name: indexed first, so
// a crash before the rename leaves only an index link the next lookup
// drops, then renamed with RENAME_NOREPLACE, so nothing at the name is ever
// replaced. done is false (with no error) when the name already holds the
// file.
func (w *FileWriter) createInstall(s *scope) (done bool, err error) {
	b, g, name := w.b, w.h.GFID, w.h.LinkName
	pd, err := b.parentDir(s, w.h.LinkParent, "parent directory")
	if err != nil {
		return false, err
	}
	if done, err := w.createFast(s, pd); done || err != nil {
		return done, err
	}
	// The GFID or the name is taken: find out which and how.
	if err := w.name(); err != nil {
		return false, err
	}
	o, err := b.lookup(s, g)
	if err != nil {
		return false, err
	}
	cur, exists, err := lstatOpt(pd, name)
	if err != nil {
		return false, err
	}
	switch {
	case exists && b.holds(pd, name, cur, g, o):
		return false, nil
	case o.kind != absent:
		return false, fmt.Errorf("the gfid already exists under another name on the slave: %w", unix.EEXIST)
	case exists:
		what := "an object without a gfid"
		if y, ok, _ := b.gfidAt(pd, name, cur); ok {
			what = "gfid " + y.String()
		}
		return false, fmt.Errorf("the name %q is taken by %s: %w", name, what, unix.EEXIST)
	}
	// Both free after all: the index held a stale entry, which linkIndex
	// replaces (the temp has a name by now).
	if err := b.linkIndex(s, g, b.tmp, w.tmpName); err != nil {
		return false, err
	}
	bd, err := b.bucket(s, g, false)
	if err != nil {
		return false, err
	}
	if taken, err := w.placeNew(pd, bd); taken {
		return false, fmt.Errorf("put new file at %q: %w", name, unix.EEXIST)
	} else if err != nil {
		return false, err
	}
	return true, nil
}

// createFast indexes the new file and links it at its name with no lookup
// first: on an empty name and an unknown GFID, the common case, each step
// is one system call. It returns false, with nothing changed, when the
// GFID's index entry or the name exists (EEXIST from the kernel); the
// caller then looks closer.
func (w *FileWriter) createFast(s *scope, pd *dirfd.Dir) (done bool, err error) {
	g := w.h.GFID
	bd, err := w.b.bucket(s, g, true)
	if err != nil {
		return false, fmt.Errorf("index %s: %w", g, err)
	}
	if err := w.linkTo(bd, g.String()); errors.Is(err, unix.EEXIST) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("index %s: %w", g, err)
	}
	taken, err := w.placeNew(pd, bd)
	return !taken && err == nil, err
}

// placeNew puts the temp, already indexed in bucket bd, at its name in pd
// after the "create" test hook: an unnamed temp is linked there, a named
// one renamed; either way the kernel refuses a taken name (taken), never
// replacing it. On any failure the index link is removed again, the temp
// given a name in .georep/tmp first (an unnamed file whose links all went
// cannot be linked again), so the caller may still look closer.
func (w *FileWriter) placeNew(pd, bd *dirfd.Dir) (taken bool, err error) {
	b, g, name := w.b, w.h.GFID, w.h.LinkName
	unindex := func() {
		if err := bd.Unlink(g.String()); err != nil && !errors.Is(err, unix.ENOENT) {
			b.log.Warn("cannot remove the index link of a file not created; the next lookup drops it", "gfid", g, "err", err)
		}
	}
	if err := w.hook("create"); err != nil {
		unindex()
		return false, err
	}
	if w.tmpName == "" {
		err = pd.LinkFile(w.f, name)
	} else {
		err = b.tmp.Rename(w.tmpName, pd, name, dirfd.RenameNoReplace)
	}
	if err != nil {
		nerr := w.name()
		unindex()
		if errors.Is(err, unix.EEXIST) {
			return true, nerr
		}
		return false, fmt.Errorf("put new file at %q: %w", name, err)
	}
	w.renamed = true
	return false, nil
}

// linkTo gives the temp another name, newName in d.
func (w *FileWriter) linkTo(d *dirfd.Dir, newName string) error {
	if w.tmpName == "" {
		return d.LinkFile(w.f, newName)
	}
	return w.b.tmp.Link(w.tmpName, d, newName)
}

// name gives an unnamed temp a name in .georep/tmp, for the install
// steps that rename it (a repeated create, a replaced file).
func (w *FileWriter) name() error {
	if w.tmpName != "" {
		return nil
	}
	n := tempName()
	if err := w.b.tmp.LinkFile(w.f, n); err != nil {
		return fmt.Errorf("name the temp in %s/%s: %w", ReservedDir, tmpDirName, err)
	}
	w.tmpName = n
	return nil
}

func (w *FileWriter) renameInstall(s *scope, o object, pd *dirfd.Dir) (done bool, err error) {
	b, g := w.b, w.h.GFID
	if err := w.name(); err != nil {
		return false, err
	}
	fd := int(w.f.Fd())
	if err := b.copyXattrs(o.bucket, g.String(), fd); err != nil {
		b.log.Debug("cannot carry extended attributes to new content; writing in place", "gfid", g, "err", err)
		return false, nil
	}
	if err := b.applyPutStat(fd, w.h.Stat, o.st); err != nil {
		return false, err
	}
	if err := w.hook("rename"); err != nil {
		return false, err
	}
	// The new inode gets its index link first, at a side name: if the
	// rename over the name fails, nothing visible has changed.
	side := "." + tempName()
	if err := b.tmp.Link(w.tmpName, o.bucket, side); err != nil {
		return false, fmt.Errorf("link new content into the index: %w", err)
	}
	if err := b.tmp.Rename(w.tmpName, pd, w.h.LinkName, dirfd.RenameReplace); err != nil {
		o.bucket.Unlink(side)
		return false, fmt.Errorf("rename new content over %q: %w", w.h.LinkName, err)
	}
	w.renamed = true
	if err := o.bucket.Rename(side, o.bucket, g.String(), dirfd.RenameReplace); err != nil {
		o.bucket.Unlink(side)
		// The name holds the new content; a plain link repairs the index.
		if lerr := b.linkIndex(s, g, pd, w.h.LinkName); lerr != nil {
			return true, fmt.Errorf("re-point the index to new content: %w (repair: %v)", err, lerr)
		}
	}
	return true, nil
}

// copyXattrs copies every extended attribute of name in d (the old inode)
// but the identity, which the temp already carries, onto fd.
func (b *Backend) copyXattrs(d *dirfd.Dir, name string, fd int) error {
	attrs, err := d.ListXattr(name)
	if err != nil {
		return err
	}
	for _, a := range attrs {
		if a == b.gfidAttr {
			continue
		}
		v, err := d.GetXattr(name, a)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read xattr %q: %w", a, err)
		}
		if err := unix.Fsetxattr(fd, a, v, 0); err != nil {
			return fmt.Errorf("copy xattr %q: %w", a, err)
		}
	}
	return nil
}

// applyPutStat gives fd the header's owner, permission bits and times;
// without a stat, the old inode's owner and permission bits.
func (b *Backend) applyPutStat(fd int, st *pb.Stat, old unix.Stat_t) error {
	uid, gid, mode := int(old.Uid), int(old.Gid), old.Mode&0o7777
	if st != nil {
		uid, gid, mode = int(st.GetUid()), int(st.GetGid()), st.GetMode()&0o7777
	}
	if b.canChown {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("set owner %d:%d: %w", uid, gid, err)
		}
	}
	// After chown, which clears set-id bits.
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("set mode %#o: %w", mode, err)
	}
	if times, set := timespecs(st.GetAtime(), st.GetMtime()); set {
		if err := unix.UtimesNanoAt(fd, "", times[:], unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

// dataRange is a run of data [off, end) in a sparse file.
type dataRange struct{ off, end int64 }

// dataRanges lists fd's data runs below size (SEEK_DATA/SEEK_HOLE; a
// filesystem without them reports everything as data).
func dataRanges(fd int, size int64) ([]dataRange, error) {
	var rs []dataRange
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("find data: %w", err)
		}
		if d >= size {
			break
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("find hole: %w", err)
		}
		h = min(h, size)
		rs = append(rs, dataRange{d, h})
		off = h
	}
	return rs, nil
}

// inPlaceInstall copies the verified temp into the existing inode through
// its index link: space first (fallocate, so a full disk fails before any
// old byte is touched), then data, holes, size and a flush.
func (w *FileWriter) inPlaceInstall(o object) error {
	b, g := w.b, w.h.GFID
	dst, err := o.bucket.OpenFile(g.String(), unix.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open file through the index: %w", err)
	}
	defer dst.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(dst.Fd()), &st); err != nil {
		return fmt.Errorf("stat file: %w", err)
	}
	if st.Ino != o.st.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("the index entry changed while installing: %w", unix.EAGAIN)
	}
	src, dfd := int(w.f.Fd()), int(dst.Fd())
	size := w.h.Size
	ranges, err := dataRanges(src, size)
	if err != nil {
		return fmt.Errorf("read temp layout: %w", err)
	}
	for _, r := range ranges {
		if err := unix.Fallocate(dfd, unix.FALLOC_FL_KEEP_SIZE, r.off, r.end-r.off); err != nil &&
			!errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("reserve %d bytes at offset %d (previous content kept): %w", r.end-r.off, r.off, err)
		}
	}
	if err := w.hook("copy"); err != nil {
		return err
	}
	// From here on the old content is being overwritten.
	prev := int64(0)
	for _, r := range ranges {
		if err := punchOrZero(dfd, prev, min(r.off, int64(st.Size))); err != nil {
			return err
		}
		roff, woff := r.off, r.off
		for roff < r.end {
			n, err := unix.CopyFileRange(src, &roff, dfd, &woff, int(min(r.end-roff, 1<<30)), 0)
			if err != nil {
				return fmt.Errorf("copy content at offset %d: %w", roff, err)
			}
			if n == 0 {
				return fmt.Errorf("copy content at offset %d: temp ended early: %w", roff, unix.EIO)
			}
		}
		prev = r.end
	}
	if err := punchOrZero(dfd, prev, min(size, int64(st.Size))); err != nil {
		return err
	}
	if err := unix.Ftruncate(dfd, size); err != nil {
		return fmt.Errorf("set size %d: %w", size, err)
	}
	if err := b.applyPutStat(dfd, w.h.Stat, st); err != nil {
		return err
	}
	if err := unix.Fsync(dfd); err != nil {
		return fmt.Errorf("flush file: %w", err)
	}
	return nil
}

// punchOrZero makes [off, end) of fd read as zeros: a hole where the
// filesystem can punch one, written zeros otherwise.
func punchOrZero(fd int, off, end int64) error {
	if end <= off {
		return nil
	}
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, end-off)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("punch hole [%d, %d): %w", off, end, err)
	}
	zeros := make([]byte, min(end-off, zeroBlock))
	for off < end {
		n, err := unix.Pwrite(fd, zeros[:min(end-off, int64(len(zeros)))], off)
		if err != nil {
			return fmt.Errorf("zero [%d, %d): %w", off, end, err)
		}
		off += int64(n)
	}
	return nil
}
