// Package local runs data store nodes as processes on this machine: Berth's
// embedded default driver.
//
// Every node has a directory <data-dir>/nodes/<cluster>/<node>/ with its data
// and one log file per process, and a record in an embedded bbolt database
// (<data-dir>/state.db) holding its cluster, group, class, store, rendered
// spec, ports and process IDs. Processes run in their own sessions and write
// their output to their log files themselves, so they outlive Berth.
package local

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/platform"
)

// DriverName is the name of this driver's folder in the catalogue.
const DriverName = "local"

// DefaultGracePeriod is how long a deprovisioned node's processes get to
// exit after SIGTERM before they are killed.
const DefaultGracePeriod = 10 * time.Second

// Catalog finds the template of a node.
type Catalog interface {
	Lookup(catalog.Request) (*catalog.Template, error)
}

// Options configure a Driver.
type Options struct {
	DataDir     string
	Catalog     Catalog
	Ports       PortRange     // default DefaultPortRange
	GracePeriod time.Duration // default DefaultGracePeriod
	Logger      *slog.Logger
}

// Driver is the local process driver.
type Driver struct {
	opts   Options
	db     *bolt.DB
	logger *slog.Logger

	mu   sync.Mutex
	busy map[string]*nodeLock // per-node locks: deprovisions of one node run one at a time

	// nextPort is where the next port search starts; only read and written
	// inside bbolt update transactions, which run one at a time.
	nextPort int
}

// Open opens the driver's state under opts.DataDir, creating it if needed.
func Open(opts Options) (*Driver, error) {
	if opts.DataDir == "" {
		return nil, errors.New("local driver: a data directory is required")
	}
	if opts.Catalog == nil {
		return nil, errors.New("local driver: a catalogue is required")
	}
	if opts.Ports == (PortRange{}) {
		opts.Ports = DefaultPortRange
	}
	if err := opts.Ports.validate(); err != nil {
		return nil, err
	}
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	opts.DataDir = dataDir
	if err := os.MkdirAll(filepath.Join(dataDir, "nodes"), 0o750); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	db, err := openState(dataDir)
	if err != nil {
		return nil, err
	}
	return &Driver{
		opts:     opts,
		db:       db,
		logger:   opts.Logger,
		busy:     map[string]*nodeLock{},
		nextPort: opts.Ports.Min,
	}, nil
}

// Close closes the state database. Nodes keep running.
func (d *Driver) Close() error { return d.db.Close() }

// Ready reports whether the state database is usable.
func (d *Driver) Ready(ctx context.Context) error {
	return d.db.View(func(tx *bolt.Tx) error { return nil })
}

// Discover lists every recorded node, whatever its state, grouped by cluster
// in ID order.
func (d *Driver) Discover(ctx context.Context) (platform.DiscoveryResponse, error) {
	resp := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{}}
	err := d.db.View(func(tx *bolt.Tx) error {
		return forEachNode(tx, "", func(rec *nodeRecord) error {
			n := len(resp.Clusters)
			if n == 0 || resp.Clusters[n-1].ClusterID != rec.ClusterID {
				resp.Clusters = append(resp.Clusters, platform.ClusterDiscovery{ClusterID: rec.ClusterID})
				n++
			}
			group := rec.Group
			addresses := make(map[string]string, len(rec.Ports))
			for name, port := range rec.Ports {
				addresses[name] = net.JoinHostPort(loopback, strconv.Itoa(port))
			}
			resp.Clusters[n-1].Nodes = append(resp.Clusters[n-1].Nodes, platform.DiscoveredNode{
				AgentAddress: rec.Spec.AgentAddress,
				NodeID:       rec.NodeID,
				NodeClass:    rec.Class,
				NodeGroup:    &group,
				Addresses:    addresses,
			})
			return nil
		})
	})
	if err != nil {
		return platform.DiscoveryResponse{}, fmt.Errorf("reading node state: %w", err)
	}
	return resp, nil
}

// Provision records and starts up to req.Provision.Count nodes, never more
// than the group's desired_count minus the nodes it already has. Nodes are
// recorded (durably) before their processes start; if any node of the
// request fails to start, every node of the request is stopped and removed.
func (d *Driver) Provision(ctx context.Context, req platform.ProvisionRequest) (platform.ProvisionResponse, error) {
	tmpl, err := d.opts.Catalog.Lookup(catalog.Request{
		Driver:     DriverName,
		Store:      req.Cluster.Store,
		Version:    req.StoreVersion(),
		Attributes: req.Attributes(),
	})
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	var names portNames
	if err := tmpl.Decode(&names); err != nil {
		return platform.ProvisionResponse{}, err
	}
	if err := validatePortNames(names.Ports); err != nil {
		return platform.ProvisionResponse{}, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", tmpl.Name, err)
	}

	records, err := d.reserve(req, tmpl, names.Ports)
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	resp := platform.ProvisionResponse{Count: len(records), NodeIDs: make([]string, 0, len(records))}
	if len(records) == 0 {
		return resp, nil
	}
	// The request's client going away must not leave half-started nodes.
	ctx = context.WithoutCancel(ctx)
	if err := d.start(ctx, records); err != nil {
		d.rollback(ctx, records)
		return platform.ProvisionResponse{}, err
	}
	for _, rec := range records {
		resp.NodeIDs = append(resp.NodeIDs, rec.NodeID)
		d.logger.InfoContext(ctx, "node provisioned", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
			"node_group", rec.Group, "store", rec.Store, "version", rec.Version, "ports", rec.Ports,
			"request_id", platform.RequestID(ctx))
	}
	return resp, nil
}

