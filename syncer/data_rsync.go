package syncer

// --sync-mode rsync: file content goes by rsync into the slave's staging
// area, addressed by GFID on both ends, then is installed by GFID.
//
// Up to --sync-jobs runs go at once on disjoint shares of the files. One
// run (at most rsyncBatch files): StageFiles links each file's current
// slave content into a fresh stage as <gfid hex> (rsync's basis; a new
// file has none and rsync writes it whole);
// the master opens each file beneath the root (no symlinks followed), makes
// a private symlink farm <farms>/<stage>/<gfid hex> ->
// /proc/<pid>/fd/<that descriptor> (farms: see makeFarms), notes each
// file's inode, size, mtime and ctime, and
// runs ONE rsync (--copy-links --ignore-times --files-from, no --inplace)
// into <host>::georep/<stage>/ over the session's transport (the ssh
// ControlMaster, a local child, or the mTLS tunnel). rsync writes each new
// content to a temp and renames it over the basis link, so the replica is
// untouched until InstallStaged puts every file in place by GFID (a new
// file, planned as a fused create, is made at its name only then, with no
// entry op before it). A file that changed while rsync read it, or that
// rsync reported, is discarded there and retried; its previous content
// stays.
//
// Compression: --compress zstd adds -z --compress-choice=zstd; auto does
// not, because rsync's compression costs CPU on both ends for every byte
// and most deltas are already small, and over ssh the link may compress.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/tailbuf"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/transfer"
)

const (
	// rsyncBatch bounds the files of one rsync run (and one stage).
	rsyncBatch = 10000
	// rsyncMinShare is the fewest files sendRsync gives a parallel run:
	// measured over loopback ssh, splitting an incremental's 201 files
	// three ways cost more (a stage, an rsync and an ssh session each)
	// than it saved.
	rsyncMinShare = 1000
	// rsyncIOTimeout is rsync's --timeout: a transfer that moves nothing
	// for this long fails (and is retried) instead of hanging.
	rsyncIOTimeout = 5 * time.Minute
	// rsyncStderrMax bounds the stderr kept from one run.
	rsyncStderrMax = 1 << 20
	// sentPrefix marks rsync's per-file --out-format lines on stdout.
	sentPrefix = "georep-sent "
)

// rsync exit codes with a per-file meaning; any other non-zero code fails
// the whole batch.
const (
	rsyncFileIO   = 11 // error in file I/O
	rsyncPartial  = 23 // some files or attributes were not transferred
	rsyncVanished = 24 // some source files vanished
)

// ErrRsync is a file rsync did not deliver, with rsync's reason.
var ErrRsync = errors.New("rsync did not deliver the file")

// errNoStagedCreates is an rsync-mode create not sent because the slave's
// InstallStaged cannot create files (a georep before staged creates): its
// entry op makes the file, then its content goes as any other's.
var errNoStagedCreates = errors.New("the slave does not create files from rsync's staging area")

// hasCreates reports whether any item is a create.
func hasCreates(items []transfer.Item) bool {
	return slices.ContainsFunc(items, func(it transfer.Item) bool { return it.Create })
}

