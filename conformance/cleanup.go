package conformance

import (
	"context"
	"fmt"
	"net/http"
	"sort"
)

// cleanupRounds bounds how often the cleanup looks again for nodes that
// appeared while it worked (a platform that replaces what it removes).
const cleanupRounds = 3

// cleanup deprovisions every node the run created: every node listed in the
// run's clusters and every node ID a provision answer returned. It uses a
// context of its own, so that it also runs when the run was interrupted.
func (k *kit) cleanup(parent context.Context) CleanupReport {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), k.cfg.CleanupTimeout)
	defer cancel()
	rep := CleanupReport{Deprovisioned: []NodeRef{}, Failed: []NodeFailure{}}
	tried := map[NodeRef]bool{}
	for ref := range k.deprovisioned {
		tried[ref] = true
	}
	ours := func(clusterID string) bool {
		if clusterID == k.clusterID || clusterID == k.rejectClusterID {
			return true
		}
		// A cluster that did not exist before the run can only hold a node
		// the run created if the platform said so (a returned node ID).
		if k.baseline == nil {
			return false
		}
		_, existed := k.baseline.clusters[clusterID]
		return !existed
	}
	for round := 0; round < cleanupRounds; round++ {
		var targets []NodeRef
		add := func(ref NodeRef) {
			if !tried[ref] {
				tried[ref] = true
				targets = append(targets, ref)
			}
		}
		d, err := k.rawDiscover(ctx)
		if err != nil {
			d = nil
			rep.Error = fmt.Sprintf("discovery failed during the cleanup: %v", err)
		} else {
			rep.Error = ""
			for _, clusterID := range []string{k.clusterID, k.rejectClusterID} {
				for _, id := range sortedKeys(d.nodeIDs(clusterID)) {
					add(NodeRef{ClusterID: clusterID, NodeID: id})
				}
			}
		}
		for clusterID, ids := range k.returned {
			for _, id := range ids {
				found := false
				if d != nil {
					for listedIn, nodes := range d.clusters {
						if _, ok := nodes[id]; ok && ours(listedIn) {
							add(NodeRef{ClusterID: listedIn, NodeID: id})
							found = true
						}
					}
				}
				if !found {
					add(NodeRef{ClusterID: clusterID, NodeID: id})
				}
			}
		}
		if len(targets) == 0 {
			break
		}
		sort.Slice(targets, func(i, j int) bool {
			if targets[i].ClusterID != targets[j].ClusterID {
				return targets[i].ClusterID < targets[j].ClusterID
			}
			return targets[i].NodeID < targets[j].NodeID
		})
		for _, ref := range targets {
			a, err := k.do(ctx, http.MethodPost, "deprovision", deprovisionBody(ref.ClusterID, ref.NodeID))
			switch {
			case err != nil:
				rep.Failed = append(rep.Failed, NodeFailure{NodeRef: ref, Error: err.Error()})
			case a.ok() || a.status == http.StatusNotFound:
				rep.Deprovisioned = append(rep.Deprovisioned, ref)
			default:
				rep.Failed = append(rep.Failed, NodeFailure{NodeRef: ref, Error: "answered " + a.describe()})
			}
		}
	}
	if len(rep.Deprovisioned) > 0 || len(rep.Failed) > 0 {
		k.logf("cleanup: deprovisioned %d node(s), %d failed", len(rep.Deprovisioned), len(rep.Failed))
	}
	return rep
}

// rawDiscover makes a discovery that no check judges.
func (k *kit) rawDiscover(ctx context.Context) (*discovery, error) {
	a, err := k.do(ctx, http.MethodGet, "discover", nil)
	if err != nil {
		return nil, err
	}
	return parseDiscovery(a)
}
