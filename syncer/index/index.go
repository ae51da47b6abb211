// Package index is the master's persistent identity index (STATE/index.db):
// every master object the slave has been brought to, keyed by its kernel
// file handle, with its GFID, the attributes georep replicates and its names
// (parent GFID, name). It also holds the stime and the master root's
// identity. The index is the slave's state as the master last saw it
// applied; change detection is a diff of the live tree against it.
//
// The store is bbolt: a crash-safe, single-writer embedded B+tree, so a
// master killed at any instant finds either the old or the new index, never
// a torn one. Records are georep.state.v1 protobuf messages so fields can be
// added without a migration.
//
// Buckets:
//
//	objects   key → Object record
//	gfids     gfid (16 bytes) → key
//	children  parent gfid (16) + 0x00 + name → key
//	meta      "stime" (int64 ns, big-endian), "root" (RootIdentity),
//	          "initialised" (one byte)
//	failures  gfid (16) → a message, for the status
package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/georep/georep/internal/gfid"
	statev1 "github.com/georep/georep/proto/georep/state/v1"
)

// FileName is the index's file name inside the state directory.
const FileName = "index.db"

var (
	bucketObjects  = []byte("objects")
	bucketGFIDs    = []byte("gfids")
	bucketChildren = []byte("children")
	bucketMeta     = []byte("meta")
	bucketFailures = []byte("failures")

	metaStime       = []byte("stime")
	metaRoot        = []byte("root")
	metaInitialised = []byte("initialised")
)

// Key identifies a master object for its lifetime: the kernel file handle
// ('h', handle type as 4 big-endian bytes, handle bytes) from
// name_to_handle_at, or, where the filesystem has none, 'i' + dev + ino
// (8 big-endian bytes each). The mount id is left out: it changes across
// remounts while the handle does not.
type Key string

// Link is one name of an object.
type Link struct {
	Parent gfid.GFID
	Name   string // one path component, raw bytes
}

// Object is one indexed master object.
type Object struct {
	Key         Key
	GFID        gfid.GFID
	Mode        uint32 // st_mode, type included
	UID, GID    uint32
	Rdev        uint64
	Size        int64
	MtimeNs     int64
	CtimeNs     int64
	Ino, Dev    uint64
	Target      []byte // symlink target
	XattrDigest uint64 // xxh3 of the sorted user.* xattrs (see scan.XattrDigest)
	Links       []Link // none for the root
}

// IsDir reports whether o is a directory.
func (o *Object) IsDir() bool { return o.Mode&unix.S_IFMT == unix.S_IFDIR }

// RootID is the master root's identity: its filesystem and inode.
type RootID struct {
	FSID [8]byte
	Dev  uint64
	Ino  uint64
}

// String renders the identity for an operator.
func (r RootID) String() string {
	return fmt.Sprintf("fsid %x dev %d:%d inode %d", r.FSID, unix.Major(r.Dev), unix.Minor(r.Dev), r.Ino)
}

// RootIDOf returns the identity of the open directory fd.
func RootIDOf(fd int) (RootID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return RootID{}, fmt.Errorf("stat master root: %w", err)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return RootID{}, fmt.Errorf("statfs master root: %w", err)
	}
	var id RootID
	binary.BigEndian.PutUint32(id.FSID[0:4], uint32(sfs.Fsid.Val[0]))
	binary.BigEndian.PutUint32(id.FSID[4:8], uint32(sfs.Fsid.Val[1]))
	id.Dev, id.Ino = st.Dev, st.Ino
	return id, nil
}

// KeyOf returns the key of name in the directory dirfd (name "" with
// AT_EMPTY_PATH semantics: the directory itself), never following a
// symlink. st is the object's lstat, used when the filesystem has no file
// handles.
func KeyOf(dirfd int, name string, st *unix.Stat_t) (Key, error) {
	// name_to_handle_at never follows a final symlink unless given
	// AT_SYMLINK_FOLLOW; it rejects AT_SYMLINK_NOFOLLOW with EINVAL.
	flags := 0
	if name == "" {
		flags = unix.AT_EMPTY_PATH
	}
	h, _, err := unix.NameToHandleAt(dirfd, name, flags)
	switch {
	case err == nil:
		b := make([]byte, 0, 5+len(h.Bytes()))
		b = append(b, 'h')
		b = binary.BigEndian.AppendUint32(b, uint32(h.Type()))
		b = append(b, h.Bytes()...)
		return Key(b), nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP):
		return DevInoKey(st.Dev, st.Ino), nil
	default:
		return "", fmt.Errorf("file handle of %q: %w", name, err)
	}
}

