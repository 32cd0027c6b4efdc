package docker

import (
	"context"
	"errors"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/volume"
	"github.com/moby/moby/client"

	"github.com/berthio/berth/platform"
)

// Crash safety. A provision makes a node's objects one engine call at a
// time, and a deprovision removes them likewise; a Berth killed in between
// leaves part of a node. The engine, not Berth, must therefore say what was
// under way, as it is the only state, and any Berth serving it (this one,
// restarted, or another) must be able to finish or undo the work:
//
//   - Before it makes anything of a node, a provision creates the node's
//     marker: an empty volume berth-<cluster>-<node>.provision labelled with
//     the node and the time by which the provision is given up for dead
//     (LabelExpires: now + Options.StaleAfter). It removes the marker once
//     every container of the node has started, and before it answers.
//   - A deprovision creates berth-<cluster>-<node>.deprovision (expiring
//     after the grace period and StaleAfter, and saying whether the volume
//     is kept) before it stops anything, and removes it last.
//   - A node any of whose containers has never started (the engine's state
//     "created") is incomplete: it is not discovered and does not count
//     towards desired_count.
//   - The sweep (sweepLoop) looks for markers that outlived their expiry,
//     and for their nodes: a provision's node that is complete stays (its
//     provision got as far as starting it; only the answer may be lost) and
//     loses its marker; an incomplete one is removed with its volume. A
//     deprovision's node is removed, as it would have been. Incomplete
//     nodes without a marker are given one, so they are removed unless they
//     complete in time, and networks of clusters without containers that
//     are older than StaleAfter are removed.
//
// The sweep runs when the driver opens, when a list shows an incomplete
// node it does not know of, and when a marker it waits for expires. Nodes
// this Berth is provisioning or deprovisioning are never swept. A marker of
// another live Berth is only taken for a crashed one's when that Berth's
// work outlasts StaleAfter (beyond its grace period, for a deprovision).

// Marker kinds (LabelMarker).
const (
	MarkerProvision   = "provision"
	MarkerDeprovision = "deprovision"
)

// DefaultStaleAfter is the default of Options.StaleAfter.
const DefaultStaleAfter = 30 * time.Second

func markerName(clusterID, nodeID, kind string) string {
	return volumeName(clusterID, nodeID) + "." + kind
}

// mark creates a node's marker of kind, expiring at expires, and returns
// its labels: those of the marker there already, if an interrupted
// provision or deprovision left one (the engine keeps an existing volume).
func (d *Driver) mark(ctx context.Context, clusterID, nodeID, kind string, expires time.Time, keepData bool) (map[string]string, error) {
	labels := map[string]string{
		LabelCluster: clusterID,
		LabelNode:    nodeID,
		LabelMarker:  kind,
		LabelExpires: expires.UTC().Format(time.RFC3339Nano),
	}
	if kind == MarkerDeprovision {
		labels[LabelKeepData] = strconv.FormatBool(keepData)
	}
	name := markerName(clusterID, nodeID, kind)
	res, err := d.engine.VolumeCreate(ctx, client.VolumeCreateOptions{Name: name, Labels: labels})
	if err != nil {
		return nil, d.engineError(err, "node %s: creating marker volume %s", nodeID, name)
	}
	return res.Volume.Labels, nil
}

// unmark removes a node's markers of the kinds given.
func (d *Driver) unmark(ctx context.Context, clusterID, nodeID string, kinds ...string) error {
	for _, kind := range kinds {
		name := markerName(clusterID, nodeID, kind)
		if _, err := d.engine.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return d.engineError(err, "node %s: removing marker volume %s", nodeID, name)
		}
	}
	return nil
}

// nodeMarkers are the markers of one node.
type nodeMarkers struct {
	provision, deprovision bool
	keepData               bool
	expires                time.Time // the latest of the markers'
}

