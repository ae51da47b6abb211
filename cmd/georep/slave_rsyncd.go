package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/rsyncd"
)

// rsyncDaemonRequest is what rsync appends to its -e program (after the
// host) to run a daemon over a remote shell.
var rsyncDaemonRequest = []string{"rsync", "--server", "--daemon", "."}

// isRsyncDaemonRequest reports whether a remote command (ssh's
// SSH_ORIGINAL_COMMAND, or this command's trailing words) asks for rsync's
// daemon over a remote shell: it ends with "rsync --server --daemon .".
func isRsyncDaemonRequest(words []string) bool {
	n := len(rsyncDaemonRequest)
	return len(words) >= n && slices.Equal(words[len(words)-n:], rsyncDaemonRequest)
}

// newSlaveRsyncdCommand is `georep slave rsyncd --root DIR`: the -e
// program of a master's rsync in --sync-mode rsync. It becomes the slave's
// confined rsync daemon (internal/rsyncd) on stdin and stdout.
func newSlaveRsyncdCommand() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "rsyncd --root DIR [HOST rsync --server --daemon .]",
		Short: "Serve the slave root's rsync staging area on stdio (run by a master's rsync)",
		Long: `Serve the rsync daemon protocol on stdin/stdout for a master in
--sync-mode rsync. Its only module, georep, is DIR/.georep/stage, write-only
and confined (see internal/rsyncd). rsync appends "HOST rsync --server
--daemon ." to its -e program; those words are accepted and nothing else.`,
		Hidden: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 || (isRsyncDaemonRequest(args) && len(args) <= len(rsyncDaemonRequest)+1) {
				return nil
			}
			return &usageError{fmt.Errorf("unexpected arguments %q: only rsync's \"HOST rsync --server --daemon .\" may follow", args)}
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if root == "" {
				return &usageError{errors.New("--root is required: the slave root whose staging area to serve")}
			}
			return execRsyncd(cmd.Context(), root)
		},
	}
	cmd.Flags().StringVar(&root, "root", "", "the slave root")
	// Everything after the first positional word is rsync's, not ours.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// sshRsyncRequest reports whether ssh's forced command was asked for the
// rsync daemon rather than the gRPC session (SSH_ORIGINAL_COMMAND).
func sshRsyncRequest() bool {
	return isRsyncDaemonRequest(strings.Fields(os.Getenv("SSH_ORIGINAL_COMMAND")))
}

// execRsyncd replaces this process with the rsync daemon for root, so
// rsync's exit status and signals reach the master's rsync unchanged.
func execRsyncd(ctx context.Context, root string) error {
	abs, err := checkRoot(root)
	if err != nil {
		return err
	}
	c, err := rsyncd.Command(ctx, abs)
	if err != nil {
		return err
	}
	if err := os.Chdir(c.Dir); err != nil {
		return fmt.Errorf("rsync daemon: enter the slave root: %w", err)
	}
	if err := unix.Exec(c.Path, c.Args, c.Env); err != nil {
		return fmt.Errorf("rsync daemon: run %s: %w", c.Path, err)
	}
	return nil
}
