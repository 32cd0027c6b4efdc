package kube

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/berthio/berth/platform"
)

// dying returns a configuration whose process "dies" at the first request
// that kill picks: that request is not sent, and from then on no request
// reaches the API server, as if Berth had been killed. Nothing it would
// have done afterwards (the rest of a provision, its rollback, the rest of
// a deprovision) happens.
func dying(cfg *rest.Config, kill func(*http.Request) bool) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	var dead atomic.Bool
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if dead.Load() || kill(r) {
				dead.Store(true)
				return nil, errors.New("berth was killed")
			}
			return rt.RoundTrip(r)
		})
	})
	return cfg
}

// applies picks the n-th server-side apply of a resource ("pods").
func applies(resource string, n int64) func(*http.Request) bool {
	var count atomic.Int64
	return func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.Contains(r.URL.Path, "/"+resource+"/") && count.Add(1) == n
	}
}

// deletes picks the first delete of a resource.
func deletes(resource string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/"+resource+"/")
	}
}

// nodeIDs are the node IDs on the objects of a cluster, and those of them
// with a pod.
func (e *env) nodeIDs(t *testing.T, clusterID string) (all, withPod []string) {
	t.Helper()
	seen := map[string]bool{}
	for _, obj := range e.objects(t, LabelClusterID+"="+clusterID) {
		kind, rest, _ := strings.Cut(obj, " ")
		_, name, _ := strings.Cut(rest, "/")
		if !seen[name] {
			seen[name] = true
			all = append(all, name)
		}
		if kind == "Pod" {
			withPod = append(withPod, name)
		}
	}
	return all, withPod
}

// Berth dies during a provision of two nodes, after the first node is made
// and before the second node's Pod (the last object of a node): after a
// restart the first node is listed, whole; the second was never listed and
// the sweep removes its objects; a retry with the same key gets the first
// node and makes nothing.
func TestCrashDuringProvision(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Config = dying(o.Config, applies("pods", 2)) })
	req := keyed(provisionRequest("crash", "default", 5, 2, map[string]any{"template": "everything"}), "crash-key", "digest")
	if _, err := e.d.Provision(context.Background(), req); platform.ErrorCode(err) != platform.EUNAVAILABLE {
		t.Fatalf("provision that died: %v", err)
	}
	e.d.Close()
	all, withPod := e.nodeIDs(t, "crash")
	if len(all) != 2 || len(withPod) != 1 {
		t.Fatalf("after the crash the nodes are %v, with pods %v: want two, one with its pod", all, withPod)
	}
	whole, half := withPod[0], all[0]
	if half == whole {
		half = all[1]
	}
	ns := e.namespaces[0]
	if got := e.objects(t, nodeSelector("crash", half)); len(got) != 3 || slices.Contains(got, "Pod "+ns+"/"+half) {
		t.Fatalf("the half-made node has %v, want its ConfigMap, PVC and Service and no pod", got)
	}
	wholeObjects := e.objects(t, nodeSelector("crash", whole))
	if len(wholeObjects) != 4 {
		t.Fatalf("the whole node has %v", wholeObjects)
	}

	restarted := openDriver(t, Options{Config: e.c.AdminConfig(), Namespaces: e.namespaces, OrphanGrace: 300 * time.Millisecond})
	e.d = restarted
	if nodes := e.nodes(t, "crash"); len(nodes) != 1 || nodes[whole].NodeID != whole {
		t.Errorf("after the restart discovery lists %v, want only %s", nodes, whole)
	}
	resp := provisionWith(t, restarted, req)
	if want := (platform.ProvisionResponse{Count: 1, NodeIDs: []string{whole}}); !reflect.DeepEqual(resp, want) {
		t.Errorf("the retry answered %+v, want %+v", resp, want)
	}
	eventually(t, "the sweep to remove the half-made node", func() bool {
		return len(e.objects(t, nodeSelector("crash", half))) == 0
	})
	if got := e.objects(t, nodeSelector("crash", whole)); !reflect.DeepEqual(got, wholeObjects) {
		t.Errorf("the whole node's objects are %v, were %v", got, wholeObjects)
	}
	if all, _ := e.nodeIDs(t, "crash"); len(all) != 1 {
		t.Errorf("nodes after the retry: %v", all)
	}
	if err := restarted.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "crash", NodeID: whole}); err != nil {
		t.Fatal(err)
	}
}

