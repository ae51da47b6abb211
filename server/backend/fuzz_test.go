package backend_test

// FuzzEntryOps decodes arbitrary bytes into a short sequence of entry, meta,
// purge and read requests over a small pool of GFIDs and applies them to a
// fresh slave root beside an outside directory of canaries. Whatever the
// bytes, the backend must not panic or block, must not change anything
// outside its root, must not make an object of the root share an inode with
// the outside, and must keep .georep to its own bookkeeping.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

const (
	// hostileFuzzMaxOps bounds one input's sequence.
	hostileFuzzMaxOps = 32
	// Request kinds beyond the entry ops (0-8 are pb.EntryOp values, 0 and
	// thus ENTRY_OP_UNSPECIFIED included, to be refused).
	hostileFuzzMeta  = 9
	hostileFuzzPurge = 10
	hostileFuzzRead  = 11
	hostileFuzzKinds = 12
	// A string byte at or above hostileFuzzDict picks a dictionary entry;
	// below, it is the length (mod 32) of raw bytes that follow.
	hostileFuzzDict = 240
	// hostileFuzzDepth nests each input's sandbox this deep below its
	// temporary directory (see hostileNewDeepSandbox): 32 requests, each
	// climbing at most two levels, stay inside.
	hostileFuzzDepth = 2*hostileFuzzMaxOps + 8
	// hostileFuzzOutside in a name or link target stands for the outside
	// directory's absolute path.
	hostileFuzzOutside = hostileOutsideToken
)

// hostileFuzzPool is the GFIDs requests choose from: the root, fixed
// identities, the identities the outside canaries claim, and malformed ones.
func hostileFuzzPool() [][]byte {
	return [][]byte{
		gfid.Root.Bytes(),
		hostileG(1).Bytes(), hostileG(2).Bytes(), hostileG(3).Bytes(),
		hostileG(4).Bytes(), hostileG(5).Bytes(), hostileG(6).Bytes(),
		hostileCanaryGFID.Bytes(), hostileCanaryDirGFID.Bytes(),
		make([]byte, gfid.Size), // all zero: invalid
		nil,                     // missing: invalid
		{1, 2, 3},               // short: invalid
	}
}

// hostileFuzzNames is the name dictionary: the names worth trying that
// random bytes rarely hit.
func hostileFuzzNames() [][]byte {
	return [][]byte{
		[]byte("a"), []byte("b"), []byte("d"), []byte("esc"), []byte("fifo"),
		[]byte(".."), []byte("."), []byte(""), []byte(".georep"), []byte("a/b"),
		[]byte("x\x00y"), []byte(hostileFuzzOutside), bytes.Repeat([]byte("n"), 256), bytes.Repeat([]byte("n"), 255),
		[]byte(hostileCanaryName), []byte("outside"),
	}
}

// hostileFuzzTargets is the link-target dictionary.
func hostileFuzzTargets() [][]byte {
	return [][]byte{
		[]byte(hostileFuzzOutside), []byte(hostileFuzzOutside + "/" + hostileCanaryName), []byte("../outside"), []byte(".."),
		[]byte("../.."), []byte("/"), []byte("/proc/self/root"), []byte("/proc/self/cwd"),
		[]byte("a"), []byte("d"), []byte("esc/.."), []byte(""),
		[]byte("a\x00b"), []byte(".georep/gfid"), []byte("../outside/" + hostileCanaryDirName), bytes.Repeat([]byte("t"), 4097),
	}
}

func hostileFuzzXattrNames() []string {
	return []string{"user.a", "user.b", hostileGFIDXattr, "user.", "security.x", "trusted.georep.x", "user.canary", "system.posix_acl_access"}
}

// hostileFuzzReader hands out input bytes, zero once they run out.
type hostileFuzzReader struct{ b []byte }

func (r *hostileFuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *hostileFuzzReader) str(dict [][]byte) []byte {
	c := r.byte()
	if c >= hostileFuzzDict {
		return dict[int(c-hostileFuzzDict)%len(dict)]
	}
	n := min(int(c%32), len(r.b))
	s := bytes.Clone(r.b[:n])
	r.b = r.b[n:]
	return s
}

// hostileFuzzOp is one decoded request.
type hostileFuzzOp struct {
	kind                    byte
	g, parent, newParent    []byte
	name, newName, target   []byte
	modeA, modeB, flags, vb byte
}

