package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/georep/georep/internal/checkpoint"
	"github.com/georep/georep/internal/status"
)

type statusConfig struct {
	State  string
	JSON   bool
	Detail bool
}

func newStatusCommand() *cobra.Command {
	var cfg statusConfig
	cmd := &cobra.Command{
		Use:   "status --state DIR [--json] [--detail]",
		Short: "Show a session's status",
		Long: `Show the status of the session whose state directory is --state, whether
its master runs or has stopped, with gsyncd's columns. ENTRY, DATA and META
are pending counts; FAILURES is cumulative; LAST SYNCED is the stime:
everything changed on the master before it is on the slave.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.State == "" {
				return &usageError{fmt.Errorf("--state is required")}
			}
			st, err := status.Read(cfg.State)
			if err != nil {
				return err
			}
			// A checkpoint set or cleared since the master last wrote
			// (or while none runs) shows as requested.
			cpTime, cpSet, err := checkpoint.Read(cfg.State)
			if err != nil {
				return err
			}
			checkpoint.Merge(st, cpTime, cpSet)
			if st.State != status.Stopped && st.State != status.Faulty && !st.Running() {
				// The master died without saying so (kill -9, a crash).
				st.State = status.Stopped
				st.Reason = "the master process is gone"
			}
			if cfg.JSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st, cfg.Detail, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.State, "state", "", "the session's state directory (required)")
	cmd.Flags().BoolVar(&cfg.JSON, "json", false, "print the status as JSON (a stable schema, for scripts)")
	cmd.Flags().BoolVar(&cfg.Detail, "detail", false, "also list recent failures with paths and reasons")
	return cmd
}

func printStatus(w io.Writer, st *status.Status, detail bool, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MASTER\tSLAVE\tSTATUS\tCRAWL STATUS\tLAST SYNCED\tLAG\tENTRY\tDATA\tMETA\tFAILURES\tCHECKPOINT TIME\tCHECKPOINT COMPLETED")
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n",
		st.Master, st.Slave, st.State, st.Crawl, timeOrNA(st.LastSynced), lagOrNA(st, now),
		st.Pending.Entry, st.Pending.Data, st.Pending.Meta, st.Failures,
		timeOrNA(st.Checkpoint.Time), checkpointDone(st.Checkpoint))
	tw.Flush()
	if !st.OldestPending.IsZero() {
		fmt.Fprintf(w, "\noldest pending change: seen %s ago\n", now.Sub(st.OldestPending).Round(time.Second))
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "\nreason: %s\n", st.Reason)
	}
	if detail && len(st.RecentFailures) > 0 {
		fmt.Fprintln(w, "\nRecent failures:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "WHEN\tKIND\tOP\tPATH\tCODE\tATTEMPTS\tREASON")
		for _, f := range st.RecentFailures {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", f.At.Local().Format(time.DateTime), f.Kind, f.Op, f.Path, f.Code, f.Attempts, f.Message)
		}
		tw.Flush()
	}
}

func timeOrNA(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return t.Local().Format(time.DateTime)
}

func lagOrNA(st *status.Status, now time.Time) string {
	if st.LastSynced.IsZero() {
		return "N/A"
	}
	return st.Lag(now).Round(time.Second).String()
}

func checkpointDone(c status.Checkpoint) string {
	switch {
	case c.Time.IsZero():
		return "N/A"
	case c.Completed && c.CompletedAt.IsZero():
		// Passed while no master watched: when is unknown.
		return "Yes"
	case c.Completed:
		return "Yes (" + c.CompletedAt.Local().Format(time.DateTime) + ")"
	default:
		return "No"
	}
}
