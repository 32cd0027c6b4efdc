package docker

import (
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
)

// LabelPrefix begins every label the driver sets. The labels are the
// driver's only state: discovery reads them back from one list call.
const LabelPrefix = "io.berth."

// Labels on every container and volume (the network has the cluster and
// store ones).
const (
	LabelCluster = LabelPrefix + "cluster"
	LabelNode    = LabelPrefix + "node"
	LabelGroup   = LabelPrefix + "group"
	LabelClass   = LabelPrefix + "class"
	LabelStore   = LabelPrefix + "store"
	LabelVersion = LabelPrefix + "version"
	// LabelCreated is when the node was provisioned (RFC 3339, UTC, in
	// nanoseconds): templates see their peers oldest first, and a retry's
	// answer lists the nodes in the order the first answer did.
	LabelCreated = LabelPrefix + "created"
	// LabelIdempotencyKey is the SHA-256 (hex) of the Idempotency-Key of
	// the provision that made the node, and LabelRequestDigest that
	// request's digest (platform.Idempotency): a retry finds its nodes by
	// the one, and tells another request that reuses the key by the other.
	// The key itself is never stored: it may be long, and it is the
	// client's.
	LabelIdempotencyKey = LabelPrefix + "idempotency-key"
	LabelRequestDigest  = LabelPrefix + "request-digest"
)

// Labels on markers (see markers.go): volumes that say a provision or a
// deprovision of a node is under way. They carry LabelCluster and LabelNode
// too.
const (
	// LabelMarker is the work under way: MarkerProvision or
	// MarkerDeprovision.
	LabelMarker = LabelPrefix + "marker"
	// LabelExpires is when the work is given up for dead (RFC 3339, UTC):
	// a marker still there then belongs to a Berth that crashed or lost
	// the engine, and any Berth finishes or undoes its work.
	LabelExpires = LabelPrefix + "expires"
	// LabelKeepData, on a deprovision marker, says whether the node's
	// volume is to be kept ("true") or removed ("false").
	LabelKeepData = LabelPrefix + "keep-data"
)

// Labels on containers only.
const (
	// LabelContainer is the container's name within its node.
	LabelContainer = LabelPrefix + "container"
	// LabelPortPrefix + NAME is a port the container publishes, by name,
	// with its container port as the value: io.berth.port.store=6379.
	LabelPortPrefix = LabelPrefix + "port."
	// LabelAgentPort names the port whose published address is the agent
	// address, with LabelAgentScheme its scheme; LabelAgentAddress is the
	// agent address when the template gives it literally.
	LabelAgentPort    = LabelPrefix + "agent-port"
	LabelAgentScheme  = LabelPrefix + "agent-scheme"
	LabelAgentAddress = LabelPrefix + "agent-address"
)

// Engine object names. Labels, not names, say what an object is; names only
// keep objects of different nodes apart and tell people what they are.
func networkName(clusterID string) string { return "berth-" + clusterID }
func volumeName(clusterID, nodeID string) string {
	return "berth-" + clusterID + "-" + nodeID
}
func containerName(clusterID, nodeID, name string) string {
	return "berth-" + clusterID + "-" + nodeID + "-" + name
}

// node is one node as the engine shows it: every container that carries
// its cluster and node labels, running or not.
type node struct {
	ClusterID, NodeID, Group, Class, Store, Version string
	Created                                         time.Time
	// IdempotencyKey and Digest are the LabelIdempotencyKey and
	// LabelRequestDigest of the provision that made it, if it had a key.
	IdempotencyKey, Digest string
	// Complete is false while any container of the node has never been
	// started (the engine's state "created"): a provision is making it, or
	// made it only in part before it crashed. Incomplete nodes are not
	// discovered, and the markers of crashed provisions get them removed.
	// A node whose containers stopped, or some of whose containers are
	// gone (an interrupted deprovision), is complete: it stays listed
	// until it is deprovisioned.
	Complete bool
	// Ports are the node's container ports by name, as its peers reach them.
	Ports map[string]int
	// Addresses are the published addresses by port name, as the list
	// shows them (Docker shows none for a stopped container).
	Addresses    map[string]string
	AgentAddress string
	Containers   []container.Summary
}

// groupNodes groups listed containers into nodes, clusters and nodes in ID
// order.
func groupNodes(items []container.Summary, hostIP string) []*node {
	byKey := map[[2]string]*node{}
	var nodes []*node
	agentPorts := map[*node][2]string{} // port name, scheme
	for _, c := range items {
		l := c.Labels
		key := [2]string{l[LabelCluster], l[LabelNode]}
		if key[0] == "" || key[1] == "" {
			continue
		}
		n := byKey[key]
		if n == nil {
			n = &node{ClusterID: key[0], NodeID: key[1], Ports: map[string]int{}, Addresses: map[string]string{}, Complete: true}
			byKey[key] = n
			nodes = append(nodes, n)
		}
		n.Containers = append(n.Containers, c)
		if c.State == container.StateCreated {
			n.Complete = false
		}
		// Every container of a node carries the node's labels; the first
		// one seen wins should they ever differ.
		setOnce(&n.Group, l[LabelGroup])
		setOnce(&n.Class, l[LabelClass])
		setOnce(&n.Store, l[LabelStore])
		setOnce(&n.Version, l[LabelVersion])
		if n.Created.IsZero() {
			n.Created, _ = time.Parse(time.RFC3339Nano, l[LabelCreated])
		}
		setOnce(&n.AgentAddress, l[LabelAgentAddress])
		setOnce(&n.IdempotencyKey, l[LabelIdempotencyKey])
		setOnce(&n.Digest, l[LabelRequestDigest])
		if name := l[LabelAgentPort]; name != "" {
			agentPorts[n] = [2]string{name, l[LabelAgentScheme]}
		}
		for key, value := range l {
			name, ok := strings.CutPrefix(key, LabelPortPrefix)
			if !ok {
				continue
			}
			port, err := strconv.Atoi(value)
			if err != nil {
				continue
			}
			n.Ports[name] = port
			if addr := published(c.Ports, port, hostIP); addr != "" {
				n.Addresses[name] = addr
			}
		}
	}
	for n, agent := range agentPorts {
		if addr := n.Addresses[agent[0]]; addr != "" && n.AgentAddress == "" {
			scheme := agent[1]
			if scheme == "" {
				scheme = "http"
			}
			n.AgentAddress = scheme + "://" + addr
		}
	}
	sort.Slice(nodes, func(i, j int) bool {
		if nodes[i].ClusterID != nodes[j].ClusterID {
			return nodes[i].ClusterID < nodes[j].ClusterID
		}
		return nodes[i].NodeID < nodes[j].NodeID
	})
	return nodes
}

func setOnce(field *string, value string) {
	if *field == "" {
		*field = value
	}
}

// published returns the host address a container port is published on, ""
// when it is not. An address published on all interfaces is reported on
// the driver's host IP, or on loopback when that is unspecified too.
func published(ports []container.PortSummary, port int, hostIP string) string {
	for _, p := range ports {
		if int(p.PrivatePort) != port || p.PublicPort == 0 || (p.Type != "" && p.Type != "tcp") {
			continue
		}
		ip := p.IP
		if !ip.IsValid() || ip.IsUnspecified() {
			ip, _ = netip.ParseAddr(hostIP)
			if !ip.IsValid() || ip.IsUnspecified() {
				ip = netip.MustParseAddr("127.0.0.1")
			}
		}
		return net.JoinHostPort(ip.String(), strconv.Itoa(int(p.PublicPort)))
	}
	return ""
}
