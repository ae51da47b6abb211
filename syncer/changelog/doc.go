// Package changelog owns the master's Changelog Crawl: a live change detector
// (fanotify marked on the master's filesystem, or recursive inotify watches
// where fanotify is not permitted) that names the directories whose entries
// changed, and a persistent journal (bbolt, STATE/journal.db) that records
// them before they are handed out in batches cut at the change interval.
//
// The output is a set of dirty directories, each keyed by the directory's
// kernel file handle (see KeyFromHandle) with the child names the events
// named, plus an Overflow flag when the kernel dropped events: then the
// caller must run a Hybrid Crawl. Records stay in the journal until the
// caller Acks them, so a restarted master replays them first (History Crawl).
package changelog
