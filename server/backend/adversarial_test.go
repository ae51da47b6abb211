package backend_test

// Hostile-input tests: every request here tries to reach outside the slave
// root or into its reserved directory, through planted symlinks, magic
// links, bad names, forged identities, swapped parents and FIFOs. Each test
// asserts the refusal (with a clear errno) where one is due, and afterwards
// that nothing outside the root changed (names, modes, owners, sizes, times
// including ctime, contents, xattrs), that no object in the root is an
// outside inode, and that .georep holds only the backend's own bookkeeping.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/server/backend"
)

// Fixed identities of the objects every scenario starts with.
var (
	hostileFileGFID = hostileG(1) // root/f, a regular file
	hostileDirGFID  = hostileG(2) // root/d, a directory
	hostileLinkGFID = hostileG(3) // root/esc, the hostile symlink
	hostileNewGFID  = hostileG(4) // objects the hostile requests try to make
)

// hostileLinkKind is one hostile symlink planted in the root through a
// SYMLINK entry (so it has a GFID and is indexed).
type hostileLinkKind struct {
	name string
	// target returns the link's target; it may chdir the test.
	target func(t *testing.T, s *hostileSandbox) string
	// victim returns a name that exists in the followed target, or a marker
	// that must never appear there.
	victim func(s *hostileSandbox) string
	// harmless is true when the followed target lies in the sandbox, so a
	// destructive operation that escapes only damages the sandbox.
	harmless bool
}

func hostileLinkKinds() []hostileLinkKind {
	canary := func(*hostileSandbox) string { return hostileCanaryName }
	marker := func(s *hostileSandbox) string { return s.marker }
	return []hostileLinkKind{
		{name: "absolute outside dir", target: func(_ *testing.T, s *hostileSandbox) string { return s.outside }, victim: canary, harmless: true},
		{name: "relative outside dir", target: func(*testing.T, *hostileSandbox) string { return "../outside" }, victim: canary, harmless: true},
		{name: "absolute outside file", target: func(_ *testing.T, s *hostileSandbox) string { return filepath.Join(s.outside, hostileCanaryName) }, victim: canary, harmless: true},
		{name: "dotdot", target: func(*testing.T, *hostileSandbox) string { return ".." }, victim: func(*hostileSandbox) string { return "outside" }, harmless: true},
		{name: "proc self root to outside", target: func(_ *testing.T, s *hostileSandbox) string { return "/proc/self/root" + s.outside }, victim: canary, harmless: true},
		{name: "proc self cwd", target: func(t *testing.T, s *hostileSandbox) string {
			t.Chdir(s.cwdBox) // the magic link then leads into the sandbox
			return "/proc/self/cwd"
		}, victim: func(*hostileSandbox) string { return "cwd-canary.txt" }, harmless: true},
		// These lead out of the sandbox: only operations that are harmless
		// even when followed are sent through them (see hostileLinkOps).
		{name: "slash", target: func(*testing.T, *hostileSandbox) string { return "/" }, victim: marker},
		{name: "proc self root", target: func(*testing.T, *hostileSandbox) string { return "/proc/self/root" }, victim: marker},
	}
}

// hostileLinkCtx is what an operation needs to aim at the planted link.
type hostileLinkCtx struct {
	kind   hostileLinkKind
	name   string // the link's name in the root
	target string
	victim string
	// followed is the lstat of what the link leads to, to send unchanged
	// values (mode, owner, times) through links that lead out of the sandbox.
	followed unix.Stat_t
}

// hostileLinkOp is one request aimed through or at the hostile link.
type hostileLinkOp struct {
	name string
	// destructive ops run only through harmless links: followed through a
	// link to "/", they would damage the host (a purge of the link's name
	// that follows it is rm -rf /). Replacing a conflicting name purges it,
	// so CREATE/MKDIR/RENAME at the link's name count as destructive too.
	destructive bool
	// mustRefuse: the request must fail (a result errno or an error).
	mustRefuse bool
	run        func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome
}