// hostileFuzzType maps 0-7 to a file type (7: none).
func hostileFuzzType(i byte) uint32 {
	return [8]uint32{unix.S_IFREG, unix.S_IFDIR, unix.S_IFLNK, unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK, 0}[i%8]
}

func (o hostileFuzzOp) mode() uint32 {
	return hostileFuzzType(o.modeA) | (uint32(o.modeA>>3)<<8|uint32(o.modeB))&0o7777
}

// hostileFuzzDecode turns input bytes into at most hostileFuzzMaxOps requests.
func hostileFuzzDecode(data []byte) []hostileFuzzOp {
	r := &hostileFuzzReader{b: data}
	pool := hostileFuzzPool()
	names, targets := hostileFuzzNames(), hostileFuzzTargets()
	var ops []hostileFuzzOp
	for len(r.b) > 0 && len(ops) < hostileFuzzMaxOps {
		var o hostileFuzzOp
		o.kind = r.byte() % hostileFuzzKinds
		o.g = pool[int(r.byte())%len(pool)]
		o.parent = pool[int(r.byte())%len(pool)]
		o.newParent = pool[int(r.byte())%len(pool)]
		o.name = r.str(names)
		o.newName = r.str(names)
		o.modeA, o.modeB = r.byte(), r.byte()
		o.target = r.str(targets)
		o.flags, o.vb = r.byte(), r.byte()
		ops = append(ops, o)
	}
	return ops
}

// hostileFuzzSafePath makes a decoded name or link target safe to send on a
// shared host that runs this fuzzer as root: an absolute path is moved
// under the outside directory and a relative one may climb at most two
// levels, so even a backend that trusts names and follows every link only
// reaches the fuzzer's own (deeply nested) temporary directories. Bad names
// stay bad: "", ".", "..", "a/b" and NUL pass unchanged, and an absolute
// name still contains "/". (The real "/" and /proc magic links are probed,
// with harmless requests only, by TestHostileSymlinkEscapes.)
func hostileFuzzSafePath(s *hostileSandbox, t []byte) []byte {
	t = bytes.ReplaceAll(t, []byte(hostileFuzzOutside), []byte(s.outside))
	if bytes.HasPrefix(t, []byte("/")) && !bytes.HasPrefix(t, []byte(s.outside)) {
		t = append([]byte(s.outside), t...)
	}
	if bytes.HasPrefix(t, []byte(s.outside)) {
		rest := t[len(s.outside):]
		if bytes.Contains(rest, []byte("..")) {
			t = append([]byte(s.outside), bytes.ReplaceAll(rest, []byte(".."), []byte("__"))...)
		}
		return t
	}
	parts := bytes.Split(t, []byte("/"))
	ups := 0
	for i, p := range parts {
		if string(p) == ".." {
			ups++
			if ups > 2 {
				parts[i] = []byte("__")
			}
		}
	}
	return bytes.Join(parts, []byte("/"))
}

// hostileFuzzEntry builds the entry for an entry-op request.
func hostileFuzzEntry(s *hostileSandbox, o hostileFuzzOp) *pb.Entry {
	return &pb.Entry{
		Op:            pb.EntryOp(o.kind),
		Gfid:          o.g,
		ParentGfid:    o.parent,
		Name:          hostileFuzzSafePath(s, o.name),
		NewParentGfid: o.newParent,
		NewName:       hostileFuzzSafePath(s, o.newName),
		Stat:          &pb.Stat{Mode: o.mode(), Uid: uint32(o.vb), Gid: uint32(o.vb), Rdev: uint64(o.modeB)},
		LinkTarget:    hostileFuzzSafePath(s, o.target),
	}
}

// hostileFuzzMetaEntry builds the meta entry for a meta request.
func hostileFuzzMetaEntry(o hostileFuzzOp) *pb.MetaEntry {
	m := &pb.MetaEntry{Gfid: o.g}
	if o.flags&1 != 0 {
		m.Mode = hostileU32(o.mode())
	}
	if o.flags&2 != 0 {
		m.Uid, m.Gid = hostileU32(uint32(o.vb)), hostileU32(uint32(o.vb)+1)
	}
	if o.flags&4 != 0 {
		m.Atime = &pb.Timestamp{Sec: int64(o.vb) * 1000003, Nsec: uint32(o.modeB) * 3}
		m.Mtime = &pb.Timestamp{Sec: int64(o.modeA) * 1000033, Nsec: uint32(o.vb) * 7}
	}
	xn := hostileFuzzXattrNames()
	if o.flags&8 != 0 {
		m.SetXattrs = []*pb.Xattr{{Name: xn[int(o.vb)%len(xn)], Value: o.name}}
	}
	if o.flags&16 != 0 {
		m.RemoveXattrs = []string{xn[int(o.modeB)%len(xn)]}
	}
	m.ReplaceXattrs = o.flags&32 != 0
	return m
}

