package plan

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/index"
)

type unlinkOp struct {
	g gfid.GFID
	l index.Link
}

// node is one placing op (MKDIR, CREATE, SYMLINK, MKNOD, LINK, RENAME) in
// the dependency graph.
type node struct {
	id           int
	e            *pb.Entry
	rename, done bool
	src          *index.Link // RENAME: where the object is now
	indeg        int
	out          []int // nodes waiting for this one
	vacate       []int // of out: those waiting for it to leave its source name
	// What its dependencies are found from.
	dst        index.Link // the name it places
	needCreate gfid.GFID  // LINK of a new object: the object's CREATE
	self       index.Key  // the object placed
}

type graph struct {
	mkdirs, renames, creates, links []*node
	nodes                           []*node
}

func (d *differ) build() error {
	var g graph
	mkdirOf := map[gfid.GFID]*node{}
	createOf := map[gfid.GFID]*node{}
	renameFrom := map[index.Link]*node{}

	// From here on, objects are found by GFID, and only directories are:
	// the rest is let go as soon as its work is planned.
	d.objs = nil
	dirs := map[gfid.GFID]*obj{}
	for g, o := range d.byGFID {
		if o.e.Stat.IsDir() {
			dirs[g] = o
		}
	}
	d.byGFID = dirs

	for i, o := range d.order {
		d.order[i] = nil
		var m msgs
		st := o.e.Stat
		typ := st.Mode & unix.S_IFMT
		linksChanged := false
		var final []index.Link
		var fused *pb.Stat
		if o.g != gfid.Root {
			seen := o.seen
			if len(seen) > 1 {
				// Sorted by path, while o.seen keeps scan order.
				seen = slices.Clone(seen)
				slices.SortFunc(seen, func(a, b seenLink) int { return strings.Compare(a.path, b.path) })
			}
			if !o.known {
				for i, sl := range seen {
					e := d.entry(o, &m, sl.link)
					if i == 0 && d.fuses(o, len(seen)) {
						// No entry op: nothing in the plan names a new
						// file before the data phase (no LINK waits for
						// it; renames and removals move known objects),
						// which runs after every entry op.
						fused = e.Stat
						final = append(final, sl.link)
						continue
					}
					if i == 0 {
						e.Op = createOp(typ)
						n := &node{e: e, dst: sl.link, self: o.key}
						if typ == unix.S_IFDIR {
							g.mkdirs = append(g.mkdirs, n)
							mkdirOf[o.g] = n
						} else {
							g.creates = append(g.creates, n)
							if len(seen) > 1 {
								createOf[o.g] = n // its LINKs wait for it
							}
						}
					} else {
						e.Op = pb.EntryOp_ENTRY_OP_LINK
						g.links = append(g.links, &node{e: e, dst: sl.link, needCreate: o.g, self: o.key})
					}
					final = append(final, sl.link)
				}
				linksChanged = true
			} else {
				var gone, added []index.Link
				for _, l := range o.old.Links {
					if d.linkGone(l, o.key) {
						gone = append(gone, l)
					} else {
						final = append(final, l)
					}
				}
				for _, sl := range seen {
					if !slices.Contains(o.old.Links, sl.link) {
						added = append(added, sl.link)
						final = append(final, sl.link)
					}
				}
				linksChanged = len(gone) > 0 || len(added) > 0
				for i, l := range added {
					e := d.entry(o, &m, l)
					n := &node{e: e, dst: l, self: o.key}
					if i < len(gone) {
						e.Op = pb.EntryOp_ENTRY_OP_RENAME
						e.ParentGfid, e.Name = d.gfidBytes(gone[i].Parent), d.bytes(gone[i].Name)
						e.NewParentGfid, e.NewName = d.gfidBytes(l.Parent), d.bytes(l.Name)
						n.rename, n.src = true, &gone[i]
						renameFrom[gone[i]] = n
						g.renames = append(g.renames, n)
					} else {
						e.Op = pb.EntryOp_ENTRY_OP_LINK
						g.links = append(g.links, n)
					}
				}
				for i := len(added); i < len(gone); i++ {
					d.unlinks = append(d.unlinks, unlinkOp{g: o.g, l: gone[i]})
				}
			}
		}
		d.metaAndData(o, &m, final, linksChanged, fused)
	}
	// Names seen are only asked about while objects are planned.
	d.seenAt = nil

	// Order the placing ops' groups: parents' MKDIRs first, then moves,
	// then creations, then extra links; dependencies refine it.
	slices.SortStableFunc(g.mkdirs, func(a, b *node) int {
		return cmp.Compare(depthOf(d, a.e.GetParentGfid()), depthOf(d, b.e.GetParentGfid()))
	})
	for _, grp := range [][]*node{g.mkdirs, g.renames, g.creates, g.links} {
		for _, n := range grp {
			n.id = len(g.nodes)
			g.nodes = append(g.nodes, n)
		}
	}
	edge := func(from, to *node, vacate bool) {
		if from == nil || from == to {
			return
		}
		from.out = append(from.out, to.id)
		if vacate {
			from.vacate = append(from.vacate, to.id)
		}
		to.indeg++
	}
	var ancestry map[*node][]gfid.GFID
	// Edges are found node by node; the order they are added in does not
	// change the order sortPlacing emits (it always takes the lowest id
	// that is free to go).
	for _, n := range g.nodes {
		pg, _ := gfid.FromBytes(n.e.GetParentGfid())
		if n.rename {
			pg, _ = gfid.FromBytes(n.e.GetNewParentGfid())
		}
		edge(mkdirOf[pg], n, false)
		edge(createOf[n.needCreate], n, false)
		// The destination name must be free of what is leaving it.
		y, held := d.tx.Child(n.dst.Parent, n.dst.Name)
		if !held || y == n.self {
			continue
		}
		if r := renameFrom[n.dst]; r != nil {
			edge(r, n, true)
			continue
		}
		if yo := d.deleted[y]; yo != nil && yo.IsDir() {
			// A directory being replaced goes to the slave's trash with
			// what it still holds: move its survivors out first.
			if ancestry == nil {
				ancestry = map[*node][]gfid.GFID{}
				for _, r := range g.renames {
					ancestry[r] = d.ancestors(r.src.Parent)
				}
			}
			for _, r := range g.renames {
				if slices.Contains(ancestry[r], yo.GFID) {
					edge(r, n, true)
				}
			}
		}
	}
	if err := d.sortPlacing(&g); err != nil {
		return err
	}
	d.emitRemovals()
	return nil
}