func (m *nodeMarkers) add(v volume.Volume) {
	expires, err := time.Parse(time.RFC3339Nano, v.Labels[LabelExpires])
	if err != nil {
		expires = time.Time{} // unreadable: expired
	}
	if expires.After(m.expires) {
		m.expires = expires
	}
	switch v.Labels[LabelMarker] {
	case MarkerDeprovision:
		m.deprovision = true
		m.keepData = v.Labels[LabelKeepData] == "true"
	default:
		m.provision = true
	}
}

// markersOf lists the markers of one node, or of all nodes for "".
func (d *Driver) markersOf(ctx context.Context, clusterID, nodeID string) (map[[2]string]*nodeMarkers, error) {
	filters := client.Filters{}.Add("label", LabelMarker)
	if clusterID != "" {
		filters.Add("label", LabelCluster+"="+clusterID, LabelNode+"="+nodeID)
	}
	res, err := d.engine.VolumeList(ctx, client.VolumeListOptions{Filters: filters})
	if err != nil {
		return nil, d.engineError(err, "listing marker volumes")
	}
	markers := map[[2]string]*nodeMarkers{}
	for _, v := range res.Items {
		key := [2]string{v.Labels[LabelCluster], v.Labels[LabelNode]}
		if key[0] == "" || key[1] == "" {
			continue
		}
		if markers[key] == nil {
			markers[key] = &nodeMarkers{}
		}
		markers[key].add(v)
	}
	return markers, nil
}

// sweepLoop runs the sweep when the driver opens, when asked (sweepNow),
// and when a marker it waits for expires, until ctx ends.
func (d *Driver) sweepLoop(ctx context.Context) {
	defer close(d.sweepDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-d.sweepNow:
		}
		next := d.sweep(ctx)
		timer.Stop()
		if next > 0 {
			timer.Reset(next)
		}
	}
}

// noteIncomplete asks for a sweep when nodes holds an incomplete node the
// last sweep did not see, at most once a second.
func (d *Driver) noteIncomplete(nodes []*node) {
	d.sweepMu.Lock()
	defer d.sweepMu.Unlock()
	for _, n := range nodes {
		if n.Complete || d.watched[[2]string{n.ClusterID, n.NodeID}] {
			continue
		}
		if time.Since(d.lastAsked) >= time.Second {
			d.lastAsked = time.Now()
			select {
			case d.sweepNow <- struct{}{}:
			default:
			}
		}
		return
	}
}

// sweep finishes or undoes the work of expired markers, marks incomplete
// nodes that have no marker, removes networks left without containers, and
// returns when to sweep again (0: only when asked).
func (d *Driver) sweep(ctx context.Context) time.Duration {
	var next time.Duration
	later := func(at time.Time) {
		wait := max(time.Until(at), time.Second)
		if next == 0 || wait < next {
			next = wait
		}
	}
	retry := func(err error) time.Duration {
		switch {
		case ctx.Err() != nil:
		case platform.ErrorCode(err) == platform.EUNAVAILABLE:
			// Ready says so already; the sweep tries again later.
			d.logger.DebugContext(ctx, "looking for the leftovers of interrupted provisions and deprovisions", "error", err)
		default:
			d.logger.WarnContext(ctx, "looking for the leftovers of interrupted provisions and deprovisions", "error", err)
		}
		return d.opts.StaleAfter
	}
	markers, err := d.markersOf(ctx, "", "")
	if err != nil {
		return retry(err)
	}
	nodes, err := d.list(ctx, "")
	if err != nil {
		return retry(err)
	}
	now := time.Now()
	watched := map[[2]string]bool{}
	for key, m := range markers {
		watched[key] = true
		switch {
		case d.busy(key):
			later(now.Add(d.opts.StaleAfter))
		case now.Before(m.expires):
			later(m.expires)
		default:
			if err := d.resolve(ctx, key, m); err != nil {
				if ctx.Err() != nil {
					return 0
				}
				d.logger.WarnContext(ctx, "finishing the work of an expired marker", "cluster_id", key[0], "node_id", key[1], "error", err)
				later(now.Add(d.opts.StaleAfter))
				continue
			}
			delete(watched, key)
		}
	}
	clusters := map[string]bool{}
	for _, n := range nodes {
		key := [2]string{n.ClusterID, n.NodeID}
		clusters[n.ClusterID] = true
		if n.Complete || markers[key] != nil {
			continue
		}
		watched[key] = true
		if d.busy(key) {
			later(now.Add(d.opts.StaleAfter))
			continue
		}
		// Made by a Berth that did not mark its nodes, or that is
		// making it right now and marked it after the list above.
		expires := now.Add(d.opts.StaleAfter)
		if _, err := d.mark(ctx, n.ClusterID, n.NodeID, MarkerProvision, expires, false); err != nil {
			return retry(err)
		}
		later(expires)
	}
	for key := range markers {
		clusters[key[0]] = true
	}
	if wait := d.sweepNetworks(ctx, clusters, now); wait > 0 && (next == 0 || wait < next) {
		next = wait
	}
	d.sweepMu.Lock()
	d.watched = watched
	d.sweepMu.Unlock()
	return next
}

