package local

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/platform"
)

// Node and process states, as operators see them.
const (
	stateStarting   = platform.StateStarting   // recorded, not yet answered: rolled back if Berth dies now
	stateRunning    = platform.StateRunning    // started and supervised
	stateRestarting = platform.StateRestarting // a process waits for its restart
	stateExited     = platform.StateExited     // a process is down by its restart policy
	stateStopping   = platform.StateStopping   // being deprovisioned
)

var (
	bucketNodes = []byte("nodes") // cluster \x00 node -> nodeRecord (JSON)
	bucketPorts = []byte("ports") // port (uint16, big endian) -> cluster \x00 node
)

// nodeRecord is everything Berth knows about one local node.
type nodeRecord struct {
	ClusterID string   `json:"cluster_id"`
	NodeID    string   `json:"node_id"`
	Group     string   `json:"node_group"`
	Class     string   `json:"node_class"`
	Store     string   `json:"store"`
	Version   string   `json:"version"`
	Template  string   `json:"template"`
	Spec      NodeSpec `json:"spec"`
	// Hooks is the template's hooks section, unrendered: hooks render when
	// they run. Attributes are kept for that rendering.
	Hooks      string          `json:"hooks,omitempty"`
	Attributes map[string]any  `json:"attributes"`
	Ports      map[string]int  `json:"ports"`
	Processes  []processRecord `json:"processes"`
	State      string          `json:"state"`
	CreatedAt  time.Time       `json:"created_at"`
}

func nodeKey(clusterID, nodeID string) []byte {
	return []byte(clusterID + "\x00" + nodeID)
}

func (r *nodeRecord) key() []byte { return nodeKey(r.ClusterID, r.NodeID) }

func portKey(port int) []byte {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(port))
	return b[:]
}

// openState opens (or creates) the node database. Every update is written
// with fsync before it returns (bbolt's default), so a record that a
// provision answer relies on survives a crash.
func openState(dataDir string) (*bolt.DB, error) {
	path := filepath.Join(dataDir, "state.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by another berth process (one data directory serves one berth)", path)
	} else if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketNodes, bucketPorts, bucketIdempotency} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialising state %s: %w", path, err)
	}
	return db, nil
}

func getNode(tx *bolt.Tx, clusterID, nodeID string) (*nodeRecord, error) {
	data := tx.Bucket(bucketNodes).Get(nodeKey(clusterID, nodeID))
	if data == nil {
		return nil, nil
	}
	var rec nodeRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("state record of node %s/%s: %w", clusterID, nodeID, err)
	}
	return &rec, nil
}

func putNode(tx *bolt.Tx, rec *nodeRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketNodes).Put(rec.key(), data)
}

// deleteNode removes a node's record and releases its ports.
func deleteNode(tx *bolt.Tx, rec *nodeRecord) error {
	ports := tx.Bucket(bucketPorts)
	for _, port := range rec.Ports {
		if err := ports.Delete(portKey(port)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketNodes).Delete(rec.key())
}

// forEachNode calls fn for every node in key order (by cluster, then node);
// with a cluster ID, only for that cluster's nodes.
func forEachNode(tx *bolt.Tx, clusterID string, fn func(*nodeRecord) error) error {
	c := tx.Bucket(bucketNodes).Cursor()
	var prefix []byte
	if clusterID != "" {
		prefix = []byte(clusterID + "\x00")
	}
	for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
		var rec nodeRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("state record %q: %w", k, err)
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	return nil
}

func hasPrefix(b, prefix []byte) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == string(prefix)
}