func hostileLinkOps() []hostileLinkOp {
	S := hostileLinkGFID
	R := gfid.Root
	F := hostileFileGFID
	N := hostileNewGFID
	return []hostileLinkOp{
		// Through the link as a parent: every one must be refused.
		{name: "CREATE under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileCreate(N, S, s.marker))
		}},
		{name: "MKDIR under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileMkdir(N, S, s.marker))
		}},
		{name: "SYMLINK under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileSymlink(N, S, s.marker, "x"))
		}},
		{name: "MKNOD under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileMkfifo(N, S, s.marker))
		}},
		{name: "LINK into link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileLink(F, S, s.marker))
		}},
		{name: "RENAME into link as target parent", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRename(F, R, "f", S, s.marker))
		}},
		{name: "Purge named child under link", mustRefuse: true, destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error {
				_, err := s.b.Purge(ctx, S, [][]byte{[]byte(l.victim)})
				return err
			})
		}},
		{name: "Purge nonexistent child under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error {
				_, err := s.b.Purge(ctx, S, [][]byte{[]byte(s.marker)})
				return err
			})
		}},
		{name: "Purge all children of link", mustRefuse: true, destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error {
				_, err := s.b.Purge(ctx, S, nil)
				return err
			})
		}},
		{name: "Entries of link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "Entries", func(ctx context.Context) error {
				des, err := s.b.Entries(ctx, S)
				if err == nil {
					t.Errorf("Entries through the link listed %d names of %s", len(des), l.target)
				}
				return err
			})
		}},
		{name: "LstatName under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "LstatName", func(context.Context) error {
				_, err := s.b.LstatName(S, []byte(l.victim))
				return err
			})
		}},
		{name: "GFID under link", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "GFID", func(context.Context) error {
				g, ok, err := s.b.GFID(S, []byte(l.victim))
				if err == nil && ok {
					t.Errorf("GFID through the link read identity %s from %s", g, l.target)
				}
				return err
			})
		}},

		// Through the link as the source's parent: the backend may fall
		// back to its index or recreate; it must never reach the outside.
		{name: "RENAME from under link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRename(hostileCanaryGFID, S, l.victim, R, "stolen"))
		}},
		{name: "RENAME nonexistent from under link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRename(N, S, s.marker, R, "stolen"))
		}},
		{name: "UNLINK under link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileUnlink(hostileCanaryGFID, S, l.victim))
		}},
		{name: "RMDIR under link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRmdir(hostileCanaryDirGFID, S, hostileCanaryDirName))
		}},
		{name: "UNLINK marker under link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileUnlink(N, S, s.marker))
		}},

		// The link itself as the object: acting on it must act on the link,
		// never on what it points to.
		{name: "RMDIR the link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRmdir(S, R, l.name))
		}},
		{name: "UNLINK the link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			o := s.entry(t, hostileUnlink(S, R, l.name))
			if !o.refused() {
				if _, err := os.Lstat(filepath.Join(s.root, l.name)); err == nil {
					t.Errorf("UNLINK of the link succeeded (%v) but the link is still there", o)
				}
			}
			return o
		}},
		{name: "Purge the link by name", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			var n uint64
			o := s.call(t, "Purge", func(ctx context.Context) error {
				var err error
				n, err = s.b.Purge(ctx, R, [][]byte{[]byte(l.name)})
				return err
			})
			if !o.refused() && n != 1 {
				t.Errorf("Purge of the link removed %d objects, want 1 (the link alone)", n)
			}
			return o
		}},
		{name: "RENAME the link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRename(S, R, l.name, hostileDirGFID, "moved"))
		}},
		{name: "RENAME file onto the link name", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileRename(F, R, "f", R, l.name))
		}},
		{name: "CREATE at the link name", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileCreate(N, R, l.name))
		}},
		{name: "MKDIR at the link name", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileMkdir(N, R, l.name))
		}},
		{name: "LINK a second name for the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.entry(t, hostileLink(S, R, "link2"))
		}},
		{name: "LstatGFID of the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			var r *pb.LstatResponse
			o := s.call(t, "LstatGFID", func(context.Context) error {
				var err error
				r, err = s.b.LstatGFID(S)
				return err
			})
			if o.refused() {
				t.Errorf("LstatGFID of an indexed symlink failed: %v", o)
			} else if r.GetStat().GetMode()&unix.S_IFMT != unix.S_IFLNK || string(r.GetLinkTarget()) != l.target {
				t.Errorf("LstatGFID of the link = mode %o target %q, want a symlink to %q (it must not be followed)", r.GetStat().GetMode(), r.GetLinkTarget(), l.target)
			}
			return o
		}},
		{name: "chmod the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			mode := uint32(0o700)
			if !l.kind.harmless {
				mode = l.followed.Mode & 0o7777
			}
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), Mode: hostileU32(mode)})
		}},
		{name: "chown the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			uid, gid := uint32(4242), uint32(4343)
			if !l.kind.harmless {
				uid, gid = l.followed.Uid, l.followed.Gid
			}
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), Uid: hostileU32(uid), Gid: hostileU32(gid)})
		}},
		{name: "utimes the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			at := &pb.Timestamp{Sec: 1234567890}
			mt := &pb.Timestamp{Sec: 1234567891}
			if !l.kind.harmless {
				at = &pb.Timestamp{Sec: l.followed.Atim.Sec, Nsec: uint32(l.followed.Atim.Nsec)}
				mt = &pb.Timestamp{Sec: l.followed.Mtim.Sec, Nsec: uint32(l.followed.Mtim.Nsec)}
			}
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), Atime: at, Mtime: mt})
		}},
		{name: "set xattr on the link", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), SetXattrs: []*pb.Xattr{{Name: "user." + s.marker, Value: []byte("x")}}})
		}},
		{name: "replace xattrs on the link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), ReplaceXattrs: true})
		}},
		{name: "remove xattr on the link", destructive: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: S.Bytes(), RemoveXattrs: []string{"user.canary"}})
		}},

		// Identities claimed by outside objects are not in the index: no
		// request may find them.
		{name: "LstatGFID of an outside identity", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "LstatGFID", func(context.Context) error {
				_, err := s.b.LstatGFID(hostileCanaryGFID)
				return err
			})
		}},
		{name: "chmod an outside identity", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: hostileCanaryGFID.Bytes(), Mode: hostileU32(0o777)})
		}},
		{name: "Entries of an outside identity", mustRefuse: true, run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			return s.call(t, "Entries", func(ctx context.Context) error {
				_, err := s.b.Entries(ctx, hostileCanaryDirGFID)
				return err
			})
		}},
		{name: "LINK an outside identity into the root", run: func(t *testing.T, s *hostileSandbox, l hostileLinkCtx) hostileOutcome {
			// Allowed to recreate the file from the entry's stat; never to
			// link the canary's inode (checked by hostileCheckContained).
			return s.entry(t, hostileLink(hostileCanaryGFID, R, "stolen"))
		}},
	}
}

