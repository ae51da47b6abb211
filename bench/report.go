package bench

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The contenders, in the order the report lists them. rsync is the
// baseline every ratio divides by. rsync-aesgcm is rsync on the cipher
// georep's ssh prefers on this CPU (see client.cipherOption): a reference
// that shows how much of georep's lead is the cipher; no goal applies to it.
const (
	toolNative      = "georep"
	toolLive        = "georep-live"
	toolRsync       = "georep-rsync"
	toolBaseline    = "rsync"
	toolBaselineAES = "rsync-aesgcm"
)

// allTools is every contender in the report's order.
var allTools = []string{toolNative, toolLive, toolRsync, toolBaseline, toolBaselineAES}

// aesCipher is the cipher rsync-aesgcm's ssh is told to use: the one
// georep's ssh offers first on a CPU with AES instructions.
const aesCipher = "aes256-gcm@openssh.com"

var phases = []string{"initial", "incremental"}

// config is the workload; every count can be shrunk from the environment
// for a quick run (the defaults are issue 5's workload).
type config struct {
	small     int // files of smallSize
	smallSize int // bytes
	large     int // files of largeMiB
	largeMiB  int // MiB
	runs      int // timed runs per tool and measurement
	changePct float64
	wan       bool
	tools     []string // contenders, in the report's order
}

// issueWorkload is issue 5's workload, the one BENCHMARKS.md reports.
func issueWorkload() config {
	return config{small: 20000, smallSize: 4096, large: 4, largeMiB: 32, runs: 5, changePct: 1, wan: true,
		tools: allTools}
}

// shrunk says whether cfg is smaller than issue 5's workload: such a run
// is for a quick look and must not replace the published figures.
func (c config) shrunk() bool {
	d := issueWorkload()
	return c.small < d.small || c.smallSize < d.smallSize || c.large < d.large ||
		c.largeMiB < d.largeMiB || c.runs < d.runs || !c.wan ||
		slices.ContainsFunc(d.tools, func(t string) bool { return !slices.Contains(c.tools, t) })
}

// sample is one timed sync.
type sample struct {
	wall      time.Duration
	wireBytes int64
	cpuLocal  time.Duration // the tool's process tree on the master side
	cpuRemote time.Duration // the sshd sessions' trees on the slave side
	files     int           // regular files the tool says it sent; -1 unknown
}

// key names one cell of the results: network, tool, phase.
type key struct{ net, tool, phase string }

// row is the median of one cell's samples, and, for a georep tool, how it
// compares with rsync's row for the same network and phase.
type row struct {
	net, tool, phase       string
	wall, wallMin, wallMax time.Duration
	wireBytes              int64
	cpuLocal, cpuRemote    time.Duration
	files                  int // median; -1 when any sample did not say
	n                      int

	compared              bool // rsync had a row to divide by
	wallRatio, bytesRatio float64
	wallGoal, bytesGoal   float64
	wallMet, bytesMet     bool
}

// floor is the median (and range) time of one bare ssh login that runs
// `true` on a network: every sync pays at least one, whatever it does.
type floor struct {
	net                    string
	wall, wallMin, wallMax time.Duration
	n                      int
}

// summarizeFloors reduces the login samples of each network in nets.
func summarizeFloors(nets []string, samples map[string][]time.Duration) []floor {
	var out []floor
	for _, n := range nets {
		v := samples[n]
		if len(v) == 0 {
			continue
		}
		out = append(out, floor{net: n, wall: median(v), wallMin: slices.Min(v), wallMax: slices.Max(v), n: len(v)})
	}
	return out
}

// goals are issue 5's: georep's time at most 1.0× rsync's for the initial
// sync and 0.5× for the incremental, bytes at most 1.05× in both.
func goals(phase string) (wall, bytes float64) {
	if phase == "incremental" {
		return 0.5, 1.05
	}
	return 1.0, 1.05
}