// reserve decides how many nodes to create and records them, with their
// ports and rendered specs, in one transaction: transactions run one at a
// time, so concurrent provisions never exceed desired_count.
func (d *Driver) reserve(req platform.ProvisionRequest, tmpl *catalog.Template, portNames []string) ([]*nodeRecord, error) {
	group := req.Group()
	var records []*nodeRecord
	err := d.db.Update(func(tx *bolt.Tx) error {
		records = nil
		existing := 0
		taken := map[string]bool{}
		err := forEachNode(tx, req.Cluster.ClusterID, func(rec *nodeRecord) error {
			taken[rec.NodeID] = true
			if rec.Group == req.Provision.NodeGroupID {
				existing++
			}
			return nil
		})
		if err != nil {
			return err
		}
		n := min(req.Provision.Count, group.DesiredCount-existing)
		for i := 0; i < n; i++ {
			rec := &nodeRecord{
				ClusterID: req.Cluster.ClusterID,
				NodeID:    newNodeID(taken),
				Group:     req.Provision.NodeGroupID,
				Class:     group.NodeClass,
				Store:     req.Cluster.Store,
				Version:   req.StoreVersion(),
				Template:  tmpl.Name,
				Ports:     map[string]int{},
				State:     stateStarting,
				CreatedAt: time.Now().UTC(),
			}
			taken[rec.NodeID] = true
			for _, name := range portNames {
				port, err := allocatePort(tx, d.opts.Ports, d.nextPort, rec.key())
				if err != nil {
					return platform.Wrap(platform.EUNAVAILABLE, err, "allocating port %q for node %s", name, rec.NodeID)
				}
				d.nextPort = port + 1
				rec.Ports[name] = port
			}
			dirs := d.dirs(rec)
			err := tmpl.Render(catalog.Context{
				ClusterID:  rec.ClusterID,
				NodeID:     rec.NodeID,
				NodeGroup:  rec.Group,
				NodeClass:  rec.Class,
				Store:      rec.Store,
				Version:    rec.Version,
				Attributes: req.Attributes(),
				Ports:      rec.Ports,
				Dirs:       dirs.templateValues(),
			}, &rec.Spec)
			if err != nil {
				return err
			}
			rec.Spec.Ports = portNames
			if err := rec.Spec.check(); err != nil {
				return platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", tmpl.Name, err)
			}
			if err := rec.Spec.checkPrograms(); err != nil {
				return platform.Errorf(platform.EUNPROCESSABLE, "%s %s cannot run here: %v", rec.Store, rec.Version, err)
			}
			if err := putNode(tx, rec); err != nil {
				return err
			}
			records = append(records, rec)
		}
		return nil
	})
	return records, err
}

