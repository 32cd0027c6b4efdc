// Package local runs data store nodes as processes on this machine: Berth's
// embedded default driver.
//
// Every node has a directory <data-dir>/nodes/<cluster>/<node>/ with its data
// and one log file per process, and a record in an embedded bbolt database
// (<data-dir>/state.db) holding its cluster, group, class, store, rendered
// spec, ports and processes. Processes run in their own sessions and write
// their output to their log files themselves, so they outlive Berth; a
// restarted Berth re-attaches to them (pidfds) and supervises them again.
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
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/keylock"
	"github.com/berthio/berth/platform"
)

// DriverName is the name of this driver's folder in the catalogue.
const DriverName = "local"

// Defaults for Options.
const (
	DefaultGracePeriod = 10 * time.Second
	DefaultLogMaxBytes = 10 << 20
)

// Catalog finds the template of a node.
type Catalog interface {
	Lookup(catalog.Request) (*catalog.Template, error)
}

// Options configure a Driver.
type Options struct {
	DataDir string
	Catalog Catalog
	Ports   PortRange // default DefaultPortRange
	// GracePeriod is how long a deprovisioned node's processes get to exit
	// after their stop signal before SIGKILL.
	GracePeriod time.Duration
	// LogMaxBytes caps each process log: past it the log is copied to
	// <name>.log.1 (replacing the previous one) and emptied.
	LogMaxBytes int64
	// LogCheckInterval is how often logs are measured (default 10s).
	LogCheckInterval time.Duration
	Logger           *slog.Logger
}

// Driver is the local process driver.
type Driver struct {
	opts   Options
	db     *bolt.DB
	logger *slog.Logger
	closed chan struct{}
	bg     sync.WaitGroup

	busy keylock.Set // work on one node, or one Idempotency-Key, runs one at a time

	mu    sync.Mutex
	nodes map[string]*node // supervision of running nodes

	// nextPort is where the next port search starts; only read and written
	// inside bbolt update transactions, which run one at a time.
	nextPort int

	// generation moves after every change to the state (see
	// DiscoveryGeneration).
	generation atomic.Uint64
}

// update runs a read-write transaction, then moves the generation: after the
// commit, so that a reader that saw the old generation cannot keep an answer
// read before it.
func (d *Driver) update(fn func(*bolt.Tx) error) error {
	err := d.db.Update(fn)
	d.generation.Add(1)
	return err
}

// DiscoveryGeneration changes whenever the recorded nodes may have: the
// server re-encodes discovery only then.
func (d *Driver) DiscoveryGeneration() uint64 { return d.generation.Load() }

// Open opens the driver's state under opts.DataDir, creating it if needed,
// and re-attaches to the nodes it records.
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
	if opts.LogMaxBytes <= 0 {
		opts.LogMaxBytes = DefaultLogMaxBytes
	}
	if opts.LogCheckInterval <= 0 {
		opts.LogCheckInterval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	opts.DataDir = dataDir
	if err := os.MkdirAll(filepath.Join(dataDir, "nodes"), 0o755); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	db, err := openState(dataDir)
	if err != nil {
		return nil, err
	}
	d := &Driver{
		opts:   opts,
		db:     db,
		logger: opts.Logger,
		closed: make(chan struct{}),
		nodes:  map[string]*node{},
		// Each Berth starts its port search at a random place, so that two
		// Berths on one machine (each with its own data directory) rarely
		// race for the same free port.
		nextPort: opts.Ports.Min + randomInt(opts.Ports.Max-opts.Ports.Min+1),
	}
	if err := d.recoverNodes(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("re-attaching to nodes: %w", err)
	}
	d.bg.Add(1)
	go d.capLogs()
	return d, nil
}

// Close stops supervising and closes the state database. Nodes keep running;
// the next Open re-attaches to them.
func (d *Driver) Close() error {
	select {
	case <-d.closed:
		return nil
	default:
	}
	close(d.closed)
	d.bg.Wait()
	return d.db.Close()
}

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
			resp.Clusters[n-1].Nodes = append(resp.Clusters[n-1].Nodes, platform.DiscoveredNode{
				AgentAddress: rec.Spec.AgentAddress,
				NodeID:       rec.NodeID,
				NodeClass:    rec.Class,
				NodeGroup:    &group,
				Addresses:    rec.addresses(),
			})
			return nil
		})
	})
	if err != nil {
		return platform.DiscoveryResponse{}, fmt.Errorf("reading node state: %w", err)
	}
	return resp, nil
}