// DevInoKey is the key of an object on a filesystem without file handles.
func DevInoKey(dev, ino uint64) Key {
	b := make([]byte, 0, 17)
	b = append(b, 'i')
	b = binary.BigEndian.AppendUint64(b, dev)
	b = binary.BigEndian.AppendUint64(b, ino)
	return Key(b)
}

// initialMmapSize is the index's first memory map: room for some 600,000
// objects before bbolt has to remap.
const initialMmapSize = 256 << 20

// applyFillPercent is how full Apply packs the pages it splits.
const applyFillPercent = 0.9

// Options configures Open.
type Options struct {
	// LockTimeout bounds the wait for another process's lock on the file
	// (a second master on the same state directory); 0 means one second.
	LockTimeout time.Duration
}

// DB is an open index. Its methods are safe for concurrent use; bbolt
// allows one writer and many readers at a time.
type DB struct {
	db   *bolt.DB
	path string
}

// Open opens (creating it if needed) the index file at path.
func Open(path string, opts Options) (*DB, error) {
	to := opts.LockTimeout
	if to <= 0 {
		to = time.Second
	}
	// A map larger than the file costs only address space, and saves the
	// remaps of a growing index: each copies every node a write
	// transaction holds out of the old map (a first crawl's commit grows
	// the file several times).
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: to, InitialMmapSize: initialMmapSize})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("open index %s: another georep master holds it; stop that master first: %w", path, err)
		}
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, n := range [][]byte{bucketObjects, bucketGFIDs, bucketChildren, bucketMeta, bucketFailures} {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return fmt.Errorf("create bucket %s: %w", n, err)
			}
		}
		return nil
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("prepare index %s: %w", path, err)
	}
	return &DB{db: b, path: path}, nil
}

// Path returns the index file's path.
func (d *DB) Path() string { return d.path }

// Close closes the index.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("close index %s: %w", d.path, err)
	}
	return nil
}

// View runs fn in a read-only transaction.
func (d *DB) View(fn func(*Tx) error) error {
	return d.db.View(func(tx *bolt.Tx) error { return fn(newTx(tx)) })
}

// Update runs fn in a read-write transaction, committed durably (fsync) when
// fn returns nil and rolled back otherwise.
func (d *DB) Update(fn func(*Tx) error) error {
	return d.db.Update(func(tx *bolt.Tx) error { return fn(newTx(tx)) })
}

// Ctime returns the indexed ctime of key, for a scanner deciding whether
// an object's xattrs need reading. It runs its own read transaction, so
// scan workers may call it concurrently; a crawl that already holds a
// transaction uses Tx.Ctime instead.
func (d *DB) Ctime(k Key) (ns int64, known bool, err error) {
	err = d.View(func(tx *Tx) error {
		ns, known, err = tx.Ctime(k)
		return err
	})
	return ns, known, err
}

// Tx is a transaction on the index. It must not be used after the View or
// Update callback returns, nor from several goroutines at once.
type Tx struct {
	tx                                *bolt.Tx
	objects, gfids, children, meta, f *bolt.Bucket
	// pend, while Apply runs, holds its writes to objects, gfids and
	// children, which reads see first; they reach bbolt at its end.
	pend map[*bolt.Bucket]map[string]pending
	// scratch, links, linkPtrs and arena are encode's.
	scratch  statev1.Object
	links    []statev1.Link
	linkPtrs []*statev1.Link
	arena    []byte
}

// pending is one buffered write: a value, or a deletion.
type pending struct {
	v   []byte
	del bool
}

func newTx(tx *bolt.Tx) *Tx {
	return &Tx{
		tx:       tx,
		objects:  tx.Bucket(bucketObjects),
		gfids:    tx.Bucket(bucketGFIDs),
		children: tx.Bucket(bucketChildren),
		meta:     tx.Bucket(bucketMeta),
		f:        tx.Bucket(bucketFailures),
	}
}

// get reads key k of b, through Apply's buffered writes.
func (t *Tx) get(b *bolt.Bucket, k []byte) []byte {
	if w, ok := t.pend[b][string(k)]; ok {
		if w.del {
			return nil
		}
		return w.v
	}
	return b.Get(k)
}

