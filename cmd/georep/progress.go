package main

// This file owns the master's progress bar: a syncer.Observer that draws
// files and bytes done of a crawl's total, with rate and ETA, on stderr
// while `georep master --once` runs or a continuous session's first crawl
// does.

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/syncer"
)

// Accepted values of --progress.
const (
	progressAuto = "auto"
	progressOn   = "true"
	progressOff  = "false"
)

// progressRedraw bounds how often the bar is redrawn: a crawl of many
// small files reports thousands of events a second, and a terminal need
// not see each.
const progressRedraw = 100 * time.Millisecond

// wantProgress tells whether a bar is drawn on w for the --progress value
// mode: auto draws only on a terminal, so logs piped to a file or a
// journal never carry bar frames.
func wantProgress(mode string, w io.Writer) bool {
	switch mode {
	case progressOn:
		return true
	case progressOff:
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress is the bar's Observer. Observer methods come from several
// goroutines (data streams run in parallel), so every field is under mu,
// and so is every write to out: log lines pass through logWriter to clear
// the bar before they are written and draw it again after.
type progress struct {
	out  io.Writer
	once bool // --once: every crawl of the run gets a bar

	mu   sync.Mutex
	done bool // continuous session whose first crawl is committed
	bar  *progressbar.ProgressBar
	last time.Time // when the bar was last drawn
	desc string    // the bar's description as last set

	crawl       status.Crawl
	total       int64 // files with data plus entries of objects without
	files       int64 // files with data, of total
	bytes       int64 // content bytes to send
	entries     int64 // entry ops planned
	entriesDone int64
	filesDone   int64
	bytesDone   int64
	failed      int64
	noData      int64 // entries beyond the files': objects with no data
}

var _ syncer.Observer = (*progress)(nil)

func newProgress(out io.Writer, once bool) *progress {
	return &progress{out: out, once: once}
}

// CrawlPlanned starts a bar for a crawl that has work, if this session
// still shows one.
func (p *progress) CrawlPlanned(crawl status.Crawl, entries, _, files int, bytes int64, _ time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.endBar()
	p.crawl = crawl
	p.entries, p.files, p.bytes = int64(entries), int64(files), bytes
	p.entriesDone, p.filesDone, p.bytesDone, p.failed = 0, 0, 0, 0
	// A created file has an entry and data; the entries beyond the data
	// items are directories, links and empty-of-data objects, which count
	// as done when their entry is. Entries are applied before data, so the
	// first entries done stand for those.
	p.noData = max(p.entries-p.files, 0)
	p.total = p.files + p.noData
	if p.total == 0 {
		return
	}
	p.desc = p.describe()
	p.bar = progressbar.NewOptions64(p.total,
		progressbar.OptionSetWriter(p.out),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("files"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetDescription(p.desc),
		// This type throttles redraws itself (see draw), so the bar
		// draws whenever asked: a log line must be able to put it back.
		progressbar.OptionThrottle(0),
	)
	p.bar.RenderBlank()
	p.last = time.Now()
}

// EntriesApplied counts entries done.
func (p *progress) EntriesApplied(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.entriesDone += int64(n)
	p.draw(false)
}

// MetaApplied is not drawn: attributes are set after the data, and the bar
// waits for the commit to reach 100%.
func (p *progress) MetaApplied(int) {}

// FileSent counts a file and its bytes done.
func (p *progress) FileSent(bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filesDone++
	p.bytesDone += bytes
	p.draw(false)
}

// Failed counts items given up on, shown beside the bytes.
func (p *progress) Failed(_ string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed += int64(n)
}

// Committed fills the bar: the crawl's work is on the slave and recorded.
// A continuous session shows no more bars after its first crawl.
func (p *progress) Committed(time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	if p.bar != nil {
		p.filesDone, p.bytesDone = p.files, max(p.bytesDone, p.bytes)
		p.bar.Describe(p.describe())
		p.bar.Finish()
		// The bar ends its line only here, so later log lines start on
		// their own.
		fmt.Fprintln(p.out)
		p.bar = nil
	}
	if !p.once {
		p.done = true
	}
}

// StateChanged is not drawn: the logs say when the slave is lost.
func (p *progress) StateChanged(status.State, int) {}

// endBar leaves an unfinished bar where it stands (its crawl failed or
// was replaced) on a line of its own. Called with mu held.
func (p *progress) endBar() {
	if p.bar == nil {
		return
	}
	p.bar.Exit()
	fmt.Fprintln(p.out)
	p.bar = nil
}

// current is the count toward total: the entries of objects without data, then
// files sent. It stops one short of total until the commit, so 100% means
// committed. Called with mu held.
func (p *progress) current() int64 {
	return min(min(p.entriesDone, p.noData)+p.filesDone, p.total-1)
}

// describe is the text before the bar: the crawl and the bytes. Called
// with mu held.
func (p *progress) describe() string {
	d := fmt.Sprintf("%s %s/%s", p.crawl, humanBytes(p.bytesDone), humanBytes(p.bytes))
	if p.failed > 0 {
		d += fmt.Sprintf(", %d failed", p.failed)
	}
	return d
}

// draw redraws the bar at most every progressRedraw unless forced. Called
// with mu held.
func (p *progress) draw(force bool) {
	if p.bar == nil || !force && time.Since(p.last) < progressRedraw {
		return
	}
	p.last = time.Now()
	if d := p.describe(); d != p.desc {
		p.desc = d
		p.bar.Describe(d)
	}
	p.bar.Set64(p.current())
}

// logWriter returns w wrapped so that a log line written while a bar is
// showing clears the bar first and draws it again after, instead of being
// glued to the bar's line.
func (p *progress) logWriter(w io.Writer) io.Writer { return progressLog{p: p, w: w} }

type progressLog struct {
	p *progress
	w io.Writer
}

func (l progressLog) Write(b []byte) (int, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.p.bar == nil {
		return l.w.Write(b)
	}
	l.p.bar.Clear()
	n, err := l.w.Write(b)
	l.p.draw(true)
	return n, err
}

// humanBytes renders n in IEC units, as the bar's byte figures read.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
