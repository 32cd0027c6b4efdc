package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/platform"
)

func newDeprovisionCommand() *cobra.Command {
	var (
		clusterID, nodeID string
		wait              bool
		waitTimeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "deprovision",
		Short: "Ask a platform to terminate a node",
		Long: `Deprovision sends a node deprovision request (POST {url}deprovision) for one
node of one cluster. With --wait it then polls discovery until the node is no
longer listed.`,
		Args: noArgs,
	}
	flags := cmd.Flags()
	flags.StringVar(&clusterID, "cluster", "", "ID of the node's cluster (required)")
	flags.StringVar(&nodeID, "node", "", "ID of the node to deprovision (required)")
	flags.BoolVar(&wait, "wait", false, "wait until discovery no longer lists the node")
	flags.DurationVar(&waitTimeout, "wait-timeout", 2*time.Minute, "how long --wait waits")
	conn := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case clusterID == "" && nodeID == "":
			return usageErrorf("--cluster and --node are required")
		case clusterID == "":
			return usageErrorf("--cluster is required")
		case nodeID == "":
			return usageErrorf("--node is required")
		case waitTimeout <= 0:
			return usageErrorf("--wait-timeout must be positive, got %s", waitTimeout)
		}
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		err = c.Deprovision(cmd.Context(), platform.DeprovisionRequest{ClusterID: clusterID, NodeID: nodeID})
		if err != nil {
			return fmt.Errorf("deprovisioning node %s of cluster %s: %w", nodeID, clusterID, explainRequestError(c, err))
		}
		if _, err := fmt.Fprintf(cmd.OutOrStdout(), "deprovisioned node %s of cluster %s\n", nodeID, clusterID); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		if !wait {
			return nil
		}
		start := time.Now()
		done := func(disc platform.DiscoveryResponse) (bool, string) {
			for _, node := range findCluster(disc, clusterID) {
				if node.NodeID == nodeID {
					return false, fmt.Sprintf("waiting for node %s to leave discovery (%s)", nodeID, time.Since(start).Round(time.Second))
				}
			}
			return true, fmt.Sprintf("node %s is no longer listed", nodeID)
		}
		describe := func() string {
			return fmt.Sprintf("cluster %s still lists node %s", clusterID, nodeID)
		}
		return waitFor(cmd.Context(), c, waitTimeout, cmd.ErrOrStderr(), done, describe)
	}
	return cmd
}
