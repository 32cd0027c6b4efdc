package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// deprovisionBody is a deprovision request.
func deprovisionBody(clusterID, nodeID string) []byte {
	b, err := json.Marshal(map[string]string{"cluster_id": clusterID, "node_id": nodeID})
	if err != nil {
		panic(err) // two strings always encode
	}
	return b
}

// deprovisionOne deprovisions one provisioned node and concludes
// deprovision-status, deprovision-gone and deprovision-not-replaced; before
// holds the IDs its cluster listed just before.
func (k *kit) deprovisionOne(ctx context.Context, target string, before map[string]bool) {
	// The node may leave discovery from now on without breaking
	// node-ids-stable; its sibling may not.
	delete(k.watching, target)
	k.logf("deprovisioning node %s of cluster %s", target, k.clusterID)
	a, err := k.do(ctx, http.MethodPost, "deprovision", deprovisionBody(k.clusterID, target))
	if ctx.Err() != nil {
		return
	}
	switch {
	case err != nil:
		k.fail(checkDeprovisionStatus, "no answer: %v", err)
		k.skipAll("the deprovision got no answer", checkDeprovisionGone, checkDeprovisionNotReplaced)
		return
	case a.status == http.StatusOK || a.status == http.StatusNoContent:
		k.pass(checkDeprovisionStatus, "answered %d %s", a.status, http.StatusText(a.status))
	case a.ok():
		k.fail(checkDeprovisionStatus, "answered %s; want 200 or 204", a.describe())
	default:
		k.fail(checkDeprovisionStatus, "answered %s; want 200 or 204", a.describe())
		k.skipAll("the deprovision was refused", checkDeprovisionGone, checkDeprovisionNotReplaced)
		return
	}
	k.deprovisioned[NodeRef{ClusterID: k.clusterID, NodeID: target}] = true

	start := time.Now()
	k.logf("waiting up to %s for node %s to leave discovery", k.cfg.WaitTimeout, target)
	gone, ok := k.poll(ctx, k.cfg.WaitTimeout, func(d *discovery) bool { return !d.nodeIDs(k.clusterID)[target] })
	if ctx.Err() != nil {
		return
	}
	if !ok {
		if gone == nil {
			k.fail(checkDeprovisionGone, "no usable discovery within %s", k.cfg.WaitTimeout)
		} else {
			k.fail(checkDeprovisionGone, "node %s is still listed %s after its deprovision", target, k.cfg.WaitTimeout)
		}
		k.skip(checkDeprovisionNotReplaced, "the deprovisioned node never left discovery")
		return
	}
	k.pass(checkDeprovisionGone, "node %s left discovery after %s", target, time.Since(start).Round(time.Millisecond))

	// From the discovery that saw the node go on, the cluster may list only
	// what it listed before, less the node: a replacement made together
	// with the deprovision counts too.
	var problem string
	replaced := func(d *discovery) bool {
		var added []string
		for _, id := range sortedKeys(d.nodeIDs(k.clusterID)) {
			if id == target {
				problem = fmt.Sprintf("node %s is listed again after it left discovery", target)
				return true
			}
			if !before[id] {
				added = append(added, id)
			}
		}
		if len(added) > 0 {
			problem = fmt.Sprintf("node(s) %s appeared in cluster %s after node %s was deprovisioned", strings.Join(added, " "), k.clusterID, target)
			return true
		}
		return false
	}
	violated := replaced(gone)
	if !violated {
		k.logf("watching cluster %s for %s (the quiet period) for a replacement", k.clusterID, k.cfg.QuietPeriod)
		_, violated = k.poll(ctx, k.cfg.QuietPeriod, replaced)
	}
	if ctx.Err() != nil {
		return
	}
	if violated {
		k.fail(checkDeprovisionNotReplaced, "%s", problem)
		return
	}
	k.pass(checkDeprovisionNotReplaced, "no node replaced %s during the %s quiet period", target, k.cfg.QuietPeriod)
}

// runDeprovisionMissing concludes deprovision-missing with a node ID the
// platform cannot have, in the kit's own cluster.
func (k *kit) runDeprovisionMissing(ctx context.Context) {
	id := "conformance-missing-" + randomID(8)
	a, err := k.do(ctx, http.MethodPost, "deprovision", deprovisionBody(k.clusterID, id))
	if ctx.Err() != nil {
		return
	}
	switch {
	case err != nil:
		k.fail(checkDeprovisionMissing, "no answer: %v", err)
	case a.status == http.StatusNotFound:
		k.pass(checkDeprovisionMissing, "answered %s", a.describe())
	case a.ok():
		k.fail(checkDeprovisionMissing, "answered %s for node %s, which does not exist: a success reports a termination that did not happen; want 404", a.describe(), id)
	default:
		k.fail(checkDeprovisionMissing, "answered %s for node %s, which does not exist; want 404", a.describe(), id)
	}
}