func (r *nodeRecord) addresses() map[string]string {
	addresses := make(map[string]string, len(r.Ports))
	for name, port := range r.Ports {
		addresses[name] = net.JoinHostPort(loopback, strconv.Itoa(port))
	}
	return addresses
}

// Nodes lists every node with its processes, for operators.
func (d *Driver) Nodes(ctx context.Context) ([]platform.NodeStatus, error) {
	nodes := []platform.NodeStatus{}
	err := d.db.View(func(tx *bolt.Tx) error {
		return forEachNode(tx, "", func(rec *nodeRecord) error {
			status := platform.NodeStatus{
				ClusterID: rec.ClusterID, NodeID: rec.NodeID, NodeGroup: rec.Group, NodeClass: rec.Class,
				Store: rec.Store, Version: rec.Version, State: rec.State, AgentAddress: rec.Spec.AgentAddress,
				Addresses: rec.addresses(), Processes: []platform.ProcessStatus{}, CreatedAt: rec.CreatedAt,
			}
			for _, p := range rec.Processes {
				status.Processes = append(status.Processes, platform.ProcessStatus{
					Name: p.Name, PID: p.PID, State: p.State, Restarts: p.Restarts, LastExit: p.LastExit, StartedAt: p.StartedAt,
				})
			}
			nodes = append(nodes, status)
			return nil
		})
	})
	return nodes, err
}

// OpenLog opens the current log file of one process of a node.
func (d *Driver) OpenLog(ctx context.Context, clusterID, nodeID, process string) (*os.File, error) {
	rec, err := d.record(clusterID, nodeID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, platform.Errorf(platform.ENOTFOUND, "cluster %q has no node %q on this platform", clusterID, nodeID)
	}
	var names []string
	for _, p := range rec.Spec.Processes {
		names = append(names, p.Name)
	}
	if process == "" && len(names) > 0 {
		process = names[0]
	}
	for _, name := range names {
		if name == process {
			f, err := os.Open(filepath.Join(d.dirs(rec).Logs, name+".log"))
			if errors.Is(err, os.ErrNotExist) {
				return nil, platform.Errorf(platform.ENOTFOUND, "process %q of node %q has no log yet", process, nodeID)
			}
			return f, err
		}
	}
	return nil, platform.Errorf(platform.ENOTFOUND, "node %q has no process %q (it has: %v)", nodeID, process, names)
}

