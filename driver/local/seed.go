package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/platform"
)

// SeedNode is one node for Seed to record.
type SeedNode struct {
	ClusterID string
	NodeID    string
	Group     string // default "default"
	Class     string // default "default"
	Store     string // default "redis"
	Version   string // default "7.0"
	// Ports are the node's named ports, as discovery shows them in
	// addresses. Each port is recorded as held by the node, so that a
	// driver opened on the data directory never hands it out again.
	Ports map[string]int
	// AgentAddress defaults to http://127.0.0.1:<the "agent" port>; a node
	// with neither is refused.
	AgentAddress string
}

// Seed records nodes in the state under dataDir as running nodes with their
// ports but no processes, straight into the state database, without a
// template and without starting anything. It is for benchmarks and tests
// that need a large node set (discovery, memory) without running a store
// per node; a Berth serving such a state lists the nodes, and deprovisions
// them as nodes whose processes are all gone. It is not for production: the
// nodes it records do not exist.
//
// Seed must run while no Driver has dataDir open (the state database has
// one user at a time). It writes every node in one transaction, so either
// all are recorded or none; a node or port already recorded is an error.
func Seed(dataDir string, nodes []SeedNode) error {
	if dataDir == "" {
		return errors.New("seeding local state: a data directory is required")
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "nodes"), 0o755); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	db, err := openState(dataDir)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	err = db.Update(func(tx *bolt.Tx) error {
		ports := tx.Bucket(bucketPorts)
		for i, n := range nodes {
			rec, err := n.record(now)
			if err != nil {
				return fmt.Errorf("seed node %d: %w", i, err)
			}
			if existing, err := getNode(tx, rec.ClusterID, rec.NodeID); err != nil {
				return err
			} else if existing != nil {
				return fmt.Errorf("seed node %d: node %s/%s is already recorded", i, rec.ClusterID, rec.NodeID)
			}
			for name, port := range rec.Ports {
				if owner := ports.Get(portKey(port)); owner != nil {
					return fmt.Errorf("seed node %d: port %s=%d is already held by %q", i, name, port, owner)
				}
				if err := ports.Put(portKey(port), rec.key()); err != nil {
					return err
				}
			}
			if err := putNode(tx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if closeErr := db.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("seeding local state: %w", err)
	}
	return nil
}

func (n SeedNode) record(now time.Time) (*nodeRecord, error) {
	orDefault := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	rec := &nodeRecord{
		ClusterID:  n.ClusterID,
		NodeID:     n.NodeID,
		Group:      orDefault(n.Group, "default"),
		Class:      orDefault(n.Class, "default"),
		Store:      orDefault(n.Store, "redis"),
		Version:    orDefault(n.Version, "7.0"),
		Template:   "seed",
		Attributes: map[string]any{},
		Ports:      map[string]int{},
		Processes:  []processRecord{},
		State:      stateRunning,
		CreatedAt:  now,
	}
	for what, id := range map[string]string{"cluster ID": rec.ClusterID, "node ID": rec.NodeID, "node group": rec.Group} {
		if err := platform.ValidateID(id); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
	}
	names := make([]string, 0, len(n.Ports))
	for name, port := range n.Ports {
		if port < 1 || port > 65535 {
			return nil, fmt.Errorf("port %s=%d is not a TCP port", name, port)
		}
		names = append(names, name)
		rec.Ports[name] = port
	}
	sort.Strings(names)
	if err := validatePortNames(names); err != nil {
		return nil, err
	}
	agent := n.AgentAddress
	if port, ok := n.Ports["agent"]; ok && agent == "" {
		agent = "http://" + loopback + ":" + strconv.Itoa(port)
	}
	if agent == "" {
		return nil, errors.New("no agent address and no agent port")
	}
	// No processes: a driver opened on the state has nothing to adopt or
	// restart, and nothing to stop on deprovision.
	rec.Spec = NodeSpec{Ports: names, AgentAddress: agent, RestartPolicy: RestartNever}
	return rec, nil
}