func hostileFuzzGFID(b []byte) gfid.GFID {
	var g gfid.GFID
	copy(g[:], b)
	return g
}

// hostileFuzzApply runs the decoded requests, batching consecutive entry
// ops (and consecutive meta ops) as a master would, and checks the
// per-batch invariants: one clear result per entry, tmp and trash empty.
func hostileFuzzApply(t testing.TB, s *hostileSandbox, ops []hostileFuzzOp) {
	t.Helper()
	for i := 0; i < len(ops); {
		j := i + 1
		k := ops[i].kind
		switch {
		case k < hostileFuzzMeta:
			for j < len(ops) && ops[j].kind < hostileFuzzMeta {
				j++
			}
			var es []*pb.Entry
			for _, o := range ops[i:j] {
				es = append(es, hostileFuzzEntry(s, o))
			}
			var rs []*pb.EntryResult
			hostileWithin(t, s.root, fmt.Sprintf("EntryOps batch of %d", len(es)), func(ctx context.Context) {
				rs = s.b.EntryOps(ctx, es)
			})
			hostileFuzzCheckResults(t, "EntryOps", len(es), rs)
		case k == hostileFuzzMeta:
			for j < len(ops) && ops[j].kind == hostileFuzzMeta {
				j++
			}
			var ms []*pb.MetaEntry
			for _, o := range ops[i:j] {
				ms = append(ms, hostileFuzzMetaEntry(o))
			}
			var rs []*pb.EntryResult
			hostileWithin(t, s.root, fmt.Sprintf("MetaOps batch of %d", len(ms)), func(ctx context.Context) {
				rs = s.b.MetaOps(ctx, ms)
			})
			hostileFuzzCheckResults(t, "MetaOps", len(ms), rs)
		case k == hostileFuzzPurge:
			o := ops[i]
			var names [][]byte
			if o.flags&1 == 0 {
				names = [][]byte{hostileFuzzSafePath(s, o.name)}
			}
			out := s.call(t, "Purge", func(ctx context.Context) error {
				_, err := s.b.Purge(ctx, hostileFuzzGFID(o.parent), names)
				return err
			})
			hostileCheckClear(t, "Purge", out)
		default:
			o := ops[i]
			var what string
			out := s.call(t, "read", func(ctx context.Context) error {
				var err error
				switch o.vb % 4 {
				case 0:
					what = "Entries"
					var des []*pb.DirEntry
					des, err = s.b.Entries(ctx, hostileFuzzGFID(o.g))
					for _, de := range des {
						if string(de.GetName()) == ".georep" && hostileFuzzGFID(o.g) == gfid.Root {
							t.Errorf("Entries(root) lists the reserved directory")
						}
					}
				case 1:
					what = "LstatGFID"
					_, err = s.b.LstatGFID(hostileFuzzGFID(o.g))
				case 2:
					what = "LstatName"
					_, err = s.b.LstatName(hostileFuzzGFID(o.parent), hostileFuzzSafePath(s, o.name))
				default:
					what = "GFID"
					_, _, err = s.b.GFID(hostileFuzzGFID(o.parent), hostileFuzzSafePath(s, o.name))
				}
				return err
			})
			hostileCheckClear(t, what, out)
		}
		for _, d := range []string{"tmp", "trash"} {
			if left := hostileNames(t, filepath.Join(s.root, ".georep", d)); len(left) != 0 {
				t.Errorf("after requests %d-%d .georep/%s holds %v", i, j-1, d, hostileKeys(left))
			}
		}
		i = j
	}
}

func hostileFuzzCheckResults(t testing.TB, what string, n int, rs []*pb.EntryResult) {
	t.Helper()
	if len(rs) != n {
		t.Fatalf("%s returned %d results for %d entries", what, len(rs), n)
	}
	for i, r := range rs {
		hostileCheckClear(t, fmt.Sprintf("%s[%d]", what, i), hostileOutcome{res: r})
	}
}

