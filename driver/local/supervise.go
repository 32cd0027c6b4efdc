package local

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Restart backoff: 1 s, doubling to 30 s; a process that ran for a minute
// starts over at 1 s.
const (
	minBackoff   = time.Second
	maxBackoff   = 30 * time.Second
	backoffReset = time.Minute
)

// node is the supervision of one node's processes.
type node struct {
	clusterID, nodeID string

	mu       sync.Mutex
	stopping bool
	stop     chan struct{}       // closed when the node is being stopped
	procs    map[string]*running // the current run of each process
	wg       sync.WaitGroup      // one goroutine per supervised process
}

func newNode(clusterID, nodeID string) *node {
	return &node{clusterID: clusterID, nodeID: nodeID, stop: make(chan struct{}), procs: map[string]*running{}}
}

// supervisor returns the node's supervision, creating it.
func (d *Driver) supervisor(clusterID, nodeID string) *node {
	key := string(nodeKey(clusterID, nodeID))
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.nodes[key]
	if !ok {
		n = newNode(clusterID, nodeID)
		d.nodes[key] = n
	}
	return n
}

// watch supervises one running process until the node stops or the restart
// policy leaves the process down.
func (d *Driver) watch(n *node, spec ProcessSpec, r *running) {
	n.mu.Lock()
	n.procs[spec.Name] = r
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		d.superviseProcess(n, spec, r)
	}()
}

func (d *Driver) superviseProcess(n *node, spec ProcessSpec, r *running) {
	backoff := minBackoff
	for {
		status := r.wait()
		ranFor := time.Since(r.rec.StartedAt)
		select {
		case <-n.stop:
			return
		case <-d.closed:
			return
		default:
		}
		policy, err := d.restartPolicy(n)
		if err != nil {
			return // the record is gone: the node was deprovisioned
		}
		restart := policy == RestartAlways || policy == RestartOnFailure && status.failed()
		state := stateExited
		if restart {
			state = stateRestarting
		}
		d.logger.Warn("node process exited", "cluster_id", n.clusterID, "node_id", n.nodeID,
			"process", spec.Name, "pid", r.rec.PID, "status", status.String(), "restart", restart)
		d.updateProcess(n, spec.Name, func(p *processRecord) {
			p.State = state
			p.LastExit = fmt.Sprintf("%s at %s after %s", status, time.Now().UTC().Format(time.RFC3339), ranFor.Round(time.Second))
		})
		if !restart {
			return
		}
		if ranFor >= backoffReset {
			backoff = minBackoff
		}
		for {
			select {
			case <-time.After(backoff):
			case <-n.stop:
				return
			case <-d.closed:
				return
			}
			backoff = min(2*backoff, maxBackoff)
			next, err := d.restart(n, spec)
			if err == nil {
				r = next
				break
			}
			if n.isStopping() {
				return
			}
			d.logger.Error("restarting node process", "cluster_id", n.clusterID, "node_id", n.nodeID,
				"process", spec.Name, "error", err)
			d.updateProcess(n, spec.Name, func(p *processRecord) {
				p.LastExit = fmt.Sprintf("restart failed at %s: %v", time.Now().UTC().Format(time.RFC3339), err)
			})
		}
	}
}

// restart starts a process again, unless the node is being stopped; the
// check and the start happen under the node's lock, so a deprovision
// either sees the new process or prevents it.
func (d *Driver) restart(n *node, spec ProcessSpec) (*running, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return nil, fmt.Errorf("node is stopping")
	}
	rec, err := d.record(n.clusterID, n.nodeID)
	if err != nil || rec == nil {
		return nil, fmt.Errorf("node record: %v", err)
	}
	r, err := d.startProcess(rec, spec)
	if err != nil {
		return nil, err
	}
	n.procs[spec.Name] = r
	d.updateProcessLocked(n, spec.Name, func(p *processRecord) {
		restarts := p.Restarts + 1
		*p = r.rec
		p.Restarts = restarts
		p.LastExit = ""
	})
	d.logger.Info("node process restarted", "cluster_id", n.clusterID, "node_id", n.nodeID,
		"process", spec.Name, "pid", r.rec.PID)
	return r, nil
}

func (n *node) isStopping() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopping
}

// beginStop marks the node as stopping (no more restarts) and returns what
// runs now.
func (n *node) beginStop() []processRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.stopping {
		n.stopping = true
		close(n.stop)
	}
	var procs []processRecord
	for _, r := range n.procs {
		procs = append(procs, r.rec)
	}
	return procs
}

func (d *Driver) restartPolicy(n *node) (string, error) {
	rec, err := d.record(n.clusterID, n.nodeID)
	if err != nil || rec == nil {
		return "", fmt.Errorf("no record")
	}
	return rec.Spec.RestartPolicy, nil
}

// updateProcess changes one process's record, and the node's state with it
// (a node still starting stays starting until its provision is answered; a
// node being stopped is left alone).
func (d *Driver) updateProcess(n *node, name string, change func(*processRecord)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return d.updateProcessLocked(n, name, change)
}

func (d *Driver) updateProcessLocked(n *node, name string, change func(*processRecord)) error {
	err := d.update(func(tx *bolt.Tx) error {
		rec, err := getNode(tx, n.clusterID, n.nodeID)
		if err != nil || rec == nil || rec.State == stateStopping {
			return err
		}
		i := 0
		for i < len(rec.Processes) && rec.Processes[i].Name != name {
			i++
		}
		if i == len(rec.Processes) {
			rec.Processes = append(rec.Processes, processRecord{Name: name})
		}
		change(&rec.Processes[i])
		if rec.State != stateStarting {
			rec.State = nodeState(rec.Processes)
		}
		return putNode(tx, rec)
	})
	if err != nil {
		d.logger.Error("recording process state", "cluster_id", n.clusterID, "node_id", n.nodeID, "process", name, "error", err)
	}
	return err
}

// nodeState derives a node's state from its processes'.
func nodeState(procs []processRecord) string {
	state := stateRunning
	for _, p := range procs {
		switch p.State {
		case stateExited:
			return stateExited
		case stateRestarting:
			state = stateRestarting
		}
	}
	return state
}

// record reads one node's record.
func (d *Driver) record(clusterID, nodeID string) (*nodeRecord, error) {
	var rec *nodeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getNode(tx, clusterID, nodeID)
		return err
	})
	return rec, err
}

// stopNode ends supervision of a node and stops its processes.
func (d *Driver) stopNode(ctx context.Context, rec *nodeRecord) error {
	n := d.supervisor(rec.ClusterID, rec.NodeID)
	procs := n.beginStop()
	// Processes recorded but not (or no longer) watched, such as those of a
	// node Berth found after a crash, are stopped too.
	seen := map[int]bool{}
	for _, p := range procs {
		seen[p.PID] = true
	}
	for _, p := range rec.Processes {
		if !seen[p.PID] {
			procs = append(procs, p)
		}
	}
	signals := map[string]syscall.Signal{}
	for _, p := range rec.Spec.Processes {
		signals[p.Name], _ = parseSignal(p.StopSignal)
	}
	err := stopProcesses(ctx, procs, signals, d.opts.GracePeriod)
	n.wg.Wait()
	d.mu.Lock()
	delete(d.nodes, string(rec.key()))
	d.mu.Unlock()
	return err
}