// sendRsync moves items' content with rsync: up to SyncJobs runs at once,
// each on its own disjoint share of the items and its own stage, so one
// run's staging and install overlap another's transfer.
func (m *master) sendRsync(ctx context.Context, c *client.Conn, items []transfer.Item) ([]transfer.Result, error) {
	if hasCreates(items) && !c.Info.GetStagedCreates() {
		// A slave before staged creates: each create takes the fallback
		// of a refused one (its entry op, then its content again) while
		// the rest go now.
		results := make([]transfer.Result, len(items))
		var rest []transfer.Item
		var at []int
		for i, it := range items {
			if it.Create {
				results[i].Err = errNoStagedCreates
				continue
			}
			rest = append(rest, it)
			at = append(at, i)
		}
		m.log.Debug("the slave does not create files from rsync's stage (an older georep): new files get entry ops first",
			"files", len(items)-len(rest))
		if len(rest) == 0 {
			return results, nil
		}
		res, err := m.sendRsync(ctx, c, rest)
		if err != nil {
			return nil, err
		}
		for k, i := range at {
			results[i] = res[k]
		}
		return results, nil
	}
	shell, err := c.RsyncShell(ctx)
	if err != nil {
		return nil, err
	}
	defer shell.Close()
	farms, err := makeFarms(shmDir, m.cfg.StateDir, len(items))
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(farms)
	results := make([]transfer.Result, len(items))
	shares := rsyncShares(len(items), m.cfg.SyncJobs)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Each run holds its files open (the farm points at those fds), so
	// the runs together must stay under the open-file limit.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("read the open-file limit: %w", err)
	}
	batch := rsyncBatchFor(lim.Cur, len(shares))
	var wg sync.WaitGroup
	for _, sh := range shares {
		wg.Go(func() {
			var q installQueue
			for start := sh[0]; start < sh[1]; start += batch {
				end := min(start+batch, sh[1])
				if err := m.sendRsyncBatch(ctx, c, shell, farms, items[start:end], results[start:end], &q); err != nil {
					// The first failure stops the other runs: the
					// session retries all of items.
					q.wait()
					cancel(err)
					return
				}
			}
			if err := q.wait(); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return results, nil
}

// shmDir is where rsync's symlink farms go when it is a tmpfs.
const shmDir = "/dev/shm"

// farmPrefix starts the name of a process's farm directory, followed by
// its pid and a dash.
const farmPrefix = "georep-rsync-"

// makeFarms makes the private directory one sendRsync's symlink farms go
// in, removed by the caller: a fresh one in shm (/dev/shm) when that is a
// tmpfs this process can write with inodes to spare for the files' symlinks
// (a container's small /dev/shm may have few), else in <state>/rsync. A farm is a symlink
// per file, made and removed by every run: on the bench's journalled ext4
// the two cost the master about 55 us a file (1.1 s of CPU for 20,000
// files), on tmpfs a few. Farms that a master which died left there a day
// ago are removed first.
func makeFarms(shm, state string, files int) (string, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(shm, &fs); err == nil && fs.Type == unix.TMPFS_MAGIC && fs.Ffree > 2*uint64(files)+1024 {
		if d, err := newFarms(shm); err == nil {
			return d, nil
		}
	}
	base := filepath.Join(state, "rsync")
	if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("make the rsync symlink farm directory: %w", err)
	}
	d, err := newFarms(base)
	if err != nil {
		return "", fmt.Errorf("make the rsync symlink farm directory: %w", err)
	}
	return d, nil
}

// newFarms sweeps base of dead masters' farms and makes this one's, 0700
// with a name no other process can have taken.
func newFarms(base string) (string, error) {
	sweepFarms(base)
	return os.MkdirTemp(base, farmPrefix+strconv.Itoa(os.Getpid())+"-")
}

// staleFarm is how long a farm directory of a process that is gone stays:
// the pid alone could be another pid namespace's (a /dev/shm shared
// between containers), whose farm a live rsync may still read.
const staleFarm = 24 * time.Hour

// sweepFarms removes the farm directories in dir of processes that are
// gone, once untouched for staleFarm. Another user's are left alone (the
// sticky bit would refuse).
func sweepFarms(dir string) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	uid := uint32(os.Getuid())
	for _, e := range names {
		rest, ok := strings.CutPrefix(e.Name(), farmPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(dir, e.Name()), &st) != nil || st.Uid != uid ||
			time.Since(time.Unix(st.Mtim.Unix())) < staleFarm {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// rsyncOpenReserve is how many descriptors are left for everything but
// the files rsync runs hold open (the index, the connection, the logs).
const rsyncOpenReserve = 512

// rsyncBatchFor is the most files one of runs parallel rsync runs may take
// at once under an open-file limit of limit: at most rsyncBatch, at least
// 64 (a limit too low for that fails with the limit's own message).
func rsyncBatchFor(limit uint64, runs int) int {
	runs = max(runs, 1)
	if limit <= rsyncOpenReserve {
		return 64
	}
	per := (limit - rsyncOpenReserve) / uint64(runs)
	return int(max(64, min(per, rsyncBatch)))
}

// rsyncShares splits n items into at most jobs contiguous [start, end)
// ranges of near-equal size, none smaller than rsyncMinShare unless there
// are fewer items: a run costs a StageFiles, an rsync start and an
// InstallStaged, which a few hundred small files do not repay.
func rsyncShares(n, jobs int) [][2]int {
	jobs = max(1, min(jobs, n/rsyncMinShare))
	shares := make([][2]int, 0, jobs)
	for j := range jobs {
		start, end := n*j/jobs, n*(j+1)/jobs
		if start < end {
			shares = append(shares, [2]int{start, end})
		}
	}
	return shares
}

// sendRsyncBatch sends one batch. rsync aborts the whole run on some per-file
// errors (a write failing with ENOSPC on the receiver is fatal to it), so
// the files that failed only because the run did are sent again at once
// without the ones rsync named: a file too big for the slave must not hold
// back every file batched with it. Each pass drops at least one named
// file, so this ends.
//
// A run's install goes to q, the share's installs, and proceeds while the
// share's next run stages and transfers: the slave renames one batch into
// place while rsync writes the next. One install is in flight at a time,
// in order; q.wait ends the last.
func (m *master) sendRsyncBatch(ctx context.Context, c *client.Conn, shell *client.RsyncShell, farms string, items []transfer.Item, results []transfer.Result, q *installQueue) error {
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	for len(idx) > 0 {
		b := &rsyncRun{m: m, c: c, shell: shell, farms: farms,
			items: make([]transfer.Item, len(idx)), results: make([]transfer.Result, len(idx))}
		for k, i := range idx {
			b.items[k] = items[i]
		}
		failures, runErr, err := b.transfer(ctx)
		if werr := q.wait(); werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
		// settle installs the run and fills its results; it returns the
		// files to send again.
		ids := idx
		settle := func() ([]int, error) {
			if err := b.finish(ctx, failures, runErr); err != nil {
				return nil, err
			}
			var again []int
			for k, i := range ids {
				results[i] = b.results[k]
				if b.collateral != nil && b.collateral[k] && b.named > 0 && ctx.Err() == nil {
					again = append(again, i)
				}
			}
			return again, nil
		}
		if runErr != nil && len(failures) > 0 {
			// Some files may have failed only because the run did: they
			// go again once this run is settled.
			if idx, err = settle(); err != nil {
				return err
			}
			continue
		}
		// Nothing to send again: rsync failed no file by name, or the run
		// did not fail as a whole.
		q.start(func() error { _, err := settle(); return err })
		idx = nil
	}
	return nil
}

// installQueue is one share's installs: at most one in flight, each
// started once the one before has ended.
type installQueue struct{ done chan error }

// start runs f (an install) in the background.
func (q *installQueue) start(f func() error) {
	q.done = make(chan error, 1)
	go func() { q.done <- f() }()
}

// wait ends the install in flight, if any, with its error.
func (q *installQueue) wait() error {
	if q.done == nil {
		return nil
	}
	err := <-q.done
	q.done = nil
	return err
}

// fileMark is what a file looked like, to tell whether it changed.
type fileMark struct {
	ino, size    int64
	mtime, ctime unix.Timespec
}

func markOf(st *unix.Stat_t) fileMark {
	return fileMark{ino: int64(st.Ino), size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// rsyncRun is one batch.
type rsyncRun struct {
	m     *master
	c     *client.Conn
	shell *client.RsyncShell
	// farms is the directory this run's farm goes in (see makeFarms).
	farms   string
	items   []transfer.Item
	results []transfer.Result

	stage string
	farm  string
	// fds hold each listed file, opened beneath the root: the farm's
	// links name them (/proc/<pid>/fd/N), not the file's path, so a
	// directory on the path swapped for a symlink while rsync runs cannot
	// make it read a file from outside the root.
	fds    []int
	staged []bool     // in the stage and the list
	marks  []fileMark // before rsync
	sent   []int64    // bytes rsync reports sending, per item
	logged []bool     // rsync reported sending the item
	byHex  map[string]int
	// collateral marks items failed only by a run that failed as a whole;
	// named counts the items rsync's stderr named.
	collateral []bool
	named      int
	// timing is where the run's time went, for the debug log.
	timing struct{ stage, farm, rsync, check, install time.Duration }
}

// transfer is a run up to its install (finish): the stage, the farm and
// rsync. The farm is gone and its descriptors closed when it returns, so
// the share's next run can hold its own while finish installs this one.
// err fails the run as a whole (finish has marked its files when the
// stage was made).
func (r *rsyncRun) transfer(ctx context.Context) (failures map[int]error, runErr error, err error) {
	start := time.Now()
	// A new file has no basis worth linking (none at all for a create,
	// the empty inode its CREATE made otherwise): without one rsync writes
	// the file fresh.
	var gs [][]byte
	var basis []int
	r.byHex = make(map[string]int, len(r.items))
	for i, it := range r.items {
		r.byHex[it.GFID.Hex()] = i
		if !it.New {
			gs = append(gs, it.GFID.Bytes())
			basis = append(basis, i)
		}
	}
	resp, err := r.c.Slave.StageFiles(ctx, &pb.StageFilesRequest{Gfids: gs})
	if err != nil {
		return nil, nil, fmt.Errorf("stage files on the slave: %w", r.c.Explain(err))
	}
	if len(resp.GetResults()) != len(gs) {
		return nil, nil, fmt.Errorf("stage files: the slave answered %d results for %d files", len(resp.GetResults()), len(gs))
	}
	r.stage = resp.GetStage()
	if err := dirNameOK(r.stage); err != nil {
		return nil, nil, fmt.Errorf("stage files: the slave named stage %q: %w", r.stage, err)
	}
	r.staged = make([]bool, len(r.items))
	r.marks = make([]fileMark, len(r.items))
	r.sent = make([]int64, len(r.items))
	r.logged = make([]bool, len(r.items))
	for i := range r.items {
		r.staged[i] = true
	}
	for k, res := range resp.GetResults() {
		if res.GetErrno() != 0 {
			i := basis[k]
			r.results[i].Err = &transfer.RemoteError{Errno: unix.Errno(res.GetErrno()), Code: res.GetCode(), Message: res.GetMessage()}
			r.staged[i] = false
		}
	}
	r.timing.stage = time.Since(start)
	r.farm = filepath.Join(r.farms, r.stage)
	defer os.RemoveAll(r.farm)
	defer r.closeFds()
	defer os.Remove(r.farm + ".list")
	start = time.Now()
	list, err := r.makeFarm()
	r.timing.farm = time.Since(start)
	if err != nil {
		r.finish(ctx, nil, err)
		return nil, nil, err
	}
	failures, runErr = r.rsync(ctx, list)
	return failures, runErr, nil
}

func (r *rsyncRun) closeFds() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}

// dirNameOK checks the slave's stage name before it becomes a local path.
func dirNameOK(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return errors.New("not a single path component")
	}
	return nil
}

// makeFarm links <farm>/<gfid hex> to each staged file and writes the
// NUL-separated list of those names. A file that cannot be found beneath
// the root is dropped from the list (and discarded at install).
func (r *rsyncRun) makeFarm() (string, error) {
	if err := os.MkdirAll(r.farm, 0o700); err != nil {
		return "", fmt.Errorf("make the rsync symlink farm %s: %w", r.farm, err)
	}
	var list bytes.Buffer
	for i, it := range r.items {
		if !r.staged[i] {
			continue
		}
		fd, mark, err := r.openItem(&it)
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return "", fmt.Errorf("hold %s open for rsync: raise the open-file limit (ulimit -n; each rsync run holds up to %d files open, --sync-jobs runs at once): %w", it.RelPath, rsyncBatch, err)
		}
		if err != nil {
			r.staged[i] = false
			r.results[i].Err = err
			continue
		}
		r.fds = append(r.fds, fd)
		r.marks[i] = mark
		name := it.GFID.Hex()
		link := filepath.Join(r.farm, name)
		if err := os.Symlink(fdPath(fd), link); err != nil {
			return "", fmt.Errorf("link %s into the rsync symlink farm: %w", it.RelPath, err)
		}
		if len(r.fds) == 1 {
			// rsync reaches the file through this process's /proc entry:
			// without /proc every file would look vanished.
			var st unix.Stat_t
			if err := unix.Stat(link, &st); err != nil || int64(st.Ino) != mark.ino {
				return "", fmt.Errorf("rsync cannot reach %s through %s (is /proc mounted and readable?): %v", it.RelPath, fdPath(fd), err)
			}
		}
		list.WriteString(name)
		list.WriteByte(0)
	}
	path := r.farm + ".list"
	if err := os.WriteFile(path, list.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("write the rsync file list: %w", err)
	}
	return path, nil
}

// statBeneath stats rel beneath the master root without following any
// symlink; a file that is gone or no longer regular is os.ErrNotExist-like.
func (r *rsyncRun) statBeneath(rel string) (fileMark, error) {
	fd, st, err := openPathBeneath(int(r.m.root.Fd()), rel)
	if err != nil {
		return fileMark{}, err
	}
	unix.Close(fd)
	return markOf(&st), nil
}

// openItem is openPathBeneath of it.RelPath, refusing a file that is not the
// object it was scanned as (transfer.Item.Check).
func (r *rsyncRun) openItem(it *transfer.Item) (int, fileMark, error) {
	fd, st, err := openPathBeneath(int(r.m.root.Fd()), it.RelPath)
	if err != nil {
		return -1, fileMark{}, err
	}
	if err := it.Check(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fileMark{}, err
	}
	return fd, markOf(&st), nil
}

// fdPath names a descriptor of this process so that another process (rsync)
// opens the very inode it refers to, whatever its names have become.
func fdPath(fd int) string {
	return "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(fd)
}

// rsyncArgs is the command line of one batch's rsync.
func (r *rsyncRun) rsyncArgs(list string) ([]string, error) {
	args := []string{
		"-e", rsyncShellArg(r.shell.Command),
		"--copy-links", "--ignore-times", "--sparse",
		"--files-from=" + list, "--from0",
		"--timeout=" + strconv.Itoa(int(rsyncIOTimeout.Seconds())),
		"--out-format=" + sentPrefix + "%n %b",
	}
	if bw := r.m.cfg.BwLimit; bw > 0 {
		args = append(args, "--bwlimit="+strconv.FormatInt((bw+1023)/1024, 10))
	}
	switch r.m.cfg.Compress {
	case CompressZstd:
		args = append(args, "-z", "--compress-choice=zstd")
	case CompressAuto, CompressNone, "":
	default:
		return nil, fmt.Errorf("--compress %q: accepted values are %s, %s and %s", r.m.cfg.Compress, CompressAuto, CompressZstd, CompressNone)
	}
	return append(args, r.farm+"/", r.shell.Host+"::"+client.RsyncModule+"/"+r.stage+"/"), nil
}

// rsyncShellArg joins the -e program's words the way rsync splits them
// (main.c, do_cmd): on spaces only, with a single- or double-quoted
// section keeping spaces, and the quote doubled inside it standing for
// itself. Backslashes mean nothing to it.
func rsyncShellArg(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w != "" && !strings.ContainsAny(w, " \"'") {
			out[i] = w
			continue
		}
		out[i] = `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
	}
	return strings.Join(out, " ")
}

// rsync runs the batch's rsync and returns the failures it named, by item.
// The error is for a run that failed as a whole (every file).
func (r *rsyncRun) rsync(ctx context.Context, list string) (map[int]error, error) {
	args, err := r.rsyncArgs(list)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "rsync", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 10 * time.Second
	stderr := tailbuf.New(rsyncStderrMax)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("run rsync: %w", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run rsync (install rsync on the master for --sync-mode rsync): %w", err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		r.parseSent(sc.Text())
	}
	_, _ = io.Copy(io.Discard, out)
	waitErr := cmd.Wait()
	code := 0
	if waitErr != nil {
		var ee *exec.ExitError
		if !errors.As(waitErr, &ee) {
			return nil, fmt.Errorf("run rsync: %w", waitErr)
		}
		code = ee.ExitCode()
	}
	failures, unnamed := r.parseStderr(stderr.String())
	if code == rsyncFileIO && len(failures) == 0 && len(unnamed) == 0 && ctx.Err() == nil {
		// rsync said no more than its exit code (its receiver's message
		// can be lost when it dies): a full slave is the likely cause,
		// and the slave can say whether it is.
		failures = r.tooBig(ctx)
	}
	var sent int64
	for _, n := range r.sent {
		sent += n
	}
	r.timing.rsync = time.Since(start)
	r.m.log.Debug("rsync batch done", "stage", r.stage, "files", len(r.items), "exit", code,
		"sent_bytes", sent, "elapsed", r.timing.rsync, "named_failures", len(failures))
	if ctx.Err() != nil && code != 0 {
		return failures, ctx.Err()
	}
	return failures, runError(code, unnamed, stderr.String())
}

// tooBig asks the slave for its free space and fails, as ENOSPC, each
// file whose content cannot fit in it; nil when it does not know.
func (r *rsyncRun) tooBig(ctx context.Context) map[int]error {
	resp, err := r.c.Slave.VolumeInfo(ctx, &pb.VolumeInfoRequest{})
	if err != nil || resp.FreeBytes == nil {
		return nil
	}
	return fullSlave(resp.GetFreeBytes(), r.marks)
}

// fullSlave fails, as ENOSPC, the files of marks bigger than free bytes:
// rsync writes a file's new content beside the old before it renames.
func fullSlave(free uint64, marks []fileMark) map[int]error {
	failures := map[int]error{}
	for i, mk := range marks {
		if mk.size > 0 && uint64(mk.size) > free {
			failures[i] = fmt.Errorf("%w: %w", ErrRsync, &transfer.RemoteError{Errno: unix.ENOSPC, Code: "ENOSPC",
				Message: fmt.Sprintf("No space left on device: the slave's filesystem has %d bytes free and the file's new content takes %d (rsync exit %d named no file)",
					free, mk.size, rsyncFileIO)})
		}
	}
	return failures
}

// runError is what rsync's exit code says about the run as a whole: nil
// when every file not named on stderr went through.
func runError(code int, unnamed []string, stderr string) error {
	switch {
	case code == 0:
		return nil
	case code == rsyncPartial || code == rsyncVanished:
		if len(unnamed) > 0 {
			// A failure rsync did not pin on a file could be any file.
			return fmt.Errorf("%w: rsync exit %d: %s", ErrRsync, code, strings.Join(unnamed, "; "))
		}
		return nil
	default:
		return fmt.Errorf("%w: rsync exit %d (%s): %s", ErrRsync, code, rsyncExitText(code), lastLinesOf(stderr, 5))
	}
}

// parseSent records an --out-format line, "<prefix><gfid hex> <bytes>":
// rsync sent that file, that many bytes (literal data and block matches).
func (r *rsyncRun) parseSent(line string) {
	rest, ok := strings.CutPrefix(line, sentPrefix)
	if !ok {
		return
	}
	name, n, ok := strings.Cut(rest, " ")
	if !ok {
		return
	}
	i, known := r.byHex[name]
	if !known {
		return
	}
	// The count comes from the far side of the protocol: a negative one is
	// not believed.
	if v, err := strconv.ParseInt(n, 10, 64); err == nil && v >= 0 {
		r.sent[i] = v
	}
	r.logged[i] = true
}

var (
	gfidHexRE = regexp.MustCompile(`[0-9a-f]{32}`)
	// daemonLogRE is the prefix of the slave daemon's log lines, which
	// repeat the errors it also sends to the master's rsync.
	daemonLogRE = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[\d+\] `)
	// exitSummaryRE is rsync's last line, restating its exit code, which
	// the code itself already says.
	exitSummaryRE = regexp.MustCompile(`^rsync (error|warning): .*\(code \d+\)`)
	// errnoRE is the "(errno)" rsync ends a system call's failure with.
	errnoRE = regexp.MustCompile(`\((\d{1,4})\)$`)
)

// parseStderr maps rsync's error lines to the items they name; lines that
// name none and look like errors are returned as unnamed.
func (r *rsyncRun) parseStderr(text string) (map[int]error, []string) {
	failures := map[int]error{}
	var unnamed []string
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(daemonLogRE.ReplaceAllString(strings.TrimSpace(line), ""))
		if line == "" || exitSummaryRE.MatchString(line) {
			continue
		}
		named := false
		for _, h := range gfidHexRE.FindAllString(line, -1) {
			i, ok := r.byHex[h]
			if !ok {
				continue
			}
			named = true
			if failures[i] == nil {
				failures[i] = rsyncLineErr(line)
			}
		}
		if !named && isRsyncError(line) {
			unnamed = append(unnamed, line)
		}
	}
	return failures, unnamed
}

