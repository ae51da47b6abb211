// Package bench owns the data-plane comparison of georep against rsync
// (issue 5's `make bench`): one run over the same generated trees and the
// same loopback sshd, on loopback and behind a 50 ms RTT proxy, writing the
// "Data plane vs rsync" section of BENCHMARKS.md and docs/bench-data-plane.png.
//
// The harness lives in test files behind the benchcompare build tag, so
// `make test` and `make bench` never run it; `make bench-compare` does.
package bench
