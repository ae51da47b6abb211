package backend_test

// Helpers for the hostile-input tests (adversarial_test.go, fuzz_test.go):
// a sandbox holding a slave root beside an "outside" directory full of
// canaries, byte-and-metadata snapshots of everything that must never
// change, checks of the reserved directory, and a runner that gives every
// operation a deadline (a planted FIFO must not hang the backend).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

const (
	// hostileGFIDXattr is where a privileged slave keeps an object's identity.
	hostileGFIDXattr = "trusted.georep.gfid"
	// hostileOpLimit bounds every single backend call; a call that takes
	// longer is taken to be blocked (for example on a FIFO).
	hostileOpLimit = 10 * time.Second
	// hostileCanaryName is the canary file inside the outside directory.
	hostileCanaryName = "canary.txt"
	// hostileCanaryDirName is the canary directory inside the outside directory.
	hostileCanaryDirName = "canary-dir"
)

// hostileG returns a fixed, recognisable test GFID.
func hostileG(n byte) gfid.GFID { return gfid.GFID{0: 0x5e, 1: 0x1f, 2: 0xee, 15: n} }

// GFIDs the outside canaries claim through hostileGFIDXattr. They are
// never in the slave's index, so no lookup may ever reach them.
var (
	hostileCanaryGFID    = hostileG(0xc1)
	hostileCanaryDirGFID = hostileG(0xc2)
)

// hostileOutsideToken in a test name or link target stands for the outside
// directory's absolute path (an absolute name that, followed, stays in the
// sandbox: safer on a shared host than "/etc").
const hostileOutsideToken = "\x01OUTSIDE\x01"

// expand replaces hostileOutsideToken in b by the outside directory's path.
func (s *hostileSandbox) expand(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte(hostileOutsideToken), []byte(s.outside))
}

// hostileSandbox is one slave root beside an outside directory. base holds
// both (and the cwd box); everything in base except root must never change.
type hostileSandbox struct {
	top     string // t.TempDir(): base is nested below it (see hostileNewDeepSandbox)
	base    string // parent of root and outside
	root    string // the slave root
	outside string // canaries the backend must never touch
	cwdBox  string // a directory tests may chdir into (for /proc/self/cwd)
	marker  string // a unique name used for objects that must never appear outside
	b       *backend.Backend
	// reservedBaseline is the set of names in root/.georep right after Open.
	reservedBaseline map[string]bool
}

// hostileNewSandbox makes base/{slave,outside,cwdbox}, fills outside with
// canaries and opens a backend on base/slave.
func hostileNewSandbox(t testing.TB) *hostileSandbox {
	t.Helper()
	return hostileNewDeepSandbox(t, 0)
}

// hostileNewDeepSandbox is hostileNewSandbox with base nested depth
// directories below the test's temporary directory. The fuzzer uses it so
// that a backend which follows ".." through chains of planted links still
// climbs only through directories the test owns.
func hostileNewDeepSandbox(t testing.TB, depth int) *hostileSandbox {
	t.Helper()
	return hostileNewSandboxIn(t, t.TempDir(), depth)
}