// TestHostileSymlinkEscapes plants each hostile symlink (with a GFID) in a
// fresh root and sends every hostile operation through it.
func TestHostileSymlinkEscapes(t *testing.T) {
	escaped := false // set when a request reached outside the root
	for _, kind := range hostileLinkKinds() {
		if !kind.harmless && escaped {
			// An escape was found through a link into the sandbox: do not
			// send anything through links that lead to the real "/".
			t.Fatalf("stopping before %q: an escape was found through a sandbox link; fix it before probing /", kind.name)
		}
		for _, op := range hostileLinkOps() {
			if op.destructive && !kind.harmless {
				continue // would damage the host if it escaped; covered via harmless links
			}
			t.Run(kind.name+"/"+op.name, func(t *testing.T) {
				s := hostileNewSandbox(t)
				t.Cleanup(func() { hostileRemoveEscaped(s) })
				target := kind.target(t, s)
				l := hostileLinkCtx{kind: kind, name: "esc", target: target, victim: kind.victim(s)}
				followed := target
				if !filepath.IsAbs(target) {
					followed = filepath.Join(s.root, target)
				}
				if err := unix.Stat(followed, &l.followed); err != nil {
					t.Fatalf("stat the link's target %s: %v", followed, err)
				}
				s.mustApply(t,
					hostileCreate(hostileFileGFID, gfid.Root, "f"),
					hostileMkdir(hostileDirGFID, gfid.Root, "d"),
					hostileSymlink(hostileLinkGFID, gfid.Root, l.name, target),
				)
				if got, err := os.Readlink(filepath.Join(s.root, l.name)); err != nil || got != target {
					t.Fatalf("SYMLINK stored target %q (%v), want %q verbatim", got, err, target)
				}

				before := s.snapshotOutside(t)
				sysBefore := hostileSystem(t, s.marker)

				o := op.run(t, s, l)
				if op.mustRefuse && !o.refused() {
					t.Errorf("%s through a symlink to %q was accepted: %v", op.name, target, o)
				}
				hostileCheckClear(t, op.name, o)

				if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
					escaped = true
					t.Errorf("%s through a symlink to %q changed the world outside the root (%v):\n%s", op.name, target, o, d)
				}
				if sysAfter := hostileSystem(t, s.marker); sysAfter != sysBefore {
					t.Errorf("%s through a symlink to %q changed / (%v):\n  before %+v\n  after  %+v", op.name, target, o, sysBefore, sysAfter)
				}
				hostileCheckContained(t, s)
				hostileCheckReserved(t, s, map[gfid.GFID]bool{
					hostileFileGFID: true, hostileDirGFID: true, hostileLinkGFID: true, hostileNewGFID: true, hostileCanaryGFID: true,
				})
			})
		}
	}
}

// hostileBadName is a name that must never be accepted as a basename.
type hostileBadName struct {
	name string
	raw  []byte
}

func hostileBadNames() []hostileBadName {
	return []hostileBadName{
		{"empty", []byte("")},
		{"dot", []byte(".")},
		{"dotdot", []byte("..")},
		{"slash inside", []byte("a/b")},
		{"absolute", []byte(hostileOutsideToken)},
		{"absolute child", []byte(hostileOutsideToken + "/" + hostileCanaryName)},
		{"trailing slash", []byte("x/")},
		{"dotdot path", []byte("../outside")},
		{"NUL inside", []byte("x\x00y")},
		{"NUL only", []byte("\x00")},
		{"256 bytes", bytes.Repeat([]byte("n"), 256)},
		{"4097 bytes", bytes.Repeat([]byte("n"), 4097)},
	}
}

// TestHostileNames sends every kind of request with names that try to
// escape or to reach the reserved directory; all must be refused with
// EINVAL or ENAMETOOLONG (or EPERM/EACCES for the reserved name) and leave
// the tree as it was.
func TestHostileNames(t *testing.T) {
	R := gfid.Root
	F := hostileFileGFID
	N := hostileNewGFID
	type request struct {
		name string
		run  func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome
	}
	entry := func(op pb.EntryOp, g gfid.GFID, withStat uint32) func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
		return func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			e := &pb.Entry{Op: op, Gfid: g.Bytes(), ParentGfid: R.Bytes(), Name: name, LinkTarget: []byte("t")}
			if withStat != 0 {
				e.Stat = hostileStat(withStat)
			}
			return s.entry(t, e)
		}
	}
	requests := []request{
		{"CREATE", entry(pb.EntryOp_ENTRY_OP_CREATE, N, unix.S_IFREG|0o644)},
		{"MKDIR", entry(pb.EntryOp_ENTRY_OP_MKDIR, N, unix.S_IFDIR|0o755)},
		{"MKNOD", entry(pb.EntryOp_ENTRY_OP_MKNOD, N, unix.S_IFIFO|0o644)},
		{"SYMLINK", entry(pb.EntryOp_ENTRY_OP_SYMLINK, N, unix.S_IFLNK|0o777)},
		{"LINK", entry(pb.EntryOp_ENTRY_OP_LINK, F, unix.S_IFREG|0o644)},
		{"UNLINK", entry(pb.EntryOp_ENTRY_OP_UNLINK, F, 0)},
		{"RMDIR", entry(pb.EntryOp_ENTRY_OP_RMDIR, hostileDirGFID, 0)},
		{"RENAME target name", func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			e := hostileRename(F, R, "f", R, "")
			e.NewName = name
			return s.entry(t, e)
		}},
		{"RENAME source name", func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			e := hostileRename(F, R, "", R, "renamed")
			e.Name = name
			return s.entry(t, e)
		}},
		{"LstatName", func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			return s.call(t, "LstatName", func(context.Context) error { _, err := s.b.LstatName(R, name); return err })
		}},
		{"GFID", func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			return s.call(t, "GFID", func(context.Context) error { _, _, err := s.b.GFID(R, name); return err })
		}},
		{"Purge", func(t *testing.T, s *hostileSandbox, name []byte) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error { _, err := s.b.Purge(ctx, R, [][]byte{name}); return err })
		}},
	}
	names := hostileBadNames()
	names = append(names, hostileBadName{"reserved dir at root", []byte(backend.ReservedDir)})
	for _, n := range names {
		for _, r := range requests {
			t.Run(n.name+"/"+r.name, func(t *testing.T) {
				s := hostileNewSandbox(t)
				s.mustApply(t,
					hostileCreate(F, R, "f"),
					hostileMkdir(hostileDirGFID, R, "d"),
				)
				before := hostileSnapshot(t, s.top)
				o := r.run(t, s, s.expand(n.raw))
				if !o.refused() {
					t.Errorf("%s with name %q was accepted: %v", r.name, n.raw, o)
				}
				hostileCheckClear(t, r.name, o)
				want := []unix.Errno{unix.EINVAL, unix.ENAMETOOLONG}
				if n.name == "reserved dir at root" {
					want = append(want, unix.EPERM, unix.EACCES)
				}
				if e := hostileErrno(o); o.refused() && !slices.Contains(want, e) {
					t.Errorf("%s with name %q refused with %s, want one of %v", r.name, n.raw, unix.ErrnoName(e), want)
				}
				// A refused request changes nothing, in the root or anywhere.
				if d := hostileSnapshotDiff(before, hostileSnapshot(t, s.top)); d != "" {
					t.Errorf("refused %s with name %q changed the sandbox:\n%s", r.name, n.raw, d)
				}
				hostileCheckReserved(t, s, map[gfid.GFID]bool{F: true, hostileDirGFID: true})
			})
		}
	}
}