// Berth dies before any Pod of a keyed provision: no node was ever listed,
// so a retry with the key is a new provision; the leftovers are swept.
func TestCrashBeforeAnyPod(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Config = dying(o.Config, applies("pods", 1)) })
	req := keyed(provisionRequest("crash0", "default", 5, 2, map[string]any{"template": "everything"}), "crash0-key", "digest")
	if _, err := e.d.Provision(context.Background(), req); platform.ErrorCode(err) != platform.EUNAVAILABLE {
		t.Fatalf("provision that died: %v", err)
	}
	e.d.Close()
	leftovers, withPod := e.nodeIDs(t, "crash0")
	if len(leftovers) != 1 || len(withPod) != 0 {
		t.Fatalf("after the crash: nodes %v, with pods %v; want one node without its pod", leftovers, withPod)
	}
	restarted := openDriver(t, Options{Config: e.c.AdminConfig(), Namespaces: e.namespaces, OrphanGrace: 300 * time.Millisecond})
	e.d = restarted
	if nodes := e.nodes(t, "crash0"); len(nodes) != 0 {
		t.Errorf("after the restart discovery lists %v", nodes)
	}
	resp := provisionWith(t, restarted, req)
	if resp.Count != 2 || slices.Contains(resp.NodeIDs, leftovers[0]) {
		t.Errorf("the retry answered %+v, want two new nodes", resp)
	}
	eventually(t, "the sweep to remove the leftovers", func() bool {
		return len(e.objects(t, nodeSelector("crash0", leftovers[0]))) == 0
	})
	if all, withPod := e.nodeIDs(t, "crash0"); len(all) != 2 || len(withPod) != 2 {
		t.Errorf("after the sweep: nodes %v, with pods %v", all, withPod)
	}
}

// Berth dies during a deprovision, at each of its deletes: the node is
// still listed (its Pod goes last), by this Berth and by a restarted one,
// and deprovisioning it again finishes the job.
func TestCrashDuringDeprovision(t *testing.T) {
	e := newEnv(t, nil)
	ns := e.namespaces[0]
	for _, resource := range []string{"services", "persistentvolumeclaims", "configmaps", "pods"} {
		t.Run(resource, func(t *testing.T) {
			id := e.provision(t, provisionRequest("halfgone", "default", 10, 1, map[string]any{"template": "everything"}))[0]
			dd := openDriver(t, Options{Config: dying(e.c.AdminConfig(), deletes(resource)), Namespaces: e.namespaces, OrphanGrace: -1})
			err := dd.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "halfgone", NodeID: id})
			if err == nil {
				t.Fatal("the deprovision that died succeeded")
			}
			dd.Close()
			left := e.objects(t, nodeSelector("halfgone", id))
			if !slices.Contains(left, "Pod "+ns+"/"+id) {
				t.Fatalf("the interrupted deprovision left %v, without the pod", left)
			}
			if resource != "services" && slices.Contains(left, "Service "+ns+"/"+id) {
				t.Errorf("the Service should have gone before the %s: %v", resource, left)
			}
			restarted := openDriver(t, Options{Config: e.c.AdminConfig(), Namespaces: e.namespaces})
			for name, d := range map[string]*Driver{"the same Berth": e.d, "a restarted Berth": restarted} {
				listed := false
				resp, err := d.Discover(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range resp.Clusters {
					for _, n := range c.Nodes {
						listed = listed || (c.ClusterID == "halfgone" && n.NodeID == id)
					}
				}
				if !listed {
					t.Errorf("%s does not list the node that was half deprovisioned", name)
				}
			}
			if err := restarted.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "halfgone", NodeID: id}); err != nil {
				t.Fatalf("deprovisioning again: %v", err)
			}
			if left := e.objects(t, nodeSelector("halfgone", id)); len(left) > 0 {
				t.Errorf("deprovisioning again left %v", left)
			}
			if _, listed := e.nodes(t, "halfgone")[id]; listed {
				t.Error("the node is still listed")
			}
			err = restarted.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "halfgone", NodeID: id})
			if platform.ErrorCode(err) != platform.ENOTFOUND {
				t.Errorf("a third deprovision: %v, want not found", err)
			}
		})
	}
}

