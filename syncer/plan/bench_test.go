package plan

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/scan"
)

// statusMiB reads a kB field of /proc/self/status (VmHWM, VmRSS) in MiB.
func statusMiB(b *testing.B, field string) float64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeakRSS returns the garbage of the tree generation and of the index
// set-up to the kernel and resets the process's peak RSS (VmHWM) to its
// current RSS, so the peak read after the crawl is the crawl's own (on top
// of the process's baseline, which it returns). Linux ≥ 4.0.
func resetPeakRSS(b *testing.B) (baseMiB float64) {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("reset the peak RSS: %v", err)
	}
	return statusMiB(b, "VmRSS")
}

// tree100k makes 100 directories of 1,000 small files under 10 top ones,
// one directory per goroutine at a time (the set-up otherwise dominates the
// benchmark's run time).
func tree100k(b *testing.B) string {
	b.Helper()
	root := b.TempDir()
	dirs := make(chan string, 100)
	for i := range 10 {
		for j := range 10 {
			dirs <- filepath.Join(root, fmt.Sprintf("top%02d", i), fmt.Sprintf("sub%02d", j))
		}
	}
	close(dirs)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for d := range dirs {
				if err := os.MkdirAll(d, 0o755); err != nil {
					errs <- err
					return
				}
				for k := range 1000 {
					if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file-%04d", k)), []byte("x"), 0o644); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	// Write the tree back now, not during the timed crawls.
	unix.Sync()
	return root
}

// BenchmarkHybridCrawl100k measures scan+plan of 100k files against an
// empty index (first crawl) and against the index of the same tree (a
// crawl that finds nothing). peak-RSS-MiB is the process's peak resident
// set during the crawls alone: the tree generation and the index set-up are
// excluded by resetPeakRSS; base-RSS-MiB is the resident set the crawl
// started from (test binary, runtime, the index's mapped pages).
func BenchmarkHybridCrawl100k(b *testing.B) {
	root := tree100k(b)
	for _, indexed := range []bool{false, true} {
		name := "empty-index"
		if indexed {
			name = "full-index"
		}
		b.Run(name, func(b *testing.B) {
			db, err := index.Open(filepath.Join(b.TempDir(), index.FileName), index.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			crawl := func() *Plan {
				p, err := Crawl(context.Background(), db, root, scan.All, scan.Options{}, Options{})
				if err != nil {
					b.Fatal(err)
				}
				return p
			}
			if indexed {
				p := crawl()
				if err := db.Update(p.Commit); err != nil {
					b.Fatal(err)
				}
			}
			base := resetPeakRSS(b)
			b.ResetTimer()
			for b.Loop() {
				p := crawl()
				want := 0
				if !indexed {
					want = 100_000
				}
				if len(p.Data) != want {
					b.Fatalf("%d data items, want %d", len(p.Data), want)
				}
			}
			b.StopTimer()
			b.ReportMetric(statusMiB(b, "VmHWM"), "peak-RSS-MiB")
			b.ReportMetric(base, "base-RSS-MiB")
		})
	}
}