// TestHostileUnusualButValidNames is the positive control for
// TestHostileNames: odd names that are still one component are stored
// byte-exact.
func TestHostileUnusualButValidNames(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
	}{
		{"255 bytes", bytes.Repeat([]byte("n"), 255)},
		{"three dots", []byte("...")},
		{"dot prefix", []byte(".hidden")},
		{"not UTF-8", []byte("\xff\xfe\x80")},
		{"newline and tab", []byte("a\nb\tc")},
		{"backslash", []byte(`a\b`)},
		{"reserved-looking", []byte(backend.ReservedDir + "x")},
		{"dash", []byte("-rf")},
	}
	s := hostileNewSandbox(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := hostileG(byte(0x40 + i))
			o := s.entry(t, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: g.Bytes(), ParentGfid: gfid.Root.Bytes(), Name: tc.raw, Stat: hostileStat(unix.S_IFREG | 0o600)})
			if o.refused() {
				t.Fatalf("CREATE %q refused: %v", tc.raw, o)
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(s.root, string(tc.raw)), &st); err != nil {
				t.Fatalf("CREATE %q made nothing at that name: %v", tc.raw, err)
			}
			got, ok, err := s.b.GFID(gfid.Root, tc.raw)
			if err != nil || !ok || got != g {
				t.Errorf("GFID(root, %q) = %s, %v, %v; want %s", tc.raw, got, ok, err, g)
			}
		})
	}
	hostileCheckReserved(t, s, nil)
}

