package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/berthio/berth/platform"
)

// An Idempotency-Key is kept on the objects a provision applies, so that it
// lives exactly as long as the nodes it made and survives a restart of
// Berth: every object of a provision with a key carries
//
//	label      k8s.replicante.io/idempotency-key-hash  a hash of the key (label values are short)
//	annotation k8s.replicante.io/idempotency-key       the key itself
//	annotation k8s.replicante.io/idempotency-digest    the request's digest
//	annotation k8s.replicante.io/idempotency-at        when the provision began (RFC 3339, UTC)
//	annotation k8s.replicante.io/idempotency-index     the node's place in the answer (0, 1, ...)
//
// A provision with a key first lists, from the API server, the pods carrying
// the key's hash. Pods being deleted, pods of another key with the same hash
// and pods stamped more than platform.IdempotencyWindow ago are ignored. If
// any pod is left and its digest is the request's, the provision is a retry:
// it is answered with those pods' nodes, in their order, and nothing is
// applied. Another digest is EUNPROCESSABLE. No pod means a new request.
//
// Because a node's Pod is applied last, a pod found is a whole node. So a
// retry of a provision that Berth did not live to answer gets the nodes that
// were completed (its other nodes were never listed, and the sweep removes
// their objects). A provision that made no node (count 0) leaves nothing to
// carry its key: a retry is evaluated anew, and so is a retry after every
// node of the first answer has been deprovisioned.
const (
	LabelIdempotencyKeyHash     = "k8s.replicante.io/idempotency-key-hash"
	AnnotationIdempotencyKey    = "k8s.replicante.io/idempotency-key"
	AnnotationIdempotencyDigest = "k8s.replicante.io/idempotency-digest"
	AnnotationIdempotencyAt     = "k8s.replicante.io/idempotency-at"
	AnnotationIdempotencyIndex  = "k8s.replicante.io/idempotency-index"
)

// HonoursIdempotencyKeys tells the server that this driver keeps keys.
func (d *Driver) HonoursIdempotencyKeys() bool { return true }

// keyHash is the label value for a key: 40 hex digits of its SHA-256.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:20])
}

// stamp marks one object of a keyed provision.
func stamp(u *unstructured.Unstructured, idem *platform.Idempotency, at time.Time, index int) {
	l := u.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	l[LabelIdempotencyKeyHash] = keyHash(idem.Key)
	u.SetLabels(l)
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[AnnotationIdempotencyKey] = idem.Key
	a[AnnotationIdempotencyDigest] = idem.Digest
	a[AnnotationIdempotencyAt] = at.UTC().Format(time.RFC3339)
	a[AnnotationIdempotencyIndex] = strconv.Itoa(index)
	u.SetAnnotations(a)
}

// replay returns the answer for a retry, built from the nodes its first
// attempt made; nil when the key is new (or forgotten); EUNPROCESSABLE when
// the key came with another request. The caller holds the key's lock.
func (d *Driver) replay(ctx context.Context, idem *platform.Idempotency) (*platform.ProvisionResponse, error) {
	pods, err := d.listKeyPods(ctx, idem.Key)
	if err != nil {
		return nil, err
	}
	type found struct {
		pod   *corev1.Pod
		index int
	}
	var nodes []found
	seen := map[string]bool{}
	for i := range pods {
		pod := &pods[i]
		a := pod.Annotations
		if pod.DeletionTimestamp != nil || a[AnnotationIdempotencyKey] != idem.Key {
			continue
		}
		at, err := time.Parse(time.RFC3339, a[AnnotationIdempotencyAt])
		if err != nil || time.Since(at) > platform.IdempotencyWindow {
			continue
		}
		if a[AnnotationIdempotencyDigest] != idem.Digest {
			return nil, platform.Errorf(platform.EUNPROCESSABLE,
				"Idempotency-Key %q was used at %s for another provision request; use a new key for a new request",
				idem.Key, at.Format(time.RFC3339))
		}
		id := pod.Labels[LabelClusterID] + "/" + pod.Labels[LabelNodeID]
		if seen[id] {
			continue
		}
		seen[id] = true
		index, _ := strconv.Atoi(a[AnnotationIdempotencyIndex])
		nodes = append(nodes, found{pod, index})
	}
	if len(nodes) == 0 {
		return nil, nil
	}
	sort.SliceStable(nodes, func(i, j int) bool {
		if nodes[i].index != nodes[j].index {
			return nodes[i].index < nodes[j].index
		}
		return nodes[i].pod.Labels[LabelNodeID] < nodes[j].pod.Labels[LabelNodeID]
	})
	resp := &platform.ProvisionResponse{Count: len(nodes), NodeIDs: make([]string, 0, len(nodes))}
	for _, n := range nodes {
		resp.NodeIDs = append(resp.NodeIDs, n.pod.Labels[LabelNodeID])
	}
	// After a restart the cache may still be filling: a discovery right
	// after the answer should list its nodes.
	d.waitForCache(ctx, func() bool {
		for _, n := range nodes {
			if d.cachedPod(n.pod.Namespace, n.pod.Name) == nil {
				return false
			}
		}
		return true
	})
	return resp, nil
}

// listKeyPods lists, from the API server, Berth's pods that carry the key's
// hash, in every configured namespace.
func (d *Driver) listKeyPods(ctx context.Context, key string) ([]corev1.Pod, error) {
	selector := d.selector.DeepCopySelector()
	r, err := labels.NewRequirement(LabelIdempotencyKeyHash, selection.Equals, []string{keyHash(key)})
	if err != nil {
		return nil, err
	}
	exists, _ := labels.NewRequirement(LabelNodeID, selection.Exists, nil)
	selector = selector.Add(*r, *exists)
	var pods []corev1.Pod
	for _, ns := range d.opts.Namespaces {
		list, err := d.pods.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
		if err != nil {
			return nil, apiError(err, "listing the pods of an Idempotency-Key in namespace "+ns)
		}
		pods = append(pods, list.Items...)
	}
	return pods, nil
}