// isRsyncError tells rsync's error and warning lines from its daemon log
// lines (the slave's daemon logs to stderr, which ssh relays).
func isRsyncError(line string) bool {
	return strings.HasPrefix(line, "rsync:") || strings.HasPrefix(line, "rsync error:") ||
		strings.HasPrefix(line, "@ERROR") || strings.Contains(line, "failed:")
}

// rsyncLineErr turns one rsync error line about a file into an error
// matching the errno it names (ENOSPC, ENOENT, ...). A failure of the
// slave's side (the receiver or generator) is a *transfer.RemoteError, so
// status shows its errno name as for native mode; the sender's is the
// master's own.
func rsyncLineErr(line string) error {
	// The master's file went away under rsync: gone, not failed.
	if strings.Contains(line, "vanished") || strings.Contains(line, "symlink has no referent") {
		return fmt.Errorf("%w: %s: %w", ErrRsync, line, os.ErrNotExist)
	}
	errno := lineErrno(line)
	switch {
	case errno == 0:
		return fmt.Errorf("%w: %s", ErrRsync, line)
	case strings.Contains(line, "[sender]"):
		return fmt.Errorf("%w: %s: %w", ErrRsync, line, errno)
	}
	code := unix.ErrnoName(errno)
	if code == "" {
		code = "errno " + strconv.Itoa(int(errno))
	}
	return fmt.Errorf("%w: %w", ErrRsync, &transfer.RemoteError{Errno: errno, Code: code, Message: line})
}

