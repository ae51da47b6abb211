package bench

import (
	"fmt"
	"os"
	"testing"
)

// TestMain runs the benchmarks, or, when ssh starts this binary as its
// ProxyCommand, acts as the byte-counting relay instead.
func TestMain(m *testing.M) {
	if counts := os.Getenv(relayEnv); counts != "" {
		if len(os.Args) != 2 {
			fmt.Fprintln(os.Stderr, "bench relay: want one argument, host:port")
			os.Exit(2)
		}
		os.Exit(runRelay(counts, os.Args[1]))
	}
	os.Exit(m.Run())
}