// ancestors returns g and the directories above it, by the index.
func (d *differ) ancestors(g gfid.GFID) []gfid.GFID {
	out := []gfid.GFID{g}
	for i := 0; i < 4096 && g != gfid.Root; i++ {
		k, ok := d.tx.ByGFID(g)
		if !ok {
			break
		}
		o, ok, err := d.tx.Get(k)
		if err != nil || !ok || len(o.Links) == 0 {
			break
		}
		g = o.Links[0].Parent
		out = append(out, g)
	}
	return out
}

func depthOf(d *differ, parent []byte) int {
	g, _ := gfid.FromBytes(parent)
	// A new directory's parent may itself be new: its depth comes from
	// where the scan saw it.
	if o := d.byGFID[g]; o != nil && o.e.Path != "." {
		return strings.Count(o.e.Path, "/") + 1
	}
	return 0
}

type nodeHeap []*node

func (h nodeHeap) Len() int           { return len(h) }
func (h nodeHeap) Less(i, j int) bool { return h[i].id < h[j].id }
func (h nodeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nodeHeap) Push(x any)        { *h = append(*h, x.(*node)) }
func (h *nodeHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	*h = old[:len(old)-1]
	return n
}

// sortPlacing emits the placing ops in dependency order (Kahn's algorithm,
// lowest group first). A cycle of moves (a↔b) is broken by moving one
// object to a temporary name first.
func (d *differ) sortPlacing(g *graph) error {
	h := &nodeHeap{}
	for _, n := range g.nodes {
		if n.indeg == 0 {
			heap.Push(h, n)
		}
	}
	release := func(ids []int) {
		for _, id := range ids {
			m := g.nodes[id]
			m.indeg--
			if m.indeg == 0 && !m.done {
				heap.Push(h, m)
			}
		}
	}
	left := len(g.nodes)
	for left > 0 {
		if h.Len() == 0 {
			// Stalled: some rename blocks a name in a cycle. Move it aside.
			var r *node
			for _, n := range g.nodes {
				if !n.done && n.rename && len(n.vacate) > 0 {
					r = n
					break
				}
			}
			if r == nil {
				return fmt.Errorf("plan: entry ops have a dependency cycle that no temporary rename breaks (%d left)", left)
			}
			tmpParent := r.src.Parent
			if pk, ok := d.tx.ByGFID(tmpParent); ok && d.deleted[pk] != nil {
				tmpParent = gfid.Root
			}
			x, _ := gfid.FromBytes(r.e.GetGfid())
			tmp := SwapPrefix + x.String()
			aside := proto2(r.e)
			aside.NewParentGfid, aside.NewName = tmpParent.Bytes(), []byte(tmp)
			d.p.Entries = append(d.p.Entries, aside)
			r.e.ParentGfid, r.e.Name = tmpParent.Bytes(), []byte(tmp)
			v := r.vacate
			r.vacate = nil
			// Drop the vacate edges from r.out too, so they are not released twice.
			r.out = slices.DeleteFunc(r.out, func(id int) bool { return slices.Contains(v, id) })
			release(v)
			continue
		}
		n := heap.Pop(h).(*node)
		if n.done {
			continue
		}
		n.done = true
		left--
		d.p.Entries = append(d.p.Entries, n.e)
		release(n.out)
	}
	return nil
}

