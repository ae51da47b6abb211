package syncer

import (
	"time"

	"github.com/georep/georep/internal/status"
)

// Observer is told what a session does, for metrics and progress bars.
// Its methods may be called from several goroutines and must not block.
type Observer interface {
	// CrawlPlanned reports a crawl's findings: the entry, meta and data
	// work and the content bytes to send.
	CrawlPlanned(crawl status.Crawl, entries, meta, files int, bytes int64, took time.Duration)
	// EntriesApplied reports n entry ops the slave took.
	EntriesApplied(n int)
	// MetaApplied reports n meta ops the slave took.
	MetaApplied(n int)
	// FileSent reports one file installed on the slave, with its content
	// bytes sent.
	FileSent(bytes int64)
	// Failed reports n items of kind ("entry", "data", "meta") given up on.
	Failed(kind string, n int)
	// Committed reports a committed batch and the session's stime.
	Committed(stime time.Time)
	// StateChanged reports the session's health and its reconnect count.
	StateChanged(st status.State, reconnects int)
}

// nopObserver is the Observer of a session that has none.
type nopObserver struct{}

func (nopObserver) CrawlPlanned(status.Crawl, int, int, int, int64, time.Duration) {}
func (nopObserver) EntriesApplied(int)                                             {}
func (nopObserver) MetaApplied(int)                                                {}
func (nopObserver) FileSent(int64)                                                 {}
func (nopObserver) Failed(string, int)                                             {}
func (nopObserver) Committed(time.Time)                                            {}
func (nopObserver) StateChanged(status.State, int)                                 {}