// busy tells whether this Berth is provisioning or deprovisioning a node.
func (d *Driver) busy(key [2]string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := d.clusters[key[0]]
	if cs == nil {
		return false
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, pending := cs.pending[key[1]]
	return pending || cs.stopping[key[1]]
}

// errBusy says that a node is this Berth's work in progress.
var errBusy = errors.New("this Berth is working on the node")

// resolve finishes or undoes the work of a node's expired markers, and
// removes them.
func (d *Driver) resolve(ctx context.Context, key [2]string, m *nodeMarkers) error {
	clusterID, nodeID := key[0], key[1]
	cs := d.cluster(clusterID)
	defer d.release(clusterID, cs)
	unlock := cs.lockNode(nodeID)
	defer unlock()
	if d.busy(key) {
		return errBusy
	}
	nodes, err := d.list(ctx, clusterID)
	if err != nil {
		return err
	}
	n := &node{ClusterID: clusterID, NodeID: nodeID}
	for _, candidate := range nodes {
		if candidate.NodeID == nodeID {
			n = candidate
		}
	}
	ids := make([]string, len(n.Containers))
	for i, c := range n.Containers {
		ids[i] = c.ID
	}
	what := "removed an interrupted provision's incomplete node"
	switch {
	case m.deprovision:
		what = "finished an interrupted deprovision"
		if err := d.removeNode(ctx, n, ids, !m.keepData); err != nil {
			return err
		}
	case n.Complete:
		what = "kept an interrupted provision's node, which had started"
	default:
		if err := d.removeNode(ctx, n, ids, true); err != nil {
			return err
		}
	}
	if err := d.unmark(ctx, clusterID, nodeID, MarkerProvision, MarkerDeprovision); err != nil {
		return err
	}
	d.removeNetworkIfUnused(ctx, cs, clusterID)
	d.logger.InfoContext(ctx, what, "cluster_id", clusterID, "node_id", nodeID, "containers", len(ids))
	return nil
}

// sweepNetworks removes the networks of clusters with neither containers nor
// markers (a provision that stopped between creating the network and
// marking its first node leaves one) once they are StaleAfter old, and
// returns when to look again for younger ones (0: none).
func (d *Driver) sweepNetworks(ctx context.Context, clusters map[string]bool, now time.Time) time.Duration {
	res, err := d.engine.NetworkList(ctx, client.NetworkListOptions{Filters: client.Filters{}.Add("label", LabelCluster)})
	if err != nil {
		return d.opts.StaleAfter
	}
	var next time.Duration
	for _, nw := range res.Items {
		clusterID := nw.Labels[LabelCluster]
		if clusterID == "" || clusters[clusterID] || nw.Name != networkName(clusterID) {
			continue
		}
		created, err := time.Parse(time.RFC3339Nano, nw.Labels[LabelCreated])
		if err != nil {
			created = nw.Created
		}
		if wait := created.Add(d.opts.StaleAfter).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = max(wait, time.Second)
			}
			continue
		}
		cs := d.cluster(clusterID)
		d.removeNetworkIfUnused(ctx, cs, clusterID)
		d.release(clusterID, cs)
	}
	return next
}