// TestHostileReservedDir checks that the reserved directory is invisible
// and untouchable: not listed, not removed by a purge of everything, not
// reachable by identities forged in xattrs.
func TestHostileReservedDir(t *testing.T) {
	R := gfid.Root
	tests := []struct {
		name string
		run  func(t *testing.T, s *hostileSandbox)
	}{
		{"Entries of root hides it", func(t *testing.T, s *hostileSandbox) {
			des, err := s.b.Entries(t.Context(), R)
			if err != nil {
				t.Fatalf("Entries(root): %v", err)
			}
			var names []string
			for _, de := range des {
				names = append(names, string(de.GetName()))
			}
			if slices.Contains(names, backend.ReservedDir) {
				t.Errorf("Entries(root) lists %s: %q", backend.ReservedDir, names)
			}
			if !slices.Equal(names, []string{"d", "f"}) {
				t.Errorf("Entries(root) = %q, want [d f]", names)
			}
		}},
		{"Purge of everything keeps it", func(t *testing.T, s *hostileSandbox) {
			n, err := s.b.Purge(t.Context(), R, nil)
			if err != nil {
				t.Fatalf("Purge(root, all): %v", err)
			}
			if n != 3 { // d, d/inner, f
				t.Errorf("Purge(root, all) removed %d objects, want 3", n)
			}
			if left := hostileNames(t, s.root); !slices.Equal(hostileKeys(left), []string{backend.ReservedDir}) {
				t.Errorf("after Purge(root, all) the root holds %v, want only %s", hostileKeys(left), backend.ReservedDir)
			}
			for _, sub := range []string{"gfid", "tmp", "trash"} {
				if p := filepath.Join(s.root, backend.ReservedDir, sub); !hostileIsDir(p) && s.reservedBaseline[sub] {
					t.Errorf("Purge(root, all) removed %s", p)
				}
			}
		}},
		{"RMDIR with the root's GFID removes nothing", func(t *testing.T, s *hostileSandbox) {
			o := s.entry(t, hostileRmdir(R, R, "d"))
			if !o.refused() && !hostileIsDir(filepath.Join(s.root, "d")) {
				t.Errorf("RMDIR with the root's GFID removed d: %v", o)
			}
		}},
		{"RENAME of the root is refused", func(t *testing.T, s *hostileSandbox) {
			o := s.entry(t, hostileRename(R, R, "d", hostileDirGFID, "root-moved"))
			if !o.refused() {
				t.Errorf("RENAME of the root was accepted: %v", o)
			}
			hostileCheckClear(t, "RENAME root", o)
		}},
		{"MKDIR with the root's GFID is refused", func(t *testing.T, s *hostileSandbox) {
			o := s.entry(t, hostileMkdir(R, hostileDirGFID, "root2"))
			if !o.refused() {
				t.Errorf("MKDIR with the root's GFID was accepted: %v", o)
			}
			hostileCheckClear(t, "MKDIR root gfid", o)
		}},
		{"LINK of the root is refused", func(t *testing.T, s *hostileSandbox) {
			o := s.entry(t, hostileLink(R, hostileDirGFID, "root-link"))
			if !o.refused() {
				t.Errorf("LINK of the root was accepted: %v", o)
			}
			hostileCheckClear(t, "LINK root", o)
		}},
		{"CREATE with a directory's GFID makes no second object", func(t *testing.T, s *hostileSandbox) {
			// Refusing is fine, and so is treating it as a replayed CREATE
			// of an object since renamed; making a file with the directory's
			// identity is not.
			o := s.entry(t, hostileCreate(hostileDirGFID, R, "dir-as-file"))
			hostileCheckClear(t, "CREATE dir gfid", o)
			if _, err := os.Lstat(filepath.Join(s.root, "dir-as-file")); err == nil {
				t.Errorf("CREATE reusing a directory's GFID made dir-as-file: %v", o)
			}
			if g, ok, err := s.b.GFID(R, []byte("d")); err != nil || !ok || g != hostileDirGFID || !hostileIsDir(filepath.Join(s.root, "d")) {
				t.Errorf("after CREATE reusing its GFID, d is %s, %v, %v", g, ok, err)
			}
		}},
		{"forged identity xattr is refused", func(t *testing.T, s *hostileSandbox) {
			for _, name := range []string{hostileGFIDXattr, "trusted.georep.x", "security.capability", "system.posix_acl_access", "trusted.overlay.opaque"} {
				o := s.meta(t, &pb.MetaEntry{Gfid: hostileFileGFID.Bytes(), SetXattrs: []*pb.Xattr{{Name: name, Value: R.Bytes()}}})
				if !o.refused() {
					t.Errorf("MetaOps set %s was accepted: %v", name, o)
				}
				hostileCheckClear(t, "set "+name, o)
				// Removing a non-user attribute may be refused or ignored;
				// the identity check below catches one that was obeyed.
				o = s.meta(t, &pb.MetaEntry{Gfid: hostileFileGFID.Bytes(), RemoveXattrs: []string{name}})
				hostileCheckClear(t, "remove "+name, o)
			}
			o := s.meta(t, &pb.MetaEntry{Gfid: hostileFileGFID.Bytes(), ReplaceXattrs: true})
			if o.refused() {
				t.Errorf("MetaOps replace_xattrs with none refused: %v", o)
			}
			if g, ok, err := s.b.GFID(R, []byte("f")); err != nil || !ok || g != hostileFileGFID {
				t.Errorf("after hostile xattr requests f's identity is %s, %v, %v; want %s", g, ok, err, hostileFileGFID)
			}
		}},
		{"xattr names and sizes from the wire are checked", func(t *testing.T, s *hostileSandbox) {
			for _, x := range []*pb.Xattr{
				{Name: "user.", Value: []byte("v")},
				{Name: "user.a\x00b", Value: []byte("v")},
				{Name: "user." + strings.Repeat("x", 300), Value: []byte("v")},
				{Name: "user.big", Value: bytes.Repeat([]byte("v"), 70<<10)},
				{Name: "", Value: []byte("v")},
			} {
				o := s.meta(t, &pb.MetaEntry{Gfid: hostileFileGFID.Bytes(), SetXattrs: []*pb.Xattr{x}})
				if !o.refused() {
					t.Errorf("MetaOps set xattr %.40q (%d bytes) was accepted: %v", x.GetName(), len(x.GetValue()), o)
				}
				hostileCheckClear(t, "set xattr", o)
			}
		}},
		{"mode type bits cannot change the type", func(t *testing.T, s *hostileSandbox) {
			o := s.meta(t, &pb.MetaEntry{Gfid: hostileFileGFID.Bytes(), Mode: hostileU32(unix.S_IFDIR | 0o751)})
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(s.root, "f"), &st); err != nil {
				t.Fatalf("lstat f: %v", err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("chmod with directory type bits turned f into mode %o", st.Mode)
			}
			if !o.refused() && st.Mode&0o7777 != 0o751 {
				t.Errorf("chmod %o accepted (%v) but f has mode %o", unix.S_IFDIR|0o751, o, st.Mode)
			}
		}},
		{"malformed GFIDs are refused", func(t *testing.T, s *hostileSandbox) {
			for _, g := range [][]byte{nil, make([]byte, 16), make([]byte, 15), bytes.Repeat([]byte{1}, 17)} {
				e := hostileCreate(hostileNewGFID, R, "bad-gfid")
				e.Gfid = g
				if o := s.entry(t, e); !o.refused() || hostileErrno(o) != unix.EINVAL {
					t.Errorf("CREATE with gfid %x: %v, want EINVAL", g, o)
				}
				e = hostileCreate(hostileNewGFID, R, "bad-parent")
				e.ParentGfid = g
				if o := s.entry(t, e); !o.refused() || hostileErrno(o) != unix.EINVAL {
					t.Errorf("CREATE with parent gfid %x: %v, want EINVAL", g, o)
				}
				if o := s.meta(t, &pb.MetaEntry{Gfid: g, Mode: hostileU32(0o600)}); !o.refused() {
					t.Errorf("MetaOps with gfid %x accepted: %v", g, o)
				}
			}
			for _, op := range []pb.EntryOp{pb.EntryOp_ENTRY_OP_UNSPECIFIED, pb.EntryOp(99)} {
				e := hostileCreate(hostileNewGFID, R, "bad-op")
				e.Op = op
				if o := s.entry(t, e); !o.refused() || hostileErrno(o) != unix.EINVAL {
					t.Errorf("entry with op %v: %v, want EINVAL", op, o)
				}
			}
			if _, err := os.Lstat(filepath.Join(s.root, "bad-gfid")); err == nil {
				t.Errorf("a CREATE with a malformed GFID made bad-gfid")
			}
		}},
		{"hostile symlink targets", func(t *testing.T, s *hostileSandbox) {
			for i, tgt := range [][]byte{nil, []byte("a\x00b"), bytes.Repeat([]byte("t"), 4097)} {
				o := s.entry(t, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_SYMLINK, Gfid: hostileG(byte(0x60 + i)).Bytes(), ParentGfid: R.Bytes(), Name: []byte("bad-target"), LinkTarget: tgt, Stat: hostileStat(unix.S_IFLNK | 0o777)})
				if !o.refused() {
					t.Errorf("SYMLINK with target %.20q (%d bytes) accepted: %v", tgt, len(tgt), o)
				}
				hostileCheckClear(t, "SYMLINK bad target", o)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := hostileNewSandbox(t)
			s.mustApply(t,
				hostileCreate(hostileFileGFID, R, "f"),
				hostileMkdir(hostileDirGFID, R, "d"),
				hostileCreate(hostileG(5), hostileDirGFID, "inner"),
			)
			resBefore := hostileSnapshot(t, filepath.Join(s.root, backend.ReservedDir))
			outBefore := s.snapshotOutside(t)
			tc.run(t, s)
			if d := hostileSnapshotDiff(outBefore, s.snapshotOutside(t)); d != "" {
				t.Errorf("changed the world outside the root:\n%s", d)
			}
			if tc.name != "Purge of everything keeps it" {
				hostileCheckReservedUnchanged(t, s, resBefore)
			}
			hostileCheckReserved(t, s, nil)
			hostileCheckContained(t, s)
		})
	}
}