func median[T int | int64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize turns the samples into rows, network by network, phase by
// phase, tools in the given order, and sets each georep row's ratios to
// rsync's row.
func summarize(nets, tools []string, results map[key][]sample) []row {
	var rows []row
	for _, network := range nets {
		for _, phase := range phases {
			for _, tool := range tools {
				ss := results[key{network, tool, phase}]
				if len(ss) == 0 {
					continue
				}
				var wall, cl, cr []time.Duration
				var wire []int64
				var files []int
				for _, s := range ss {
					wall = append(wall, s.wall)
					wire = append(wire, s.wireBytes)
					cl = append(cl, s.cpuLocal)
					cr = append(cr, s.cpuRemote)
					files = append(files, s.files)
				}
				r := row{net: network, tool: tool, phase: phase,
					wall: median(wall), wallMin: slices.Min(wall), wallMax: slices.Max(wall),
					wireBytes: median(wire), cpuLocal: median(cl), cpuRemote: median(cr), files: -1, n: len(ss)}
				if slices.Min(files) >= 0 {
					r.files = median(files)
				}
				rows = append(rows, r)
			}
		}
	}
	for i, r := range rows {
		if r.tool == toolBaseline {
			continue
		}
		j := slices.IndexFunc(rows, func(b row) bool {
			return b.tool == toolBaseline && b.net == r.net && b.phase == r.phase
		})
		if j < 0 || rows[j].wall <= 0 || rows[j].wireBytes <= 0 {
			continue
		}
		base := rows[j]
		r.compared = true
		r.wallRatio = r.wall.Seconds() / base.wall.Seconds()
		r.bytesRatio = float64(r.wireBytes) / float64(base.wireBytes)
		if r.tool == toolBaselineAES {
			rows[i] = r // a reference: the goals are georep's
			continue
		}
		r.wallGoal, r.bytesGoal = goals(r.phase)
		r.wallMet = r.wallRatio <= r.wallGoal
		r.bytesMet = r.bytesRatio <= r.bytesGoal
		rows[i] = r
	}
	return rows
}

// machine is where and from what a run was made; the report states it.
type machine struct {
	when    time.Time
	cpus    int
	os      string // GOOS/GOARCH
	version string // `georep version` of the binary measured
}

const sectionTitle = "## Data plane vs rsync"

// chartFile is the chart's path from the repository root.
const chartFile = "docs/bench-data-plane.png"

// section renders the "Data plane vs rsync" section of BENCHMARKS.md,
// ending in a newline.
func section(cfg config, rows []row, floors []floor, m machine) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s\n\n", sectionTitle)
	fmt.Fprintf(&sb, "Five contenders, one after the other on the same generated master tree, through the same\n"+
		"loopback sshd and the same ssh command:\n\n"+
		"- `georep`: `georep master --once` (native data plane: gRPC streams, whole files and block deltas);\n"+
		"- `georep-live`: `georep master` running, as georep is meant to run: its initial sync is the time\n"+
		"  from its start to a status whose stime is set after its first crawl; it keeps running, and its\n"+
		"  incremental is the time from the end of the changes to a status whose stime covers them (the\n"+
		"  changes are made while it runs, so it goes first, and the others start once it is done); the\n"+
		"  bytes and CPU of each phase are read from its relays' running totals and /proc;\n"+
		"- `georep-rsync`: `georep master --once --sync-mode rsync` (georep plans and installs, rsync moves\n"+
		"  the data through the session's ssh connection: the ssh command gets a ControlMaster socket in\n"+
		"  the state directory, as georep's default ssh command has);\n"+
		"- `rsync`: `rsync -aHAX --numeric-ids --stats` (`--stats` only prints the counts);\n"+
		"- `rsync-aesgcm`: the same with `-c "+aesCipher+"` added to its ssh command, a reference for the\n"+
		"  cipher georep's ssh prefers (no goal applies to it).\n\n"+
		"Every georep contender logs in with a key whose forced command is `georep slave --stdio --root S`;\n"+
		"rsync's login is plain. Workload: %d files of %d B in directories of 1000, plus %d files of\n"+
		"%d MiB, pseudo-random content; then the incremental sync after %.0f%% of the small files are\n"+
		"rewritten and 64 KiB change in the middle of one large file.", cfg.small, cfg.smallSize, cfg.large,
		cfg.largeMiB, cfg.changePct)
	if cfg.wan {
		sb.WriteString(" Then all of it again with toxiproxy\n" +
			"adding 25 ms each way (50 ms RTT) between the ssh client and sshd.")
	}
	sb.WriteString(" Each slave starts empty for the\n" +
		"initial sync, on an ext4 with a journal that the benchmark makes and loop-mounts, as a real slave's\n" +
		"filesystem would be (this machine's root ext4 has none, and there every create scans past the\n" +
		"inodes freed in the last minutes, which made each run's times depend on the ones before it),\n" +
		"through a loop device doing direct I/O, as a disk would (a buffered one copies every block\n" +
		"written back into the image's page cache too, charged to whoever flushes in the timed window).\n" +
		"The master's state directories (its index, rsync mode's per-file symlinks) are on a second such\n" +
		"ext4. Before each timed sync the benchmark calls sync(2), so no tool writes back what another left\n" +
		"unwritten. Every slave tree is checked after each sync: a sample of files after the initial, the\n" +
		"whole tree (contents, modes, owners, mtimes, xattrs) after the incremental. Source:\n" +
		"`bench/compare_test.go`.\n\n")

	fmt.Fprintf(&sb, "Command (%s, from the repository root): `make bench-compare` (`make bench` runs it after the\n"+
		"micro-benchmarks). Binary measured: `%s`.\n\n", m.when.UTC().Format("2006-01-02"), m.version)
	fmt.Fprintf(&sb, "Machine: %d vCPUs, %s. Wall time is the median of %d runs per cell (min–max beside it), the\n"+
		"tools' order rotating from run to run so none always meets a cold or warm page cache; bytes are\n"+
		"counted by a relay that is ssh's ProxyCommand (the encrypted ssh stream, both directions, every ssh\n"+
		"connection of the run); CPU is user+sys of the tool's own process tree (`master`: georep or rsync\n"+
		"plus their ssh client and the relay) and of the sshd sessions on the slave side (`slave`: the\n"+
		"session, `georep slave` or the remote rsync), from getrusage and sshd's reaped-children times. A\n"+
		"`--once` run that is in sync ends ssh without waiting for the remote side, so sshd does not reap\n"+
		"that slave: the harness adopts it (`PR_SET_CHILD_SUBREAPER`), waits for it and counts it.\n"+
		"`Files` is what the tool itself says it sent: the `data` count of georep's `batch applied` log\n"+
		"lines, rsync's \"Number of regular files transferred\".\n\n", m.cpus, m.os, cfg.runs)

	sb.WriteString("Goals (issue 5), each georep contender ÷ rsync: initial ≤ 1.0× the time, incremental ≤ 0.5× the\n" +
		"time, bytes ≤ 1.05× in both.\n\n")
	sb.WriteString("| Network | Sync | Tool | Wall, s | Wall, s (min–max) | Wire, MiB | Files | CPU master, s | CPU slave, s | Wall ÷ rsync | Wire ÷ rsync | Goals met |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		files := "—"
		if r.files >= 0 {
			files = fmt.Sprint(r.files)
		}
		wallRatio, bytesRatio, met := "—", "—", "—"
		switch {
		case r.tool == toolBaseline:
			met = "(baseline)"
		case r.tool == toolBaselineAES && r.compared:
			wallRatio = fmt.Sprintf("%.2f×", r.wallRatio)
			bytesRatio = fmt.Sprintf("%.2f×", r.bytesRatio)
			met = "(reference)"
		case r.compared:
			wallRatio = fmt.Sprintf("%.2f×", r.wallRatio)
			bytesRatio = fmt.Sprintf("%.2f×", r.bytesRatio)
			met = verdict(r)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %.2f | %.2f–%.2f | %.1f | %s | %.2f | %.2f | %s | %s | %s |\n",
			r.net, r.phase, r.tool, r.wall.Seconds(), r.wallMin.Seconds(), r.wallMax.Seconds(),
			float64(r.wireBytes)/(1<<20), files, r.cpuLocal.Seconds(), r.cpuRemote.Seconds(), wallRatio, bytesRatio, met)
	}
	sb.WriteString("\n")
	sameCipher(&sb, rows)

	if len(floors) > 0 {
		sb.WriteString("Login floor: a bare login through the same ssh command and relay that only runs `true`\n" +
			"(measured once per run, before the tools; median and range). Every sync above pays at least one\n" +
			"such login, except a running session's incremental (it is logged in already), so no other\n" +
			"tool's wall time can fall below it, and an incremental goal of 0.5× rsync is out of reach for\n" +
			"`georep --once` wherever the floor is more than half of rsync's incremental:\n\n")
		sb.WriteString("| Network | Login, s | Login, s (min–max) | rsync incremental, s | georep incremental, s | georep ÷ rsync above the floor |\n")
		sb.WriteString("| --- | --- | --- | --- | --- | --- |\n")
		for _, f := range floors {
			var rs, gr *row
			for i := range rows {
				r := &rows[i]
				if r.net == f.net && r.phase == "incremental" {
					switch r.tool {
					case toolBaseline:
						rs = r
					case toolNative:
						gr = r
					}
				}
			}
			rsWall, grWall, above := "—", "—", "—"
			if rs != nil {
				rsWall = fmt.Sprintf("%.2f", rs.wall.Seconds())
			}
			if gr != nil {
				grWall = fmt.Sprintf("%.2f", gr.wall.Seconds())
			}
			if rs != nil && gr != nil && rs.wall > f.wall {
				above = fmt.Sprintf("%.2f×", float64(max(gr.wall-f.wall, 0))/float64(rs.wall-f.wall))
			}
			fmt.Fprintf(&sb, "| %s | %.2f | %.2f–%.2f | %s | %s | %s |\n", f.net, f.wall.Seconds(),
				f.wallMin.Seconds(), f.wallMax.Seconds(), rsWall, grWall, above)
		}
		sb.WriteString("\n")
	}

	// Whether a georep mode sent the changed large file whole is read off
	// the bytes: a 64 KiB change cannot cost a whole large file otherwise.
	if cfg.large > 0 {
		var whole []string
		for _, r := range rows {
			if r.tool != toolBaseline && r.tool != toolBaselineAES && r.phase == "incremental" && r.wireBytes >= int64(cfg.largeMiB)<<20 {
				whole = append(whole, r.tool+" on "+r.net)
			}
		}
		if len(whole) == 0 {
			sb.WriteString("Every georep incremental moved less than the large file's size: the changed large file went\n" +
				"as a block delta.\n\n")
		} else {
			fmt.Fprintf(&sb, "**The changed large file went whole** (the incremental moved at least the file's size, where\n"+
				"rsync sends only the changed blocks): %s.\n\n", strings.Join(whole, ", "))
		}
	}
	sb.WriteString("Quick runs shrink the workload from the environment: `GEOREP_BENCH_SMALL` (files, default 20000),\n" +
		"`GEOREP_BENCH_SMALL_SIZE` (bytes, 4096), `GEOREP_BENCH_LARGE` (files, 4), `GEOREP_BENCH_LARGE_MIB`\n" +
		"(32), `GEOREP_BENCH_RUNS` (5), `GEOREP_BENCH_WAN=0` (loopback only), `GEOREP_BENCH_TOOLS` (a\n" +
		"comma-separated subset of georep, georep-live, georep-rsync, rsync, rsync-aesgcm). A shrunk run prints its table on stdout\n" +
		"and leaves this section alone; `make bench-compare GEOREP_BENCH_WRITE=` leaves it alone for a\n" +
		"full run too.\n\n")
	fmt.Fprintf(&sb, "![Median wall time per network and sync: georep --once, a running georep, georep rsync mode, rsync and rsync on AES-GCM](%s)\n", chartFile)
	return sb.String()
}

