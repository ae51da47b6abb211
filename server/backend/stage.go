package backend

// rsync mode's slave side. StageFiles links each file's current content
// into a fresh directory of .georep/stage (the rsync daemon's only module)
// as <gfid in hex>: the basis rsync deltas against. rsync, never run with
// --inplace, writes each new content to a temp there and renames it over
// the basis link, so the real file and the index are never touched.
// InstallStaged then flushes the delivered files together (SyncPuts, one
// syncfs per group) and puts each in place by GFID with the same
// machinery PutFiles uses (FileWriter.install): a rename over a file's
// sole name or a copy into the inode of a hard-link group. Whatever names
// the file has meanwhile, content lands on the identity it was sent for.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

const (
	// StageDirName is the staging area's name in ReservedDir, the rsync
	// daemon's module (see internal/rsyncd).
	StageDirName = "stage"
	// stagePrefix starts every staging directory's name.
	stagePrefix = "s-"
	// staleStage is how long an untouched staging directory is kept: older
	// ones are a crashed master's leftovers (rsync renames into a live one
	// with every file it finishes).
	staleStage = 24 * time.Hour
	// maxStageDepth bounds how deep removal follows directories a client
	// made in a stage.
	maxStageDepth = 64
)

// StagedFile is one file rsync delivered into a staging directory.
type StagedFile struct {
	// GFID names the file; its staged copy is <stage>/<GFID.Hex()>.
	GFID gfid.GFID
	// Size is the content's expected size.
	Size int64
	// LinkParent and LinkName: one of the file's names, as in PutHeader;
	// with Create, where the new file goes.
	LinkParent gfid.GFID
	LinkName   string
	// Create says the file is new, as PutHeader.Create: the staged copy is
	// put at (LinkParent, LinkName), never over anything there.
	Create bool
	// Stat: permission bits, owner and times to give the file; nil keeps
	// its own (required with Create).
	Stat *pb.Stat
	// Discard gives the file up: its staged copy is removed, ECANCELED.
	Discard bool
}

// StagedResult is one file's outcome.
type StagedResult struct {
	// Install says how the content was put in place; InstallNone with a nil
	// Err means the basis was left untouched and already had this content.
	Install Install
	// Written is the size of the content installed.
	Written int64
	// Err is why the file was not installed (wrapping an errno).
	Err error
}

// openStageArea opens .georep/stage, making it if needed.
func (b *Backend) openStageArea() (*dirfd.Dir, error) {
	d, err := mkdirOpen(b.state, StageDirName)
	if err != nil {
		return nil, fmt.Errorf("open the staging area %s/%s: %w", ReservedDir, StageDirName, err)
	}
	return d, nil
}

// validStage checks a staging directory's name from the wire: one plain
// component that StageFiles could have made.
func validStage(stage string) error {
	if err := dirfd.ValidName(stage); err != nil {
		return fmt.Errorf("stage name: %w", err)
	}
	if !strings.HasPrefix(stage, stagePrefix) {
		return fmt.Errorf("stage name %q was not made by StageFiles: %w", stage, unix.EINVAL)
	}
	return nil
}

// StageFiles makes a fresh staging directory and links each file's current
// content into it as <gfid hex>. errs holds one outcome per GFID (ENOENT:
// no such file; EISDIR, EINVAL: not a regular file). Nothing the replica
// shows changes.
func (b *Backend) StageFiles(gfids []gfid.GFID) (stage string, errs []error, err error) {
	s, err := b.rlock()
	if err != nil {
		return "", nil, err
	}
	defer b.runlock(s)
	area, err := b.openStageArea()
	if err != nil {
		return "", nil, err
	}
	defer area.Close()
	b.sweepStale(area)
	stage = stagePrefix + tempName()
	if err := area.Mkdir(stage, 0o700); err != nil {
		return "", nil, fmt.Errorf("make staging directory %s: %w", stage, err)
	}
	sd, err := area.OpenDir(stage)
	if err != nil {
		return "", nil, fmt.Errorf("open staging directory %s: %w", stage, err)
	}
	defer sd.Close()
	errs = make([]error, len(gfids))
	for i, g := range gfids {
		errs[i] = b.stageOne(s, sd, g)
	}
	return stage, errs, nil
}