// hostileCheckReservedUnchanged asserts that the reserved directory's own
// top level and tmp/trash are as they were (the index may legitimately
// change, so only its shape is checked, by hostileCheckReserved).
func hostileCheckReservedUnchanged(t *testing.T, s *hostileSandbox, before map[string]hostileNode) {
	t.Helper()
	after := hostileSnapshot(t, filepath.Join(s.root, backend.ReservedDir))
	keep := func(m map[string]hostileNode) map[string]hostileNode {
		out := make(map[string]hostileNode)
		for p, n := range m {
			if p == "." || p == "gfid" || strings.HasPrefix(p, "gfid/") {
				continue // the index and the directory's own times change with legitimate work
			}
			n.Ctime, n.Mtime = 0, 0
			out[p] = n
		}
		return out
	}
	if d := hostileSnapshotDiff(keep(before), keep(after)); d != "" {
		t.Errorf("the reserved directory changed:\n%s", d)
	}
}

// TestHostileParentSwappedForSymlink makes a directory by GFID in one batch,
// swaps it for a symlink (even one claiming the directory's identity) on
// disk, and sends a second batch addressing the directory by GFID.
func TestHostileParentSwappedForSymlink(t *testing.T) {
	R := gfid.Root
	D := hostileDirGFID
	F := hostileFileGFID
	N := hostileNewGFID
	swaps := []struct {
		name string
		// strict: the directory is gone, so every request must be refused.
		strict bool
		swap   func(t *testing.T, s *hostileSandbox)
	}{
		{"removed, symlink to outside with the dir's identity", true, func(t *testing.T, s *hostileSandbox) {
			d := filepath.Join(s.root, "d")
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			hostilePlantLink(t, s.outside, d, D)
		}},
		{"removed, symlink to dotdot", true, func(t *testing.T, s *hostileSandbox) {
			d := filepath.Join(s.root, "d")
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			hostilePlantLink(t, "../..", d, D)
		}},
		{"moved aside, symlink to outside with the dir's identity", false, func(t *testing.T, s *hostileSandbox) {
			d := filepath.Join(s.root, "d")
			if err := os.Rename(d, filepath.Join(s.root, "d-aside")); err != nil {
				t.Fatal(err)
			}
			hostilePlantLink(t, s.outside, d, D)
		}},
		{"moved aside, symlink to proc self root outside", false, func(t *testing.T, s *hostileSandbox) {
			d := filepath.Join(s.root, "d")
			if err := os.Rename(d, filepath.Join(s.root, "d-aside")); err != nil {
				t.Fatal(err)
			}
			hostilePlantLink(t, "/proc/self/root"+s.outside, d, D)
		}},
	}
	requests := []struct {
		name string
		run  func(t *testing.T, s *hostileSandbox) hostileOutcome
	}{
		{"CREATE", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileCreate(N, D, s.marker)) }},
		{"MKDIR", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileMkdir(N, D, s.marker)) }},
		{"SYMLINK", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileSymlink(N, D, s.marker, "x"))
		}},
		{"LINK", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileLink(F, D, s.marker)) }},
		{"RENAME into", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileRename(F, R, "f", D, s.marker))
		}},
		{"UNLINK canary", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileUnlink(hostileCanaryGFID, D, hostileCanaryName))
		}},
		{"RMDIR canary dir", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileRmdir(hostileCanaryDirGFID, D, hostileCanaryDirName))
		}},
		{"Purge all", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error { _, err := s.b.Purge(ctx, D, nil); return err })
		}},
		{"Entries", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Entries", func(ctx context.Context) error { _, err := s.b.Entries(ctx, D); return err })
		}},
		{"LstatName", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "LstatName", func(context.Context) error { _, err := s.b.LstatName(D, []byte(hostileCanaryName)); return err })
		}},
		{"chmod", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: D.Bytes(), Mode: hostileU32(0o700), Uid: hostileU32(4242), Gid: hostileU32(4242)})
		}},
		{"replace xattrs", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: D.Bytes(), ReplaceXattrs: true})
		}},
	}
	for _, sw := range swaps {
		for _, rq := range requests {
			t.Run(sw.name+"/"+rq.name, func(t *testing.T) {
				s := hostileNewSandbox(t)
				s.mustApply(t,
					hostileMkdir(D, R, "d"),
					hostileCreate(F, R, "f"),
				)
				sw.swap(t, s)
				before := s.snapshotOutside(t)
				o := rq.run(t, s)
				// "UNLINK canary"/"RMDIR canary dir" may report the name as
				// already gone; everything else addresses a directory that is
				// no longer one.
				mayBeIdempotent := strings.HasPrefix(rq.name, "UNLINK") || strings.HasPrefix(rq.name, "RMDIR")
				if sw.strict && !mayBeIdempotent && !o.refused() {
					t.Errorf("%s with a parent GFID now held by a symlink was accepted: %v", rq.name, o)
				}
				hostileCheckClear(t, rq.name, o)
				if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
					t.Errorf("%s through the swapped parent changed the world outside the root (%v):\n%s", rq.name, o, d)
				}
				hostileCheckContained(t, s)
				hostileCheckReserved(t, s, map[gfid.GFID]bool{D: true, F: true, N: true})
			})
		}
	}
}

