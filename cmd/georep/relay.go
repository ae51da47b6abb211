package main

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/client"
)

// newRsyncRelayCommand is the hidden command rsync runs as its remote shell
// when the master reaches its slave over mTLS (client.RsyncShell): it joins
// rsync's stdio to the master's relay socket, whose other side is an
// RsyncTunnel stream to the slave's rsync daemon. rsync appends the host
// and "rsync --server --daemon ." after the "--" the master puts last;
// those words are ignored, since the master's stream decides where the
// daemon runs.
func newRsyncRelayCommand() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:    client.RsyncRelayCommand + " --socket PATH -- [words rsync appends]",
		Short:  "Relay rsync's stdio to the master's rsync tunnel (run by rsync -e, not by hand)",
		Hidden: true,
		Args:   cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := cmd.InOrStdin()
			if in == os.Stdin {
				// Pollable, so the relay can stop reading when the daemon is done.
				in = pollable(os.Stdin, unix.Stdin, "stdin")
			}
			return client.RunRsyncRelay(cmd.Context(), socket, in, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "the master's relay socket (set by the master)")
	_ = cmd.MarkFlagRequired("socket")
	return cmd
}
