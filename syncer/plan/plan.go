// Package plan turns a scan of dirty directories and the identity index
// into the ordered slave work that reproduces the master tree: entry ops
// (placing ops in dependency order, then UNLINKs, then RMDIRs deepest
// first), meta ops, data work coalesced per GFID, and the index changes to
// commit once the slave has applied all of it.
//
// A name seen at a new place whose old name is gone is a RENAME; a second
// name of a known inode is a LINK. Deletions are only inferred in
// directories the scan listed completely, and a vanished name of an object
// seen elsewhere is checked with fstatat before it is unlinked.
package plan

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/dirfd"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/scan"
)

// SwapPrefix starts the temporary name through which a rename cycle (a↔b)
// is broken on the slave.
const SwapPrefix = ".georep-swap-"

// ErrGuard is wrapped by the refusals that protect the replica.
var ErrGuard = errors.New("refusing to replicate a mass delete")

// Options configures Diff.
type Options struct {
	// IgnoreDeletes does not propagate deletions (gsyncd's ignore_deletes).
	IgnoreDeletes bool
	// AllowMassDelete lets a plan empty the replica, or replicate a root
	// that is another filesystem or inode than the index recorded.
	AllowMassDelete bool
	// FuseCreates plans a new regular file with content and a single link
	// as a DataItem with Create set instead of a CREATE entry op: the data
	// plane makes it whole in one step (native mode's PutFiles, rsync
	// mode's InstallStaged; a slave that cannot gets the entry op first).
	FuseCreates bool
}

// DataItem is one object whose contents must be sent.
type DataItem struct {
	GFID    gfid.GFID
	RelPath string // one current master path, relative to the root
	Size    int64
	Parent  gfid.GFID
	Name    string
	// New is true for an object the index did not know: the slave has no
	// previous content worth a delta (the entry op just made it empty).
	New bool
	// Create, when set (Options.FuseCreates), says no entry op makes this
	// new file: the data transfer creates it at Parent/Name with this
	// stat (type, permission bits, owner, times).
	Create *pb.Stat
	// Key and Dev are the object the scan found at RelPath (see
	// transfer.Item): the data plane sends no other file's content as
	// this GFID's.
	Key index.Key
	Dev uint64
}

// Change is one index update: Put when Object is set, else Delete of Key.
type Change struct {
	Object *index.Object
	Key    index.Key
}

// Plan is the work a scan calls for.
type Plan struct {
	// Entries, in the order the slave must apply them.
	Entries []*pb.Entry
	// Meta, to apply after Entries and after Data (a data write changes
	// the mtime).
	Meta []*pb.MetaEntry
	// Data, one item per GFID.
	Data []DataItem
	// Changes to commit to the index after the slave applied everything.
	Changes []Change
	// RootID is the master root's identity, recorded on Commit.
	RootID index.RootID
}

// Empty reports whether the plan has no slave work.
func (p *Plan) Empty() bool { return len(p.Entries) == 0 && len(p.Meta) == 0 && len(p.Data) == 0 }

// Links returns how many names the object g has after p, as recorded in
// its change; 1 when p changes no record of g. It walks the changes: for
// the rare caller, not a loop.
func (p *Plan) Links(g gfid.GFID) int {
	for _, c := range p.Changes {
		if c.Object != nil && c.Object.GFID == g {
			return max(1, len(c.Object.Links))
		}
	}
	return 1
}

// Commit writes the plan's index changes and the root identity in tx:
// the deletions first, then the puts, in one Apply (each bucket written in
// key order: a first crawl's commit is otherwise quadratic).
func (p *Plan) Commit(tx *index.Tx) error {
	var deletes []index.Key
	puts := make([]index.Object, 0, len(p.Changes))
	for _, c := range p.Changes {
		if c.Object == nil {
			deletes = append(deletes, c.Key)
		} else {
			puts = append(puts, *c.Object)
		}
	}
	if err := tx.Apply(deletes, puts); err != nil {
		return err
	}
	return tx.SetRootID(p.RootID)
}