// hostilePlantLink makes a symlink at path with target, claiming identity g.
func hostilePlantLink(t *testing.T, target, path string, g gfid.GFID) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatalf("plant symlink: %v", err)
	}
	if err := unix.Lsetxattr(path, hostileGFIDXattr, g.Bytes(), 0); err != nil {
		t.Fatalf("give planted symlink identity %s: %v", g, err)
	}
}

// TestHostileFIFO plants FIFOs (one made through MKNOD, so indexed; one
// planted on disk claiming an identity; one planted at a name a CREATE will
// use) and checks that no operation blocks on them.
func TestHostileFIFO(t *testing.T) {
	R := gfid.Root
	Q := hostileG(0x70) // the FIFO made by MKNOD
	P := hostileG(0x71) // the identity the planted FIFO claims
	N := hostileNewGFID
	tests := []struct {
		name string
		run  func(t *testing.T, s *hostileSandbox) hostileOutcome
	}{
		{"chmod", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			o := s.meta(t, &pb.MetaEntry{Gfid: Q.Bytes(), Mode: hostileU32(0o600)})
			if !o.refused() {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(s.root, "fifo"), &st); err != nil || st.Mode != unix.S_IFIFO|0o600 {
					t.Errorf("chmod of the FIFO accepted but its mode is %o (%v), want %o", st.Mode, err, unix.S_IFIFO|0o600)
				}
			}
			return o
		}},
		{"chown", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: Q.Bytes(), Uid: hostileU32(4242), Gid: hostileU32(4242)})
		}},
		{"utimes", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: Q.Bytes(), Mtime: &pb.Timestamp{Sec: 1000}, Atime: &pb.Timestamp{Sec: 1000}})
		}},
		{"set xattr", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: Q.Bytes(), SetXattrs: []*pb.Xattr{{Name: "user.x", Value: []byte("1")}}})
		}},
		{"replace xattrs", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: Q.Bytes(), ReplaceXattrs: true})
		}},
		{"chmod planted", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: P.Bytes(), Mode: hostileU32(0o600)})
		}},
		{"LstatGFID", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "LstatGFID", func(context.Context) error { _, err := s.b.LstatGFID(Q); return err })
		}},
		{"LstatName planted", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "LstatName", func(context.Context) error { _, err := s.b.LstatName(R, []byte("planted-fifo")); return err })
		}},
		{"GFID planted", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "GFID", func(context.Context) error { _, _, err := s.b.GFID(R, []byte("planted-fifo")); return err })
		}},
		{"Entries", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Entries", func(ctx context.Context) error { _, err := s.b.Entries(ctx, R); return err })
		}},
		{"CREATE over FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileCreate(N, R, "fifo")) }},
		{"CREATE over planted FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileCreate(N, R, "target"))
		}},
		{"LINK FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileLink(Q, R, "fifo2")) }},
		{"RENAME FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileRename(Q, R, "fifo", R, "fifo3"))
		}},
		{"RENAME file over FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileRename(hostileFileGFID, R, "f", R, "planted-fifo"))
		}},
		{"UNLINK FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileUnlink(Q, R, "fifo")) }},
		{"UNLINK planted", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileUnlink(P, R, "planted-fifo"))
		}},
		{"RMDIR FIFO", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileRmdir(Q, R, "fifo")) }},
		{"Purge FIFOs", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error {
				_, err := s.b.Purge(ctx, R, [][]byte{[]byte("planted-fifo"), []byte("fifo")})
				return err
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := hostileNewSandbox(t)
			s.mustApply(t,
				hostileMkfifo(Q, R, "fifo"),
				hostileCreate(hostileFileGFID, R, "f"),
			)
			for _, name := range []string{"planted-fifo", "target"} {
				p := filepath.Join(s.root, name)
				if err := unix.Mkfifo(p, 0o644); err != nil {
					t.Fatalf("plant FIFO: %v", err)
				}
				if name == "planted-fifo" {
					if err := unix.Lsetxattr(p, hostileGFIDXattr, P.Bytes(), 0); err != nil {
						t.Fatalf("give planted FIFO an identity: %v", err)
					}
				}
			}
			before := s.snapshotOutside(t)
			o := tc.run(t, s) // hostileWithin fails the test when it blocks
			hostileCheckClear(t, tc.name, o)
			if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
				t.Errorf("%s changed the world outside the root:\n%s", tc.name, d)
			}
			hostileCheckReserved(t, s, map[gfid.GFID]bool{Q: true, P: true, N: true, hostileFileGFID: true})
		})
	}
}