func proto2(e *pb.Entry) *pb.Entry {
	return &pb.Entry{Op: e.Op, Gfid: e.Gfid, ParentGfid: e.ParentGfid, Name: e.Name,
		NewParentGfid: e.NewParentGfid, NewName: e.NewName, Stat: e.Stat, LinkTarget: e.LinkTarget}
}

// emitRemovals appends UNLINKs, then RMDIRs deepest first, and records the
// deletions in the index.
func (d *differ) emitRemovals() {
	type rm struct {
		e     *pb.Entry
		depth int
	}
	var rmdirs []rm
	// By GFID and name: two objects can claim one name, and each needs
	// its unlink. After an interrupted batch whose rename replaced an
	// object on the slave, the index holds both the replaced object (its
	// record never updated) and the one adopted there; were only the
	// first unlinked, the slave (which unlinks only the GFID it is told)
	// would keep the other, and the index would forget it.
	type gone struct {
		g gfid.GFID
		l index.Link
	}
	seen := map[gone]bool{}
	unlink := func(g gfid.GFID, l index.Link) {
		if seen[gone{g, l}] {
			return
		}
		seen[gone{g, l}] = true
		if !d.opts.IgnoreDeletes {
			d.p.Entries = append(d.p.Entries, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_UNLINK, Gfid: g.Bytes(),
				ParentGfid: l.Parent.Bytes(), Name: []byte(l.Name)})
		}
	}
	for _, u := range d.unlinks {
		unlink(u.g, u.l)
	}
	keys := make([]index.Key, 0, len(d.deleted))
	for k := range d.deleted {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		o := d.deleted[k]
		d.p.Changes = append(d.p.Changes, Change{Key: k})
		if o.IsDir() {
			for _, l := range o.Links {
				rmdirs = append(rmdirs, rm{&pb.Entry{Op: pb.EntryOp_ENTRY_OP_RMDIR, Gfid: o.GFID.Bytes(),
					ParentGfid: l.Parent.Bytes(), Name: []byte(l.Name)}, len(d.ancestors(l.Parent))})
			}
			continue
		}
		for _, l := range o.Links {
			unlink(o.GFID, l)
		}
	}
	if d.opts.IgnoreDeletes {
		return
	}
	slices.SortStableFunc(rmdirs, func(a, b rm) int { return cmp.Compare(b.depth, a.depth) })
	for _, r := range rmdirs {
		d.p.Entries = append(d.p.Entries, r.e)
	}
}