// sameCipher writes, when rsync-aesgcm ran, each georep contender's wall
// time divided by it: the comparison with the cipher the same on both sides.
func sameCipher(sb *strings.Builder, rows []row) {
	var lines []string
	for _, r := range rows {
		if r.tool == toolBaseline || r.tool == toolBaselineAES {
			continue
		}
		j := slices.IndexFunc(rows, func(b row) bool {
			return b.tool == toolBaselineAES && b.net == r.net && b.phase == r.phase
		})
		if j < 0 || rows[j].wall <= 0 {
			continue
		}
		lines = append(lines, fmt.Sprintf("| %s | %s | %s | %.2f | %.2f | %.2f× |\n", r.net, r.phase, r.tool,
			r.wall.Seconds(), rows[j].wall.Seconds(), r.wall.Seconds()/rows[j].wall.Seconds()))
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(sb, "The same cipher on both sides: georep's ssh offers %s first on a CPU with AES instructions\n"+
		"(ssh's default is chacha20-poly1305, which the rsync row keeps), so `rsync-aesgcm` is rsync with\n"+
		"`-c %s` in its ssh command, and each georep contender divided by it:\n\n", aesCipher, aesCipher)
	sb.WriteString("| Network | Sync | Tool | Wall, s | rsync-aesgcm wall, s | Wall ÷ rsync-aesgcm |\n")
	sb.WriteString("| --- | --- | --- | --- | --- | --- |\n")
	for _, l := range lines {
		sb.WriteString(l)
	}
	sb.WriteString("\n")
}

// verdict says which of a compared row's goals it met.
func verdict(r row) string {
	var missed []string
	if !r.wallMet {
		missed = append(missed, fmt.Sprintf("time > %.1f×", r.wallGoal))
	}
	if !r.bytesMet {
		missed = append(missed, fmt.Sprintf("bytes > %.2f×", r.bytesGoal))
	}
	if len(missed) == 0 {
		return "yes"
	}
	return "no: " + strings.Join(missed, ", ")
}

// splice puts sec into doc in place of an earlier section of the same
// title (up to the next "## " section, which is kept), or appends it.
func splice(doc, sec string) string {
	i := strings.Index(doc, sectionTitle+"\n")
	if i < 0 {
		return strings.TrimRight(doc, "\n") + "\n\n" + sec
	}
	rest := doc[i+len(sectionTitle):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		return doc[:i] + sec + "\n" + rest[j+1:]
	}
	return doc[:i] + sec
}

// writeReport puts the section into root/BENCHMARKS.md (replacing an
// earlier one, so a rerun refreshes it) and the chart into root/chartFile.
func writeReport(root string, cfg config, rows []row, floors []floor, m machine) error {
	if err := writeChart(filepath.Join(root, chartFile), rows); err != nil {
		return err
	}
	path := filepath.Join(root, "BENCHMARKS.md")
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s (GEOREP_BENCH_WRITE names the repository root): %w", path, err)
	}
	if err := os.WriteFile(path, []byte(splice(string(old), section(cfg, rows, floors, m))), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// toolColor tells the tools apart in the chart; a tool without one is
// refused rather than drawn in a colour nobody can tell apart.
func toolColor(tool string) (color.RGBA, bool) {
	switch tool {
	case toolNative:
		return color.RGBA{31, 119, 180, 255}, true // blue
	case toolLive:
		return color.RGBA{148, 103, 189, 255}, true // purple
	case toolRsync:
		return color.RGBA{44, 160, 44, 255}, true // green
	case toolBaseline:
		return color.RGBA{255, 127, 14, 255}, true // orange
	case toolBaselineAES:
		return color.RGBA{140, 140, 140, 255}, true // grey
	}
	return color.RGBA{}, false
}

// Chart size: 96 dpi, vgimg's default.
const (
	chartWidth  = 9 * vg.Inch
	chartHeight = 4 * vg.Inch
	chartDPI    = 96
)

// writeChart draws one panel per phase (their times differ tenfold, so
// one axis would flatten the incremental bars), each with a group of bars
// per network and a bar per tool, the median wall time written on it.
func writeChart(path string, rows []row) error {
	img, err := chart(rows)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return fmt.Errorf("chart: encode png: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("save chart %s: %w", path, err)
	}
	return nil
}

func chart(rows []row) (*vgimg.Canvas, error) {
	var tools, nets []string
	for _, r := range rows {
		if _, ok := toolColor(r.tool); !ok {
			return nil, fmt.Errorf("chart: no colour for tool %q", r.tool)
		}
		if !slices.Contains(tools, r.tool) {
			tools = append(tools, r.tool)
		}
		if !slices.Contains(nets, r.net) {
			nets = append(nets, r.net)
		}
	}
	// Keep the report's tool order whatever order the rows came in.
	order := allTools
	slices.SortStableFunc(tools, func(a, b string) int { return slices.Index(order, a) - slices.Index(order, b) })
	if len(tools) == 0 {
		return nil, fmt.Errorf("chart: no results to draw")
	}
	var panels []*plot.Plot
	for _, phase := range phases {
		p, err := phasePanel(phase, nets, tools, rows)
		if err != nil {
			return nil, err
		}
		if p != nil {
			panels = append(panels, p)
		}
	}
	img := vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(chartDPI))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Points(12), PadTop: vg.Points(6),
		PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	return img, nil
}

// niceCeil is the smallest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times a power
// of ten that is at least x (x > 0).
func niceCeil(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= x*(1-1e-12) {
			return m * p
		}
	}
	return 10 * p
}