// Crawl scans dirs beneath rootDir and diffs the result against db: the
// Hybrid Crawl. Xattrs are read only where the ctime moved since the index.
//
// The scan and the diff share one read transaction (a consistent view of
// the index, and no transaction per object), and each scanned entry is
// folded into the diff as it arrives, so the scan's entries are not all
// held at once.
func Crawl(ctx context.Context, db *index.DB, rootDir string, dirs []scan.Dirty, sopts scan.Options, opts Options) (*Plan, error) {
	var p *Plan
	err := db.View(func(tx *index.Tx) error {
		// Scan workers ask concurrently; a bbolt transaction is not
		// documented as safe for concurrent use, so they take turns (a
		// lookup is short beside the syscalls around it). The consumer's
		// lookups (d.add) take the same lock.
		var mu sync.Mutex
		if sopts.Known == nil {
			sopts.Known = func(k index.Key) (int64, bool, error) {
				mu.Lock()
				defer mu.Unlock()
				return tx.Ctime(k)
			}
		}
		if sopts.Descend == nil {
			sopts.Descend = func(e *scan.Entry) bool {
				mu.Lock()
				defer mu.Unlock()
				_, known, err := tx.Ctime(e.Key)
				return err != nil || !known
			}
		}
		d, err := newDiffer(tx, rootDir, opts)
		if err != nil {
			return err
		}
		defer d.root.Close()
		sum, err := scan.Scan(ctx, rootDir, dirs, sopts, func(e *scan.Entry) error {
			mu.Lock()
			defer mu.Unlock()
			return d.add(e)
		})
		if err != nil {
			return err
		}
		p, err = d.finish(sum)
		return err
	})
	return p, err
}

type seenLink struct {
	link index.Link
	path string
}

// attrs is what the diff keeps of an object's first sighting: the scan's
// entry itself is let go once added.
type attrs struct {
	Stat        scan.Stat
	Path        string
	XattrsRead  bool
	XattrDigest uint64
	more        *moreAttrs // only for the few objects that have any
}

type moreAttrs struct {
	target []byte
	xattrs []scan.Xattr
}

// Target is the symlink target.
func (a *attrs) Target() []byte {
	if a.more == nil {
		return nil
	}
	return a.more.target
}

// Xattrs are the user xattrs read.
func (a *attrs) Xattrs() []scan.Xattr {
	if a.more == nil {
		return nil
	}
	return a.more.xattrs
}

// obj is one object seen by the scan.
type obj struct {
	key   index.Key
	e     attrs // the first sighting
	seen  []seenLink
	old   *index.Object // the index's record; nil unless known
	known bool
	g     gfid.GFID
}

// sighting is one scanned name of an object, resolved to a Link once the
// scan is over (its directory may be scanned after it).
type sighting struct {
	o         *obj
	parentKey index.Key
	path      string
	name      string
}

type differ struct {
	tx      *index.Tx
	root    *dirfd.Dir
	rootKey index.Key
	sum     scan.Summary
	looked  map[index.Link]bool // sum.Looked, by directory GFID
	opts    Options
	objs    map[index.Key]*obj
	order   []*obj // scan order, for determinism
	byGFID  map[gfid.GFID]*obj
	seenAt  map[index.Link]index.Key
	paths   map[gfid.GFID]string // index paths, memoised
	deleted map[index.Key]*index.Object
	unlinks []unlinkOp
	p       *Plan

	rootOld   index.Key
	rootKnown bool
	sightings []sighting
	arena     []byte // backs the plan's small byte slices
	dirGFIDs  map[gfid.GFID][]byte
	// successors are new objects whose GFID xattr names an indexed object
	// of another key: in a cascaded slave tree, new content arrives as a
	// new inode carrying the same GFID. Resolved by adoptSuccessors.
	successors []successor
	// replaced holds keys whose object was succeeded by another inode.
	replaced map[index.Key]bool
}

// successor is a new object that may continue the indexed object at key
// prev, whose GFID its xattr carries.
type successor struct {
	o    *obj
	g    gfid.GFID
	prev index.Key
}

