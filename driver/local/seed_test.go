package local

import (
	"context"
	"strings"
	"testing"

	"github.com/berthio/berth/platform"
)

func TestSeedRecordsNodesWithoutProcesses(t *testing.T) {
	dataDir := t.TempDir()
	nodes := []SeedNode{
		{ClusterID: "c1", NodeID: "n1", Ports: map[string]int{"store": 30000, "agent": 30001}},
		{ClusterID: "c1", NodeID: "n2", Group: "replica", Ports: map[string]int{"store": 30002, "agent": 30003}},
		{ClusterID: "c2", NodeID: "n1", AgentAddress: "http://127.0.0.1:9", Ports: map[string]int{"store": 30004}},
	}
	if err := Seed(dataDir, nodes); err != nil {
		t.Fatal(err)
	}
	// Seeding again is refused as a whole: the records and ports exist.
	if err := Seed(dataDir, nodes[:1]); err == nil || !strings.Contains(err.Error(), "already recorded") {
		t.Fatalf("second seed: %v; want already recorded", err)
	}
	d := newTestDriver(t, dataDir)
	ctx := context.Background()
	resp, err := d.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Clusters) != 2 || len(resp.Clusters[0].Nodes) != 2 || len(resp.Clusters[1].Nodes) != 1 {
		t.Fatalf("discovery %+v: want c1 with 2 nodes and c2 with 1", resp)
	}
	n2 := resp.Clusters[0].Nodes[1]
	if n2.NodeID != "n2" || *n2.NodeGroup != "replica" || n2.AgentAddress != "http://127.0.0.1:30003" ||
		n2.Addresses["store"] != "127.0.0.1:30002" {
		t.Fatalf("node n2 discovered as %+v", n2)
	}
	if got := resp.Clusters[1].Nodes[0].AgentAddress; got != "http://127.0.0.1:9" {
		t.Fatalf("c2/n1 agent address %q", got)
	}
	statuses, err := d.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if s.State != platform.StateRunning || len(s.Processes) != 0 {
			t.Fatalf("node %s/%s: state %s with %d processes; want running with none", s.ClusterID, s.NodeID, s.State, len(s.Processes))
		}
	}
	// A seeded node deprovisions like any node, and its ports are free again.
	if err := d.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c1", NodeID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := d.Discover(ctx); len(resp.Clusters[0].Nodes) != 1 {
		t.Fatalf("after deprovision: %+v", resp)
	}
}

func TestSeedRefusesBadNodes(t *testing.T) {
	for name, tc := range map[string]struct {
		nodes []SeedNode
		want  string
	}{
		"bad cluster ID": {[]SeedNode{{ClusterID: "a/b", NodeID: "n", Ports: map[string]int{"agent": 30000}}}, "cluster ID"},
		"no agent":       {[]SeedNode{{ClusterID: "c", NodeID: "n", Ports: map[string]int{"store": 30000}}}, "no agent address"},
		"bad port":       {[]SeedNode{{ClusterID: "c", NodeID: "n", Ports: map[string]int{"agent": 70000}}}, "not a TCP port"},
		"shared port": {[]SeedNode{
			{ClusterID: "c", NodeID: "n1", Ports: map[string]int{"agent": 30000}},
			{ClusterID: "c", NodeID: "n2", Ports: map[string]int{"agent": 30000}},
		}, "already held"},
	} {
		t.Run(name, func(t *testing.T) {
			dataDir := t.TempDir()
			err := Seed(dataDir, tc.nodes)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Seed: %v; want an error mentioning %q", err, tc.want)
			}
			// Nothing of a refused seed is recorded.
			d := newTestDriver(t, dataDir)
			if resp, err := d.Discover(context.Background()); err != nil || len(resp.Clusters) != 0 {
				t.Fatalf("after a refused seed: %+v, %v", resp, err)
			}
		})
	}
}
