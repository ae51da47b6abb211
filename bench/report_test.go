package bench

import (
	"bytes"
	"flag"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// fixedResults are three runs of each cell on both networks, shaped like a
// real run: georep native slower on the initial sync and meeting the bytes
// goal, georep-rsync meeting every goal on the WAN.
func fixedResults() map[key][]sample {
	mk := func(wall [3]float64, wire int64, files int) []sample {
		var ss []sample
		for i, w := range wall {
			ss = append(ss, sample{wall: secs(w), wireBytes: wire + int64(i)*1000, cpuLocal: secs(w / 3),
				cpuRemote: secs(w / 2), files: files})
		}
		return ss
	}
	return map[key][]sample{
		{"loopback", toolNative, "initial"}:          mk([3]float64{14.4, 13.9, 15.2}, 224_800_000, 20004),
		{"loopback", toolRsync, "initial"}:           mk([3]float64{3.1, 2.9, 3.4}, 219_000_000, 20004),
		{"loopback", toolBaseline, "initial"}:        mk([3]float64{2.9, 2.5, 4.4}, 218_200_000, 20004),
		{"loopback", toolNative, "incremental"}:      mk([3]float64{0.93, 0.75, 1.21}, 1_050_000, 201),
		{"loopback", toolLive, "initial"}:            mk([3]float64{2.6, 2.5, 2.8}, 219_100_000, 20004),
		{"loopback", toolLive, "incremental"}:        mk([3]float64{0.21, 0.19, 0.25}, 1_020_000, 201),
		{"wan", toolLive, "initial"}:                 mk([3]float64{5.0, 4.9, 5.4}, 219_300_000, 20004),
		{"wan", toolLive, "incremental"}:             mk([3]float64{0.52, 0.50, 0.60}, 1_030_000, 201),
		{"loopback", toolRsync, "incremental"}:       mk([3]float64{0.30, 0.28, 0.35}, 1_400_000, 201),
		{"loopback", toolBaseline, "incremental"}:    mk([3]float64{0.64, 0.58, 0.73}, 1_360_000, 201),
		{"wan", toolNative, "initial"}:               mk([3]float64{19.6, 18.9, 21.2}, 224_000_000, 20004),
		{"wan", toolRsync, "initial"}:                mk([3]float64{7.0, 6.8, 7.4}, 218_000_000, 20004),
		{"wan", toolBaseline, "initial"}:             mk([3]float64{7.4, 7.1, 7.5}, 218_200_000, 20004),
		{"wan", toolNative, "incremental"}:           mk([3]float64{1.79, 1.55, 1.90}, 1_050_000, 201),
		{"wan", toolRsync, "incremental"}:            mk([3]float64{1.00, 0.95, 1.10}, 1_380_000, 201),
		{"wan", toolBaseline, "incremental"}:         mk([3]float64{2.26, 2.23, 2.32}, 1_360_000, 201),
		{"loopback", toolBaselineAES, "initial"}:     mk([3]float64{2.6, 2.3, 3.9}, 218_200_000, 20004),
		{"loopback", toolBaselineAES, "incremental"}: mk([3]float64{0.60, 0.55, 0.70}, 1_360_000, 201),
		{"wan", toolBaselineAES, "initial"}:          mk([3]float64{7.0, 6.9, 7.3}, 218_200_000, 20004),
		{"wan", toolBaselineAES, "incremental"}:      mk([3]float64{2.20, 2.18, 2.30}, 1_360_000, 201),
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"one", []time.Duration{7}, 7},
		{"odd, unsorted", []time.Duration{9, 1, 5}, 5},
		{"even: mean of the middle two", []time.Duration{4, 1, 10, 2}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := median(tt.in); got != tt.want {
				t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("median reordered its input: %v, was %v", tt.in, in)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	rows := summarize([]string{"loopback", "wan"}, allTools, fixedResults())
	if len(rows) != 20 {
		t.Fatalf("got %d rows, want 20 (2 networks × 2 phases × 5 tools)", len(rows))
	}
	find := func(net, tool, phase string) row {
		t.Helper()
		for _, r := range rows {
			if r.net == net && r.tool == tool && r.phase == phase {
				return r
			}
		}
		t.Fatalf("no row for %s %s %s", net, tool, phase)
		return row{}
	}
	tests := []struct {
		name              string
		net, tool, phase  string
		wall, min, max    time.Duration
		wire              int64
		files             int
		compared          bool
		wallRatio         float64
		wallMet, bytesMet bool
	}{
		{"baseline has no ratio", "loopback", toolBaseline, "initial", secs(2.9), secs(2.5), secs(4.4), 218_201_000, 20004, false, 0, false, false},
		{"native initial misses time, meets bytes", "loopback", toolNative, "initial", secs(14.4), secs(13.9), secs(15.2), 224_801_000, 20004, true, 14.4 / 2.9, false, true},
		{"rsync mode incremental meets both", "loopback", toolRsync, "incremental", secs(0.30), secs(0.28), secs(0.35), 1_401_000, 201, true, 0.30 / 0.64, true, true},
		{"native wan incremental misses the 0.5× time goal", "wan", toolNative, "incremental", secs(1.79), secs(1.55), secs(1.90), 1_051_000, 201, true, 1.79 / 2.26, false, true},
		{"rsync mode wan initial meets 1.0×", "wan", toolRsync, "initial", secs(7.0), secs(6.8), secs(7.4), 218_001_000, 20004, true, 7.0 / 7.4, true, true},
		{"running session incremental meets both", "loopback", toolLive, "incremental", secs(0.21), secs(0.19), secs(0.25), 1_021_000, 201, true, 0.21 / 0.64, true, true},
		{"the AES-GCM reference has a ratio, no goal", "loopback", toolBaselineAES, "initial", secs(2.6), secs(2.3), secs(3.9), 218_201_000, 20004, true, 2.6 / 2.9, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := find(tt.net, tt.tool, tt.phase)
			if r.wall != tt.wall || r.wallMin != tt.min || r.wallMax != tt.max {
				t.Errorf("wall %v (%v–%v), want %v (%v–%v)", r.wall, r.wallMin, r.wallMax, tt.wall, tt.min, tt.max)
			}
			if r.wireBytes != tt.wire || r.files != tt.files || r.n != 3 {
				t.Errorf("wire %d, files %d, n %d; want %d, %d, 3", r.wireBytes, r.files, r.n, tt.wire, tt.files)
			}
			if r.compared != tt.compared {
				t.Fatalf("compared = %v, want %v", r.compared, tt.compared)
			}
			if !tt.compared {
				return
			}
			if d := r.wallRatio - tt.wallRatio; d > 1e-9 || d < -1e-9 {
				t.Errorf("wall ratio %v, want %v", r.wallRatio, tt.wallRatio)
			}
			if r.wallMet != tt.wallMet || r.bytesMet != tt.bytesMet {
				t.Errorf("goals met: time %v bytes %v, want %v %v", r.wallMet, r.bytesMet, tt.wallMet, tt.bytesMet)
			}
		})
	}
}

func TestSummarizeUnknownFilesAndMissingBaseline(t *testing.T) {
	results := map[key][]sample{
		{"loopback", toolNative, "initial"}: {{wall: secs(1), wireBytes: 10, files: 5}, {wall: secs(2), wireBytes: 10, files: -1}},
	}
	rows := summarize([]string{"loopback"}, allTools, results)
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	if rows[0].files != -1 {
		t.Errorf("files = %d, want -1 when a sample did not say", rows[0].files)
	}
	if rows[0].compared {
		t.Errorf("compared without an rsync row")
	}
}

func TestShrunk(t *testing.T) {
	tests := []struct {
		name   string
		change func(*config)
		want   bool
	}{
		{"issue 5's workload", func(*config) {}, false},
		{"more runs", func(c *config) { c.runs = 9 }, false},
		{"fewer small files", func(c *config) { c.small = 300 }, true},
		{"smaller small files", func(c *config) { c.smallSize = 100 }, true},
		{"no large files", func(c *config) { c.large = 0 }, true},
		{"smaller large files", func(c *config) { c.largeMiB = 2 }, true},
		{"one run", func(c *config) { c.runs = 1 }, true},
		{"no WAN", func(c *config) { c.wan = false }, true},
		{"two tools", func(c *config) { c.tools = []string{toolNative, toolBaseline} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := issueWorkload()
			tt.change(&c)
			if got := c.shrunk(); got != tt.want {
				t.Errorf("shrunk() = %v, want %v", got, tt.want)
			}
		})
	}
}

// fixedFloors are login floors for nets: 0.30 s (0.25–0.40) each.
func fixedFloors(nets []string) []floor {
	v := []time.Duration{secs(0.3), secs(0.25), secs(0.4)}
	m := map[string][]time.Duration{}
	for _, n := range nets {
		m[n] = v
	}
	return summarizeFloors(nets, m)
}

func fixedMachine() machine {
	return machine{when: time.Date(2026, 11, 24, 23, 0, 0, 0, time.UTC), cpus: 2, os: "linux/amd64",
		version: "georep v0.0.0-test (protocol 1.0, go1.26)"}
}

// TestSectionGolden renders the section from fixed samples; run with
// -update after a deliberate change to the report's wording.
func TestSectionGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		cfg    func() config
		nets   []string
	}{
		{"issue workload", "section.golden", issueWorkload, []string{"loopback", "wan"}},
		{"loopback only, whole-file native", "section-loopback.golden", func() config {
			c := issueWorkload()
			c.wan, c.largeMiB = false, 1
			return c
		}, []string{"loopback"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := section(tt.cfg(), summarize(tt.nets, allTools, fixedResults()), fixedFloors(tt.nets), fixedMachine())
			path := filepath.Join("testdata", tt.golden)
			if *updateGolden {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (go test ./bench -run TestSectionGolden -update writes it): %v", err)
			}
			if got != string(want) {
				t.Errorf("section differs from %s (rerun with -update if intended):\n%s", path, got)
			}
			if !strings.HasPrefix(got, sectionTitle+"\n") || !strings.HasSuffix(got, "\n") {
				t.Errorf("section must start with its title and end in a newline")
			}
		})
	}
}