// Diff compares scanned entries (with the scan's summary) with the index.
func Diff(tx *index.Tx, rootDir string, entries []*scan.Entry, sum scan.Summary, opts Options) (*Plan, error) {
	d, err := newDiffer(tx, rootDir, opts)
	if err != nil {
		return nil, err
	}
	defer d.root.Close()
	for _, e := range entries {
		if err := d.add(e); err != nil {
			return nil, err
		}
	}
	return d.finish(sum)
}

func newDiffer(tx *index.Tx, rootDir string, opts Options) (*differ, error) {
	root, err := dirfd.Open(rootDir)
	if err != nil {
		return nil, fmt.Errorf("open master root: %w", err)
	}
	d := &differ{
		tx: tx, root: root, opts: opts,
		objs:    map[index.Key]*obj{},
		byGFID:  map[gfid.GFID]*obj{},
		seenAt:  map[index.Link]index.Key{},
		paths:   map[gfid.GFID]string{gfid.Root: "."},
		deleted: map[index.Key]*index.Object{},
		p:       &Plan{},
	}
	if d.p.RootID, err = index.RootIDOf(root.Fd()); err != nil {
		root.Close()
		return nil, err
	}
	d.rootOld, d.rootKnown = tx.ByGFID(gfid.Root)
	return d, nil
}

// finish diffs what was added against the index.
func (d *differ) finish(sum scan.Summary) (*Plan, error) {
	d.sum = sum
	d.looked = map[index.Link]bool{}
	for k, names := range sum.Looked {
		g, ok := d.gfidOfKey(k)
		if !ok {
			continue
		}
		for _, n := range names {
			d.looked[index.Link{Parent: g, Name: n}] = true
		}
	}
	if err := d.guardRoot(); err != nil {
		return nil, err
	}
	if err := d.link(); err != nil {
		return nil, err
	}
	if err := d.adoptSuccessors(); err != nil {
		return nil, err
	}
	if err := d.guardEmpty(); err != nil {
		return nil, err
	}
	if err := d.findDeleted(); err != nil {
		return nil, err
	}
	if err := d.build(); err != nil {
		return nil, err
	}
	return d.p, nil
}

func (d *differ) guardRoot() error {
	old, ok, err := d.tx.RootID()
	if err != nil || !ok || old == d.p.RootID || d.opts.AllowMassDelete {
		return err
	}
	return fmt.Errorf("the master root is now %s but the index was made on %s (an unmounted or replaced volume?); confirm with --allow-mass-delete if this is intended: %w",
		d.p.RootID, old, ErrGuard)
}

func (d *differ) guardEmpty() error {
	if d.opts.AllowMassDelete || d.rootKey == "" || !d.sum.Listed[d.rootKey] {
		return nil
	}
	for _, o := range d.order {
		for _, l := range o.seen {
			if l.link.Parent == gfid.Root {
				return nil
			}
		}
	}
	n := 0
	if err := d.tx.ForEachChild(gfid.Root, func(string, index.Key) error { n++; return nil }); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("the master root is empty but %d objects were replicated from it (an unmounted volume?); confirm with --allow-mass-delete if they were really deleted: %w", n, ErrGuard)
}

