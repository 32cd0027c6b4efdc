package kube

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/kubetest"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

var cluster kubetest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Stop()
	os.Exit(code)
}

// testTemplates is a catalogue layered over the built-in one: each store
// rule matches an attribute "template", so a test picks its template by
// attribute and everything else gets the built-in Redis template.
var testTemplates = fstest.MapFS{
	"kube/stores.yaml": {Data: []byte(`
- store: redis
  attributes: {template: annotated}
  versions: annotated.yaml
- store: redis
  attributes: {template: everything}
  versions: everything.yaml
- store: redis
  attributes: {template: invalid-service}
  versions: invalid-service.yaml
- store: redis
  attributes: {template: fixed-name}
  versions: fixed-name.yaml
- store: redis
  attributes: {template: elsewhere}
  versions: elsewhere.yaml
- store: redis
  attributes: {template: deployment}
  versions: deployment.yaml
- store: redis
  attributes: {template: two-pods}
  versions: two-pods.yaml
`)},
	"kube/annotated.yaml":       {Data: []byte("- version: '*'\n  template: annotated-pod.yaml\n")},
	"kube/everything.yaml":      {Data: []byte("- version: '*'\n  template: everything-pod.yaml\n")},
	"kube/invalid-service.yaml": {Data: []byte("- version: '*'\n  template: invalid-service-pod.yaml\n")},
	"kube/fixed-name.yaml":      {Data: []byte("- version: '*'\n  template: fixed-name-pod.yaml\n")},
	"kube/elsewhere.yaml":       {Data: []byte("- version: '*'\n  template: elsewhere-pod.yaml\n")},
	"kube/deployment.yaml":      {Data: []byte("- version: '*'\n  template: deployment-pod.yaml\n")},
	"kube/two-pods.yaml":        {Data: []byte("- version: '*'\n  template: two-pods-pod.yaml\n")},
	"kube/annotated-pod.yaml":   {Data: []byte(annotatedPod)},
	"kube/everything-pod.yaml":  {Data: []byte(everythingPod)},
	"kube/invalid-service-pod.yaml": {Data: []byte(pod + `---
apiVersion: v1
kind: ConfigMap
metadata: {name: "{{ .NodeID }}-config"}
data: {redis.conf: "maxmemory 1mb"}
---
apiVersion: v1
kind: Service
metadata: {name: "{{ .NodeID }}"}
spec:
  ports: [{port: 70000}]
`)},
	"kube/fixed-name-pod.yaml": {Data: []byte(pod + `---
apiVersion: v1
kind: ConfigMap
metadata: {name: shared-config}
data: {owner: "{{ .NodeID }}"}
`)},
	"kube/elsewhere-pod.yaml": {Data: []byte(pod + `---
apiVersion: v1
kind: ConfigMap
metadata: {name: "{{ .NodeID }}", namespace: kube-system}
`)},
	"kube/deployment-pod.yaml": {Data: []byte(pod + `---
apiVersion: apps/v1
kind: Deployment
metadata: {name: "{{ .NodeID }}"}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec: {containers: [{name: c, image: busybox}]}
`)},
	"kube/two-pods-pod.yaml": {Data: []byte(pod + "---\n" + strings.Replace(pod, `"{{ .NodeID }}"`, `"{{ .NodeID }}-b"`, 1))},
}

const pod = `apiVersion: v1
kind: Pod
metadata:
  name: "{{ .NodeID }}"
spec:
  containers: [{name: redis, image: "redis:{{ .Version }}"}]
`