// hostileFuzzCheckWorld asserts the end-of-input invariants.
func hostileFuzzCheckWorld(t testing.TB, s *hostileSandbox, before map[string]hostileNode) {
	t.Helper()
	if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
		t.Fatalf("the requests changed the world outside the root:\n%s", d)
	}
	hostileCheckContained(t, s)
	known := make(map[gfid.GFID]bool)
	for _, b := range hostileFuzzPool() {
		if g, err := gfid.FromBytes(b); err == nil {
			known[g] = true
		}
	}
	hostileCheckReserved(t, s, known)
	if fi, err := os.Lstat(s.root); err != nil || !fi.IsDir() {
		t.Errorf("the slave root itself is gone or replaced: %v", err)
	}
}

// hostileFastTempDir returns a fresh directory on tmpfs (/dev/shm) when the
// host has a writable one, else t.TempDir(). The backend fsyncs every
// change, which on a disk filesystem costs the fuzzer about 40 ms per input;
// on tmpfs fsync is free and an input takes a few milliseconds. tmpfs keeps
// trusted.* and user.* xattrs, hard links and renameat2 flags, so the code
// paths are the same. Directories live under /dev/shm/georep-hostile-<pid>
// so that hostileReapFastTempDirs can remove those of fuzz workers that
// were killed before their cleanups ran (as every worker is when
// -fuzztime ends).
func hostileFastTempDir(t *testing.T) string {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		return t.TempDir()
	}
	parent := filepath.Join("/dev/shm", fmt.Sprintf("georep-hostile-%d", os.Getpid()))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "in-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove fuzz sandbox: %v", err)
		}
	})
	return dir
}

// hostileReapFastTempDirs removes the /dev/shm sandboxes of processes that
// no longer exist.
func hostileReapFastTempDirs(t testing.TB) {
	t.Helper()
	des, err := os.ReadDir("/dev/shm")
	if err != nil {
		return
	}
	for _, de := range des {
		var pid int
		if _, err := fmt.Sscanf(de.Name(), "georep-hostile-%d", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			if err := os.RemoveAll(filepath.Join("/dev/shm", de.Name())); err != nil {
				t.Logf("remove stale fuzz sandboxes: %v", err)
			}
		}
	}
}

func FuzzEntryOps(f *testing.F) {
	hostileReapFastTempDirs(f)
	f.Cleanup(func() {
		// Empty unless inputs failed to clean up; then it stays for a look.
		_ = os.Remove(filepath.Join("/dev/shm", fmt.Sprintf("georep-hostile-%d", os.Getpid())))
	})
	// The seeds are the committed corpus in testdata/fuzz/FuzzEntryOps
	// (kept in step with hostileFuzzSeeds by TestHostileFuzzSeedCorpus).
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := hostileFuzzDecode(data)
		s := hostileNewSandboxIn(t, hostileFastTempDir(t), hostileFuzzDepth)
		before := s.snapshotOutside(t)
		hostileFuzzApply(t, s, ops)
		hostileFuzzCheckWorld(t, s, before)
	})
}

// hostileFuzzSeed is a named, hand-written input, committed under
// testdata/fuzz/FuzzEntryOps so that plain `go test` replays it.
type hostileFuzzSeed struct {
	name string
	data []byte
}

// hostileFuzzEnc writes requests in the format hostileFuzzDecode reads.
type hostileFuzzEnc struct{ b []byte }

// Pool indexes (see hostileFuzzPool).
const (
	hfRoot = iota
	hfG1
	hfG2
	hfG3
	hfG4
	hfG5
	hfG6
	hfCanary
	hfCanaryDir
	hfZero
	hfNil
	hfShort
)

// hostileFuzzStr is a string field: raw bytes (< 32) or a dictionary index.
type hostileFuzzStr struct {
	raw  string
	dict int // > 0: dictionary entry dict-1
}

func hr(s string) hostileFuzzStr { return hostileFuzzStr{raw: s} }
func hd(i int) hostileFuzzStr    { return hostileFuzzStr{dict: i + 1} }

func (e *hostileFuzzEnc) str(s hostileFuzzStr) {
	if s.dict > 0 {
		e.b = append(e.b, byte(hostileFuzzDict+s.dict-1))
		return
	}
	e.b = append(e.b, byte(len(s.raw)))
	e.b = append(e.b, s.raw...)
}