// add groups an entry with the other sightings of its object and gives a
// newly seen object its GFID: the index's, else the object's GFID xattr (a
// cascaded slave tree) unless another object already has it, else a new
// one. Entries come in scan order.
func (d *differ) add(e *scan.Entry) error {
	o := d.objs[e.Key]
	if o == nil {
		o = &obj{key: e.Key, e: attrs{Stat: e.Stat, Path: e.Path, XattrsRead: e.XattrsRead, XattrDigest: e.XattrDigest}}
		if e.Target != nil || e.Xattrs != nil {
			o.e.more = &moreAttrs{target: e.Target, xattrs: e.Xattrs}
		}
		old, known, err := d.tx.Get(e.Key)
		if err != nil {
			return err
		}
		if known {
			o.old, o.known = &old, true
		}
		d.objs[e.Key] = o
		d.order = append(d.order, o)
		switch {
		case e.Path == ".":
			o.g = gfid.Root
		case o.known:
			o.g = o.old.GFID
		default:
			g := e.GFID
			k, taken := d.tx.ByGFID(g)
			if taken && k != o.key && !g.IsZero() && g != gfid.Root && d.byGFID[g] == nil {
				d.successors = append(d.successors, successor{o: o, g: g, prev: k})
			}
			if g.IsZero() || g == gfid.Root || d.byGFID[g] != nil || (taken && k != o.key) {
				g = gfid.New()
			}
			o.g = g
		}
		d.byGFID[o.g] = o
	}
	if e.Path == "." {
		d.rootKey = e.Key
		if o.g != gfid.Root {
			// Seen under another name first: it is the root all the same.
			delete(d.byGFID, o.g)
			o.g = gfid.Root
			d.byGFID[o.g] = o
		}
		if d.rootKnown && d.rootOld != e.Key {
			// The root directory itself was replaced (same fs and
			// inode checks passed, or were overridden): re-key it.
			d.p.Changes = append(d.p.Changes, Change{Key: d.rootOld})
		}
		return nil
	}
	d.sightings = append(d.sightings, sighting{o: o, parentKey: e.ParentKey, path: e.Path, name: e.Name})
	return nil
}

// link resolves the sightings into links, now that every scanned
// directory has its GFID.
func (d *differ) link() error {
	for _, s := range d.sightings {
		pg, ok := d.gfidOfKey(s.parentKey)
		if !ok {
			return fmt.Errorf("directory of %s is neither scanned nor indexed: scan its parent directory: %w", s.path, unix.ENOENT)
		}
		l := index.Link{Parent: pg, Name: s.name}
		if _, dup := d.seenAt[l]; dup {
			continue
		}
		d.seenAt[l] = s.o.key
		s.o.seen = append(s.o.seen, seenLink{link: l, path: s.path})
	}
	d.sightings = nil
	return nil
}

func (d *differ) gfidOfKey(k index.Key) (gfid.GFID, bool) {
	if o := d.objs[k]; o != nil {
		return o.g, true
	}
	o, ok, err := d.tx.Get(k)
	if err != nil || !ok {
		return gfid.GFID{}, false
	}
	return o.GFID, true
}

// pathOf returns directory g's master path now: where the scan saw it, or
// else where the index records it under its nearest ancestor the scan saw.
func (d *differ) pathOf(g gfid.GFID, depth int) (string, bool) {
	if p, ok := d.paths[g]; ok {
		return p, true
	}
	if depth > 4096 {
		return "", false
	}
	// A directory the scan saw is where the scan saw it: the index has it
	// where it was at the last commit, and a directory moved since (in
	// this very batch) may have left that path empty, or to another.
	if o := d.byGFID[g]; o != nil && o.e.Path != "" {
		d.paths[g] = o.e.Path
		return o.e.Path, true
	}
	k, ok := d.tx.ByGFID(g)
	if !ok {
		return "", false
	}
	o, ok, err := d.tx.Get(k)
	if err != nil || !ok || len(o.Links) == 0 {
		return "", false
	}
	pp, ok := d.pathOf(o.Links[0].Parent, depth+1)
	if !ok {
		return "", false
	}
	p := o.Links[0].Name
	if pp != "." {
		p = pp + "/" + p
	}
	d.paths[g] = p
	return p, true
}

func (d *differ) listed(dir gfid.GFID) bool {
	k, ok := d.keyOfDir(dir)
	return ok && d.sum.Listed[k]
}

func (d *differ) keyOfDir(dir gfid.GFID) (index.Key, bool) {
	if dir == gfid.Root {
		return d.rootKey, d.rootKey != ""
	}
	return d.tx.ByGFID(dir)
}

// lookedUp reports whether the scan looked up l's name in its directory,
// scanned by names: an unseen link there is gone, as in a listed one. The
// index's path of the directory cannot tell: it may have moved in this
// very batch, and its old path hold another directory.
func (d *differ) lookedUp(l index.Link) bool { return d.looked[l] }

