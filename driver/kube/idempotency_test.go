package kube

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/berthio/berth/platform"
)

func keyed(req platform.ProvisionRequest, key, digest string) platform.ProvisionRequest {
	req.Idempotency = &platform.Idempotency{Key: key, Digest: digest}
	return req
}

func provisionWith(t *testing.T, d *Driver, req platform.ProvisionRequest) platform.ProvisionResponse {
	t.Helper()
	resp, err := d.Provision(context.Background(), req)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if resp.Count != len(resp.NodeIDs) {
		t.Fatalf("provision answered %+v", resp)
	}
	return resp
}

// A retry with the same key and request gets the first answer and applies
// nothing, from the same driver and from a new one (a restarted Berth); the
// key with another request is 422. The key is on every object.
func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t, nil)
	req := keyed(provisionRequest("idem", "default", 10, 2, map[string]any{"template": "everything"}), "key-1", "digest-1")
	first := provisionWith(t, e.d, req)
	if first.Count != 2 {
		t.Fatalf("first provision: %+v", first)
	}
	before := e.objects(t, LabelClusterID+"=idem")
	if len(before) != 8 {
		t.Fatalf("objects %v, want 4 for each of 2 nodes", before)
	}
	// Every object carries the key.
	stamped := e.objects(t, LabelIdempotencyKeyHash+"="+keyHash("key-1"))
	if !reflect.DeepEqual(stamped, before) {
		t.Errorf("objects with the key's label %v, want all of %v", stamped, before)
	}
	for kind, gvr := range kindResources {
		list, err := e.dyn.Resource(gvr).Namespace(e.namespaces[0]).List(context.Background(), metav1.ListOptions{LabelSelector: LabelClusterID + "=idem"})
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range list.Items {
			a := item.GetAnnotations()
			if a[AnnotationIdempotencyKey] != "key-1" || a[AnnotationIdempotencyDigest] != "digest-1" || a[AnnotationIdempotencyAt] == "" {
				t.Errorf("%s %s: annotations %v", kind, item.GetName(), a)
			}
		}
	}

	again := provisionWith(t, e.d, req)
	if !reflect.DeepEqual(again, first) {
		t.Errorf("retry answered %+v, want the first answer %+v", again, first)
	}
	restarted := openDriver(t, Options{Config: e.c.AdminConfig(), Namespaces: e.namespaces})
	again = provisionWith(t, restarted, req)
	if !reflect.DeepEqual(again, first) {
		t.Errorf("retry after a restart answered %+v, want the first answer %+v", again, first)
	}
	if after := e.objects(t, LabelClusterID+"=idem"); !reflect.DeepEqual(after, before) {
		t.Errorf("retries changed the objects: %v, were %v", after, before)
	}

	other := keyed(provisionRequest("idem", "default", 10, 1, map[string]any{"template": "everything"}), "key-1", "digest-2")
	for name, d := range map[string]*Driver{"same driver": e.d, "restarted": restarted} {
		_, err := d.Provision(context.Background(), other)
		if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(platform.ErrorMessage(err), `Idempotency-Key "key-1" was used at `) ||
			!strings.Contains(platform.ErrorMessage(err), "for another provision request") {
			t.Errorf("%s: the key with another request: %v", name, err)
		}
		// Another cluster is another request too.
		_, err = d.Provision(context.Background(), keyed(provisionRequest("idem-other", "default", 10, 2, nil), "key-1", "digest-3"))
		if platform.ErrorCode(err) != platform.EUNPROCESSABLE {
			t.Errorf("%s: the key for another cluster: %v", name, err)
		}
	}
	if left := e.objects(t, LabelClusterID+"=idem-other"); len(left) > 0 {
		t.Errorf("a refused key created %v", left)
	}
	if after := e.objects(t, LabelClusterID+"=idem"); !reflect.DeepEqual(after, before) {
		t.Errorf("refused requests changed the objects: %v, were %v", after, before)
	}
}

// Provisions with one key, at once, in one Berth: one provisions, the
// others get its answer.
func TestIdempotencyKeyConcurrentRetries(t *testing.T) {
	e := newEnv(t, nil)
	// The longest key there is: its label is a hash of it.
	key := strings.Repeat("k", 255)
	req := keyed(provisionRequest("idem-c", "default", 10, 2, nil), key, "digest")
	answers := make([]platform.ProvisionResponse, 6)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.d.Provision(context.Background(), req)
			if err != nil {
				t.Error(err)
			}
			answers[i] = resp
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if a.Count != 2 || !reflect.DeepEqual(a, answers[0]) {
			t.Errorf("answer %d: %+v, answer 0: %+v", i, a, answers[0])
		}
	}
	if got := e.objects(t, LabelClusterID+"=idem-c"); len(got) != 4 {
		t.Errorf("objects %v, want 2 pods and 2 services", got)
	}
}

// The key is forgotten after the window (by the time stamped on the pods);
// a provision that made no node, or whose nodes are all gone, has nothing
// to carry its key, so its retry is evaluated anew.
func TestIdempotencyKeyForgotten(t *testing.T) {
	e := newEnv(t, nil)
	ns := e.namespaces[0]
	req := keyed(provisionRequest("idem-f", "default", 10, 2, nil), "key-old", "digest")
	old := provisionWith(t, e.d, req)
	stale := time.Now().Add(-platform.IdempotencyWindow - time.Minute).UTC().Format(time.RFC3339)
	for _, id := range old.NodeIDs {
		patch := fmt.Sprintf(`{"metadata": {"annotations": {%q: %q}}}`, AnnotationIdempotencyAt, stale)
		if _, err := e.c.Admin(t).CoreV1().Pods(ns).Patch(context.Background(), id, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	fresh := provisionWith(t, e.d, req)
	if fresh.Count != 2 || fresh.NodeIDs[0] == old.NodeIDs[0] || fresh.NodeIDs[0] == old.NodeIDs[1] {
		t.Errorf("a key older than the window answered %+v (first answer %+v), want new nodes", fresh, old)
	}
	// The expired nodes do not count any more, whatever their digest.
	if again := provisionWith(t, e.d, req); !reflect.DeepEqual(again, fresh) {
		t.Errorf("retry answered %+v, want %+v", again, fresh)
	}

	// A full group: count 0, and nothing carries the key.
	full := keyed(provisionRequest("idem-full", "default", 1, 1, nil), "key-full", "digest")
	ids := e.provision(t, provisionRequest("idem-full", "default", 1, 1, nil))
	if resp := provisionWith(t, e.d, full); resp.Count != 0 {
		t.Fatalf("a full group answered %+v", resp)
	}
	if err := e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "idem-full", NodeID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if resp := provisionWith(t, e.d, full); resp.Count != 1 {
		t.Errorf("the retry of a provision that made no node answered %+v, want it evaluated anew", resp)
	}
}