// op appends one request. typ indexes hostileFuzzTypes; perm is 07777 bits.
func (e *hostileFuzzEnc) op(kind byte, g, parent, newParent byte, name, newName hostileFuzzStr, typ byte, perm uint32, target hostileFuzzStr, flags, vb byte) *hostileFuzzEnc {
	e.b = append(e.b, kind, g, parent, newParent)
	e.str(name)
	e.str(newName)
	e.b = append(e.b, typ|byte(perm>>8)<<3, byte(perm))
	e.str(target)
	e.b = append(e.b, flags, vb)
	return e
}

func hostileFuzzSeeds() []hostileFuzzSeed {
	const (
		create  = byte(pb.EntryOp_ENTRY_OP_CREATE)
		mknod   = byte(pb.EntryOp_ENTRY_OP_MKNOD)
		mkdir   = byte(pb.EntryOp_ENTRY_OP_MKDIR)
		link    = byte(pb.EntryOp_ENTRY_OP_LINK)
		symlink = byte(pb.EntryOp_ENTRY_OP_SYMLINK)
		rename  = byte(pb.EntryOp_ENTRY_OP_RENAME)
		unlink  = byte(pb.EntryOp_ENTRY_OP_UNLINK)
		rmdir   = byte(pb.EntryOp_ENTRY_OP_RMDIR)
		meta    = byte(hostileFuzzMeta)
		purge   = byte(hostileFuzzPurge)
		read    = byte(hostileFuzzRead)
		reg     = 0
		dir     = 1
		lnk     = 2
		fifo    = 3
	)
	none := hr("")
	// Dictionary indexes (see hostileFuzzNames and hostileFuzzTargets).
	const (
		nA, nB, nD, nEsc, nFifo, nDotDot, nDot, nEmpty, nReserved, nSlash, nNUL, nAbs, n256, n255, nCanary, nOutside = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
		tOutside, tOutsideCanary, tRelOutside, tDotDot, tDotDot2, tSlash, tProcRoot, tProcCwd                        = 0, 1, 2, 3, 4, 5, 6, 7
		tReservedIdx, tRelCanaryDir, tLong                                                                           = 12, 14, 15
	)
	_ = nDot
	var seeds []hostileFuzzSeed
	add := func(name string, e *hostileFuzzEnc) { seeds = append(seeds, hostileFuzzSeed{name, e.b}) }

	add("basic-tree", new(hostileFuzzEnc).
		op(mkdir, hfG2, hfRoot, 0, hd(nD), none, dir, 0o755, none, 0, 0).
		op(create, hfG1, hfG2, 0, hr("f"), none, reg, 0o644, none, 0, 0).
		op(link, hfG1, hfRoot, 0, hr("f2"), none, reg, 0o644, none, 0, 0).
		op(rename, hfG1, hfG2, hfRoot, hr("f"), hr("g"), reg, 0o644, none, 0, 0).
		op(meta, hfG1, 0, 0, hr("v"), none, reg, 0o600, none, 1|2|4|8, 7).
		op(unlink, hfG1, hfRoot, 0, hr("g"), none, 0, 0, none, 0, 0).
		op(read, hfG2, 0, 0, none, none, 0, 0, none, 0, 0).
		op(rmdir, hfG2, hfRoot, 0, hd(nD), none, 0, 0, none, 0, 0))

	add("escape-through-absolute-link", new(hostileFuzzEnc).
		op(symlink, hfG3, hfRoot, 0, hd(nEsc), none, lnk, 0o777, hd(tOutside), 0, 0).
		op(create, hfG4, hfG3, 0, hr("pwned"), none, reg, 0o644, none, 0, 0).
		op(mkdir, hfG5, hfG3, 0, hr("pwned-dir"), none, dir, 0o755, none, 0, 0).
		op(meta, hfG3, 0, 0, hr("x"), none, reg, 0o777, none, 1|2|4|8|32, 1).
		op(read, hfG3, 0, 0, none, none, 0, 0, none, 0, 0).
		op(read, 0, hfG3, 0, hd(nCanary), none, 0, 0, none, 0, 2).
		op(purge, 0, hfG3, 0, hd(nCanary), none, 0, 0, none, 0, 0).
		op(purge, 0, hfG3, 0, none, none, 0, 0, none, 1, 0))

	add("escape-through-relative-link", new(hostileFuzzEnc).
		op(create, hfG1, hfRoot, 0, hr("f"), none, reg, 0o644, none, 0, 0).
		op(symlink, hfG3, hfRoot, 0, hd(nEsc), none, lnk, 0o777, hd(tRelOutside), 0, 0).
		op(rename, hfG1, hfRoot, hfG3, hr("f"), hr("moved"), reg, 0o644, none, 0, 0).
		op(link, hfG1, hfG3, 0, hr("linked"), none, reg, 0o644, none, 0, 0).
		op(rename, hfCanary, hfG3, hfRoot, hd(nCanary), hr("stolen"), reg, 0o644, none, 0, 0).
		op(unlink, hfCanary, hfG3, 0, hd(nCanary), none, 0, 0, none, 0, 0).
		op(rmdir, hfCanaryDir, hfG3, 0, hr(hostileCanaryDirName), none, 0, 0, none, 0, 0).
		op(rmdir, hfG3, hfRoot, 0, hd(nEsc), none, 0, 0, none, 0, 0))

	add("bad-names", new(hostileFuzzEnc).
		op(create, hfG1, hfRoot, 0, hd(nDotDot), none, reg, 0o644, none, 0, 0).
		op(create, hfG1, hfRoot, 0, hr("."), none, reg, 0o644, none, 0, 0).
		op(mkdir, hfG2, hfRoot, 0, hd(nSlash), none, dir, 0o755, none, 0, 0).
		op(symlink, hfG3, hfRoot, 0, hd(nNUL), none, lnk, 0o777, hr("x"), 0, 0).
		op(create, hfG4, hfRoot, 0, hd(n256), none, reg, 0o644, none, 0, 0).
		op(create, hfG4, hfRoot, 0, hd(n255), none, reg, 0o644, none, 0, 0).
		op(mkdir, hfG5, hfRoot, 0, hd(nReserved), none, dir, 0o755, none, 0, 0).
		op(create, hfG6, hfRoot, 0, hd(nAbs), none, reg, 0o644, none, 0, 0).
		op(rename, hfG4, hfRoot, hfRoot, hd(n255), hd(nReserved), reg, 0o644, none, 0, 0).
		op(purge, 0, hfRoot, 0, hd(nReserved), none, 0, 0, none, 0, 0).
		op(read, 0, hfRoot, 0, hd(nReserved), none, 0, 0, none, 0, 2))

	add("dotdot-links", new(hostileFuzzEnc).
		op(symlink, hfG3, hfRoot, 0, hr("up"), none, lnk, 0o777, hd(tDotDot), 0, 0).
		op(symlink, hfG4, hfRoot, 0, hr("up2"), none, lnk, 0o777, hd(tDotDot2), 0, 0).
		op(symlink, hfG5, hfRoot, 0, hr("slash"), none, lnk, 0o777, hd(tSlash), 0, 0).
		op(symlink, hfG6, hfRoot, 0, hr("proc"), none, lnk, 0o777, hd(tProcRoot), 0, 0).
		op(read, hfG3, 0, 0, none, none, 0, 0, none, 0, 0).
		op(purge, 0, hfG3, 0, hd(nOutside), none, 0, 0, none, 0, 0).
		op(create, hfG1, hfG4, 0, hr("x"), none, reg, 0o644, none, 0, 0).
		op(purge, 0, hfG5, 0, none, none, 0, 0, none, 1, 0).
		op(meta, hfG6, 0, 0, none, none, reg, 0o700, none, 1|2|32, 9))

	add("fifo", new(hostileFuzzEnc).
		op(mknod, hfG1, hfRoot, 0, hd(nFifo), none, fifo, 0o644, none, 0, 0).
		op(meta, hfG1, 0, 0, hr("v"), none, reg, 0o600, none, 1|2|4|8|16|32, 3).
		op(read, hfG1, 0, 0, none, none, 0, 0, none, 0, 1).
		op(create, hfG2, hfRoot, 0, hd(nFifo), none, reg, 0o644, none, 0, 0).
		op(mknod, hfG3, hfRoot, 0, hr("p"), none, fifo, 0o600, none, 0, 0).
		op(rename, hfG2, hfRoot, hfRoot, hd(nFifo), hr("p"), reg, 0o644, none, 0, 0).
		op(link, hfG3, hfRoot, 0, hr("p2"), none, fifo, 0o600, none, 0, 0).
		op(read, hfRoot, 0, 0, none, none, 0, 0, none, 0, 0))

	add("identity-reuse", new(hostileFuzzEnc).
		op(mkdir, hfG2, hfRoot, 0, hd(nD), none, dir, 0o755, none, 0, 0).
		op(create, hfG2, hfRoot, 0, hd(nA), none, reg, 0o644, none, 0, 0).
		op(link, hfG2, hfRoot, 0, hd(nB), none, dir, 0o755, none, 0, 0).
		op(mkdir, hfRoot, hfG2, 0, hr("root-again"), none, dir, 0o755, none, 0, 0).
		op(rename, hfRoot, hfRoot, hfG2, hd(nD), hr("root-moved"), dir, 0o755, none, 0, 0).
		op(rmdir, hfRoot, hfRoot, 0, hd(nD), none, 0, 0, none, 0, 0).
		op(rename, hfG2, hfRoot, hfG2, hd(nD), hr("inside-itself"), dir, 0o755, none, 0, 0).
		op(create, hfZero, hfRoot, 0, hr("zero"), none, reg, 0o644, none, 0, 0).
		op(create, hfG1, hfShort, 0, hr("short"), none, reg, 0o644, none, 0, 0).
		op(0, hfG1, hfRoot, 0, hr("unspecified"), none, reg, 0o644, none, 0, 0))

	add("forged-xattrs", new(hostileFuzzEnc).
		op(create, hfG1, hfRoot, 0, hr("f"), none, reg, 0o644, none, 0, 0).
		op(meta, hfG1, 0, 0, hr("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"), none, reg, 0, none, 8, 2).
		op(meta, hfG1, 0, 0, none, none, reg, 0, none, 16, 2).
		op(meta, hfG1, 0, 0, hr("v"), none, reg, 0, none, 8|32, 3).
		op(meta, hfG1, 0, 0, hr("v"), none, reg, 0, none, 8, 4).
		op(meta, hfNil, 0, 0, none, none, reg, 0o777, none, 1, 0).
		op(read, 0, hfRoot, 0, hr("f"), none, 0, 0, none, 0, 3))

	add("canary-identities", new(hostileFuzzEnc).
		op(link, hfCanary, hfRoot, 0, hr("stolen"), none, reg, 0o644, none, 0, 0).
		op(rename, hfCanaryDir, hfRoot, hfRoot, hd(nOutside), hr("stolen-dir"), dir, 0o755, none, 0, 0).
		op(meta, hfCanary, 0, 0, none, none, reg, 0o777, none, 1|2|4|32, 5).
		op(read, hfCanaryDir, 0, 0, none, none, 0, 0, none, 0, 0).
		op(purge, 0, hfCanaryDir, 0, none, none, 0, 0, none, 1, 0))

	add("hostile-targets", new(hostileFuzzEnc).
		op(symlink, hfG1, hfRoot, 0, hd(nA), none, lnk, 0o777, hd(tProcCwd), 0, 0).
		op(symlink, hfG2, hfRoot, 0, hd(nB), none, lnk, 0o777, hd(tOutsideCanary), 0, 0).
		op(symlink, hfG3, hfRoot, 0, hr("r"), none, lnk, 0o777, hd(tReservedIdx), 0, 0).
		op(symlink, hfG4, hfRoot, 0, hr("cd"), none, lnk, 0o777, hd(tRelCanaryDir), 0, 0).
		op(symlink, hfG5, hfRoot, 0, hr("long"), none, lnk, 0o777, hd(tLong), 0, 0).
		op(meta, hfG2, 0, 0, hr("v"), none, reg, 0o600, none, 1|2|4|8|32, 0).
		op(link, hfG2, hfRoot, 0, hr("b2"), none, reg, 0o644, none, 0, 0).
		op(create, hfG6, hfG3, 0, hr("in-index"), none, reg, 0o644, none, 0, 0).
		op(purge, 0, hfG4, 0, none, none, 0, 0, none, 1, 0).
		op(rmdir, hfG4, hfRoot, 0, hr("cd"), none, 0, 0, none, 0, 0))

	add("rename-cycles", new(hostileFuzzEnc).
		op(mkdir, hfG1, hfRoot, 0, hd(nA), none, dir, 0o755, none, 0, 0).
		op(mkdir, hfG2, hfG1, 0, hd(nB), none, dir, 0o755, none, 0, 0).
		op(rename, hfG1, hfRoot, hfG2, hd(nA), hr("loop"), dir, 0o755, none, 0, 0).
		op(rename, hfG2, hfG1, hfRoot, hd(nB), hd(nA), dir, 0o755, none, 0, 0).
		op(create, hfG3, hfG2, 0, hr("f"), none, reg, 0o644, none, 0, 0).
		op(rmdir, hfG2, hfRoot, 0, hd(nA), none, 0, 0, none, 0, 0).
		op(read, hfRoot, 0, 0, none, none, 0, 0, none, 0, 0))
	return seeds
}