// annotatedPod carries the agent annotations as the attributes say; an
// empty annotation counts as absent.
const annotatedPod = `apiVersion: v1
kind: Pod
metadata:
  name: "{{ .NodeID }}"
  annotations:
    k8s.replicante.io/agent-address: '{{ .Attr "agent_address" "" }}'
    k8s.replicante.io/agent-ip-from: '{{ .Attr "agent_ip_from" "" }}'
    k8s.replicante.io/agent-schema: '{{ .Attr "agent_schema" "" }}'
    k8s.replicante.io/agent-port: '{{ .Attr "agent_port" "" }}'
spec:
  containers:
    - name: redis
      image: "redis:{{ .Version }}"
      ports: [{name: store, containerPort: 6379}]
---
apiVersion: v1
kind: Service
metadata: {name: "{{ .NodeID }}"}
spec:
  selector: {k8s.replicante.io/node-id: "{{ .NodeID }}"}
  ports: [{name: store, port: 6379}]
`

// everythingPod uses every default deprovision kind, the ConfigMap first.
const everythingPod = `apiVersion: v1
kind: ConfigMap
metadata: {name: "{{ .NodeID }}"}
data: {redis.conf: "maxmemory 1mb"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: "{{ .NodeID }}"}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
` + pod + `---
apiVersion: v1
kind: Service
metadata: {name: "{{ .NodeID }}"}
spec:
  ports: [{port: 6379}]
`

// env is one test's namespaces and driver.
type env struct {
	c          *kubetest.Cluster
	d          *Driver
	namespaces []string
	dyn        dynamic.Interface
}

// newEnv creates two namespaces and opens a driver on them with the admin's
// credentials (see TestDeployRBAC for Berth's own).
func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	c := cluster.Get(t)
	e := &env{c: c, namespaces: []string{kubetest.UniqueName("berth"), kubetest.UniqueName("berth-b")}}
	for _, ns := range e.namespaces {
		c.CreateNamespace(t, ns)
	}
	opts := Options{Config: c.AdminConfig(), Namespaces: e.namespaces}
	if mod != nil {
		mod(&opts)
	}
	e.d = openDriver(t, opts)
	dyn, err := dynamic.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.dyn = dyn
	return e
}

func openDriver(t *testing.T, opts Options) *Driver {
	t.Helper()
	if opts.Catalog == nil {
		opts.Catalog = testCatalog(t)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	d, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for d.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the driver's caches did not sync: %v", d.Ready(context.Background()))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// testCatalog layers testTemplates over the built-in catalogue.
func testCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.New(catalog.Layer{Name: "test", FS: testTemplates}, catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func provisionRequest(cluster, group string, desired, count int, attrs map[string]any) platform.ProvisionRequest {
	return platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			ClusterID: cluster, Store: "redis", StoreVersion: "7.0", Attributes: attrs,
			Nodes: map[string]platform.NodeGroup{group: {DesiredCount: desired, NodeClass: "small"}},
		},
		Provision: platform.ProvisionSpec{NodeGroupID: group, Count: count},
	}
}

func (e *env) provision(t *testing.T, req platform.ProvisionRequest) []string {
	t.Helper()
	resp, err := e.d.Provision(context.Background(), req)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if resp.Count != len(resp.NodeIDs) {
		t.Fatalf("provision answered %+v", resp)
	}
	return resp.NodeIDs
}

func (e *env) nodes(t *testing.T, clusterID string) map[string]platform.DiscoveredNode {
	t.Helper()
	resp, err := e.d.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]platform.DiscoveredNode{}
	for _, c := range resp.Clusters {
		if c.ClusterID == clusterID {
			for _, n := range c.Nodes {
				nodes[n.NodeID] = n
			}
		}
	}
	return nodes
}

// eventually waits for cond to hold, as the cache follows the API server.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var kindResources = map[string]schema.GroupVersionResource{
	"Pod":                   {Version: "v1", Resource: "pods"},
	"Service":               {Version: "v1", Resource: "services"},
	"ConfigMap":             {Version: "v1", Resource: "configmaps"},
	"PersistentVolumeClaim": {Version: "v1", Resource: "persistentvolumeclaims"},
	"Deployment":            {Group: "apps", Version: "v1", Resource: "deployments"},
}