func (b *Backend) stageOne(s *scope, sd *dirfd.Dir, g gfid.GFID) error {
	if g == gfid.Root {
		return fmt.Errorf("stage %s: the root is a directory: %w", g, unix.EISDIR)
	}
	o, err := b.lookup(s, g)
	if err != nil {
		return fmt.Errorf("stage %s: %w", g, err)
	}
	if err := checkRegular(g, o); err != nil {
		return fmt.Errorf("stage %s: %w", g, err)
	}
	if err := o.bucket.Link(g.String(), sd, g.Hex()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("stage %s: link its content as the basis: %w", g, err)
	}
	return nil
}

// sweepStale removes staging directories nobody has written to for
// staleStage: a master that died between StageFiles and InstallStaged.
func (b *Backend) sweepStale(area *dirfd.Dir) {
	names, err := area.ReadDirNames()
	if err != nil {
		return
	}
	for _, n := range names {
		st, err := area.Lstat(n)
		if err != nil || time.Since(time.Unix(st.Mtim.Unix())) < staleStage {
			continue
		}
		if err := removeAll(area, n, 0); err != nil {
			b.log.Warn("cannot remove a stale staging directory", "stage", n, "err", err)
		}
	}
}

// removeAll removes name in d and, for a directory, everything below it.
func removeAll(d *dirfd.Dir, name string, depth int) error {
	st, err := d.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := d.Unlink(name); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		return nil
	}
	if depth >= maxStageDepth {
		return fmt.Errorf("remove %q: deeper than %d levels: %w", name, maxStageDepth, unix.ELOOP)
	}
	sub, err := d.OpenDir(name)
	if err != nil {
		return err
	}
	names, err := sub.ReadDirNames()
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		errs = append(errs, removeAll(sub, n, depth+1))
	}
	sub.Close()
	if err := d.Rmdir(name); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// installGroup bounds the delivered files InstallStaged holds open between
// their flush and their install: one group takes one flush, and its open
// temps stay well below any descriptor limit.
const installGroup = 512

// InstallStaged installs files from the staging directory stage, one
// result per file in order; with finish the directory is removed after.
// A file whose staged copy is still its basis inode (rsync did not
// replace it) counts as already identical when its size is the expected
// one, and EBADMSG otherwise; a staged copy of another size is EBADMSG.
// A failed install keeps the previous content.
//
// Delivered content is flushed as native mode's group commit does
// (SyncPuts): the staged copies of up to installGroup files are taken and
// given their identity, flushed together by one syncfs, and only then put
// in place in order, so no name ever shows content that was not on disk.
// Each group is installed under one hold of the write lock, fenced with
// session, as InstallAll does.
func (b *Backend) InstallStaged(stage string, files []StagedFile, finish bool, session []byte) ([]StagedResult, error) {
	return b.installStaged(stage, files, finish, session, nil)
}

// installStaged is InstallStaged with hook (tests) set on every delivered
// file's writer: it sees the "sync" and install steps in order.
func (b *Backend) installStaged(stage string, files []StagedFile, finish bool, session []byte, hook func(step string) error) ([]StagedResult, error) {
	if err := validStage(stage); err != nil {
		return nil, fmt.Errorf("install staged files: %w", err)
	}
	for i, f := range files {
		if err := validatePut(f.header()); err != nil {
			return nil, fmt.Errorf("install staged file %d (%s): %w", i, f.GFID, err)
		}
	}
	sd, err := b.openStage(stage)
	if err != nil {
		return nil, err
	}
	res := make([]StagedResult, len(files))
	for start := 0; start < len(files); start += installGroup {
		end := min(start+installGroup, len(files))
		b.installGroup(sd, files[start:end], res[start:end], session, hook)
	}
	sd.Close()
	for i := range res {
		if res[i].Err != nil {
			res[i].Err = fmt.Errorf("install staged content of %s: %w", files[i].GFID, res[i].Err)
		}
	}
	if finish {
		if err := b.removeStage(stage); err != nil {
			return res, err
		}
	}
	return res, nil
}