// The sweep deletes only objects of a node that has no pod in any managed
// namespace, matching the selector, and only once two passes OrphanGrace
// apart found them so.
func TestSweep(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Selector = "team=data"; o.OrphanGrace = -1 })
	ns, ns2 := e.namespaces[0], e.namespaces[1]
	whole := e.provision(t, provisionRequest("sweep", "default", 5, 1, nil))[0]
	node := func(id string, extra map[string]string) map[string]string {
		l := map[string]string{LabelClusterID: "sweep", LabelNodeID: id, "team": "data"}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	cms := map[string]struct {
		ns     string
		labels map[string]string
		orphan bool
	}{
		"orphan":           {ns, node("node-orphan", nil), true},
		"orphan-elsewhere": {ns2, node("node-orphan2", nil), true},
		"companion":        {ns2, node(whole, nil), false}, // its pod is in the other namespace
		"unlabelled":       {ns, map[string]string{"team": "data"}, false},
		"cluster-only":     {ns, map[string]string{LabelClusterID: "sweep", "team": "data"}, false},
		"not-ours":         {ns, node("node-foreign", map[string]string{"team": "web"}), false},
	}
	admin := e.c.Admin(t)
	for name, cm := range cms {
		_, err := admin.CoreV1().ConfigMaps(cm.ns).Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: cm.labels},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		_, err := admin.CoreV1().ConfigMaps(cms[name].ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil
	}
	wholeObjects := e.objects(t, nodeSelector("sweep", whole))

	d := e.d
	d.opts.OrphanGrace = 300 * time.Millisecond // no sweep loop runs in d
	orphans := map[types.UID]time.Time{}
	d.sweep(context.Background(), orphans)
	d.sweep(context.Background(), orphans)
	if len(orphans) != 2 {
		t.Errorf("the sweep found %d orphans, want 2", len(orphans))
	}
	for name := range cms {
		if !exists(name) {
			t.Errorf("%s was deleted before it was an orphan for OrphanGrace", name)
		}
	}
	time.Sleep(d.opts.OrphanGrace)
	d.sweep(context.Background(), orphans)
	for name, cm := range cms {
		if exists(name) == cm.orphan {
			t.Errorf("%s: exists %v after the sweep", name, exists(name))
		}
	}
	if len(orphans) != 0 {
		t.Errorf("the sweep still remembers %v", orphans)
	}
	if got := e.objects(t, nodeSelector("sweep", whole)); !reflect.DeepEqual(got, wholeObjects) {
		t.Errorf("the whole node's objects are %v, were %v", got, wholeObjects)
	}

	// A driver sweeps from the moment it opens.
	_, err := admin.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: node("node-orphan", nil)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	openDriver(t, Options{Config: e.c.AdminConfig(), Namespaces: e.namespaces, Selector: "team=data", OrphanGrace: 300 * time.Millisecond})
	eventually(t, "the new driver's sweep", func() bool { return !exists("orphan") })
	if !exists("companion") {
		t.Error("the new driver's sweep deleted a companion of a whole node")
	}
}