// objects lists, as "Kind namespace/name", every object of the given kinds
// in the test's namespaces (and kube-system) that carries the selector's
// labels and is not being deleted.
func (e *env) objects(t *testing.T, selector string) []string {
	t.Helper()
	var out []string
	for kind, gvr := range kindResources {
		for _, ns := range append([]string{"kube-system"}, e.namespaces...) {
			list, err := e.dyn.Resource(gvr).Namespace(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				t.Fatal(err)
			}
			for _, item := range list.Items {
				if item.GetDeletionTimestamp() != nil {
					// Deleted, held by a finalizer that only a controller
					// manager would remove (pvc-protection).
					continue
				}
				out = append(out, fmt.Sprintf("%s %s/%s", kind, ns, item.GetName()))
			}
		}
	}
	sort.Strings(out)
	return out
}

func nodeSelector(clusterID, nodeID string) string {
	return LabelClusterID + "=" + clusterID + "," + LabelNodeID + "=" + nodeID
}

// Three Redis nodes from the built-in template: a Pod and a Service each,
// labelled, listed by discovery with the Service's name as agent address
// and, once a "kubelet" reports the pod IP, the store address; deprovision
// removes every object of every kind, and a second one is a 404.
func TestProvisionDiscoverDeprovisionRedis(t *testing.T) {
	e := newEnv(t, nil)
	ns := e.namespaces[0]
	ids := e.provision(t, provisionRequest("redis-a", "default", 3, 3, nil))
	if len(ids) != 3 {
		t.Fatalf("provisioned %v, want 3 nodes", ids)
	}
	for _, id := range ids {
		got := e.objects(t, nodeSelector("redis-a", id))
		want := []string{"Pod " + ns + "/" + id, "Service " + ns + "/" + id}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("node %s has objects %v, want %v", id, got, want)
		}
		p, err := e.c.Admin(t).CoreV1().Pods(ns).Get(context.Background(), id, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for key, want := range map[string]string{LabelClusterID: "redis-a", LabelNodeID: id, LabelNodeGroup: "default", LabelNodeClass: "small"} {
			if p.Labels[key] != want {
				t.Errorf("pod %s: label %s=%q, want %q", id, key, p.Labels[key], want)
			}
		}
		if img := p.Spec.Containers[0].Image; img != "redis:7.0" {
			t.Errorf("pod %s runs image %q", id, img)
		}
		managers := map[string]bool{}
		for _, mf := range p.ManagedFields {
			managers[mf.Manager+"/"+string(mf.Operation)] = true
		}
		if !managers["berth/Apply"] {
			t.Errorf("pod %s was not server-side applied by berth: %v", id, managers)
		}
	}

	// Listed at once (the answer waits for the cache), before any IP.
	nodes := e.nodes(t, "redis-a")
	if len(nodes) != 3 {
		t.Fatalf("discovery lists %v", nodes)
	}
	for _, id := range ids {
		n := nodes[id]
		if want := "http://" + id + "." + ns + ".svc:37000"; n.AgentAddress != want {
			t.Errorf("node %s: agent address %q, want %q", id, n.AgentAddress, want)
		}
		if n.NodeClass != "small" || n.NodeGroup == nil || *n.NodeGroup != "default" {
			t.Errorf("node %s: class %q group %v", id, n.NodeClass, n.NodeGroup)
		}
	}
	for i, id := range ids {
		e.c.SetPodIPs(t, ns, id, fmt.Sprintf("10.244.0.%d", i+1), "192.0.2.1")
	}
	eventually(t, "the store addresses", func() bool {
		nodes := e.nodes(t, "redis-a")
		for i, id := range ids {
			if nodes[id].Addresses["store"] != fmt.Sprintf("10.244.0.%d:6379", i+1) {
				return false
			}
		}
		return true
	})

	// A full group provisions nothing.
	if more := e.provision(t, provisionRequest("redis-a", "default", 3, 2, nil)); len(more) != 0 {
		t.Errorf("a full group provisioned %v", more)
	}

	for _, id := range ids {
		if err := e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "redis-a", NodeID: id}); err != nil {
			t.Fatalf("deprovision %s: %v", id, err)
		}
		if _, listed := e.nodes(t, "redis-a")[id]; listed {
			t.Errorf("node %s is still discovered after its deprovision", id)
		}
		if left := e.objects(t, nodeSelector("redis-a", id)); len(left) > 0 {
			t.Errorf("node %s left %v", id, left)
		}
	}
	err := e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "redis-a", NodeID: ids[0]})
	if platform.ErrorCode(err) != platform.ENOTFOUND {
		t.Errorf("second deprovision: %v, want not found", err)
	}
}

