// Package bench owns the data-plane comparison (issue 5): georep native,
// georep in --sync-mode rsync and rsync -aHAX (with ssh's default cipher,
// and again with the AES-GCM cipher georep's ssh prefers), in one run over the same
// generated trees and the same loopback sshd, on loopback and behind a
// 50 ms RTT proxy, writing the "Data plane vs rsync" section of
// BENCHMARKS.md and docs/bench-data-plane.png.
//
// The harness lives in test files behind the benchcompare build tag, so
// `make test` never runs it; `make bench-compare` does, and `make bench`
// after the micro-benchmarks. The report (summary, ratios, goals, the
// Markdown section and the chart) and the parsing of the tools' output
// are plain files of the package, unit-tested by `make test`.
package bench