// installGroup takes every delivered file of files into .georep/tmp with
// its identity, flushes them all at once, then installs them in order.
// Files with nothing to flush (discarded, refused, still the basis) get
// their result on the way.
func (b *Backend) installGroup(sd *dirfd.Dir, files []StagedFile, res []StagedResult, session []byte, hook func(string) error) {
	var ws []*FileWriter
	var at []int
	for i, f := range files {
		w, r := b.takeOne(sd, f)
		if w == nil {
			res[i] = r
			continue
		}
		w.installHook = hook
		ws = append(ws, w)
		at = append(at, i)
	}
	if len(ws) == 0 {
		return
	}
	// rsync checked each file's whole content against the sender's
	// checksum and takeOne its size: what SyncPuts asks of a temp.
	for _, w := range ws {
		w.verified = true
	}
	if err := b.SyncPuts(ws); err != nil {
		for _, i := range at {
			res[i] = StagedResult{Err: fmt.Errorf("previous content kept: %w", err)}
		}
		return
	}
	// One hold of the write lock and one fence for the group, as a native
	// stream's group commit takes them.
	hows, errs := b.installAll(ws, session)
	for k, w := range ws {
		if errs[k] != nil {
			res[at[k]] = StagedResult{Err: errs[k]}
			continue
		}
		res[at[k]] = StagedResult{Install: hows[k], Written: w.h.Size}
	}
}

// openStage opens an existing staging directory (never through a symlink).
func (b *Backend) openStage(stage string) (*dirfd.Dir, error) {
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	area, err := b.openStageArea()
	if err != nil {
		return nil, err
	}
	defer area.Close()
	sd, err := area.OpenDir(stage)
	if err != nil {
		return nil, fmt.Errorf("open staging directory %s (was it made by StageFiles and not finished yet?): %w", stage, err)
	}
	return sd, nil
}

func (b *Backend) removeStage(stage string) error {
	s, err := b.rlock()
	if err != nil {
		return err
	}
	defer b.runlock(s)
	area, err := b.openStageArea()
	if err != nil {
		return err
	}
	defer area.Close()
	if err := removeAll(area, stage, 0); err != nil {
		return fmt.Errorf("remove staging directory %s: %w", stage, err)
	}
	return nil
}

// header is the PutHeader the file's content is installed with.
func (f StagedFile) header() PutHeader {
	return PutHeader{GFID: f.GFID, Size: f.Size, LinkParent: f.LinkParent, LinkName: f.LinkName, Create: f.Create, Stat: f.Stat}
}

