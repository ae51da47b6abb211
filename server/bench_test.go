package server

import (
	"fmt"
	"testing"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// BenchmarkEntryOpsCreateGRPC measures how many CREATE entries a slave
// applies per second when a master sends them in batches of 1000 over a
// real gRPC connection. The project's goal is at least 20,000 entries/s.
func BenchmarkEntryOpsCreateGRPC(b *testing.B) {
	const batch = 1000
	for _, tr := range transports() {
		b.Run(string(tr), func(b *testing.B) {
			be, _ := openBackend(b)
			c := serve(b, New(be, Options{}), tr, nil)
			ctx := callCtx(b)
			stat := regStat(0o644)
			parent := gfid.Root.Bytes()
			reqs := 0
			for b.Loop() {
				entries := make([]*pb.Entry, batch)
				for i := range entries {
					entries[i] = &pb.Entry{
						Op:         pb.EntryOp_ENTRY_OP_CREATE,
						Gfid:       gfid.New().Bytes(),
						ParentGfid: parent,
						Name:       fmt.Appendf(nil, "f-%d-%d", reqs, i),
						Stat:       stat,
					}
				}
				resp, err := c.EntryOps(ctx, &pb.EntryOpsRequest{Entries: entries})
				if err != nil {
					b.Fatalf("entry ops batch %d: %v", reqs, err)
				}
				for i, r := range resp.GetResults() {
					if r.GetErrno() != 0 {
						b.Fatalf("batch %d entry %d: %s: %s", reqs, i, r.GetCode(), r.GetMessage())
					}
				}
				reqs++
			}
			b.ReportMetric(float64(reqs*batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}
