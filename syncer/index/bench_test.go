package index

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
)

// newObjects makes n regular files in n/1000 directories (plus the
// directories), shaped like a first crawl's index changes: ext4-like file
// handle keys (inode and generation, little-endian, so not in key order),
// random GFIDs, and names in a hashed (readdir-like) order.
func newObjects(n int) []Object {
	r := rand.New(rand.NewPCG(1, 2))
	key := func(ino uint32) Key {
		b := []byte{'h', 0, 0, 0, 1}
		b = binary.LittleEndian.AppendUint32(b, ino)
		b = binary.LittleEndian.AppendUint32(b, r.Uint32())
		return Key(b)
	}
	var out []Object
	dirs := make([]gfid.GFID, (n+999)/1000)
	for i := range dirs {
		dirs[i] = gfid.New()
		out = append(out, Object{Key: key(uint32(100 + i)), GFID: dirs[i], Mode: unix.S_IFDIR | 0o755,
			MtimeNs: 1e18, CtimeNs: 1e18, Ino: uint64(100 + i), Dev: 2049,
			Links: []Link{{Parent: gfid.Root, Name: fmt.Sprintf("d%03d", i)}}})
	}
	files := make([]Object, n)
	for i := range files {
		files[i] = Object{Key: key(uint32(10_000 + i)), GFID: gfid.New(), Mode: unix.S_IFREG | 0o644,
			Size: 4096, MtimeNs: 1e18 + int64(i), CtimeNs: 1e18 + int64(i), Ino: uint64(10_000 + i), Dev: 2049,
			Links: []Link{{Parent: dirs[i/1000], Name: fmt.Sprintf("f%05d", i)}}}
	}
	r.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	return append(out, files...)
}

// BenchmarkCommit20k is the index commit of a first crawl of 20,000 files:
// each object Put on its own in the crawl's order (bbolt inserts every key
// into a node that is only split at commit, so out-of-order keys cost a
// memmove of the node each), against one Apply that writes each bucket in
// key order. Each iteration commits into a fresh index.
func BenchmarkCommit20k(b *testing.B) {
	objs := newObjects(20_000)
	cases := []struct {
		name   string
		commit func(tx *Tx) error
	}{
		{"one-by-one", func(tx *Tx) error {
			for _, o := range objs {
				if err := tx.Put(o); err != nil {
					return err
				}
			}
			return nil
		}},
		{"sorted-apply", func(tx *Tx) error { return tx.Apply(nil, objs) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			var used int64
			for i := 0; b.Loop(); i++ {
				db, err := Open(filepath.Join(dir, fmt.Sprintf("%d.db", i)), Options{})
				if err != nil {
					b.Fatal(err)
				}
				if err := db.Update(c.commit); err != nil {
					b.Fatal(err)
				}
				if err := db.View(func(tx *Tx) error { used = tx.tx.Size(); return nil }); err != nil {
					b.Fatal(err)
				}
				if err := db.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(used)/(1<<20), "MiB-used")
		})
	}
}