// put writes k = v to b, or buffers it during Apply.
func (t *Tx) put(b *bolt.Bucket, k, v []byte) error {
	if t.pend != nil {
		t.pend[b][string(k)] = pending{v: v}
		return nil
	}
	return b.Put(k, v)
}

// del deletes k from b, or buffers the deletion during Apply.
func (t *Tx) del(b *bolt.Bucket, k []byte) error {
	if t.pend != nil {
		t.pend[b][string(k)] = pending{del: true}
		return nil
	}
	return b.Delete(k)
}

// Apply is Delete of each of deletes, then Put of each of puts, in that
// order, with the same result; but each bucket is written once, in key
// order. bbolt inserts a key into an in-memory node that is split only at
// commit, shifting the keys after it: keys in a crawl's order (random file
// handles and GFIDs) make a large commit quadratic, keys in order append.
func (t *Tx) Apply(deletes []Key, puts []Object) error {
	if len(deletes) == 0 {
		if done, err := t.applyFresh(puts); done || err != nil {
			return err
		}
	}
	t.pend = map[*bolt.Bucket]map[string]pending{
		t.objects: make(map[string]pending, len(puts)), t.gfids: make(map[string]pending, len(puts)),
		t.children: make(map[string]pending, len(puts)),
	}
	err := t.applyBuffered(deletes, puts)
	pend := t.pend
	t.pend = nil
	if err != nil {
		return err
	}
	for _, b := range []*bolt.Bucket{t.objects, t.gfids, t.children} {
		// Pages filled to 90% rather than bbolt's half: a first crawl's
		// index takes half the pages (and the next crawl's reads half the
		// page faults); a node that fits its page is not split, so later
		// updates in place are unaffected, and an insert into a full page
		// splits it as it would anyway.
		b.FillPercent = applyFillPercent
		w := pend[b]
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			var err error
			if p := w[k]; p.del {
				err = b.Delete([]byte(k))
			} else {
				err = b.Put([]byte(k), p.v)
			}
			if err != nil {
				return fmt.Errorf("index: write %x: %w", k, err)
			}
		}
	}
	return nil
}

// applyFresh is Apply of puts alone into an empty index (a first crawl's
// commit, every object of the tree): nothing to read back, nothing an
// earlier record could have held, so each bucket's entries are gathered,
// sorted and written without Apply's buffer of maps. It reports false,
// having written nothing, when the index is not empty or two puts share a
// key, a GFID or a name, which the general path resolves (the last wins).
func (t *Tx) applyFresh(puts []Object) (bool, error) {
	for _, b := range []*bolt.Bucket{t.objects, t.gfids, t.children} {
		if k, _ := b.Cursor().First(); k != nil {
			return false, nil
		}
	}
	type kv struct{ k, v []byte }
	objs := make([]kv, 0, len(puts))
	gfids := make([]kv, 0, len(puts))
	children := make([]kv, 0, len(puts))
	for i := range puts {
		o := &puts[i]
		if err := o.storable(); err != nil {
			return false, err
		}
		v, err := t.encode(o)
		if err != nil {
			return false, err
		}
		k := []byte(o.Key)
		objs = append(objs, kv{k, v})
		gfids = append(gfids, kv{o.GFID[:], k})
		for _, l := range o.Links {
			children = append(children, kv{childKey(l.Parent, l.Name), k})
		}
	}
	cmp := func(a, b kv) int { return bytes.Compare(a.k, b.k) }
	for _, es := range [][]kv{objs, gfids, children} {
		slices.SortFunc(es, cmp)
		for i := 1; i < len(es); i++ {
			if bytes.Equal(es[i-1].k, es[i].k) {
				return false, nil
			}
		}
	}
	for j, b := range []*bolt.Bucket{t.objects, t.gfids, t.children} {
		b.FillPercent = applyFillPercent // see Apply
		for _, e := range [][]kv{objs, gfids, children}[j] {
			if err := b.Put(e.k, e.v); err != nil {
				return false, fmt.Errorf("index: write %x: %w", e.k, err)
			}
		}
	}
	return true, nil
}