// start creates the nodes' directories, starts their processes and records
// the process IDs.
func (d *Driver) start(ctx context.Context, records []*nodeRecord) error {
	var startErr error
	for _, rec := range records {
		dirs := d.dirs(rec)
		if err := dirs.create(); err != nil {
			startErr = fmt.Errorf("node %s: %w", rec.NodeID, err)
			break
		}
		for _, spec := range rec.Spec.Processes {
			proc, err := startProcess(spec, dirs, d.exited(rec.ClusterID, rec.NodeID))
			if proc.PID > 0 {
				rec.Processes = append(rec.Processes, proc)
			}
			if err != nil {
				startErr = platform.Wrap(platform.EUNPROCESSABLE, err, "node %s: process %s failed to start", rec.NodeID, spec.Name)
				break
			}
		}
		if startErr != nil {
			break
		}
		rec.State = stateRunning
	}
	err := d.db.Update(func(tx *bolt.Tx) error {
		for _, rec := range records {
			if err := putNode(tx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if startErr != nil {
		return startErr
	}
	if err != nil {
		return fmt.Errorf("recording started processes: %w", err)
	}
	return nil
}

// rollback stops and removes nodes whose provision failed.
func (d *Driver) rollback(ctx context.Context, records []*nodeRecord) {
	for _, rec := range records {
		if err := d.remove(ctx, rec); err != nil {
			d.logger.ErrorContext(ctx, "removing node after failed provision", "cluster_id", rec.ClusterID,
				"node_id", rec.NodeID, "error", err, "request_id", platform.RequestID(ctx))
		}
	}
}

// exited returns the callback that records a process's exit.
func (d *Driver) exited(clusterID, nodeID string) func(processRecord, error) {
	return func(proc processRecord, waitErr error) {
		status := "exit status 0"
		if waitErr != nil {
			status = waitErr.Error()
		}
		var recorded bool
		err := d.db.Update(func(tx *bolt.Tx) error {
			rec, err := getNode(tx, clusterID, nodeID)
			if err != nil || rec == nil || rec.State == stateDeprovisioned {
				return err
			}
			for _, p := range rec.Processes {
				if p.PID == proc.PID && p.StartTime == proc.StartTime {
					recorded = true
				}
			}
			if !recorded {
				return nil
			}
			rec.State = stateExited
			rec.LastExit = fmt.Sprintf("%s: %s at %s", proc.Name, status, time.Now().UTC().Format(time.RFC3339))
			return putNode(tx, rec)
		})
		if errors.Is(err, bolt.ErrDatabaseNotOpen) {
			return
		}
		if recorded || err != nil {
			d.logger.Warn("node process exited", "cluster_id", clusterID, "node_id", nodeID,
				"process", proc.Name, "pid", proc.PID, "status", status, "record_error", err)
		}
	}
}

// Deprovision stops a node's processes (SIGTERM, then SIGKILL after the grace
// period), removes its directory and deletes its record.
func (d *Driver) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	unlock := d.lockNode(req.ClusterID, req.NodeID)
	defer unlock()
	var rec *nodeRecord
	err := d.db.Update(func(tx *bolt.Tx) error {
		var err error
		if rec, err = getNode(tx, req.ClusterID, req.NodeID); err != nil || rec == nil {
			return err
		}
		rec.State = stateDeprovisioned
		return putNode(tx, rec)
	})
	if err != nil {
		return fmt.Errorf("reading node state: %w", err)
	}
	if rec == nil {
		return platform.Errorf(platform.ENOTFOUND, "cluster %q has no node %q on this platform", req.ClusterID, req.NodeID)
	}
	ctx = context.WithoutCancel(ctx)
	if err := d.remove(ctx, rec); err != nil {
		return err
	}
	d.logger.InfoContext(ctx, "node deprovisioned", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
		"request_id", platform.RequestID(ctx))
	return nil
}

// remove stops a node's processes, deletes its directory, then its record.
// The record goes last, so a failure part way leaves the node listed and a
// second deprovision finishes the job.
func (d *Driver) remove(ctx context.Context, rec *nodeRecord) error {
	if err := stopProcesses(ctx, rec.Processes, d.opts.GracePeriod); err != nil {
		return fmt.Errorf("stopping node %s: %w", rec.NodeID, err)
	}
	dirs := d.dirs(rec)
	if err := os.RemoveAll(dirs.Node); err != nil {
		return fmt.Errorf("removing node directory: %w", err)
	}
	// The cluster directory goes with its last node; Remove fails harmlessly
	// while other nodes remain.
	_ = os.Remove(filepath.Dir(dirs.Node))
	err := d.db.Update(func(tx *bolt.Tx) error { return deleteNode(tx, rec) })
	if err != nil {
		return fmt.Errorf("deleting node record: %w", err)
	}
	return nil
}

// lockNode serialises work on one node and returns the unlock function.
func (d *Driver) lockNode(clusterID, nodeID string) func() {
	key := string(nodeKey(clusterID, nodeID))
	d.mu.Lock()
	l, ok := d.busy[key]
	if !ok {
		l = &nodeLock{}
		d.busy[key] = l
	}
	l.refs++
	d.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		d.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(d.busy, key)
		}
		d.mu.Unlock()
	}
}

type nodeLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by Driver.mu
}

// nodeDirs are the directories of one node.
type nodeDirs struct {
	Node, Data, Logs string
}

func (d *Driver) dirs(rec *nodeRecord) nodeDirs {
	node := filepath.Join(d.opts.DataDir, "nodes", rec.ClusterID, rec.NodeID)
	return nodeDirs{Node: node, Data: filepath.Join(node, "data"), Logs: filepath.Join(node, "logs")}
}

func (n nodeDirs) templateValues() map[string]string {
	return map[string]string{"node": n.Node, "data": n.Data, "logs": n.Logs}
}

func (n nodeDirs) create() error {
	for _, dir := range []string{n.Data, n.Logs} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
	}
	return nil
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newNodeID returns "node-" and 8 random characters, not in taken.
func newNodeID(taken map[string]bool) string {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		for i := range b {
			b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
		}
		if id := "node-" + string(b[:]); !taken[id] {
			return id
		}
	}
}