// TestHostileFuzzSeedCorpus checks that the committed seed corpus is the
// encoding of hostileFuzzSeeds and decodes to what the seeds meant.
// HOSTILE_WRITE_SEEDS=1 rewrites the files after a change of the encoding.
func TestHostileFuzzSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzEntryOps")
	seeds := hostileFuzzSeeds()
	if len(seeds) < 8 {
		t.Fatalf("only %d seeds", len(seeds))
	}
	for _, seed := range seeds {
		t.Run(seed.name, func(t *testing.T) {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed.data)
			path := filepath.Join(dir, seed.name)
			if os.Getenv("HOSTILE_WRITE_SEEDS") == "1" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read seed (run with HOSTILE_WRITE_SEEDS=1 to write it): %v", err)
			}
			if string(got) != want {
				t.Errorf("%s is stale (run with HOSTILE_WRITE_SEEDS=1):\n got %q\nwant %q", path, got, want)
			}
			ops := hostileFuzzDecode(seed.data)
			if len(ops) < 5 {
				t.Errorf("seed decodes to %d requests, want at least 5", len(ops))
			}
			for i, o := range ops {
				if o.kind >= hostileFuzzKinds {
					t.Errorf("request %d has kind %d", i, o.kind)
				}
			}
		})
	}
}