// linkGone reports whether the indexed link l of key no longer holds it.
func (d *differ) linkGone(l index.Link, key index.Key) bool {
	if k, ok := d.seenAt[l]; ok {
		return k != key
	}
	if d.listed(l.Parent) || d.lookedUp(l) {
		return true
	}
	if pk, ok := d.tx.ByGFID(l.Parent); ok && d.deleted[pk] != nil {
		return true
	}
	// Not scanned: ask the tree itself.
	pp, ok := d.pathOf(l.Parent, 0)
	if !ok {
		return true
	}
	dir := d.root
	if pp != "." {
		var err error
		if dir, err = d.root.OpenBeneath(pp); err != nil {
			return true
		}
		defer dir.Close()
	}
	st, err := dir.Lstat(l.Name)
	if err != nil {
		return true
	}
	k, err := index.KeyOf(dir.Fd(), l.Name, &st)
	return err != nil || k != key
}

// adoptSuccessors lets a new inode carrying an indexed object's GFID
// continue that object when the old inode is nowhere to be seen and none
// of its names still holds it: a slave tree used as a master (a cascade)
// replaces a file's content with a new inode under the same GFID, and the
// GFID must carry through unchanged. A GFID copied onto a second, live
// object (cp -a of a slave file) still gets a fresh GFID.
func (d *differ) adoptSuccessors() error {
	for _, s := range d.successors {
		if d.objs[s.prev] != nil || d.byGFID[s.g] != nil || d.replaced[s.prev] {
			continue
		}
		prev, ok, err := d.tx.Get(s.prev)
		if err != nil {
			return err
		}
		if !ok || prev.IsDir() != (s.o.e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR) {
			continue
		}
		gone := true
		for _, l := range prev.Links {
			if !d.linkGone(l, s.prev) {
				gone = false
				break
			}
		}
		if !gone {
			continue
		}
		delete(d.byGFID, s.o.g)
		s.o.g = s.g
		s.o.old, s.o.known = &prev, true
		d.byGFID[s.g] = s.o
		if d.replaced == nil {
			d.replaced = map[index.Key]bool{}
		}
		d.replaced[s.prev] = true
		d.p.Changes = append(d.p.Changes, Change{Key: s.prev})
	}
	d.successors = nil
	return nil
}

// findDeleted marks indexed objects missing from the listed directories,
// and from the names looked up in directories scanned by names.
func (d *differ) findDeleted() error {
	var todo []index.Key
	for k := range d.sum.Listed {
		o := d.objs[k]
		if o == nil {
			continue
		}
		err := d.tx.ForEachChild(o.g, func(name string, ck index.Key) error {
			if d.objs[ck] == nil && d.deleted[ck] == nil {
				todo = append(todo, ck)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for k, names := range d.sum.Looked {
		o := d.objs[k]
		if o == nil {
			continue
		}
		for _, name := range names {
			if ck, ok := d.tx.Child(o.g, name); ok && d.objs[ck] == nil && d.deleted[ck] == nil {
				todo = append(todo, ck)
			}
		}
	}
	for len(todo) > 0 {
		k := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if d.deleted[k] != nil || d.objs[k] != nil || d.replaced[k] {
			continue
		}
		o, ok, err := d.tx.Get(k)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		// A link outside the listed area that still holds the object keeps it.
		alive := false
		for _, l := range o.Links {
			if !d.linkGone(l, k) {
				alive = true
			}
		}
		if alive {
			d.keepPartial(o)
			continue
		}
		d.deleted[k] = &o
		if o.IsDir() {
			err := d.tx.ForEachChild(o.GFID, func(_ string, ck index.Key) error {
				todo = append(todo, ck)
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// keepPartial handles an unseen object that keeps some of its names: the
// gone ones are unlinked.
func (d *differ) keepPartial(o index.Object) {
	var keep []index.Link
	for _, l := range o.Links {
		if d.linkGone(l, o.Key) {
			d.unlinks = append(d.unlinks, unlinkOp{g: o.GFID, l: l})
		} else {
			keep = append(keep, l)
		}
	}
	n := o
	n.Links = keep
	d.p.Changes = append(d.p.Changes, Change{Object: &n})
}