// Replicas find their primary through its Service, in its namespace.
func TestRedisReplicaOfPrimary(t *testing.T) {
	e := newEnv(t, nil)
	primary := e.provision(t, provisionRequest("redis-r", "primary", 1, 1, nil))
	req := provisionRequest("redis-r", "replica", 1, 1, map[string]any{NamespaceAttribute: e.namespaces[1]})
	replica := e.provision(t, req)
	p, err := e.c.Admin(t).CoreV1().Pods(e.namespaces[1]).Get(context.Background(), replica[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Join(p.Spec.Containers[0].Args, " ")
	if want := "--replicaof " + primary[0] + "." + e.namespaces[0] + ".svc 6379"; !strings.Contains(args, want) {
		t.Errorf("replica args %q lack %q", args, want)
	}
	// A replica with no primary is refused, and creates nothing.
	_, err = e.d.Provision(context.Background(), provisionRequest("redis-lonely", "replica", 1, 1, nil))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), "no node in group \"primary\"") {
		t.Errorf("replica without primary: %v", err)
	}
	if left := e.objects(t, LabelClusterID+"=redis-lonely"); len(left) > 0 {
		t.Errorf("a refused provision left %v", left)
	}
}

// The agent address of each node follows the annotation rules, through the
// real API server: one node per rule and per fallback, in one cluster, with
// a "kubelet" writing the pod and host IPs.
func TestDiscoveryAgentAddressAnnotations(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Agent = AgentConfig{IPFrom: IPFromNode, Schema: "tcp", Port: 4000} })
	ns := e.namespaces[0]
	cases := []struct {
		name  string
		attrs map[string]any
		want  string // %[1]s is the pod IP, %[2]s the host IP
	}{
		{"agent-address", map[string]any{"agent_address": "https://agent.example:9000", "agent_ip_from": "pod", "agent_schema": "x", "agent_port": "1"}, "https://agent.example:9000"},
		{"agent-ip-from pod", map[string]any{"agent_ip_from": "pod"}, "tcp://%[1]s:4000"},
		{"agent-ip-from node", map[string]any{"agent_ip_from": "node"}, "tcp://%[2]s:4000"},
		{"configured agent-ip-from", map[string]any{}, "tcp://%[2]s:4000"},
		{"agent-schema and agent-port", map[string]any{"agent_ip_from": "pod", "agent_schema": "https", "agent_port": "8443"}, "https://%[1]s:8443"},
		{"agent-schema without agent-port", map[string]any{"agent_ip_from": "pod", "agent_schema": "https"}, "tcp://%[1]s:4000"},
		{"agent-port without agent-schema", map[string]any{"agent_ip_from": "pod", "agent_port": "8443"}, "tcp://%[1]s:4000"},
	}
	ids := map[string]string{}
	for i, tc := range cases {
		attrs := map[string]any{"template": "annotated"}
		for k, v := range tc.attrs {
			attrs[k] = v
		}
		// desired_count grows with each group so that all share one cluster.
		got := e.provision(t, provisionRequest("agents", fmt.Sprintf("g%d", i), 1, 1, attrs))
		ids[tc.name] = got[0]
	}
	// Before the kubelet reports IPs only the agent-address node has one.
	nodes := e.nodes(t, "agents")
	for _, tc := range cases {
		want := ""
		if tc.name == "agent-address" {
			want = tc.want
		}
		if got := nodes[ids[tc.name]].AgentAddress; got != want {
			t.Errorf("%s, no IP yet: agent address %q, want %q", tc.name, got, want)
		}
	}
	for i, tc := range cases {
		e.c.SetPodIPs(t, ns, ids[tc.name], fmt.Sprintf("10.244.1.%d", i+1), fmt.Sprintf("192.0.2.%d", i+1))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if strings.Contains(want, "%") {
				want = fmt.Sprintf(want, fmt.Sprintf("10.244.1.%d", i+1), fmt.Sprintf("192.0.2.%d", i+1))
			}
			var got string
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if got = e.nodes(t, "agents")[ids[tc.name]].AgentAddress; got == want {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("agent address %q, want %q", got, want)
		})
	}
}

