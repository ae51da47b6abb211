package backend

import (
	"context"
	"fmt"
	"testing"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// BenchmarkEntryOpsCreate measures CREATE throughput in batches of 1000,
// the shape the master sends. One op is one batch.
func BenchmarkEntryOpsCreate(b *testing.B) {
	be, _ := newBackend(b)
	const batch = 1000
	// A few directories, as in a real tree.
	dirs := make([]gfid.GFID, 16)
	for i := range dirs {
		dirs[i] = gfid.New()
		apply(b, be, mkdir(dirs[i], gfid.Root, fmt.Sprintf("d%02d", i)))
	}
	ctx := context.Background()
	n := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		entries := make([]*pb.Entry, batch)
		for i := range entries {
			entries[i] = create(gfid.New(), dirs[n%len(dirs)], fmt.Sprintf("f%08d", n))
			n++
		}
		b.StartTimer()
		rs := be.EntryOps(ctx, entries)
		b.StopTimer()
		for i, r := range rs {
			if r.Errno != 0 {
				b.Fatalf("entry %d: %s", i, r.Message)
			}
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkCopyAt32MiB installs a 32 MiB file's new content as a delta:
// all of it copied from the previous content but 64 KiB in the middle,
// as the incremental sync of issue 5's benchmark does.
func BenchmarkCopyAt32MiB(b *testing.B) {
	be, dir := newBackend(b)
	const size = 32 << 20
	old := make([]byte, size)
	for i := range old {
		old[i] = byte(i*7 + i>>12)
	}
	x := gfid.New()
	writeOld(b, be, dir, x, "big", old)
	lit := make([]byte, 64<<10)
	mid := int64(size / 2)
	want := append(append(append([]byte{}, old[:mid]...), lit...), old[mid+int64(len(lit)):]...)
	sp := []putSpan{{0, want}}
	digest := digestOf(size, sp)
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		w, err := be.BeginPut(PutHeader{GFID: x, Size: size, LinkParent: gfid.Root, LinkName: "big", Delta: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := w.CopyAt(0, mid, 0); err != nil {
			b.Fatal(err)
		}
		if err := w.WriteAt(lit, mid); err != nil {
			b.Fatal(err)
		}
		rest := mid + int64(len(lit))
		if err := w.CopyAt(rest, size-rest, rest); err != nil {
			b.Fatal(err)
		}
		if _, err := w.Commit(digest); err != nil {
			b.Fatal(err)
		}
	}
}