// hostileNewSandboxIn is hostileNewDeepSandbox in the empty directory top,
// which the caller owns and removes.
func hostileNewSandboxIn(t testing.TB, top string, depth int) *hostileSandbox {
	t.Helper()
	base := top
	for range depth {
		base = filepath.Join(base, "h")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatalf("make nested sandbox: %v", err)
	}
	s := &hostileSandbox{
		top:     top,
		base:    base,
		root:    filepath.Join(base, "slave"),
		outside: filepath.Join(base, "outside"),
		cwdBox:  filepath.Join(base, "cwdbox"),
		marker:  "hostile-marker-" + rand.Text()[:12],
	}
	for _, d := range []string{s.root, s.outside, s.cwdBox} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("make sandbox directory: %v", err)
		}
	}
	hostilePlantCanaries(t, s.outside)
	hostileWriteFile(t, filepath.Join(s.cwdBox, "cwd-canary.txt"), "cwd canary\n", 0o600)

	b, err := backend.Open(s.root, backend.Options{})
	if err != nil {
		t.Fatalf("open backend on %s: %v", s.root, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	s.b = b
	s.reservedBaseline = hostileNames(t, filepath.Join(s.root, backend.ReservedDir))
	return s
}

// hostilePlantCanaries fills dir with a file, a directory with a file, a
// symlink and extended attributes, some of them claiming GFIDs.
func hostilePlantCanaries(t testing.TB, dir string) {
	t.Helper()
	canary := filepath.Join(dir, hostileCanaryName)
	hostileWriteFile(t, canary, "the canary must stay exactly as it is\n", 0o640)
	cdir := filepath.Join(dir, hostileCanaryDirName)
	if err := os.Mkdir(cdir, 0o750); err != nil {
		t.Fatalf("make canary dir: %v", err)
	}
	hostileWriteFile(t, filepath.Join(cdir, "inner.txt"), "inner canary\n", 0o644)
	if err := os.Symlink(hostileCanaryName, filepath.Join(dir, "canary-link")); err != nil {
		t.Fatalf("make canary symlink: %v", err)
	}
	for _, x := range []struct {
		path, name string
		value      []byte
	}{
		{canary, "user.canary", []byte("keep me")},
		{canary, hostileGFIDXattr, hostileCanaryGFID.Bytes()},
		{cdir, "user.canary", []byte("keep me too")},
		{cdir, hostileGFIDXattr, hostileCanaryDirGFID.Bytes()},
	} {
		if err := unix.Lsetxattr(x.path, x.name, x.value, 0); err != nil {
			t.Fatalf("set %s on canary %s: %v", x.name, x.path, err)
		}
	}
	// Old, distinctive times: a backend that touches them cannot hide it.
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	for _, p := range []string{canary, cdir, dir} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatalf("set canary times: %v", err)
		}
	}
}

func hostileWriteFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatalf("chmod %s: %v", path, err)
	}
}

// hostileNames lists the names in dir (nil when dir is absent).
func hostileNames(t testing.TB, dir string) map[string]bool {
	t.Helper()
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	m := make(map[string]bool, len(des))
	for _, de := range des {
		m[de.Name()] = true
	}
	return m
}

// hostileNode is what a snapshot records of one object: everything an
// escaping backend could change, ctime included (so even a change that was
// undone again shows).
type hostileNode struct {
	Mode, UID, GID uint32
	Size           int64
	Mtime, Ctime   int64
	Ino, Nlink     uint64
	Content        string // sha256 of a regular file's bytes
	Target         string // a symlink's target
	Xattrs         string // every attribute, all namespaces, sorted
}

// hostileSnapshot records every object beneath dir (dir included) except
// the subtrees whose relative paths are in skip. It never follows symlinks.
func hostileSnapshot(t testing.TB, dir string, skip ...string) map[string]hostileNode {
	t.Helper()
	snap := make(map[string]hostileNode)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		for _, s := range skip {
			if rel == s {
				return filepath.SkipDir
			}
		}
		n, err := hostileStatNode(path)
		if err != nil {
			return err
		}
		snap[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return snap
}

func hostileStatNode(path string) (hostileNode, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return hostileNode{}, fmt.Errorf("lstat %s: %w", path, err)
	}
	n := hostileNode{
		Mode: st.Mode, UID: st.Uid, GID: st.Gid, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, Nlink: uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(path)
		if err != nil {
			return n, fmt.Errorf("read %s: %w", path, err)
		}
		sum := sha256.Sum256(b)
		n.Content = hex.EncodeToString(sum[:])
	case unix.S_IFLNK:
		tgt, err := os.Readlink(path)
		if err != nil {
			return n, fmt.Errorf("readlink %s: %w", path, err)
		}
		n.Target = tgt
	}
	x, err := hostileXattrs(path)
	if err != nil {
		return n, err
	}
	n.Xattrs = x
	return n, nil
}

