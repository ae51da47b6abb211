package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"
)

// usageError marks a command line that cannot be parsed, so run can exit 2
// as scripts expect of a misused command.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func isUsageError(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// loggedError is a command's failure that is already a record of the log
// on stderr, which run must not print again as a plain line.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

func isLogged(err error) bool {
	var l *loggedError
	return errors.As(err, &l)
}

// newRootCommand builds the georep command tree. Output goes to the given
// writers, never straight to os.Stdout: for `georep slave --stdio` stdout is
// the gRPC wire.
func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "georep",
		Short: "Continuous one-way replication of a file tree to a remote slave",
		Long: `georep replicates a file tree (the master) to a tree on another host (the
slave), continuously and one way, as GlusterFS geo-replication (gsyncd) did.

"georep master" replicates a tree to a slave and "georep status" shows how
far it got; "georep checkpoint" asks it to note when a point in time is
on the slave. "georep slave --stdio" serves the georep.v1 Slave gRPC API over
its stdin/stdout, for a master that runs it through ssh, and "georep slave
--listen" serves it over mutual TLS, with certificates from "georep certs".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{err: err}
	})
	root.AddCommand(newVersionCommand(), newSlaveCommand(), newMasterCommand(), newStatusCommand(), newCertsCommand(),
		newCheckpointCommand(), newConfigCommand(), newRsyncRelayCommand())
	return root
}

// noArgs refuses positional arguments as a usage error: every georep input
// is a named flag, so a stray word is a typo worth exit status 2.
func noArgs(cmd *cobra.Command, args []string) error {
	if err := cobra.NoArgs(cmd, args); err != nil {
		return &usageError{err}
	}
	return nil
}
