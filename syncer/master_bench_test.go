package syncer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/georep/georep/syncer/changelog"
	"github.com/georep/georep/syncer/index"
	"github.com/georep/georep/syncer/plan"
	"github.com/georep/georep/syncer/scan"
)

// BenchmarkChangelogCrawl1Percent shows that in changelog mode the work
// for a change is proportional to the change, not to the tree: trees of
// 10,000 and 100,000 files (directories of 100), 1% of the files changed
// (all of 1% of the directories, as real changes cluster), then the
// planning work from the detector's real batch (changelog) beside a full
// Hybrid Crawl of the same tree (hybrid). No slave is involved: this is
// the master's detect and plan cost.
func BenchmarkChangelogCrawl1Percent(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			root, state := b.TempDir(), b.TempDir()
			dirs := n / 100
			for d := 0; d < dirs; d++ {
				dp := filepath.Join(root, fmt.Sprintf("d%05d", d))
				if err := os.Mkdir(dp, 0o755); err != nil {
					b.Fatal(err)
				}
				for f := 0; f < 100; f++ {
					if err := os.WriteFile(filepath.Join(dp, fmt.Sprintf("f%03d", f)), []byte("x"), 0o644); err != nil {
						b.Fatal(err)
					}
				}
			}
			db, err := index.Open(filepath.Join(state, index.FileName), index.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			crawl := func(dirs []scan.Dirty) *plan.Plan {
				p, err := plan.Crawl(ctx, db, root, dirs, scan.Options{}, plan.Options{})
				if err != nil {
					b.Fatal(err)
				}
				return p
			}
			if err := db.Update(crawl(scan.All).Commit); err != nil {
				b.Fatal(err)
			}
			cl, err := changelog.Open(changelog.Options{Root: root, StateDir: state, Interval: 20 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- cl.Run(runCtx) }()
			defer func() { stop(); <-done; cl.Close() }()
			m := &master{db: db, cfg: Config{Root: root}}

			changed := dirs / 100
			if changed == 0 {
				changed = 1
			}
			round := 0
			// change rewrites every file of 1% of the directories and waits
			// until the detector has reported all of them.
			change := func() changelog.DirtySet {
				round++
				for d := 0; d < changed; d++ {
					dp := filepath.Join(root, fmt.Sprintf("d%05d", d*100))
					for f := 0; f < 100; f++ {
						if err := os.WriteFile(filepath.Join(dp, fmt.Sprintf("f%03d", f)), []byte(fmt.Sprint(round)), 0o644); err != nil {
							b.Fatal(err)
						}
					}
				}
				set := changelog.DirtySet{}
				deadline := time.After(30 * time.Second)
				for len(set) < changed {
					select {
					case batch := <-cl.Batches():
						for k, v := range batch.Dirty {
							if v.Rel != "" {
								set[k] = v
							}
						}
						if err := cl.Ack(batch.Last); err != nil {
							b.Fatal(err)
						}
					case <-deadline:
						b.Fatalf("the detector reported %d of %d changed directories in 30s", len(set), changed)
					}
				}
				return set
			}

			b.Run("changelog", func(b *testing.B) {
				files := 0
				for b.Loop() {
					b.StopTimer()
					set := change()
					b.StartTimer()
					dirs, err := m.dirtyPaths(set)
					if err != nil {
						b.Fatal(err)
					}
					p := crawl(dirs)
					b.StopTimer()
					files += len(p.Data)
					if err := db.Update(p.Commit); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(files)/float64(b.N), "files-changed/op")
			})
			b.Run("hybrid", func(b *testing.B) {
				files := 0
				for b.Loop() {
					b.StopTimer()
					change()
					b.StartTimer()
					p := crawl(scan.All)
					b.StopTimer()
					files += len(p.Data)
					if err := db.Update(p.Commit); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(files)/float64(b.N), "files-changed/op")
			})
		})
	}
}