func createOp(typ uint32) pb.EntryOp {
	switch typ {
	case unix.S_IFDIR:
		return pb.EntryOp_ENTRY_OP_MKDIR
	case unix.S_IFREG:
		return pb.EntryOp_ENTRY_OP_CREATE
	case unix.S_IFLNK:
		return pb.EntryOp_ENTRY_OP_SYMLINK
	}
	return pb.EntryOp_ENTRY_OP_MKNOD
}

func ts(ns int64) *pb.Timestamp {
	return &pb.Timestamp{Sec: ns / 1e9, Nsec: uint32(ns % 1e9)}
}

// arenaChunk is the size of the blocks the plan's small byte slices (GFIDs,
// names) are cut from: one allocation per few thousand instead of two or
// three per object.
const arenaChunk = 64 << 10

// bytes returns a copy of s in the arena. The copy's capacity ends with it,
// so an append to it reallocates instead of overwriting its neighbour.
func (d *differ) bytes(s string) []byte {
	if len(s) > arenaChunk/8 {
		return []byte(s)
	}
	if len(d.arena)+len(s) > cap(d.arena) {
		d.arena = make([]byte, 0, arenaChunk)
	}
	n := len(d.arena)
	d.arena = append(d.arena, s...)
	return d.arena[n:len(d.arena):len(d.arena)]
}

// gfidBytes returns g's 16 bytes; a directory's are shared by every
// message that names it.
func (d *differ) gfidBytes(g gfid.GFID) []byte {
	if b := d.dirGFIDs[g]; b != nil {
		return b
	}
	b := d.bytes(string(g[:]))
	if o := d.byGFID[g]; o != nil && o.e.Stat.IsDir() {
		if d.dirGFIDs == nil {
			d.dirGFIDs = map[gfid.GFID][]byte{}
		}
		d.dirGFIDs[g] = b
	}
	return b
}

// msgs are the parts of one object's messages its entry and meta ops share
// (read-only once built), made on first use.
type msgs struct {
	gfid         []byte
	atime, mtime *pb.Timestamp
}

func (m *msgs) gfidOf(d *differ, o *obj) []byte {
	if m.gfid == nil {
		m.gfid = d.gfidBytes(o.g)
	}
	return m.gfid
}

func (m *msgs) times(o *obj) (atime, mtime *pb.Timestamp) {
	if m.atime == nil {
		m.atime, m.mtime = ts(o.e.Stat.AtimeNs), ts(o.e.Stat.MtimeNs)
	}
	return m.atime, m.mtime
}

// entry is a placing entry for o at l, carrying what the slave needs to
// (re)create o.
func (d *differ) entry(o *obj, m *msgs, l index.Link) *pb.Entry {
	st := o.e.Stat
	atime, mtime := m.times(o)
	e := &pb.Entry{Gfid: m.gfidOf(d, o), ParentGfid: d.gfidBytes(l.Parent), Name: d.bytes(l.Name),
		Stat: &pb.Stat{Mode: st.Mode, Uid: st.UID, Gid: st.GID, Rdev: st.Rdev,
			Atime: atime, Mtime: mtime}}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		e.LinkTarget = o.e.Target()
	}
	return e
}

// fuses reports whether new object o, seen at seen names, is created by
// its data transfer: a regular file with content and one link. A
// hard-link group keeps CREATE and LINKs (the LINKs need the file during
// the entry phase); an empty file has no transfer to ride on.
func (d *differ) fuses(o *obj, seen int) bool {
	st := o.e.Stat
	return d.opts.FuseCreates && !o.known && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 &&
		seen == 1 && st.Nlink == 1
}

