package server

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

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

// BenchmarkFilesystemCreateBaseline is the ceiling BenchmarkEntryOpsCreateGRPC
// is measured against: plain open(O_CREAT|O_EXCL)+close of 1000 files per
// op into one directory on the same filesystem, with no identity, index or
// RPC. This VM's disk is noisy, so compare the two from one run.
func BenchmarkFilesystemCreateBaseline(b *testing.B) {
	const batch = 1000
	dir, err := os.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer dir.Close()
	dfd := int(dir.Fd())
	reqs := 0
	for b.Loop() {
		for i := 0; i < batch; i++ {
			fd, err := unix.Openat(dfd, fmt.Sprintf("f-%d-%d", reqs, i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
		reqs++
	}
	b.ReportMetric(float64(reqs*batch)/b.Elapsed().Seconds(), "entries/s")
}
