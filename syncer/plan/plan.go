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
}

// DataItem is one object whose contents must be sent.
type DataItem struct {
	GFID    gfid.GFID
	RelPath string // one current master path, relative to the root
	Size    int64
	Parent  gfid.GFID
	Name    string
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

// Commit writes the plan's index changes and the root identity in tx.
func (p *Plan) Commit(tx *index.Tx) error {
	for _, c := range p.Changes {
		if c.Object == nil {
			if err := tx.Delete(c.Key); err != nil {
				return err
			}
		}
	}
	for _, c := range p.Changes {
		if c.Object != nil {
			if err := tx.Put(*c.Object); err != nil {
				return err
			}
		}
	}
	return tx.SetRootID(p.RootID)
}

// Crawl scans dirs beneath rootDir and diffs the result against db: the
// Hybrid Crawl. Xattrs are read only where the ctime moved since the index.
func Crawl(ctx context.Context, db *index.DB, rootDir string, dirs []scan.Dirty, sopts scan.Options, opts Options) (*Plan, error) {
	if sopts.Known == nil {
		sopts.Known = db.Ctime
	}
	if sopts.Descend == nil {
		sopts.Descend = func(e *scan.Entry) bool {
			_, known, err := db.Ctime(e.Key)
			return err != nil || !known
		}
	}
	var entries []*scan.Entry
	sum, err := scan.Scan(ctx, rootDir, dirs, sopts, func(e *scan.Entry) error {
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var p *Plan
	err = db.View(func(tx *index.Tx) error {
		var err error
		p, err = Diff(tx, rootDir, entries, sum, opts)
		return err
	})
	return p, err
}

type seenLink struct {
	link index.Link
	path string
}

// obj is one object seen by the scan.
type obj struct {
	key   index.Key
	e     *scan.Entry // attributes (the first sighting)
	seen  []seenLink
	old   index.Object
	known bool
	g     gfid.GFID
}

type differ struct {
	tx      *index.Tx
	root    *dirfd.Dir
	rootKey index.Key
	sum     scan.Summary
	opts    Options
	objs    map[index.Key]*obj
	order   []*obj // scan order, for determinism
	byGFID  map[gfid.GFID]*obj
	seenAt  map[index.Link]index.Key
	paths   map[gfid.GFID]string // index paths, memoised
	deleted map[index.Key]*index.Object
	unlinks []unlinkOp
	p       *Plan
}

// Diff compares scanned entries (with the scan's summary) with the index.
func Diff(tx *index.Tx, rootDir string, entries []*scan.Entry, sum scan.Summary, opts Options) (*Plan, error) {
	root, err := dirfd.Open(rootDir)
	if err != nil {
		return nil, fmt.Errorf("open master root: %w", err)
	}
	defer root.Close()
	d := &differ{
		tx: tx, root: root, sum: sum, opts: opts,
		objs:    map[index.Key]*obj{},
		byGFID:  map[gfid.GFID]*obj{},
		seenAt:  map[index.Link]index.Key{},
		paths:   map[gfid.GFID]string{gfid.Root: "."},
		deleted: map[index.Key]*index.Object{},
		p:       &Plan{},
	}
	if d.p.RootID, err = index.RootIDOf(root.Fd()); err != nil {
		return nil, err
	}
	if err := d.guardRoot(); err != nil {
		return nil, err
	}
	if err := d.collect(entries); err != nil {
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

// collect groups the entries by object and gives each its GFID.
func (d *differ) collect(entries []*scan.Entry) error {
	var err error
	rootOld, rootKnown := d.tx.ByGFID(gfid.Root)
	for _, e := range entries {
		o := d.objs[e.Key]
		if o == nil {
			o = &obj{key: e.Key, e: e}
			if o.old, o.known, err = d.tx.Get(e.Key); err != nil {
				return err
			}
			d.objs[e.Key] = o
			d.order = append(d.order, o)
		}
		if e.Path == "." {
			d.rootKey = e.Key
			o.g = gfid.Root
			if rootKnown && rootOld != e.Key {
				// The root directory itself was replaced (same fs and
				// inode checks passed, or were overridden): re-key it.
				d.p.Changes = append(d.p.Changes, Change{Key: rootOld})
			}
		}
	}
	// GFIDs: the index's, else the object's GFID xattr (a cascaded slave
	// tree) unless another object already has it, else a new one.
	used := map[gfid.GFID]bool{}
	for _, o := range d.order {
		switch {
		case o.g == gfid.Root:
		case o.known:
			o.g = o.old.GFID
		default:
			g := o.e.GFID
			if k, taken := d.tx.ByGFID(g); g.IsZero() || g == gfid.Root || used[g] || (taken && k != o.key) {
				g = gfid.New()
			}
			o.g = g
		}
		used[o.g] = true
		d.byGFID[o.g] = o
	}
	for _, e := range entries {
		if e.Path == "." {
			continue
		}
		pg, ok := d.gfidOfKey(e.ParentKey)
		if !ok {
			return fmt.Errorf("directory of %s is neither scanned nor indexed: scan its parent directory: %w", e.Path, unix.ENOENT)
		}
		l := index.Link{Parent: pg, Name: e.Name}
		if _, dup := d.seenAt[l]; dup {
			continue
		}
		d.seenAt[l] = e.Key
		o := d.objs[e.Key]
		o.seen = append(o.seen, seenLink{link: l, path: e.Path})
	}
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

// pathOf returns the master path the index records for directory g.
func (d *differ) pathOf(g gfid.GFID, depth int) (string, bool) {
	if p, ok := d.paths[g]; ok {
		return p, true
	}
	if depth > 4096 {
		return "", false
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
	k, ok := d.tx.ByGFID(dir)
	if dir == gfid.Root {
		k, ok = d.rootKey, d.rootKey != ""
	}
	return ok && d.sum.Listed[k]
}

// linkGone reports whether the indexed link l of key no longer holds it.
func (d *differ) linkGone(l index.Link, key index.Key) bool {
	if k, ok := d.seenAt[l]; ok {
		return k != key
	}
	if d.listed(l.Parent) {
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

// findDeleted marks indexed objects missing from the listed directories.
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
	for len(todo) > 0 {
		k := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if d.deleted[k] != nil || d.objs[k] != nil {
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