func (t *Tx) applyBuffered(deletes []Key, puts []Object) error {
	for _, k := range deletes {
		if err := t.Delete(k); err != nil {
			return err
		}
	}
	for _, o := range puts {
		if err := t.Put(o); err != nil {
			return err
		}
	}
	return nil
}

func childKey(parent gfid.GFID, name string) []byte {
	b := make([]byte, 0, gfid.Size+1+len(name))
	b = append(b, parent[:]...)
	b = append(b, 0)
	return append(b, name...)
}

// Get returns the object with key k.
func (t *Tx) Get(k Key) (Object, bool, error) {
	v := t.get(t.objects, []byte(k))
	if v == nil {
		return Object{}, false, nil
	}
	o, err := decode(k, v)
	if err != nil {
		return Object{}, false, err
	}
	return o, true, nil
}

// Ctime returns the indexed ctime of key k. It reads that one field of the
// record instead of decoding it all: a crawl asks for every object it sees.
func (t *Tx) Ctime(k Key) (ns int64, known bool, err error) {
	v := t.get(t.objects, []byte(k))
	if v == nil {
		return 0, false, nil
	}
	ns, err = ctimeOf(v)
	if err != nil {
		return 0, false, fmt.Errorf("index: decode object %x (the index is damaged; move it aside to rebuild it with a full crawl): %w", []byte(k), err)
	}
	return ns, true, nil
}

// ctimeOf reads ctime_ns from an encoded statev1.Object (the last value
// wins, as proto.Unmarshal has it; absent means 0).
func ctimeOf(v []byte) (int64, error) {
	var ns int64
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		v = v[n:]
		if num == ctimeField && typ == protowire.VarintType {
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			ns, v = int64(x), v[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, v)
		if n < 0 {
			return 0, protowire.ParseError(n)
		}
		v = v[n:]
	}
	return ns, nil
}

// ctimeField is statev1.Object's ctime_ns field number.
const ctimeField = 8

// ByGFID returns the key of the object with GFID g.
func (t *Tx) ByGFID(g gfid.GFID) (Key, bool) {
	v := t.get(t.gfids, g[:])
	if v == nil {
		return "", false
	}
	return Key(v), true
}

// Child returns the key indexed at (parent, name).
func (t *Tx) Child(parent gfid.GFID, name string) (Key, bool) {
	v := t.get(t.children, childKey(parent, name))
	if v == nil {
		return "", false
	}
	return Key(v), true
}

// Children returns the indexed children of parent, name → key.
func (t *Tx) Children(parent gfid.GFID) (map[string]Key, error) {
	out := map[string]Key{}
	err := t.ForEachChild(parent, func(name string, k Key) error {
		out[name] = k
		return nil
	})
	return out, err
}

// ForEachChild calls fn for each indexed child of parent, in name order.
func (t *Tx) ForEachChild(parent gfid.GFID, fn func(name string, k Key) error) error {
	prefix := childKey(parent, "")
	c := t.children.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if err := fn(string(k[len(prefix):]), Key(v)); err != nil {
			return err
		}
	}
	return nil
}

// HasObjects reports whether the index holds any object other than the root.
func (t *Tx) HasObjects() bool {
	c := t.objects.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && n < 2; k, _ = c.Next() {
		n++
	}
	if n >= 2 {
		return true
	}
	if n == 1 {
		k, _ := c.First()
		rk, ok := t.ByGFID(gfid.Root)
		return !ok || string(rk) != string(k)
	}
	return false
}

// Put stores o under o.Key, keeping the gfids and children buckets in step:
// entries of the previous record that o no longer has are removed (only
// where they still point at this key), and o's GFID and links are set.
func (t *Tx) Put(o Object) error {
	if err := o.storable(); err != nil {
		return err
	}
	k := []byte(o.Key)
	if old, ok, err := t.Get(o.Key); err != nil {
		return err
	} else if ok {
		if old.GFID != o.GFID {
			if err := t.deleteIfPoints(t.gfids, old.GFID[:], k); err != nil {
				return err
			}
		}
		for _, l := range old.Links {
			if hasLink(o.Links, l) {
				continue
			}
			if err := t.deleteIfPoints(t.children, childKey(l.Parent, l.Name), k); err != nil {
				return err
			}
		}
	}
	v, err := t.encode(&o)
	if err != nil {
		return err
	}
	if err := t.put(t.objects, k, v); err != nil {
		return fmt.Errorf("index: store object: %w", err)
	}
	if err := t.put(t.gfids, o.GFID.Bytes(), k); err != nil {
		return fmt.Errorf("index: store gfid: %w", err)
	}
	for _, l := range o.Links {
		if err := t.put(t.children, childKey(l.Parent, l.Name), k); err != nil {
			return fmt.Errorf("index: store link: %w", err)
		}
	}
	return nil
}