// hostileIndexEntry is the path of g's entry in the slave's GFID index.
func hostileIndexEntry(s *hostileSandbox, g gfid.GFID) string {
	return filepath.Join(s.root, backend.IndexPath(g))
}

// TestHostileCorruptIndex points a directory's index entry (a symlink that
// the backend reads, never follows) at places it must never resolve to: the
// reserved directory itself, a hostile symlink, itself, paths with "..",
// and absolute paths. Requests addressing the directory by GFID must then
// be refused and reach neither .georep nor the outside.
func TestHostileCorruptIndex(t *testing.T) {
	R := gfid.Root
	D := hostileDirGFID
	N := hostileNewGFID
	targets := []struct {
		name   string
		target func(s *hostileSandbox) string
	}{
		{"reserved dir", func(*hostileSandbox) string { return R.String() + "/" + backend.ReservedDir }},
		{"hostile symlink", func(*hostileSandbox) string { return R.String() + "/esc" }},
		{"itself", func(*hostileSandbox) string { return D.String() + "/d" }},
		{"dotdot name", func(*hostileSandbox) string { return R.String() + "/.." }},
		{"dotdot path", func(*hostileSandbox) string { return R.String() + "/../outside" }},
		{"absolute", func(s *hostileSandbox) string { return s.outside }},
		{"proc root", func(s *hostileSandbox) string { return "/proc/self/root" + s.outside }},
		{"index bucket", func(*hostileSandbox) string { return "../.." }},
		{"undecorated name", func(*hostileSandbox) string { return "d" }},
	}
	requests := []struct {
		name string
		run  func(t *testing.T, s *hostileSandbox) hostileOutcome
	}{
		{"CREATE", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileCreate(N, D, s.marker)) }},
		{"MKDIR", func(t *testing.T, s *hostileSandbox) hostileOutcome { return s.entry(t, hostileMkdir(N, D, s.marker)) }},
		{"RENAME into", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.entry(t, hostileRename(hostileFileGFID, R, "f", D, s.marker))
		}},
		{"Purge all", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Purge", func(ctx context.Context) error { _, err := s.b.Purge(ctx, D, nil); return err })
		}},
		{"Entries", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.call(t, "Entries", func(ctx context.Context) error { _, err := s.b.Entries(ctx, D); return err })
		}},
		{"chmod", func(t *testing.T, s *hostileSandbox) hostileOutcome {
			return s.meta(t, &pb.MetaEntry{Gfid: D.Bytes(), Mode: hostileU32(0o700)})
		}},
	}
	for _, tg := range targets {
		for _, rq := range requests {
			t.Run(tg.name+"/"+rq.name, func(t *testing.T) {
				s := hostileNewSandbox(t)
				s.mustApply(t,
					hostileMkdir(D, R, "d"),
					hostileCreate(hostileFileGFID, R, "f"),
					hostileSymlink(hostileLinkGFID, R, "esc", s.outside),
				)
				// A fresh backend, so no directory fd is cached from the set-up.
				if err := s.b.Close(); err != nil {
					t.Fatal(err)
				}
				entry := hostileIndexEntry(s, D)
				if fi, err := os.Lstat(entry); err != nil || fi.Mode()&os.ModeSymlink == 0 {
					t.Fatalf("index entry of directory %s at %s is not a symlink (%v): has the index layout changed?", D, entry, err)
				}
				if err := os.Remove(entry); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(tg.target(s), entry); err != nil {
					t.Fatal(err)
				}
				b, err := backend.Open(s.root, backend.Options{})
				if err != nil {
					t.Fatalf("reopen: %v", err)
				}
				s.b = b
				t.Cleanup(func() { b.Close() })

				before := s.snapshotOutside(t)
				resBefore := hostileSnapshot(t, filepath.Join(s.root, backend.ReservedDir))
				o := rq.run(t, s)
				if !o.refused() {
					t.Errorf("%s on a directory whose index entry reads %q was accepted: %v", rq.name, tg.target(s), o)
				}
				hostileCheckClear(t, rq.name, o)
				if d := hostileSnapshotDiff(before, s.snapshotOutside(t)); d != "" {
					t.Errorf("changed the world outside the root:\n%s", d)
				}
				hostileCheckReservedUnchanged(t, s, resBefore)
				if _, err := os.Lstat(filepath.Join(s.root, backend.ReservedDir, s.marker)); err == nil {
					t.Errorf("%s made %s inside the reserved directory", rq.name, s.marker)
				}
				if !hostileIsDir(filepath.Join(s.root, "d")) {
					t.Errorf("%s removed the real directory d", rq.name)
				}
			})
		}
	}
}
