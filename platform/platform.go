// Package platform is Berth's contract: the request and response models of
// the Platform API, their decoding and validation, the typed errors every
// layer speaks, and the Driver interface that places nodes on an engine.
//
// It uses the standard library only; every other package imports it and it
// imports none of them.
package platform

import (
	"context"
	"crypto/rand"
	"time"
)

// Driver places data store nodes somewhere: local processes, containers,
// Kubernetes objects. Requests reach a driver already validated.
type Driver interface {
	// Discover lists every node the driver manages, whatever its health.
	Discover(ctx context.Context) (DiscoveryResponse, error)
	// Provision creates nodes for the request's node group. It creates at
	// most req.Provision.Count nodes and never lets the group exceed its
	// desired_count.
	Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error)
	// Deprovision terminates one node; ENOTFOUND when there is no such node.
	Deprovision(ctx context.Context, req DeprovisionRequest) error
}

// DiscoveryResponse is the body of GET /discover.
type DiscoveryResponse struct {
	Clusters []ClusterDiscovery `json:"clusters"`
}

// ClusterDiscovery is one cluster with all of its nodes.
type ClusterDiscovery struct {
	ClusterID string           `json:"cluster_id"`
	Nodes     []DiscoveredNode `json:"nodes"`
}

// DiscoveredNode is one node as discovery shows it. NodeClass and NodeGroup
// are not in the seed specification but Replicante Core's client requires
// node_class and reads node_group, so both are always sent.
type DiscoveredNode struct {
	AgentAddress string  `json:"agent_address"`
	NodeID       string  `json:"node_id"`
	NodeClass    string  `json:"node_class"`
	NodeGroup    *string `json:"node_group"`
	// Addresses is a Berth extension: the addresses a node serves on, by
	// port name ("store": "127.0.0.1:20001"), where the driver knows them.
	// Clients that do not know the field ignore it.
	Addresses map[string]string `json:"addresses,omitempty"`
}

// ProvisionRequest is the body of POST /provision.
type ProvisionRequest struct {
	Cluster   ClusterSpec   `json:"cluster"`
	Provision ProvisionSpec `json:"provision"`
	// Idempotency is set when the client sent an Idempotency-Key: a driver
	// that honours it answers a retry (same key, same request) within
	// IdempotencyWindow with the first answer, without provisioning again,
	// and the same key with another request with EUNPROCESSABLE.
	Idempotency *Idempotency `json:"-"`
}

// Idempotency identifies a provision across retries.
type Idempotency struct {
	Key string
	// Digest is the SHA-256 of the request, to tell a retry from another
	// request that reuses the key.
	Digest string
}

// IdempotencyWindow is how long an Idempotency-Key is remembered.
const IdempotencyWindow = 24 * time.Hour

// ClusterSpec declares the cluster a node is provisioned into.
type ClusterSpec struct {
	Attributes   map[string]any       `json:"attributes"`
	ClusterID    string               `json:"cluster_id"`
	Store        string               `json:"store"`
	StoreVersion string               `json:"store_version"`
	Nodes        map[string]NodeGroup `json:"nodes"`
}

// NodeGroup declares one group of identically configured nodes.
type NodeGroup struct {
	Attributes   map[string]any `json:"attributes"`
	DesiredCount int            `json:"desired_count"`
	NodeClass    string         `json:"node_class"`
	// Version overrides the cluster's store_version for this group. On the
	// wire it is read from "version" or "store_version".
	Version string `json:"version,omitempty"`
}

// ProvisionSpec says which group to provision and how many nodes at most.
type ProvisionSpec struct {
	NodeGroupID string `json:"node_group_id"`
	// Count is the preferred number of nodes; a decoded request always has
	// 1 to 65535 (a missing count means 1).
	Count int `json:"count,omitempty"`
}

// ProvisionResponse is the body of a successful POST /provision.
type ProvisionResponse struct {
	Count   int      `json:"count"`
	NodeIDs []string `json:"node_ids"`
}

// DeprovisionRequest is the body of POST /deprovision.
type DeprovisionRequest struct {
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
}

// Group returns the node group the request provisions.
func (r ProvisionRequest) Group() NodeGroup {
	return r.Cluster.Nodes[r.Provision.NodeGroupID]
}

// StoreVersion returns the version for the provisioned group: the group's
// override when it has one, else the cluster's store_version.
func (r ProvisionRequest) StoreVersion() string {
	if v := r.Group().Version; v != "" {
		return v
	}
	return r.Cluster.StoreVersion
}

// Attributes returns the cluster attributes merged with the provisioned
// group's attributes, group values winning, with JSON merge patch semantics
// (RFC 7386): nested objects merge and a null group value removes the key.
func (r ProvisionRequest) Attributes() map[string]any {
	return mergePatch(r.Cluster.Attributes, r.Group().Attributes)
}

func mergePatch(base, patch map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(patch))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(out, k)
		case map[string]any:
			bv, _ := out[k].(map[string]any)
			out[k] = mergePatch(bv, pv)
		default:
			out[k] = v
		}
	}
	return out
}

// NewNodeID returns "node-" and 8 random lowercase letters and digits, an ID
// for which taken reports false. It is a valid ID (see ValidateID), label
// value and part of a container or object name.
func NewNodeID(taken func(id string) bool) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		if id := "node-" + string(b[:]); !taken(id) {
			return id
		}
	}
}