// hostileXattrs returns every extended attribute of path (not following a
// symlink) as one sorted string.
func hostileXattrs(path string) (string, error) {
	sz, err := unix.Llistxattr(path, nil)
	if err != nil {
		return "", fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	buf := make([]byte, sz+256)
	sz, err = unix.Llistxattr(path, buf)
	if err != nil {
		return "", fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	var parts []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			return "", fmt.Errorf("get xattr %s of %s: %w", name, path, err)
		}
		parts = append(parts, name+"="+hex.EncodeToString(val[:vn]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";"), nil
}

// hostileSnapshotDiff describes how two snapshots differ ("" when equal).
func hostileSnapshotDiff(before, after map[string]hostileNode) string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%q vanished (was %+v)", p, b))
		case a != b:
			out = append(out, fmt.Sprintf("%q changed:\n  before %+v\n  after  %+v", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			out = append(out, fmt.Sprintf("%q appeared: %+v", p, a))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// hostileSystemState is the part of the host outside the sandbox that an
// escape through "/" or /proc/self/root would change: the root directory's
// own metadata (ctime shows even an undone chmod) and whether a marker name
// appeared in it.
type hostileSystemState struct {
	Root   hostileNode
	Marker bool
}

func hostileSystem(t testing.TB, marker string) hostileSystemState {
	t.Helper()
	n, err := hostileStatNode("/")
	if err != nil {
		t.Fatalf("stat /: %v", err)
	}
	_, err = os.Lstat(filepath.Join("/", marker))
	return hostileSystemState{Root: n, Marker: err == nil}
}

// hostileRemoveEscaped removes what an escaping backend may have made in
// "/" under the sandbox's marker name, so a failing run leaves the host as
// it found it. Only the unique marker name is ever touched.
func hostileRemoveEscaped(s *hostileSandbox) {
	p := filepath.Join("/", s.marker)
	if _, err := os.Lstat(p); err == nil {
		_ = os.RemoveAll(p)
	}
	_ = unix.Lremovexattr("/", "user."+s.marker)
}

// hostileInodes returns the (dev, ino) pairs of every object beneath dir.
func hostileInodes(t testing.TB, dir string, skip ...string) map[[2]uint64]string {
	t.Helper()
	m := make(map[[2]uint64]string)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		for _, s := range skip {
			if rel == s {
				return filepath.SkipDir
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		m[[2]uint64{st.Dev, st.Ino}] = path
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return m
}

// hostileCheckContained asserts that no object in the slave root is an
// object of the outside world (a hard link to a canary would let later data
// writes reach it).
func hostileCheckContained(t testing.TB, s *hostileSandbox) {
	t.Helper()
	outside := hostileInodes(t, s.top, s.rootRel())
	for k, p := range hostileInodes(t, s.root) {
		if o, ok := outside[k]; ok && p != s.root {
			t.Errorf("slave object %s is the same inode as %s outside the root", p, o)
		}
	}
}

// rootRel is the root's path relative to top (for snapshots that skip it).
func (s *hostileSandbox) rootRel() string {
	rel, _ := filepath.Rel(s.top, s.root)
	return rel
}

// snapshotOutside records everything in the sandbox except the root.
func (s *hostileSandbox) snapshotOutside(t testing.TB) map[string]hostileNode {
	t.Helper()
	return hostileSnapshot(t, s.top, s.rootRel())
}

var (
	hostileHex2    = regexp.MustCompile(`^[0-9a-f]{2}$`)
	hostileGFIDStr = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// hostileCheckReserved asserts that root/.georep holds only the backend's own
// bookkeeping: the names it had after Open (plus gfid, tmp and trash), an
// index whose entries are canonical GFID strings in 2-hex-digit buckets
// naming GFIDs from known (when known is non-nil), and empty tmp and trash.
func hostileCheckReserved(t testing.TB, s *hostileSandbox, known map[gfid.GFID]bool) {
	t.Helper()
	res := filepath.Join(s.root, backend.ReservedDir)
	fi, err := os.Lstat(res)
	if err != nil {
		t.Errorf("reserved directory: %v", err)
		return
	}
	if !fi.IsDir() {
		t.Errorf("reserved directory %s is now a %v", res, fi.Mode().Type())
		return
	}
	for name := range hostileNames(t, res) {
		if !s.reservedBaseline[name] && name != "gfid" && name != "tmp" && name != "trash" {
			t.Errorf("unexpected object %q in %s (after Open it held %v)", name, res, hostileKeys(s.reservedBaseline))
		}
	}
	for _, d := range []string{"tmp", "trash"} {
		if left := hostileNames(t, filepath.Join(res, d)); len(left) != 0 {
			t.Errorf("%s/%s not empty after the batch: %v", backend.ReservedDir, d, hostileKeys(left))
		}
	}
	idx := filepath.Join(res, "gfid")
	for l1 := range hostileNames(t, idx) {
		p1 := filepath.Join(idx, l1)
		if !hostileHex2.MatchString(l1) || !hostileIsDir(p1) {
			t.Errorf("index level-1 entry %q is not a 2-hex-digit directory", l1)
			continue
		}
		for leaf := range hostileNames(t, p1) {
			g, err := gfid.Parse(leaf)
			if err != nil || !hostileGFIDStr.MatchString(leaf) || g.Hex()[:2] != l1 {
				t.Errorf("index entry %s/%q is not a canonical GFID of that bucket", l1, leaf)
				continue
			}
			if known != nil && !known[g] && g != gfid.Root {
				t.Errorf("index entry %s names GFID %s that no request made", filepath.Join(l1, leaf), g)
			}
		}
	}
}

func hostileIsDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

func hostileKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// hostileWithin runs op with a deadline. A call still running at the
// deadline is reported, then unblocked by opening every FIFO beneath
// fifoRoot read-write (which completes any blocked open of them), and
// waited for again: the goroutine is never left behind while it can be
// reached. A panic in op is reported as a failure with its stack.
func hostileWithin(t testing.TB, fifoRoot, what string, op func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hostileOpLimit)
	defer cancel()
	done := make(chan any, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Sprintf("%v\n%s", r, debug.Stack())
				return
			}
			done <- nil
		}()
		op(ctx)
	}()
	timer := time.NewTimer(hostileOpLimit)
	defer timer.Stop()
	select {
	case p := <-done:
		if p != nil {
			t.Fatalf("%s panicked: %v", what, p)
		}
		return
	case <-timer.C:
	}
	t.Errorf("%s did not return within %v: it is blocked (a FIFO opened without O_NONBLOCK?)", what, hostileOpLimit)
	fds := hostileOpenFIFOs(fifoRoot)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	again := time.NewTimer(hostileOpLimit)
	defer again.Stop()
	select {
	case <-done:
	case <-again.C:
		t.Fatalf("%s still blocked after its FIFOs were opened: abandoning it", what)
	}
}

func hostileOpenFIFOs(dir string) []int {
	var fds []int
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&fs.ModeNamedPipe != 0 {
			if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
				fds = append(fds, fd)
			}
		}
		return nil
	})
	return fds
}

// hostileOutcome is what one hostile call returned: a per-entry result or
// an error.
type hostileOutcome struct {
	res *pb.EntryResult
	err error
}

func (o hostileOutcome) refused() bool {
	return o.err != nil || (o.res != nil && o.res.GetErrno() != 0)
}

func (o hostileOutcome) String() string {
	if o.err != nil {
		return "error: " + o.err.Error()
	}
	if o.res == nil {
		return "no result"
	}
	return fmt.Sprintf("errno=%d code=%q message=%q resolution=%v", o.res.GetErrno(), o.res.GetCode(), o.res.GetMessage(), o.res.GetResolution())
}

// hostileCheckClear asserts that a refusal says what went wrong: a result
// carries a Linux errno with its symbolic name and a message; an error
// wraps a unix.Errno.
func hostileCheckClear(t testing.TB, what string, o hostileOutcome) {
	t.Helper()
	if o.err != nil {
		var e unix.Errno
		if !errors.As(o.err, &e) {
			t.Errorf("%s: error %q wraps no errno (errors.As(err, *unix.Errno) fails)", what, o.err)
		}
		return
	}
	if o.res == nil || o.res.GetErrno() == 0 {
		return
	}
	e := unix.Errno(o.res.GetErrno())
	if want := unix.ErrnoName(e); o.res.GetCode() != want || want == "" {
		t.Errorf("%s: result code %q, want the errno's name %q (errno %d)", what, o.res.GetCode(), want, o.res.GetErrno())
	}
	if o.res.GetMessage() == "" {
		t.Errorf("%s: refused with errno %s but no message", what, unix.ErrnoName(e))
	}
}

// hostileErrno returns the errno of a refusal (0 when none can be found).
func hostileErrno(o hostileOutcome) unix.Errno {
	if o.res != nil && o.res.GetErrno() != 0 {
		return unix.Errno(o.res.GetErrno())
	}
	var e unix.Errno
	if errors.As(o.err, &e) {
		return e
	}
	return 0
}

// entry applies one entry as its own batch, within the deadline.
func (s *hostileSandbox) entry(t testing.TB, e *pb.Entry) hostileOutcome {
	t.Helper()
	var rs []*pb.EntryResult
	hostileWithin(t, s.root, fmt.Sprintf("EntryOps(%v %q)", e.GetOp(), e.GetName()), func(ctx context.Context) {
		rs = s.b.EntryOps(ctx, []*pb.Entry{e})
	})
	if len(rs) != 1 {
		t.Fatalf("EntryOps returned %d results for 1 entry", len(rs))
	}
	return hostileOutcome{res: rs[0]}
}

// meta applies one meta entry as its own batch, within the deadline.
func (s *hostileSandbox) meta(t testing.TB, m *pb.MetaEntry) hostileOutcome {
	t.Helper()
	var rs []*pb.EntryResult
	hostileWithin(t, s.root, "MetaOps", func(ctx context.Context) {
		rs = s.b.MetaOps(ctx, []*pb.MetaEntry{m})
	})
	if len(rs) != 1 {
		t.Fatalf("MetaOps returned %d results for 1 entry", len(rs))
	}
	return hostileOutcome{res: rs[0]}
}

// call runs one non-batch backend call within the deadline.
func (s *hostileSandbox) call(t testing.TB, what string, f func(ctx context.Context) error) hostileOutcome {
	t.Helper()
	var err error
	hostileWithin(t, s.root, what, func(ctx context.Context) { err = f(ctx) })
	return hostileOutcome{err: err}
}

// mustApply applies entries that set up a scenario; each must succeed.
func (s *hostileSandbox) mustApply(t testing.TB, es ...*pb.Entry) {
	t.Helper()
	for _, e := range es {
		if o := s.entry(t, e); o.refused() {
			t.Fatalf("set-up entry %v %q refused: %v", e.GetOp(), e.GetName(), o)
		}
	}
}

func hostileStat(mode uint32) *pb.Stat { return &pb.Stat{Mode: mode} }

func hostileCreate(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), Stat: hostileStat(unix.S_IFREG | 0o644)}
}

func hostileMkdir(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_MKDIR, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), Stat: hostileStat(unix.S_IFDIR | 0o755)}
}

func hostileSymlink(g, parent gfid.GFID, name, target string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_SYMLINK, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), LinkTarget: []byte(target), Stat: hostileStat(unix.S_IFLNK | 0o777)}
}

func hostileMkfifo(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_MKNOD, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), Stat: hostileStat(unix.S_IFIFO | 0o644)}
}

func hostileLink(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_LINK, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), Stat: hostileStat(unix.S_IFREG | 0o644)}
}

func hostileRename(g, parent gfid.GFID, name string, newParent gfid.GFID, newName string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_RENAME, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name), NewParentGfid: newParent.Bytes(), NewName: []byte(newName), Stat: hostileStat(unix.S_IFREG | 0o644)}
}

func hostileUnlink(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_UNLINK, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name)}
}

func hostileRmdir(g, parent gfid.GFID, name string) *pb.Entry {
	return &pb.Entry{Op: pb.EntryOp_ENTRY_OP_RMDIR, Gfid: g.Bytes(), ParentGfid: parent.Bytes(), Name: []byte(name)}
}

func hostileU32(v uint32) *uint32 { return &v }
