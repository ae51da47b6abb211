// Package syncer is the master: it detects what changed in the master tree,
// plans the slave operations that reproduce it (detect ▶ plan ▶ apply ▶
// commit), applies them through a client session, and commits the new state
// to its index only after the slave has applied everything.
//
// Subpackages: index (the persistent identity index), scan (the Hybrid
// Crawl's parallel, fd-relative tree walk) and plan (the diff of a scan
// against the index into ordered entry, meta and data work).
package syncer
