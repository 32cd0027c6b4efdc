package main

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/platform"
)

func newNodesCommand() *cobra.Command {
	var output, clusterID string
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "Show a Berth platform's nodes: state, processes, restarts, ports, age",
		Long: `Nodes asks a Berth server for its operator's view of every node (GET /v1/nodes
at the server's root, whatever the API's base path): more than discovery shows,
such as the node's state (starting, running, restarting, exited, stopping), its
processes' IDs and restarts, and its ports. Other Platform servers do not serve
it.`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringVar(&clusterID, "cluster", "", "show only the nodes of this cluster")
	conn := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" {
			return usageErrorf("--output must be table or json, got %q", output)
		}
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		nodes, err := c.Nodes(cmd.Context())
		if err != nil {
			return fmt.Errorf("listing nodes: %w", explainRequestError(c, err))
		}
		if clusterID != "" {
			kept := nodes[:0]
			for _, node := range nodes {
				if node.ClusterID == clusterID {
					kept = append(kept, node)
				}
			}
			nodes = kept
		}
		if output == "json" {
			return writeJSON(cmd.OutOrStdout(), map[string][]platform.NodeStatus{"nodes": nodes})
		}
		return writeNodesTable(cmd.OutOrStdout(), nodes, time.Now())
	}
	return cmd
}

// writeNodesTable prints one row per node, in the server's order; now is
// what AGE is measured against.
func writeNodesTable(w io.Writer, nodes []platform.NodeStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tNODE\tGROUP\tSTATE\tPID\tRESTARTS\tPORTS\tAGE")
	for _, node := range nodes {
		pids := make([]string, len(node.Processes))
		restarts := 0
		for i, p := range node.Processes {
			pids[i] = "-"
			if p.PID != 0 {
				pids[i] = strconv.Itoa(p.PID)
			}
			restarts += p.Restarts
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", node.ClusterID, node.NodeID, orDash(node.NodeGroup),
			orDash(node.State), orDash(strings.Join(pids, ",")), restarts, orDash(formatPorts(node.Addresses)),
			formatAge(node.CreatedAt, now))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// formatPorts shows name=port in name order: on one machine the ports are
// what tells nodes apart, and the host is the same for all of them.
func formatPorts(addresses map[string]string) string {
	return formatPairs(addresses, ",", func(address string) string {
		if _, port, err := net.SplitHostPort(address); err == nil {
			return port
		}
		return address
	})
}

// formatAge renders how long ago t was in its largest whole unit, as
// kubectl does (45s, 3m, 2h, 4d): enough to tell a fresh node from an old one.
func formatAge(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := max(now.Sub(t), 0) // a server clock ahead of ours is no negative age
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 24*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
}
