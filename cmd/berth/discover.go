package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/platform"
)

func newDiscoverCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "discover",
		Short: "List the clusters and nodes of a platform",
		Long: `Discover asks a Platform server (GET {url}discover) for every cluster and node
it manages, whatever their health, and prints them in the order the server
gives them.`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, wide (with the nodes' addresses) or json")
	conn := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "wide" && output != "json" {
			return usageErrorf("--output must be table, wide or json, got %q", output)
		}
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		resp, err := c.Discover(cmd.Context())
		if err != nil {
			return fmt.Errorf("discovering nodes: %w", explainRequestError(c, err))
		}
		if output == "json" {
			return writeJSON(cmd.OutOrStdout(), normaliseDiscovery(resp))
		}
		return writeDiscoveryTable(cmd.OutOrStdout(), resp, output == "wide")
	}
	return cmd
}

// writeDiscoveryTable prints one row per node; wide adds the addresses
// Berth reports for each node (other servers may report none).
func writeDiscoveryTable(w io.Writer, resp platform.DiscoveryResponse, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := "CLUSTER\tNODE\tGROUP\tCLASS\tAGENT"
	if wide {
		header += "\tADDRESSES"
	}
	fmt.Fprintln(tw, header)
	for _, cluster := range resp.Clusters {
		for _, node := range cluster.Nodes {
			group := "-"
			if node.NodeGroup != nil {
				group = orDash(*node.NodeGroup)
			}
			row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s", cluster.ClusterID, node.NodeID, group,
				orDash(node.NodeClass), orDash(node.AgentAddress))
			if wide {
				row += "\t" + orDash(formatAddresses(node.Addresses))
			}
			fmt.Fprintln(tw, row)
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// formatAddresses renders addresses as name=address pairs in name order.
func formatAddresses(addresses map[string]string) string {
	return formatPairs(addresses, " ", func(address string) string { return address })
}

// formatPairs renders name=value pairs in name order.
func formatPairs(values map[string]string, sep string, value func(string) string) string {
	names := make([]string, 0, len(values))
	for name := range values {
		names = append(names, name)
	}
	sort.Strings(names)
	pairs := make([]string, len(names))
	for i, name := range names {
		pairs[i] = name + "=" + value(values[name])
	}
	return strings.Join(pairs, sep)
}

// orDash keeps table columns aligned and visible when a value is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// normaliseDiscovery turns missing lists into empty ones, so that JSON
// output always has arrays where the API has them.
func normaliseDiscovery(resp platform.DiscoveryResponse) platform.DiscoveryResponse {
	out := platform.DiscoveryResponse{Clusters: make([]platform.ClusterDiscovery, 0, len(resp.Clusters))}
	for _, cluster := range resp.Clusters {
		if cluster.Nodes == nil {
			cluster.Nodes = []platform.DiscoveredNode{}
		}
		out.Clusters = append(out.Clusters, cluster)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}