// TestHostileFuzzSafePath pins the target rewriting that keeps the fuzzer
// from planting links to the real "/" on a shared host.
func TestHostileFuzzSafePath(t *testing.T) {
	s := &hostileSandbox{outside: "/tmp/x/outside"}
	tests := []struct{ in, want string }{
		{"/", "/tmp/x/outside/"},
		{"/proc/self/root", "/tmp/x/outside/proc/self/root"},
		{hostileFuzzOutside + "/canary.txt", "/tmp/x/outside/canary.txt"},
		{hostileFuzzOutside + "/../..", "/tmp/x/outside/__/__"},
		{"../outside", "../outside"},
		{"../../..", "../../__"},
		{"a/../../../../b", "a/../../__/__/b"},
		{"plain", "plain"},
	}
	for _, tc := range tests {
		got := string(hostileFuzzSafePath(s, []byte(tc.in)))
		if got != tc.want {
			t.Errorf("hostileFuzzSafePath(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.HasPrefix(got, "/") && !strings.HasPrefix(got, s.outside) {
			t.Errorf("hostileFuzzSafePath(%q) = %q leads out of the sandbox", tc.in, got)
		}
	}
}

// FuzzValidName checks dirfd.ValidName, the one gate every wire name goes
// through, against its definition: accepted exactly when the name is one
// component (non-empty, not "." or "..", no '/' or NUL, at most 255 bytes),
// refused with EINVAL otherwise, and the same for string and []byte.
func FuzzValidName(f *testing.F) {
	for _, n := range hostileFuzzNames() {
		f.Add(n)
	}
	for _, b := range hostileBadNames() {
		f.Add(b.raw)
	}
	f.Add([]byte("..."))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, name []byte) {
		want := len(name) > 0 && len(name) <= dirfd.NameMax &&
			string(name) != "." && string(name) != ".." &&
			!bytes.ContainsAny(name, "/\x00")
		errB := dirfd.ValidName(name)
		errS := dirfd.ValidName(string(name))
		if (errB == nil) != (errS == nil) {
			t.Fatalf("ValidName(%q): []byte says %v, string says %v", name, errB, errS)
		}
		if (errB == nil) != want {
			t.Fatalf("ValidName(%q) = %v, want accepted=%v", name, errB, want)
		}
		if errB != nil && !errors.Is(errB, unix.EINVAL) {
			t.Fatalf("ValidName(%q) = %v, which does not wrap EINVAL", name, errB)
		}
	})
}
