package platform

import "time"

// Node states an operator sees (GET /v1/nodes). Discovery lists nodes in
// every state.
const (
	StateStarting   = "starting"   // recorded; processes being started
	StateRunning    = "running"    // every process runs
	StateRestarting = "restarting" // a process exited and waits for its restart
	StateExited     = "exited"     // a process exited and its restart policy keeps it down
	StateStopping   = "stopping"   // being deprovisioned
)

// NodeStatus is an operator's view of one node: more than discovery shows,
// for humans and tools, outside the Platform API.
type NodeStatus struct {
	ClusterID    string            `json:"cluster_id"`
	NodeID       string            `json:"node_id"`
	NodeGroup    string            `json:"node_group"`
	NodeClass    string            `json:"node_class"`
	Store        string            `json:"store"`
	Version      string            `json:"version"`
	State        string            `json:"state"`
	AgentAddress string            `json:"agent_address"`
	Addresses    map[string]string `json:"addresses,omitempty"`
	Processes    []ProcessStatus   `json:"processes"`
	CreatedAt    time.Time         `json:"created_at"`
}

// ProcessStatus is one process of a node.
type ProcessStatus struct {
	Name      string    `json:"name"`
	PID       int       `json:"pid"` // 0 while not running
	State     string    `json:"state"`
	Restarts  int       `json:"restarts"`
	LastExit  string    `json:"last_exit,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}