// Provision records and starts up to req.Provision.Count nodes, never more
// than the group's desired_count minus the nodes it already has. Nodes are
// recorded (durably) before anything starts, then started one after the
// other (init steps, processes, post_start hooks), so that each node's
// template can rely on the nodes before it. If any node fails, every node of
// the request is stopped and removed.
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

	if req.Idempotency != nil {
		// Retries with one key run one at a time: the second sees the
		// first's answer.
		unlock := d.busy.Lock("idempotency\x00" + req.Idempotency.Key)
		defer unlock()
		if first, err := d.replay(req.Idempotency); err != nil || first != nil {
			if first != nil {
				d.logger.InfoContext(ctx, "provision retried; answering as the first time", "cluster_id", req.Cluster.ClusterID,
					"idempotency_key", req.Idempotency.Key, "request_id", platform.RequestID(ctx))
				return *first, nil
			}
			return platform.ProvisionResponse{}, err
		}
	}
	records, err := d.reserve(req, tmpl, names.Ports)
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	resp := platform.ProvisionResponse{Count: len(records), NodeIDs: make([]string, 0, len(records))}
	for _, rec := range records {
		resp.NodeIDs = append(resp.NodeIDs, rec.NodeID)
	}
	if len(records) == 0 {
		err := d.update(func(tx *bolt.Tx) error { return remember(tx, req.Idempotency, resp) })
		return resp, err
	}
	// The request's client going away must not leave half-started nodes.
	ctx = context.WithoutCancel(ctx)
	for _, rec := range records {
		if err := d.start(ctx, rec); err != nil {
			d.logger.WarnContext(ctx, "node provision failed", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
				"error", err, "request_id", platform.RequestID(ctx))
			d.rollback(ctx, records)
			return platform.ProvisionResponse{}, err
		}
	}
	// Only now is the provision answered: a node still "starting" after a
	// crash is one nobody was told about, and is rolled back.
	err = d.update(func(tx *bolt.Tx) error {
		for _, rec := range records {
			stored, err := getNode(tx, rec.ClusterID, rec.NodeID)
			if err != nil || stored == nil {
				return fmt.Errorf("node %s lost its record: %v", rec.NodeID, err)
			}
			stored.State = nodeState(stored.Processes)
			if err := putNode(tx, stored); err != nil {
				return err
			}
		}
		return remember(tx, req.Idempotency, resp)
	})
	if err != nil {
		d.rollback(ctx, records)
		return platform.ProvisionResponse{}, fmt.Errorf("recording started nodes: %w", err)
	}
	for _, rec := range records {
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
	body, hooks := tmpl.Split("hooks")
	hooksSource := ""
	if hooks != nil {
		var err error
		if hooksSource, err = hooks.Source(); err != nil {
			return nil, err
		}
	}
	attributes := req.Attributes()
	var records []*nodeRecord
	err := d.update(func(tx *bolt.Tx) error {
		records = nil
		existing := 0
		taken := map[string]bool{}
		var peers []*nodeRecord
		err := forEachNode(tx, req.Cluster.ClusterID, func(rec *nodeRecord) error {
			taken[rec.NodeID] = true
			if rec.Group == req.Provision.NodeGroupID {
				existing++
			}
			if rec.State != stateStopping {
				peers = append(peers, rec)
			}
			return nil
		})
		if err != nil {
			return err
		}
		n := min(req.Provision.Count, group.DesiredCount-existing)
		for i := 0; i < n; i++ {
			rec := &nodeRecord{
				ClusterID:  req.Cluster.ClusterID,
				NodeID:     platform.NewNodeID(func(id string) bool { return taken[id] }),
				Group:      req.Provision.NodeGroupID,
				Class:      group.NodeClass,
				Store:      req.Cluster.Store,
				Version:    req.StoreVersion(),
				Template:   tmpl.Name,
				Hooks:      hooksSource,
				Attributes: attributes,
				Ports:      map[string]int{},
				State:      stateStarting,
				CreatedAt:  time.Now().UTC(),
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
			if err := body.Render(d.templateContext(rec, peers), &rec.Spec); err != nil {
				return err
			}
			rec.Spec.Ports = portNames
			if err := rec.Spec.resolve(); err != nil {
				return platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", tmpl.Name, err)
			}
			if err := rec.Spec.checkHost(); err != nil {
				return platform.Errorf(platform.EUNPROCESSABLE, "%s %s cannot run here: %v", rec.Store, rec.Version, err)
			}
			if err := putNode(tx, rec); err != nil {
				return err
			}
			records = append(records, rec)
			peers = append(peers, rec)
		}
		return nil
	})
	return records, err
}

// templateContext is what a node's template renders with.
func (d *Driver) templateContext(rec *nodeRecord, peers []*nodeRecord) catalog.Context {
	ctx := catalog.Context{
		ClusterID:  rec.ClusterID,
		NodeID:     rec.NodeID,
		NodeGroup:  rec.Group,
		NodeClass:  rec.Class,
		Store:      rec.Store,
		Version:    rec.Version,
		Attributes: rec.Attributes,
		Ports:      rec.Ports,
		Dirs:       d.dirs(rec).templateValues(),
	}
	sorted := append([]*nodeRecord(nil), peers...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].CreatedAt.Before(sorted[j].CreatedAt) })
	for _, p := range sorted {
		if p.NodeID != rec.NodeID {
			ctx.Peers = append(ctx.Peers, catalog.Peer{NodeID: p.NodeID, NodeGroup: p.Group, NodeClass: p.Class, Ports: p.Ports})
		}
	}
	return ctx
}

// currentPeers returns the other nodes of rec's cluster that are not being
// removed.
func (d *Driver) currentPeers(rec *nodeRecord) ([]*nodeRecord, error) {
	var peers []*nodeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		return forEachNode(tx, rec.ClusterID, func(p *nodeRecord) error {
			if p.NodeID != rec.NodeID && p.State != stateStopping {
				peers = append(peers, p)
			}
			return nil
		})
	})
	return peers, err
}