// metaAndData adds o's meta and data work and its index record. fused is
// the stat of a new file its data transfer creates (nil otherwise).
func (d *differ) metaAndData(o *obj, msg *msgs, links []index.Link, linksChanged bool, fused *pb.Stat) {
	st := o.e.Stat
	typ := st.Mode & unix.S_IFMT
	rec := index.Object{
		Key: o.key, GFID: o.g, Mode: st.Mode, UID: st.UID, GID: st.GID, Rdev: st.Rdev, Size: st.Size,
		MtimeNs: st.MtimeNs, CtimeNs: st.CtimeNs, Ino: st.Ino, Dev: st.Dev, Target: o.e.Target(),
		Links: links,
	}
	old := &index.Object{}
	if o.known {
		old = o.old
	}
	rec.XattrDigest = old.XattrDigest
	if o.e.XattrsRead {
		rec.XattrDigest = o.e.XattrDigest
	}
	xattrsChanged := o.e.XattrsRead && (!o.known || o.e.XattrDigest != old.XattrDigest)
	metaChanged := !o.known || st.Mode != old.Mode || st.UID != old.UID || st.GID != old.GID ||
		st.MtimeNs != old.MtimeNs || xattrsChanged
	data := false
	if typ == unix.S_IFREG {
		if !o.known {
			data = st.Size > 0
		} else {
			// A ctime move that nothing else explains (a write with the
			// size and mtime put back) is a content change too.
			data = st.Size != old.Size || st.MtimeNs != old.MtimeNs ||
				(st.CtimeNs != old.CtimeNs && !metaChanged && !linksChanged) || st.Ino != old.Ino
		}
	}
	if data {
		metaChanged = true
		var l index.Link
		path := o.e.Path
		if len(o.seen) > 0 {
			l, path = o.seen[0].link, o.seen[0].path
		} else if len(links) > 0 {
			l = links[0]
		}
		d.p.Data = append(d.p.Data, DataItem{GFID: o.g, RelPath: path, Size: st.Size, Parent: l.Parent, Name: l.Name,
			New: !o.known, Create: fused, Key: o.key, Dev: st.Dev})
		if fused != nil && !(xattrsChanged && len(o.e.Xattrs()) > 0) {
			// The create gives the file its permission bits, owner and
			// times, and it has no extended attributes to set.
			metaChanged = false
		}
	}
	if metaChanged {
		atime, mtime := msg.times(o)
		m := &pb.MetaEntry{Gfid: msg.gfidOf(d, o), Atime: atime, Mtime: mtime}
		mode, uid, gid := st.Mode&0o7777, st.UID, st.GID
		m.Uid, m.Gid = &uid, &gid
		if typ != unix.S_IFLNK {
			m.Mode = &mode
			if xattrsChanged {
				m.ReplaceXattrs = true
				for _, x := range o.e.Xattrs() {
					m.SetXattrs = append(m.SetXattrs, &pb.Xattr{Name: x.Name, Value: x.Value})
				}
			}
		}
		d.p.Meta = append(d.p.Meta, m)
	}
	if !o.known || !sameRecord(old, &rec) {
		r := rec // on the heap only when kept
		d.p.Changes = append(d.p.Changes, Change{Object: &r})
	}
}

func sameRecord(a, b *index.Object) bool {
	return a.GFID == b.GFID && a.Mode == b.Mode && a.UID == b.UID && a.GID == b.GID && a.Rdev == b.Rdev &&
		a.Size == b.Size && a.MtimeNs == b.MtimeNs && a.CtimeNs == b.CtimeNs && a.Ino == b.Ino &&
		a.Dev == b.Dev && string(a.Target) == string(b.Target) && a.XattrDigest == b.XattrDigest &&
		slices.Equal(a.Links, b.Links)
}