// phasePanel is one phase's bars, or nil when no row has that phase.
func phasePanel(phase string, nets, tools []string, rows []row) (*plot.Plot, error) {
	if !slices.ContainsFunc(rows, func(r row) bool { return r.phase == phase }) {
		return nil, nil
	}
	p := plot.New()
	p.Title.Text = phase + " sync, median wall time"
	p.Y.Label.Text = "seconds"
	w := vg.Points(20)
	for i, tool := range tools {
		vals := make(plotter.Values, len(nets))
		labels := plotter.XYLabels{XYs: make(plotter.XYs, len(nets)), Labels: make([]string, len(nets))}
		for n, network := range nets {
			j := slices.IndexFunc(rows, func(r row) bool { return r.net == network && r.phase == phase && r.tool == tool })
			if j < 0 {
				return nil, fmt.Errorf("chart: no %s %s result for %s", network, phase, tool)
			}
			vals[n] = rows[j].wall.Seconds()
			labels.XYs[n] = plotter.XY{X: float64(n), Y: vals[n]}
			labels.Labels[n] = fmt.Sprintf("%.2f", vals[n])
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		bars.LineStyle.Width = vg.Length(0)
		bars.Color, _ = toolColor(tool)
		// Centre the group of bars on its network's tick.
		bars.Offset = w * vg.Length(2*i-len(tools)+1) / 2
		p.Add(bars)
		p.Legend.Add(tool, bars)

		lab, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		for k := range lab.TextStyle {
			lab.TextStyle[k].XAlign = draw.XCenter
			lab.TextStyle[k].Font.Size = vg.Points(7)
		}
		lab.Offset = vg.Point{X: bars.Offset, Y: vg.Points(2)}
		p.Add(lab)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Y.Min = 0
	// Headroom, so the legend and the labels never cover a bar, rounded
	// up so the axis gets round ticks.
	p.Y.Max = niceCeil(p.Y.Max * 1.35)
	p.NominalX(nets...)
	return p, nil
}
