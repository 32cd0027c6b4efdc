package kube

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// The sweep removes orphans: objects labelled as a node's (and matching the
// selector) whose node has no Pod in any configured namespace. A provision
// applies a node's Pod last and a deprovision deletes it last, so an object
// without its Pod is one of
//
//   - a provision in flight, between its first apply and its Pod;
//   - what a provision left when Berth died before the Pod, or when its
//     rollback could not delete everything;
//   - the rest of a node whose Pod someone else deleted.
//
// None of the last two is listed by discovery or known to the orchestrator,
// and nothing else would ever remove them. To spare the first, an object is
// deleted only when two passes at least OrphanGrace apart both found it
// orphaned (by its UID, on this process's clock, whatever the API server's
// clock says), and OrphanGrace outlasts any provision. The first pass runs
// when the driver opens, the next every OrphanGrace/2, so a leftover goes
// between one and one and a half OrphanGrace after Berth (re)starts.

// sweepLoop runs the sweep until Close.
func (d *Driver) sweepLoop() {
	defer d.sweeper.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-d.stop
		cancel()
	}()
	orphans := map[types.UID]time.Time{}
	interval := d.opts.OrphanGrace / 2
	for {
		d.sweep(ctx, orphans)
		select {
		case <-d.stop:
			return
		case <-time.After(interval):
		}
	}
}

// sweep is one pass: it deletes the orphans that an earlier pass, at least
// OrphanGrace ago, found orphaned too, and remembers the new ones in
// orphans (by UID, with when they were first found).
func (d *Driver) sweep(ctx context.Context, orphans map[types.UID]time.Time) {
	selector := d.selector.DeepCopySelector()
	for _, key := range []string{LabelClusterID, LabelNodeID} {
		r, _ := labels.NewRequirement(key, selection.Exists, nil)
		selector = selector.Add(*r)
	}
	type candidate struct {
		client          dynamic.ResourceInterface
		name            string
		uid             types.UID
		node            string // cluster/node
		cluster, nodeID string
		desc            string
	}
	// The other objects first, then the pods: an object is an orphan only
	// if its pod did not exist after the object was seen.
	var candidates []candidate
	for _, gk := range d.kinds {
		if gk == podKind {
			continue
		}
		mapping, err := d.mapper.RESTMapping(gk)
		if meta.IsNoMatchError(err) {
			continue
		} else if err != nil {
			if ctx.Err() == nil {
				d.logger.WarnContext(ctx, "sweep: looking up a kind", "kind", kindName(gk), "error", err)
			}
			return
		}
		if ctx.Err() != nil {
			return // closing
		}
		for _, ns := range d.opts.Namespaces {
			client := d.dyn.Resource(mapping.Resource).Namespace(ns)
			list, err := client.List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
			if err != nil {
				if ctx.Err() == nil {
					d.logger.WarnContext(ctx, "sweep: listing objects", "resource", mapping.Resource.Resource, "namespace", ns, "error", err)
				}
				return
			}
			for _, item := range list.Items {
				if item.GetDeletionTimestamp() != nil {
					continue
				}
				l := item.GetLabels()
				candidates = append(candidates, candidate{
					client: client, name: item.GetName(), uid: item.GetUID(),
					node: l[LabelClusterID] + "/" + l[LabelNodeID], cluster: l[LabelClusterID], nodeID: l[LabelNodeID],
					desc: fmt.Sprintf("%s %s/%s", gk.Kind, ns, item.GetName()),
				})
			}
		}
	}
	withPod := map[string]bool{}
	for _, ns := range d.opts.Namespaces {
		list, err := d.pods.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
		if err != nil {
			if ctx.Err() == nil {
				d.logger.WarnContext(ctx, "sweep: listing pods", "namespace", ns, "error", err)
			}
			return
		}
		for _, pod := range list.Items {
			// A pod being deleted still counts: its deprovision is under way.
			withPod[pod.Labels[LabelClusterID]+"/"+pod.Labels[LabelNodeID]] = true
		}
	}
	now := time.Now()
	still := map[types.UID]bool{}
	for _, c := range candidates {
		if withPod[c.node] {
			continue
		}
		still[c.uid] = true
		first, known := orphans[c.uid]
		if !known {
			orphans[c.uid] = now
			continue
		}
		if now.Sub(first) < d.opts.OrphanGrace {
			continue
		}
		err := c.client.Delete(ctx, c.name, deleteOptions(c.uid))
		switch {
		case err == nil:
			d.logger.InfoContext(ctx, "removed an object of a node that has no pod (a provision cut short, or a pod deleted by someone else)",
				"cluster_id", c.cluster, "node_id", c.nodeID, "object", c.desc, "orphaned_for", now.Sub(first).Round(time.Second))
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		default:
			if ctx.Err() == nil {
				d.logger.WarnContext(ctx, "sweep: deleting an object of a node that has no pod", "object", c.desc, "error", err)
			}
			continue
		}
		delete(orphans, c.uid)
		delete(still, c.uid)
	}
	for uid := range orphans {
		if !still[uid] {
			delete(orphans, uid)
		}
	}
}
