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
