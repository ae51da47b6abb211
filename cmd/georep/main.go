// Command georep is the one binary of georep: continuous one-way replication
// of a file tree (the master) to a remote tree (the slave). Each role is a
// subcommand; this package owns the command line and process lifecycle
// (flags, logging set-up, signals, exit codes), never the replication logic.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code:
// 0 on success, 1 on any failure (reported on stderr), 2 for a command line
// that cannot be parsed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		if !isLogged(err) {
			fmt.Fprintf(stderr, "georep: %v\n", err)
		}
		if isUsageError(err) {
			return 2
		}
		return 1
	}
	return 0
}