// The namespace attribute picks one of the configured namespaces; any other
// namespace, from the attribute or the template, is a 400 and creates
// nothing.
func TestNamespaces(t *testing.T) {
	e := newEnv(t, nil)
	ids := e.provision(t, provisionRequest("ns-c", "default", 1, 1, map[string]any{NamespaceAttribute: e.namespaces[1]}))
	if got := e.objects(t, nodeSelector("ns-c", ids[0])); len(got) != 2 || !strings.Contains(got[0], e.namespaces[1]+"/") {
		t.Errorf("objects %v, want them in %s", got, e.namespaces[1])
	}
	if _, listed := e.nodes(t, "ns-c")[ids[0]]; !listed {
		t.Error("a node in the second namespace is not discovered")
	}
	for name, attrs := range map[string]map[string]any{
		"attribute": {NamespaceAttribute: "kube-system"},
		"not text":  {NamespaceAttribute: 7},
		"template":  {"template": "elsewhere"},
	} {
		_, err := e.d.Provision(context.Background(), provisionRequest("ns-bad", "default", 1, 1, attrs))
		if platform.ErrorCode(err) != platform.EINVALID {
			t.Errorf("%s: provision into another namespace: %v, want invalid", name, err)
		}
		if name != "not text" && !strings.Contains(platform.ErrorMessage(err), `"kube-system" is not one this platform manages`) {
			t.Errorf("%s: message %q", name, platform.ErrorMessage(err))
		}
	}
	if left := e.objects(t, LabelClusterID+"=ns-bad"); len(left) > 0 {
		t.Errorf("refused provisions left %v", left)
	}
}