// lineErrno is the errno an rsync line ends with ("... (28)"), or the one
// its words name.
func lineErrno(line string) unix.Errno {
	if m := errnoRE.FindStringSubmatch(line); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil && n > 0 {
			return unix.Errno(n)
		}
	}
	switch {
	case strings.Contains(line, "No space left on device"):
		return unix.ENOSPC
	case strings.Contains(line, "Disk quota exceeded"):
		return unix.EDQUOT
	case strings.Contains(line, "No such file or directory"):
		return unix.ENOENT
	case strings.Contains(line, "Permission denied"):
		return unix.EACCES
	}
	return 0
}

// rsyncExitText names rsync's exit codes an operator meets most.
func rsyncExitText(code int) string {
	switch code {
	case 1:
		return "syntax or usage error"
	case 5:
		return "error starting the client-server protocol: is georep and rsync installed on the slave?"
	case 10, 12:
		return "the connection to the slave broke"
	case 11:
		return "file I/O error (a full slave filesystem?)"
	case 20:
		return "interrupted"
	case 30:
		return "timeout in data send/receive"
	case 35:
		return "timeout waiting for the daemon connection"
	case 255:
		return "the remote shell (ssh) failed"
	}
	return "see rsync(1) EXIT VALUES"
}

// finish installs what rsync delivered and discards the rest, filling the
// results. runErr fails every file not already failed.
func (r *rsyncRun) finish(ctx context.Context, failures map[int]error, runErr error) error {
	start := time.Now()
	r.collateral = make([]bool, len(r.items))
	files := make([]*pb.StagedFile, 0, len(r.items))
	idx := make([]int, 0, len(r.items))
	for i, it := range r.items {
		f := &pb.StagedFile{Gfid: it.GFID.Bytes(), Size: r.marks[i].size, Stat: it.Stat}
		switch {
		case it.Create:
			f.CreateParentGfid, f.CreateName = it.LinkParent.Bytes(), it.LinkName
		case len(it.LinkName) > 0:
			f.LinkParentGfid, f.LinkName = it.LinkParent.Bytes(), it.LinkName
		}
		reason := r.results[i].Err
		switch {
		case reason != nil:
		case failures[i] != nil:
			reason = failures[i]
			r.named++
		case runErr != nil:
			reason = runErr
			r.collateral[i] = true
		case !r.logged[i]:
			reason = fmt.Errorf("%w: rsync did not report sending it", ErrRsync)
		default:
			if after, err := r.statBeneath(it.RelPath); err != nil {
				reason = err
			} else if after != r.marks[i] {
				reason = transfer.ErrChanged
			}
		}
		if reason != nil {
			f.Discard = true
			r.results[i].Err = reason
			r.m.log.Debug("rsync: file not installed, previous content kept", "path", it.RelPath, "gfid", it.GFID, "err", reason)
		}
		files = append(files, f)
		idx = append(idx, i)
	}
	if len(files) == 0 {
		return nil
	}
	r.timing.check = time.Since(start)
	start = time.Now()
	// The stage is removed whatever happened to the transfer, so it never
	// outlives the batch on a slave that stays up.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	resp, err := r.c.Slave.InstallStaged(ictx, &pb.InstallStagedRequest{Stage: r.stage, Files: files, Finish: true})
	if err != nil {
		return fmt.Errorf("install staged files on the slave: %w", r.c.Explain(err))
	}
	r.timing.install = time.Since(start)
	r.m.log.Debug("rsync batch installed", "stage", r.stage, "files", len(files), "stage_took", r.timing.stage,
		"farm_took", r.timing.farm, "rsync_took", r.timing.rsync, "check_took", r.timing.check, "install_took", r.timing.install)
	if len(resp.GetResults()) != len(files) {
		return fmt.Errorf("install staged files: the slave answered %d results for %d files", len(resp.GetResults()), len(files))
	}
	for k, res := range resp.GetResults() {
		i := idx[k]
		if files[k].GetDiscard() {
			continue
		}
		if e := res.GetResult(); e.GetErrno() != 0 {
			r.results[i].Err = &transfer.RemoteError{Errno: unix.Errno(e.GetErrno()), Code: e.GetCode(), Message: e.GetMessage()}
			r.m.log.Debug("rsync: the slave did not install the file", "path", r.items[i].RelPath, "gfid", r.items[i].GFID, "err", r.results[i].Err)
			continue
		}
		r.results[i].Sent = r.sent[i]
		r.results[i].Written = res.GetBytesWritten()
		r.results[i].Delta = !r.items[i].New
		if r.items[i].Create {
			// The file's entry op was fused into its install.
			r.m.obs.EntriesApplied(1)
		}
		r.m.obs.FileSent(r.sent[i])
	}
	return nil
}

// lastLinesOf returns the last n non-empty lines of s, joined by "; ".
func lastLinesOf(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