// start brings up one recorded node: directories, init steps, processes
// (recorded as they start), then post_start hooks.
func (d *Driver) start(ctx context.Context, rec *nodeRecord) error {
	dirs := d.dirs(rec)
	owner, err := rec.Spec.owner()
	if err != nil {
		return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s", rec.NodeID)
	}
	if err := dirs.create(owner); err != nil {
		return fmt.Errorf("node %s: %w", rec.NodeID, err)
	}
	if err := owner.checkReach(dirs.Data); err != nil {
		return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s cannot run here", rec.NodeID)
	}
	if err := d.runInit(ctx, rec); err != nil {
		return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s failed to initialise", rec.NodeID)
	}
	n := d.supervisor(rec.ClusterID, rec.NodeID)
	for _, spec := range rec.Spec.Processes {
		r, err := d.startProcess(rec, spec)
		if err != nil {
			return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s: process %s failed to start", rec.NodeID, spec.Name)
		}
		// Recorded before anything else happens, so that a crash from now
		// on finds the process by its record (or, before this, by its
		// markers). The record is read and written again rather than
		// overwritten: an earlier process may have exited meanwhile.
		if err := d.updateProcess(n, spec.Name, func(p *processRecord) { *p = r.rec }); err != nil {
			_ = r.rec.signalGroup(syscall.SIGKILL)
			return fmt.Errorf("recording process %s of node %s: %w", spec.Name, rec.NodeID, err)
		}
		d.watch(n, spec, r)
	}
	if fresh, err := d.record(rec.ClusterID, rec.NodeID); err == nil && fresh != nil {
		rec.Processes = fresh.Processes
	}
	d.logger.InfoContext(ctx, "node started", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
		"processes", len(rec.Processes), "request_id", platform.RequestID(ctx))
	if err := d.runHooks(ctx, rec, "post_start"); err != nil {
		return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s", rec.NodeID)
	}
	return nil
}

// rollback stops and removes nodes whose provision failed.
func (d *Driver) rollback(ctx context.Context, records []*nodeRecord) {
	for _, rec := range records {
		if fresh, err := d.record(rec.ClusterID, rec.NodeID); err == nil && fresh != nil {
			rec = fresh
		}
		if len(rec.Processes) > 0 {
			if err := d.runHooks(ctx, rec, "pre_stop"); err != nil {
				d.logger.WarnContext(ctx, "pre_stop hook of a node being rolled back", "cluster_id", rec.ClusterID,
					"node_id", rec.NodeID, "error", err, "request_id", platform.RequestID(ctx))
			}
		}
		if err := d.remove(ctx, rec); err != nil {
			d.logger.ErrorContext(ctx, "removing node after failed provision", "cluster_id", rec.ClusterID,
				"node_id", rec.NodeID, "error", err, "request_id", platform.RequestID(ctx))
		}
	}
}

// Deprovision runs a node's pre_stop hooks, stops its processes (stop
// signal, then SIGKILL after the grace period), removes its directory and
// deletes its record.
func (d *Driver) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	unlock := d.busy.Lock(string(nodeKey(req.ClusterID, req.NodeID)))
	defer unlock()
	rec, err := d.record(req.ClusterID, req.NodeID)
	if err != nil {
		return fmt.Errorf("reading node state: %w", err)
	}
	if rec == nil {
		return platform.Errorf(platform.ENOTFOUND, "cluster %q has no node %q on this platform", req.ClusterID, req.NodeID)
	}
	ctx = context.WithoutCancel(ctx)
	if rec.State != stateStopping {
		if err := d.runHooks(ctx, rec, "pre_stop"); err != nil {
			return platform.Wrap(platform.EUNPROCESSABLE, err, "node %s was not deprovisioned: its pre_stop hook failed", rec.NodeID)
		}
		err = d.update(func(tx *bolt.Tx) error {
			stored, err := getNode(tx, rec.ClusterID, rec.NodeID)
			if err != nil || stored == nil {
				return err
			}
			stored.State = stateStopping
			rec = stored
			return putNode(tx, stored)
		})
		if err != nil {
			return fmt.Errorf("recording node state: %w", err)
		}
	}
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
	if err := d.stopNode(ctx, rec); err != nil {
		return fmt.Errorf("stopping node %s: %w", rec.NodeID, err)
	}
	dirs := d.dirs(rec)
	if err := os.RemoveAll(dirs.Node); err != nil {
		return fmt.Errorf("removing node directory: %w", err)
	}
	// The cluster directory goes with its last node; Remove fails harmlessly
	// while other nodes remain.
	_ = os.Remove(filepath.Dir(dirs.Node))
	err := d.update(func(tx *bolt.Tx) error { return deleteNode(tx, rec) })
	if err != nil {
		return fmt.Errorf("deleting node record: %w", err)
	}
	return nil
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

// create makes the node's directories, owned by the account its processes
// run as (nil: Berth's own).
func (n nodeDirs) create(owner *credential) error {
	for _, dir := range []string{n.Data, n.Logs} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
	}
	if owner != nil {
		// The cluster directory must let the account reach its node.
		if err := os.Chmod(filepath.Dir(n.Node), 0o755); err != nil {
			return err
		}
	}
	return owner.chownTree(n.Node, n.Data, n.Logs)
}

func randomInt(n int) int {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return int(uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3])) % n
}