// An apply the API server refuses fails the provision with the object and
// the server's message, and leaves nothing of the request behind, however
// many objects were created before it.
func TestFailingApplyLeavesNothing(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.d.Provision(context.Background(), provisionRequest("fail", "default", 2, 2, map[string]any{"template": "invalid-service"}))
	msg := platform.ErrorMessage(err)
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(msg, "applying Service "+e.namespaces[0]+"/node-") ||
		!strings.Contains(msg, "70000") {
		t.Errorf("provision: %v (message %q)", err, msg)
	}
	if left := e.objects(t, LabelClusterID+"=fail"); len(left) > 0 {
		t.Errorf("a failed provision left %v", left)
	}

	// A name another node holds is a conflict: the second node's objects
	// go, the first node's stay as they were.
	first := e.provision(t, provisionRequest("fixed", "default", 2, 1, map[string]any{"template": "fixed-name"}))
	_, err = e.d.Provision(context.Background(), provisionRequest("fixed", "default", 2, 1, map[string]any{"template": "fixed-name"}))
	if platform.ErrorCode(err) != platform.ECONFLICT || !strings.Contains(err.Error(), "ConfigMap "+e.namespaces[0]+"/shared-config already exists (node "+first[0]) {
		t.Errorf("second provision: %v", err)
	}
	got := e.objects(t, LabelClusterID+"=fixed")
	want := []string{"ConfigMap " + e.namespaces[0] + "/shared-config", "Pod " + e.namespaces[0] + "/" + first[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("objects after the conflict: %v, want %v", got, want)
	}
	cm, err := e.c.Admin(t).CoreV1().ConfigMaps(e.namespaces[0]).Get(context.Background(), "shared-config", metav1.GetOptions{})
	if err != nil || cm.Data["owner"] != first[0] {
		t.Errorf("the first node's ConfigMap was changed: %v %v", cm.Data, err)
	}
}

// Templates are checked before anything is applied: exactly one Pod, only
// kinds deprovision deletes.
func TestTemplateChecks(t *testing.T) {
	e := newEnv(t, nil)
	for template, want := range map[string]string{
		"deployment": "Deployment.apps is not a kind deprovision deletes",
		"two-pods":   "must describe exactly one Pod, the node; it has 2",
	} {
		_, err := e.d.Provision(context.Background(), provisionRequest("checks", "default", 1, 1, map[string]any{"template": template}))
		if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", template, err, want)
		}
	}
	if left := e.objects(t, LabelClusterID+"=checks"); len(left) > 0 {
		t.Errorf("refused provisions left %v", left)
	}
	// With Deployments in the list the same template is fine.
	e2 := newEnv(t, func(o *Options) { o.DeprovisionKinds = []string{"Deployment.apps", "Pod"} })
	ids := e2.provision(t, provisionRequest("checks2", "default", 1, 1, map[string]any{"template": "deployment"}))
	if err := e2.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "checks2", NodeID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if left := e2.objects(t, LabelClusterID+"=checks2"); len(left) > 0 {
		t.Errorf("deprovision left %v", left)
	}
}

// Deprovision walks every kind of the list, in every namespace.
func TestDeprovisionEveryKind(t *testing.T) {
	e := newEnv(t, nil)
	ids := e.provision(t, provisionRequest("all", "default", 1, 1, map[string]any{"template": "everything"}))
	if got := e.objects(t, nodeSelector("all", ids[0])); len(got) != 4 {
		t.Fatalf("objects %v, want a ConfigMap, a PVC, a Pod and a Service", got)
	}
	// An object of the node in the second namespace goes too.
	_, err := e.c.Admin(t).CoreV1().ConfigMaps(e.namespaces[1]).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name: "extra", Labels: map[string]string{LabelClusterID: "all", LabelNodeID: ids[0]},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "all", NodeID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if left := e.objects(t, LabelClusterID+"=all"); len(left) > 0 {
		t.Errorf("deprovision left %v", left)
	}
	// The PVC waits for its pvc-protection finalizer; a second deprovision
	// does not count it as the node.
	for _, id := range []string{ids[0], "node-nothere"} {
		err = e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "all", NodeID: id})
		if platform.ErrorCode(err) != platform.ENOTFOUND {
			t.Errorf("deprovision of %s: %v, want not found", id, err)
		}
	}
}

// Concurrent provisions of one group never exceed its desired_count.
func TestDesiredCountUnderConcurrency(t *testing.T) {
	e := newEnv(t, nil)
	var wg sync.WaitGroup
	var total atomic.Int64
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.d.Provision(context.Background(), provisionRequest("count", "default", 3, 2, nil))
			if err != nil {
				t.Error(err)
				return
			}
			total.Add(int64(resp.Count))
		}()
	}
	wg.Wait()
	if total.Load() != 3 {
		t.Errorf("provisioned %d nodes, desired 3", total.Load())
	}
	if got := e.objects(t, LabelClusterID+"=count"); len(got) != 6 {
		t.Errorf("objects %v, want 3 pods and 3 services", got)
	}
}

