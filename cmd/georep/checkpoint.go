package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/georep/georep/internal/checkpoint"
)

func newCheckpointCommand() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "checkpoint --state DIR set [TIME] | clear",
		Short: "Set or clear a session's checkpoint",
		Long: `A checkpoint asks "tell me when everything changed on the master up to TIME
is on the slave". The master records when its stime (LAST SYNCED) passes
TIME, and "georep status" shows it under CHECKPOINT COMPLETED.

The checkpoint is kept in the state directory, so it can be set or cleared
whether or not the master runs; a running master notices it at its next
commit.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &usageError{fmt.Errorf("say set [TIME] or clear")}
		},
	}
	cmd.PersistentFlags().StringVar(&state, "state", "", "the session's state directory (required)")

	set := &cobra.Command{
		Use:   "set [TIME]",
		Short: "Set the checkpoint to TIME (default: now)",
		Long: `Set the checkpoint to TIME, or to now without one. TIME is
` + checkpoint.Formats + `.
A new checkpoint replaces the previous one.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.MaximumNArgs(1)(cmd, args); err != nil {
				return &usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if state == "" {
				return &usageError{fmt.Errorf("--state is required")}
			}
			t := time.Now()
			if len(args) == 1 {
				var err error
				if t, err = checkpoint.ParseTime(args[0], time.Local); err != nil {
					return &usageError{err}
				}
			}
			if err := checkpoint.Set(state, t); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "checkpoint set to %s\n", t.Local().Format(time.DateTime))
			return nil
		},
	}
	clearCmd := &cobra.Command{
		Use:   "clear",
		Short: "Remove the checkpoint",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state == "" {
				return &usageError{fmt.Errorf("--state is required")}
			}
			if err := checkpoint.Clear(state); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "checkpoint cleared")
			return nil
		},
	}
	cmd.AddCommand(set, clearCmd)
	return cmd
}