// Delete removes the object k and the gfid and children entries that still
// point at it. Deleting an absent key is not an error.
func (t *Tx) Delete(k Key) error {
	old, ok, err := t.Get(k)
	if err != nil || !ok {
		return err
	}
	kb := []byte(k)
	if err := t.deleteIfPoints(t.gfids, old.GFID[:], kb); err != nil {
		return err
	}
	for _, l := range old.Links {
		if err := t.deleteIfPoints(t.children, childKey(l.Parent, l.Name), kb); err != nil {
			return err
		}
	}
	if err := t.del(t.objects, kb); err != nil {
		return fmt.Errorf("index: delete object: %w", err)
	}
	return nil
}

func (t *Tx) deleteIfPoints(b *bolt.Bucket, key, want []byte) error {
	if v := t.get(b, key); v != nil && bytes.Equal(v, want) {
		if err := t.del(b, key); err != nil {
			return fmt.Errorf("index: delete %x: %w", key, err)
		}
	}
	return nil
}

func hasLink(ls []Link, l Link) bool {
	for _, x := range ls {
		if x == l {
			return true
		}
	}
	return false
}

// Stime returns the committed sync time in ns since the epoch.
func (t *Tx) Stime() (ns int64, ok bool) {
	v := t.meta.Get(metaStime)
	if len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

// SetStime records the sync time (ns since the epoch).
func (t *Tx) SetStime(ns int64) error {
	if err := t.meta.Put(metaStime, binary.BigEndian.AppendUint64(nil, uint64(ns))); err != nil {
		return fmt.Errorf("index: store stime: %w", err)
	}
	return nil
}

// RootID returns the recorded identity of the master root.
func (t *Tx) RootID() (RootID, bool, error) {
	v := t.meta.Get(metaRoot)
	if v == nil {
		return RootID{}, false, nil
	}
	var m statev1.RootIdentity
	if err := proto.Unmarshal(v, &m); err != nil {
		return RootID{}, false, fmt.Errorf("index: decode root identity (the index is damaged; move it aside to rebuild it with a full crawl): %w", err)
	}
	var r RootID
	copy(r.FSID[:], m.GetFsid())
	r.Dev, r.Ino = m.GetDev(), m.GetIno()
	return r, true, nil
}

// SetRootID records the identity of the master root.
func (t *Tx) SetRootID(r RootID) error {
	v, err := proto.Marshal(&statev1.RootIdentity{Fsid: r.FSID[:], Dev: r.Dev, Ino: r.Ino})
	if err != nil {
		return fmt.Errorf("index: encode root identity: %w", err)
	}
	if err := t.meta.Put(metaRoot, v); err != nil {
		return fmt.Errorf("index: store root identity: %w", err)
	}
	return nil
}

// Initialised reports whether a first full crawl was committed.
func (t *Tx) Initialised() bool { return len(t.meta.Get(metaInitialised)) == 1 }

// SetInitialised records that a first full crawl was committed.
func (t *Tx) SetInitialised() error {
	if err := t.meta.Put(metaInitialised, []byte{1}); err != nil {
		return fmt.Errorf("index: store initialised flag: %w", err)
	}
	return nil
}

// RecordFailure remembers why g could not be replicated (for the status).
func (t *Tx) RecordFailure(g gfid.GFID, msg string) error {
	if err := t.f.Put(g.Bytes(), []byte(msg)); err != nil {
		return fmt.Errorf("index: store failure: %w", err)
	}
	return nil
}

// ClearFailure forgets a failure of g (it was since replicated).
func (t *Tx) ClearFailure(g gfid.GFID) error {
	if err := t.f.Delete(g.Bytes()); err != nil {
		return fmt.Errorf("index: clear failure: %w", err)
	}
	return nil
}

// Failures returns the recorded failures, gfid → message.
func (t *Tx) Failures() (map[gfid.GFID]string, error) {
	out := map[gfid.GFID]string{}
	err := t.f.ForEach(func(k, v []byte) error {
		g, err := gfid.FromBytes(k)
		if err != nil {
			return fmt.Errorf("index: damaged failure record: %w", err)
		}
		out[g] = string(v)
		return nil
	})
	return out, err
}

// storable checks that o can be put: it has a key and a GFID.
func (o *Object) storable() error {
	if o.Key == "" {
		return errors.New("index: put of an object without a key")
	}
	if o.GFID.IsZero() {
		return fmt.Errorf("index: put of key %x without a gfid", []byte(o.Key))
	}
	return nil
}

// record is o as its protobuf record.
func record(o *Object) *statev1.Object {
	m := new(statev1.Object)
	setRecord(m, o, make([]statev1.Link, len(o.Links)), make([]*statev1.Link, len(o.Links)))
	return m
}

// setRecord makes m o's record, its links held in links and ptrs (each at
// least as long as o's links). Its bytes fields share o's memory.
func setRecord(m *statev1.Object, o *Object, links []statev1.Link, ptrs []*statev1.Link) {
	*m = statev1.Object{
		Gfid: o.GFID[:], Mode: o.Mode, Uid: o.UID, Gid: o.GID, Rdev: o.Rdev, Size: o.Size,
		MtimeNs: o.MtimeNs, CtimeNs: o.CtimeNs, Ino: o.Ino, Dev: o.Dev, Target: o.Target,
		XattrDigest: o.XattrDigest,
	}
	if n := len(o.Links); n > 0 {
		for i := range o.Links {
			l := &o.Links[i]
			links[i] = statev1.Link{Parent: l.Parent[:], Name: []byte(l.Name)}
			ptrs[i] = &links[i]
		}
		m.Links = ptrs[:n]
	}
}

// encode is o's record, encoded into the transaction's arena: a commit
// encodes every object of its batch, and bbolt keeps each value until the
// transaction ends, so one message is refilled for each and the values
// are cut from large blocks instead of allocated one by one.
func (t *Tx) encode(o *Object) ([]byte, error) {
	if n := len(o.Links); len(t.links) < n {
		t.links, t.linkPtrs = make([]statev1.Link, n), make([]*statev1.Link, n)
	}
	m := &t.scratch
	setRecord(m, o, t.links, t.linkPtrs)
	size := m.SizeVT()
	if len(t.arena)+size > cap(t.arena) {
		t.arena = make([]byte, 0, max(size, arenaBlock))
	}
	v := t.arena[len(t.arena) : len(t.arena)+size : len(t.arena)+size]
	t.arena = t.arena[:len(t.arena)+size]
	if _, err := m.MarshalToSizedBufferVT(v); err != nil {
		return nil, fmt.Errorf("index: encode object: %w", err)
	}
	return v, nil
}

// arenaBlock is the size of the blocks encode cuts values from.
const arenaBlock = 256 << 10

func decode(k Key, v []byte) (Object, error) {
	var m statev1.Object
	if err := m.UnmarshalVT(v); err != nil {
		return Object{}, fmt.Errorf("index: decode object %x (the index is damaged; move it aside to rebuild it with a full crawl): %w", []byte(k), err)
	}
	return fromRecord(k, &m)
}

// fromRecord is the object k whose record is m.
func fromRecord(k Key, m *statev1.Object) (Object, error) {
	g, err := gfid.FromBytes(m.GetGfid())
	if err != nil {
		return Object{}, fmt.Errorf("index: object %x: %w", []byte(k), err)
	}
	o := Object{
		Key: k, GFID: g, Mode: m.GetMode(), UID: m.GetUid(), GID: m.GetGid(), Rdev: m.GetRdev(),
		Size: m.GetSize(), MtimeNs: m.GetMtimeNs(), CtimeNs: m.GetCtimeNs(), Ino: m.GetIno(),
		Dev: m.GetDev(), Target: m.GetTarget(), XattrDigest: m.GetXattrDigest(),
	}
	if n := len(m.GetLinks()); n > 0 {
		o.Links = make([]Link, n)
		for i, l := range m.GetLinks() {
			p, err := gfid.FromBytes(l.GetParent())
			if err != nil {
				return Object{}, fmt.Errorf("index: object %x link %d: %w", []byte(k), i, err)
			}
			o.Links[i] = Link{Parent: p, Name: string(l.GetName())}
		}
	}
	return o, nil
}