// The selector narrows what Berth owns: its key=value terms label what Berth
// creates; pods without them are neither discovered nor deleted.
func TestSelector(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Selector = "team=data,tier!=test" })
	ids := e.provision(t, provisionRequest("sel", "default", 2, 1, nil))
	p, err := e.c.Admin(t).CoreV1().Pods(e.namespaces[0]).Get(context.Background(), ids[0], metav1.GetOptions{})
	if err != nil || p.Labels["team"] != "data" {
		t.Fatalf("pod labels %v, %v", p.Labels, err)
	}
	foreign := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "foreign", Labels: map[string]string{LabelClusterID: "sel", LabelNodeID: "node-foreign"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if _, err := e.c.Admin(t).CoreV1().Pods(e.namespaces[0]).Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if nodes := e.nodes(t, "sel"); len(nodes) != 1 {
		t.Errorf("discovery lists %v, want only Berth's node", nodes)
	}
	err = e.d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "sel", NodeID: "node-foreign"})
	if platform.ErrorCode(err) != platform.ENOTFOUND {
		t.Errorf("deprovision of a pod outside the selector: %v", err)
	}
}

// Once synced, discovery is served from the cache: no API request per
// discovery.
func TestDiscoveryMakesNoAPICalls(t *testing.T) {
	var requests atomic.Int64
	e := newEnv(t, func(o *Options) {
		o.Config = rest.CopyConfig(o.Config)
		o.Config.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				requests.Add(1)
				return rt.RoundTrip(r)
			})
		})
	})
	e.provision(t, provisionRequest("quiet", "default", 1, 1, nil))
	before := requests.Load()
	for range 100 {
		if nodes := e.nodes(t, "quiet"); len(nodes) != 1 {
			t.Fatalf("discovery lists %v", nodes)
		}
	}
	if after := requests.Load(); after != before {
		t.Errorf("100 discoveries made %d API requests", after-before)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A driver whose API server cannot be reached is not ready, and its
// discovery says it is unavailable.
func TestNotReadyWithoutAPIServer(t *testing.T) {
	cat, err := catalog.New(catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{Config: &rest.Config{Host: "https://127.0.0.1:1"}, Catalog: cat, Namespaces: []string{"a"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	time.Sleep(200 * time.Millisecond)
	if err := d.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "namespace(s) a") {
		t.Errorf("Ready: %v", err)
	}
	if _, err := d.Discover(context.Background()); platform.ErrorCode(err) != platform.EUNAVAILABLE {
		t.Errorf("Discover: %v", err)
	}
	_, err = d.Provision(context.Background(), provisionRequest("x", "default", 1, 1, nil))
	if platform.ErrorCode(err) != platform.EUNAVAILABLE {
		t.Errorf("Provision: %v", err)
	}
}

func TestOpenChecksOptions(t *testing.T) {
	cat, _ := catalog.New(catalog.Layer{Name: "built-in", FS: stores.FS()})
	good := Options{Config: &rest.Config{Host: "https://127.0.0.1:1"}, Catalog: cat, Namespaces: []string{"a"}}
	for name, mod := range map[string]func(*Options){
		"no config":     func(o *Options) { o.Config = nil },
		"no namespace":  func(o *Options) { o.Namespaces = nil },
		"bad namespace": func(o *Options) { o.Namespaces = []string{"A B"} },
		"bad ip-from":   func(o *Options) { o.Agent.IPFrom = "service" },
		"bad port":      func(o *Options) { o.Agent.Port = 70000 },
		"bad selector":  func(o *Options) { o.Selector = "a in (" },
		"bad kind":      func(o *Options) { o.DeprovisionKinds = []string{"pods"} },
	} {
		opts := good
		mod(&opts)
		if d, err := Open(opts); err == nil {
			d.Close()
			t.Errorf("%s: Open accepted %+v", name, opts)
		}
	}
}

// testLogger writes the driver's log to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