func TestSplice(t *testing.T) {
	sec := sectionTitle + "\n\nnew body\n"
	tests := []struct {
		name, doc, want string
	}{
		{"absent: appended", "# B\n\n## Other\n\ntext\n", "# B\n\n## Other\n\ntext\n\n" + sec},
		{"last: replaced", "# B\n\n" + sectionTitle + "\n\nold body\nmore\n", "# B\n\n" + sec},
		{"in the middle: the next section kept", "# B\n\n" + sectionTitle + "\n\nold\n\n## Next\n\nkept\n",
			"# B\n\n" + sec + "\n## Next\n\nkept\n"},
		{"a deeper heading inside is part of the section", "# B\n\n" + sectionTitle + "\n\nold\n\n### Sub\n\nold\n",
			"# B\n\n" + sec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splice(tt.doc, sec)
			if got != tt.want {
				t.Errorf("splice:\n%q\nwant\n%q", got, tt.want)
			}
			if again := splice(got, sec); again != got {
				t.Errorf("splicing twice changed the document:\n%q\nthen\n%q", got, again)
			}
		})
	}
}

func TestWriteReport(t *testing.T) {
	root := t.TempDir()
	doc := "# Benchmarks\n\n" + sectionTitle + "\n\nstale figures\n\n## Later section\n\nkept\n"
	if err := os.WriteFile(filepath.Join(root, "BENCHMARKS.md"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	rows := summarize([]string{"loopback", "wan"}, allTools, fixedResults())
	if err := writeReport(root, issueWorkload(), rows, nil, fixedMachine()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\n" + section(issueWorkload(), rows, nil, fixedMachine()) + "\n## Later section\n\nkept\n"
	if string(got) != want {
		t.Errorf("BENCHMARKS.md:\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(root, chartFile)); err != nil {
		t.Errorf("chart not written: %v", err)
	}

	if err := writeReport(t.TempDir(), issueWorkload(), rows, nil, fixedMachine()); err == nil ||
		!strings.Contains(err.Error(), "BENCHMARKS.md") {
		t.Errorf("a root without BENCHMARKS.md: err = %v, want one naming the file", err)
	}
}

// TestChart draws the fixed results and checks the picture: a PNG of the
// expected size in which every tool's colour fills bars in both panels.
func TestChart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "chart.png")
	rows := summarize([]string{"loopback", "wan"}, allTools, fixedResults())
	if err := writeChart(path, rows); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	wantW, wantH := int(chartWidth.Dots(chartDPI)), int(chartHeight.Dots(chartDPI))
	if b := img.Bounds(); b.Dx() != wantW || b.Dy() != wantH {
		t.Errorf("chart is %dx%d, want %dx%d", b.Dx(), b.Dy(), wantW, wantH)
	}
	for _, tool := range allTools {
		c, _ := toolColor(tool)
		left, right := countColor(img, c)
		// The smallest bar (0.30 s of a 1.79 s axis with headroom) is
		// still tens of pixels high and 20 points wide.
		if left < 500 || right < 500 {
			t.Errorf("%s: %d pixels of its colour in the initial panel, %d in the incremental; want bars in both", tool, left, right)
		}
	}
}

// countColor counts the pixels of exactly c in the left and right halves.
func countColor(img image.Image, c color.RGBA) (left, right int) {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if color.RGBAModel.Convert(img.At(x, y)).(color.RGBA) == c {
				if x < b.Min.X+b.Dx()/2 {
					left++
				} else {
					right++
				}
			}
		}
	}
	return left, right
}

func TestChartRefuses(t *testing.T) {
	full := summarize([]string{"loopback"}, allTools, fixedResults())
	tests := []struct {
		name string
		rows []row
		want string
	}{
		{"no rows", nil, "no results"},
		{"unknown tool", append(full[:len(full):len(full)], row{net: "loopback", tool: "scp", phase: "initial", wall: secs(1)}), `no colour for tool "scp"`},
		{"a missing cell", full[1:], "no loopback initial result for georep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := writeChart(filepath.Join(t.TempDir(), "c.png"), tt.rows)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestNiceCeil(t *testing.T) {
	tests := []struct{ in, want float64 }{
		{26.46, 30}, {3.05, 4}, {1, 1}, {0.8, 0.8}, {0.81, 1}, {101, 150}, {0, 1}, {-3, 1},
	}
	for _, tt := range tests {
		if got := niceCeil(tt.in); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("niceCeil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
