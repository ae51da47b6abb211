//go:build benchcompare

package bench

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// row is the median of one cell's samples.
type row struct {
	net, tool, phase       string
	wall, wallMin, wallMax time.Duration
	wireBytes              int64
	cpuLocal, cpuRemote    time.Duration
	n                      int
}

func median[T int64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(nets, tools []string, results map[key][]sample) []row {
	var rows []row
	for _, network := range nets {
		for _, phase := range []string{"initial", "incremental"} {
			for _, tool := range tools {
				ss := results[key{network, tool, phase}]
				if len(ss) == 0 {
					continue
				}
				var wall []time.Duration
				var bytes []int64
				var cl, cr []time.Duration
				for _, s := range ss {
					wall = append(wall, s.wall)
					bytes = append(bytes, s.wireBytes)
					cl = append(cl, s.cpuLocal)
					cr = append(cr, s.cpuRemote)
				}
				rows = append(rows, row{net: network, tool: tool, phase: phase,
					wall: median(wall), wallMin: slices.Min(wall), wallMax: slices.Max(wall),
					wireBytes: median(bytes), cpuLocal: median(cl), cpuRemote: median(cr), n: len(ss)})
			}
		}
	}
	return rows
}

const sectionTitle = "## Data plane vs rsync"

// writeReport puts the section into root/BENCHMARKS.md (replacing an
// earlier one, so a rerun refreshes it) and the chart into
// root/docs/bench-data-plane.png.
func writeReport(root string, cfg config, rows []row, when time.Time) error {
	if err := writeChart(filepath.Join(root, "docs", "bench-data-plane.png"), rows); err != nil {
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s\n\n", sectionTitle)
	fmt.Fprintf(&sb, "georep native (`georep master --once`) against `rsync -aHAX --numeric-ids`, both through the\n"+
		"same loopback sshd with the same ssh command (georep's key carries the forced command `georep slave\n"+
		"--stdio --root S`, rsync's login is plain). Workload: %d files of %d B in directories of 1000, plus\n"+
		"%d files of %d MiB, pseudo-random content; then the incremental sync after %.0f%% of the small files\n"+
		"are rewritten and 64 KiB change in the middle of one large file; then both again with toxiproxy adding\n"+
		"25 ms each way (50 ms RTT) between the ssh client and sshd. Each slave starts empty for the initial\n"+
		"sync. Source: `bench/compare_test.go`.\n\n", cfg.small, cfg.smallSize, cfg.large, cfg.largeMiB, cfg.changePct)
	// Whether the measured georep sent changed files whole is read off the
	// bytes: a 64 KiB change cannot cost a whole large file otherwise.
	for _, r := range rows {
		if r.tool != "georep" || r.phase != "incremental" || cfg.large == 0 {
			continue
		}
		if r.wireBytes >= int64(cfg.largeMiB)<<20 {
			sb.WriteString("**georep used whole-file transfer in this run (the block delta had not landed)**: the\n" +
				"changed large file went whole, where rsync sends only the changed blocks, so the incremental\n" +
				"rows show the gap the delta has to close.\n\n")
		} else {
			sb.WriteString("georep sent the changed large file as a block delta in this run (its incremental moved\n" +
				"less than the file's size).\n\n")
		}
		break
	}
	fmt.Fprintf(&sb, "Command (%s, from the repository root): `make bench-compare`\n\n", when.UTC().Format("2006-01-02"))
	fmt.Fprintf(&sb, "Machine: %d vCPUs, %s/%s. Wall time is the median of %d runs per cell, tools alternating\n"+
		"which goes first; bytes are counted by a relay that is ssh's ProxyCommand (the encrypted ssh stream,\n"+
		"both directions); CPU is user+sys of the tool's own process tree (`master`: georep or rsync plus\n"+
		"their ssh client and the relay) and of the sshd sessions on the slave side (`slave`: the session,\n"+
		"`georep slave` or the remote rsync), from getrusage and sshd's reaped-children times.\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, cfg.runs)
	sb.WriteString("| Network | Sync | Tool | Wall, s (median) | Wall, s (range) | Wire, MiB | CPU master, s | CPU slave, s |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %.2f | %.2f–%.2f | %.1f | %.2f | %.2f |\n", r.net, r.phase, r.tool,
			r.wall.Seconds(), r.wallMin.Seconds(), r.wallMax.Seconds(), float64(r.wireBytes)/(1<<20),
			r.cpuLocal.Seconds(), r.cpuRemote.Seconds())
	}
	sb.WriteString("\nRatios, georep ÷ rsync (issue 5's goals: initial ≤ 1.0× time, incremental ≤ 0.5× time, bytes ≤ 1.05×):\n\n")
	sb.WriteString("| Network | Sync | Wall | Wire |\n| --- | --- | --- | --- |\n")
	for _, g := range rows {
		if g.tool != "georep" {
			continue
		}
		for _, r := range rows {
			if r.tool == "rsync" && r.net == g.net && r.phase == g.phase && r.wall > 0 && r.wireBytes > 0 {
				fmt.Fprintf(&sb, "| %s | %s | %.2f× | %.2f× |\n", g.net, g.phase,
					g.wall.Seconds()/r.wall.Seconds(), float64(g.wireBytes)/float64(r.wireBytes))
			}
		}
	}
	sb.WriteString("\n![Wall time, georep vs rsync](docs/bench-data-plane.png)\n")

	path := filepath.Join(root, "BENCHMARKS.md")
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	doc := string(old)
	if i := strings.Index(doc, sectionTitle+"\n"); i >= 0 {
		// Replace up to the next top-level section, keeping what follows.
		end := len(doc)
		if j := strings.Index(doc[i+len(sectionTitle):], "\n## "); j >= 0 {
			end = i + len(sectionTitle) + j + 1
		}
		doc = doc[:i] + sb.String() + strings.TrimPrefix(doc[end:], "\n")
		if end < len(old) {
			doc = strings.Replace(doc, sb.String(), sb.String()+"\n", 1)
		}
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + sb.String()
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeChart draws grouped bars of median wall time per measurement,
// one bar per tool.
func writeChart(path string, rows []row) error {
	var labels []string
	vals := map[string]plotter.Values{}
	for _, r := range rows {
		l := r.net + "\n" + r.phase
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
		vals[r.tool] = append(vals[r.tool], r.wall.Seconds())
	}
	p := plot.New()
	p.Title.Text = "Data plane: georep (whole-file) vs rsync -aHAX, median wall time"
	p.Y.Label.Text = "seconds"
	w := vg.Points(24)
	for i, tool := range []string{"georep", "rsync"} {
		if len(vals[tool]) != len(labels) {
			return fmt.Errorf("chart: %s has %d values for %d measurements", tool, len(vals[tool]), len(labels))
		}
		bars, err := plotter.NewBarChart(vals[tool], w)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		bars.LineStyle.Width = vg.Length(0)
		bars.Color = []color.RGBA{{31, 119, 180, 255}, {255, 127, 14, 255}}[i]
		bars.Offset = w * vg.Length(2*i-1) / 2
		p.Add(bars)
		p.Legend.Add(tool, bars)
	}
	p.Legend.Top = true
	p.Y.Min = 0
	p.Y.Max *= 1.2 // headroom, so the legend never covers a bar
	p.NominalX(labels...)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("save chart %s: %w", path, err)
	}
	return nil
}
