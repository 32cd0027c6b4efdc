package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/client"
)

func newLogsCommand() *cobra.Command {
	var (
		clusterID, nodeID, process string
		tail                       int
		follow                     bool
	)
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Print the log of a node's process on a Berth platform",
		Long: `Logs prints the log of one process of a node (GET /v1/nodes/{cluster}/{node}/logs
at a Berth server's root, whatever the API's base path). With --follow it keeps
printing what the process writes, across log rotations, until Ctrl-C.`,
		Args: noArgs,
	}
	flags := cmd.Flags()
	flags.StringVar(&clusterID, "cluster", "", "ID of the node's cluster (required)")
	flags.StringVar(&nodeID, "node", "", "ID of the node (required)")
	flags.StringVar(&process, "process", "", "name of the node's process (default: its first process)")
	flags.IntVar(&tail, "tail", 0, "print only the last N lines (0: the whole log)")
	flags.BoolVarP(&follow, "follow", "f", false, "keep printing new lines until interrupted")
	conn := addClientFlags(cmd)
	// A followed log never completes, so the timeout cannot bound it all.
	flags.Lookup("timeout").Usage = "time limit for the platform to start answering (the log itself may take longer)"
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case clusterID == "" && nodeID == "":
			return usageErrorf("--cluster and --node are required")
		case clusterID == "":
			return usageErrorf("--cluster is required")
		case nodeID == "":
			return usageErrorf("--node is required")
		case tail < 0:
			return usageErrorf("--tail must be 0 (the whole log) or a positive number of lines, got %d", tail)
		}
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		stream, err := c.Logs(ctx, clusterID, nodeID, client.LogOptions{Process: process, Tail: tail, Follow: follow})
		if err != nil {
			if follow && ctx.Err() != nil {
				return nil // interrupted before the first line: still what was asked
			}
			return fmt.Errorf("reading the log of node %s of cluster %s: %w", nodeID, clusterID, explainRequestError(c, err))
		}
		defer stream.Close()
		if _, err := io.Copy(cmd.OutOrStdout(), stream); err != nil {
			// Ctrl-C is how a follow ends.
			if follow && ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("copying the log of node %s of cluster %s: %w", nodeID, clusterID, err)
		}
		return nil
	}
	return cmd
}
