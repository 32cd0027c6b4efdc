package docker

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

func TestSpecCheck(t *testing.T) {
	valid := func() nodeSpec {
		return nodeSpec{AgentPort: "agent", Containers: []containerSpec{
			{Name: "main", Image: "img", Ports: map[string]int{"agent": 8080}},
		}}
	}
	s := valid()
	if err := s.check(); err != nil {
		t.Fatal(err)
	}
	if s.Pull != PullMissing || s.RestartPolicy != "unless-stopped" || s.AgentScheme != "http" {
		t.Errorf("defaults: pull %q, restart %q, scheme %q", s.Pull, s.RestartPolicy, s.AgentScheme)
	}
	for _, tc := range []struct {
		name   string
		change func(*nodeSpec)
		want   string
	}{
		{"no containers", func(s *nodeSpec) { s.Containers = nil }, "at least one container"},
		{"bad pull", func(s *nodeSpec) { s.Pull = "sometimes" }, "not a pull policy"},
		{"bad restart", func(s *nodeSpec) { s.RestartPolicy = "never" }, "not a restart policy"},
		{"bad name", func(s *nodeSpec) { s.Containers[0].Name = "a/b" }, "name"},
		{"duplicate name", func(s *nodeSpec) {
			s.Containers = append(s.Containers, containerSpec{Name: "main", Image: "img"})
		}, "declared twice"},
		{"no image", func(s *nodeSpec) { s.Containers[0].Image = " " }, "image is required"},
		{"bad env", func(s *nodeSpec) { s.Containers[0].Env = map[string]string{"A=B": "c"} }, "not a variable name"},
		{"bad port", func(s *nodeSpec) { s.Containers[0].Ports["x"] = 70000 }, "not a port number"},
		{"port in two containers", func(s *nodeSpec) {
			s.Containers = append(s.Containers, containerSpec{Name: "side", Image: "img", Ports: map[string]int{"agent": 9}})
		}, "declared by two containers"},
		{"relative mount", func(s *nodeSpec) { s.Containers[0].Mounts = []mountSpec{{Target: "data"}} }, "absolute"},
		{"unknown agent port", func(s *nodeSpec) { s.AgentPort = "nope" }, `no container has a port "nope"`},
		{"both agents", func(s *nodeSpec) { s.AgentAddress = "http://x:1" }, "one or the other"},
		{"no agent", func(s *nodeSpec) { s.AgentPort = "" }, "is required"},
	} {
		s := valid()
		tc.change(&s)
		if err := s.check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestGroupNodes: every container of a node, running or not, makes one
// node; addresses come from the containers that publish them.
func TestGroupNodes(t *testing.T) {
	base := map[string]string{LabelCluster: "c", LabelNode: "node-a", LabelGroup: "g", LabelClass: "k",
		LabelAgentPort: "agent", LabelAgentScheme: "https"}
	with := func(extra map[string]string) map[string]string {
		labels := map[string]string{}
		for k, v := range base {
			labels[k] = v
		}
		for k, v := range extra {
			labels[k] = v
		}
		return labels
	}
	ip := netip.MustParseAddr("127.0.0.1")
	items := []container.Summary{
		{ID: "1", Labels: with(map[string]string{LabelPortPrefix + "store": "6379"}), State: "running",
			Ports: []container.PortSummary{{IP: ip, PrivatePort: 6379, PublicPort: 40001, Type: "tcp"}}},
		{ID: "2", Labels: with(map[string]string{LabelPortPrefix + "agent": "8080"}), State: "exited"},
		{ID: "3", Labels: map[string]string{LabelCluster: "b", LabelNode: "node-z", LabelAgentAddress: "tcp://z:1"}},
		{ID: "4", Labels: map[string]string{"other": "x"}},
	}
	nodes := groupNodes(items, "127.0.0.1")
	if len(nodes) != 2 || nodes[0].ClusterID != "b" || nodes[1].NodeID != "node-a" {
		t.Fatalf("nodes: %+v", nodes)
	}
	a := nodes[1]
	if len(a.Containers) != 2 || a.Group != "g" || a.Class != "k" || a.Ports["store"] != 6379 || a.Ports["agent"] != 8080 {
		t.Errorf("node a: %+v", a)
	}
	if a.Addresses["store"] != "127.0.0.1:40001" || a.Addresses["agent"] != "" || a.AgentAddress != "" {
		t.Errorf("node a: addresses %v, agent %q; the stopped agent container publishes nothing", a.Addresses, a.AgentAddress)
	}
	if nodes[0].AgentAddress != "tcp://z:1" {
		t.Errorf("literal agent address: %q", nodes[0].AgentAddress)
	}
	items[1].Ports = []container.PortSummary{{IP: netip.MustParseAddr("0.0.0.0"), PrivatePort: 8080, PublicPort: 40002, Type: "tcp"}}
	if got := groupNodes(items, "0.0.0.0")[1].AgentAddress; got != "https://127.0.0.1:40002" {
		t.Errorf("agent published on all interfaces: %q", got)
	}
}