// takeOne prepares one file: a delivered copy comes back as a writer
// holding it in .georep/tmp with its identity, waiting for the flush;
// anything else is settled here and comes back as its result.
func (b *Backend) takeOne(sd *dirfd.Dir, f StagedFile) (*FileWriter, StagedResult) {
	name := f.GFID.Hex()
	if f.Discard {
		if err := removeAll(sd, name, 0); err != nil {
			b.log.Warn("cannot remove a discarded staged file; finishing the stage removes it", "gfid", f.GFID, "err", err)
		}
		return nil, StagedResult{Err: fmt.Errorf("the master gave it up (it changed during the transfer); previous content kept: %w", unix.ECANCELED)}
	}
	st, err := sd.Lstat(name)
	if errors.Is(err, unix.ENOENT) {
		return nil, StagedResult{Err: fmt.Errorf("rsync delivered nothing (was the file staged?): %w", unix.EBADMSG)}
	}
	if err != nil {
		return nil, StagedResult{Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, StagedResult{Err: fmt.Errorf("the staged copy is not a regular file (mode %#o): %w", st.Mode, unix.EBADMSG)}
	}
	if st.Nlink != 1 && f.Create {
		// A new file has no basis: this is something a client linked there.
		return nil, StagedResult{Err: fmt.Errorf("the staged copy of a new file has %d links; not installed: %w", st.Nlink, unix.EBADMSG)}
	}
	if st.Nlink != 1 {
		// Still the basis (a link of the real file), or something a client
		// linked there: not new content, and never to be renamed anywhere.
		return nil, b.keepBasis(sd, f, st)
	}
	if st.Size != f.Size {
		return nil, StagedResult{Err: fmt.Errorf("rsync delivered %d bytes, the master expected %d; previous content kept: %w", st.Size, f.Size, unix.EBADMSG)}
	}
	w := &FileWriter{b: b, tmpName: tempName(), h: f.header()}
	if err := b.takeStaged(sd, name, w); err != nil {
		return nil, StagedResult{Err: err}
	}
	// The identity goes on first, so it is flushed with the content.
	if err := unix.Fsetxattr(int(w.f.Fd()), b.gfidAttr, f.GFID[:], 0); err != nil {
		w.discard()
		return nil, StagedResult{Err: fmt.Errorf("give the staged copy its gfid: %w", err)}
	}
	if f.Create {
		// A new file's attributes, like its identity, are flushed with its
		// content (a replaced file gets them at install, over the old
		// inode's).
		if err := b.applyPutStat(int(w.f.Fd()), f.Stat, unix.Stat_t{}); err != nil {
			w.discard()
			return nil, StagedResult{Err: fmt.Errorf("create %s: %w", f.GFID, err)}
		}
	}
	return w, StagedResult{}
}

// keepBasis handles a staged copy rsync did not replace: when it is the
// file's own current inode with the expected size the content is already
// there (only the stat is applied); anything else is EBADMSG.
func (b *Backend) keepBasis(sd *dirfd.Dir, f StagedFile, st unix.Stat_t) StagedResult {
	s, err := b.lock()
	if err != nil {
		return StagedResult{Err: err}
	}
	defer b.unlock(s)
	o, err := b.lookup(s, f.GFID)
	if err != nil {
		return StagedResult{Err: err}
	}
	if err := checkRegular(f.GFID, o); err != nil {
		return StagedResult{Err: err}
	}
	if o.st.Dev != st.Dev || o.st.Ino != st.Ino {
		return StagedResult{Err: fmt.Errorf("the staged copy has %d links and is not the file's content; not installed: %w", st.Nlink, unix.EBADMSG)}
	}
	if st.Size != f.Size {
		return StagedResult{Err: fmt.Errorf("rsync did not replace the staged copy (%d bytes, the master expected %d); previous content kept: %w", st.Size, f.Size, unix.EBADMSG)}
	}
	cur, err := openIndexed(o, f.GFID)
	if err != nil {
		return StagedResult{Err: err}
	}
	defer cur.Close()
	if err := b.applyPutStat(int(cur.Fd()), f.Stat, o.st); err != nil {
		return StagedResult{Err: fmt.Errorf("apply the stat: %w", err)}
	}
	if err := sd.Unlink(f.GFID.Hex()); err != nil && !errors.Is(err, unix.ENOENT) {
		b.log.Warn("cannot remove a staged basis; finishing the stage removes it", "gfid", f.GFID, "err", err)
	}
	return StagedResult{Written: 0}
}

// takeStaged opens the staged copy name and renames it into .georep/tmp as
// w's temp, checking that what it opened is what it renamed: a regular file
// with one link.
func (b *Backend) takeStaged(sd *dirfd.Dir, name string, w *FileWriter) error {
	s, err := b.rlock()
	if err != nil {
		return err
	}
	defer b.runlock(s)
	f, err := sd.OpenFile(name, unix.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open the staged copy: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return fmt.Errorf("stat the staged copy: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Size != w.h.Size {
		f.Close()
		return fmt.Errorf("the staged copy changed under the install (mode %#o, %d links, %d bytes): %w", st.Mode, st.Nlink, st.Size, unix.EBADMSG)
	}
	if err := sd.Rename(name, b.tmp, w.tmpName, dirfd.RenameNoReplace); err != nil {
		f.Close()
		return fmt.Errorf("move the staged copy into %s/%s: %w", ReservedDir, tmpDirName, err)
	}
	after, err := b.tmp.Lstat(w.tmpName)
	if err != nil || after.Ino != st.Ino || after.Dev != st.Dev {
		f.Close()
		if err == nil {
			err = fmt.Errorf("the staged copy was swapped during the move: %w", unix.EBADMSG)
		}
		_ = b.tmp.Unlink(w.tmpName)
		return err
	}
	w.f = f
	return nil
}
