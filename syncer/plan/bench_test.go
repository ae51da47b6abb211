package plan

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/scan"
)

// peakRSSMiB is the process's peak resident set (VmHWM).
func peakRSSMiB(b *testing.B) float64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// tree100k makes 100 directories of 1,000 small files under 10 top ones.
func tree100k(b *testing.B) string {
	b.Helper()
	root := b.TempDir()
	for i := range 10 {
		for j := range 10 {
			d := filepath.Join(root, fmt.Sprintf("top%02d", i), fmt.Sprintf("sub%02d", j))
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
			for k := range 1000 {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file-%04d", k)), []byte("x"), 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	return root
}

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
			b.ReportMetric(peakRSSMiB(b), "peak-RSS-MiB")
		})
	}
}
