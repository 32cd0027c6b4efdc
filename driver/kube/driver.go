// Package kube runs data store nodes as Kubernetes objects, so that Berth
// works unchanged on a cluster of any size.
//
// A node is one Pod plus whatever objects its catalogue template describes
// (Services, PersistentVolumeClaims, ConfigMaps, ...). Every object of a node
// carries four labels:
//
//	k8s.replicante.io/cluster-id   the cluster ID
//	k8s.replicante.io/node-id      the node ID ("node-" and 8 random characters)
//	k8s.replicante.io/node-group   the node group
//	k8s.replicante.io/node-class   the node class
//
// Discovery is served from an informer cache of the pods carrying the
// cluster-id and node-id labels (and matching the optional label selector)
// in every configured namespace: the pods are listed and watched once, and a
// discovery reads the cache without calling the API server. Ready reports an
// error until every namespace's cache has synced. A node's agent address
// follows the pod's k8s.replicante.io/agent-* annotations (see
// agentAddress).
//
// Provision renders the template's YAML documents, labels every object,
// checks that each goes into a configured namespace, and applies them with
// server-side apply (field manager "berth"): the other objects in template
// order, the Pod last. If any object fails, every object already created for
// the request is deleted again. Deprovision deletes every object labelled
// with the node's cluster and node IDs, walking an ordered list of kinds in
// every configured namespace, the Pod last.
//
// The Pod is what makes a node: discovery lists pods, and a provision's Pod
// is created after every other object of its node and deleted after them.
// So a listed node has all its objects, even if Berth died in the middle of
// a provision; and a deprovision that was cut short leaves the node listed,
// to be deprovisioned again. What a crash can leave is the objects of a node
// whose Pod was never created: the sweep (see sweep.go) removes them.
//
// A provision with an Idempotency-Key stamps its key on every object it
// applies (see idempotency.go), so that a retry, in this Berth or after a
// restart, finds the nodes of the first attempt instead of making more.
//
// desired_count is honoured per node group by one lock per group inside this
// process and a live list of the group's pods: run one Berth per set of
// namespaces.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/keylock"
	"github.com/berthio/berth/platform"
)

// DriverName is the name of this driver's folder in the catalogue.
const DriverName = "kube"

// Labels every object of a node carries.
const (
	LabelClusterID = "k8s.replicante.io/cluster-id"
	LabelNodeID    = "k8s.replicante.io/node-id"
	LabelNodeGroup = "k8s.replicante.io/node-group"
	LabelNodeClass = "k8s.replicante.io/node-class"
)

// FieldManager is the field manager of Berth's server-side applies.
const FieldManager = "berth"

// NamespaceAttribute is the request attribute that chooses the namespace of
// a node's objects (one of the configured namespaces).
const NamespaceAttribute = "namespace"

// Defaults for Options.
const (
	DefaultAgentIPFrom = IPFromPod
	DefaultAgentSchema = "http"
	DefaultAgentPort   = 37000
	DefaultCacheWait   = 5 * time.Second
	// DefaultOrphanGrace outlasts the longest provision: its applies and
	// then its rollback, each within operationTimeout.
	DefaultOrphanGrace = 2*operationTimeout + time.Minute
)

// DefaultDeprovisionKinds are the kinds deprovision deletes: the pod (which
// deprovision always deletes last, wherever the list puts it), then the
// kinds the built-in templates use and their usual companions, in this
// order. Secrets are left out on purpose: listing them is a permission worth
// granting only when templates create them. A kind is written Kind for the
// core API group, else Kind.group (StatefulSet.apps).
var DefaultDeprovisionKinds = []string{"Pod", "Service", "PersistentVolumeClaim", "ConfigMap"}

// operationTimeout bounds the API calls of one provision, rollback or
// deprovision, which run on even if the HTTP client goes away.
const operationTimeout = 2 * time.Minute

// Catalog finds the template of a node.
type Catalog interface {
	Lookup(catalog.Request) (*catalog.Template, error)
}

// Options configure a Driver.
type Options struct {
	// Config reaches the API server (from a kubeconfig or in-cluster).
	Config  *rest.Config
	Catalog Catalog
	// Namespaces are the namespaces Berth manages; the first is where nodes
	// go unless the template or the namespace attribute chooses another.
	Namespaces []string
	// Selector, a label selector, narrows what Berth considers its own: pods
	// that do not match it are not discovered and objects that do not match
	// it are never deleted. Equality requirements (key=value) are added to
	// the labels of every provisioned object.
	Selector string
	// Agent is the fallback for pods whose annotations do not say where
	// their agent is (defaults: pod IP, http, 37000).
	Agent AgentConfig
	// DeprovisionKinds are the kinds deprovision walks, in order (default
	// DefaultDeprovisionKinds). Templates may only create these kinds.
	DeprovisionKinds []string
	// CacheWait bounds how long a provision or deprovision waits for the pod
	// cache to show its change before answering (default 5s).
	CacheWait time.Duration
	// OrphanGrace is how long the objects of a node without a Pod are left
	// alone before the sweep removes them (default DefaultOrphanGrace); it
	// must exceed the longest provision. Negative turns the sweep off.
	OrphanGrace time.Duration
	Logger      *slog.Logger
}

// Driver is the Kubernetes driver.
type Driver struct {
	opts     Options
	logger   *slog.Logger
	pods     kubernetes.Interface
	dyn      dynamic.Interface
	mapper   meta.RESTMapper
	selector labels.Selector   // the operator's selector (may be empty)
	implied  map[string]string // labels the selector requires exactly
	kinds    []schema.GroupKind

	caches    []*podCache
	factories []informers.SharedInformerFactory
	stop      chan struct{}
	closeOnce sync.Once
	sweeper   sync.WaitGroup
	// deleteOrder is kinds with the Pod moved to the end.
	deleteOrder []schema.GroupKind

	// locks serialise the provisions of one node group, and of one
	// Idempotency-Key.
	locks keylock.Set
}

// podCache is the informer cache of one namespace.
type podCache struct {
	namespace string
	synced    cache.InformerSynced
	lister    corelisters.PodNamespaceLister
}

// Open checks the options, connects the clients and starts a pod informer
// per namespace. It does not wait for the caches: Ready tells when they have
// synced.
func Open(opts Options) (*Driver, error) {
	if opts.Config == nil {
		return nil, errors.New("kube driver: an API server configuration is required")
	}
	if opts.Catalog == nil {
		return nil, errors.New("kube driver: a catalogue is required")
	}
	namespaces, err := checkNamespaces(opts.Namespaces)
	if err != nil {
		return nil, err
	}
	opts.Namespaces = namespaces
	if opts.Agent.IPFrom == "" {
		opts.Agent.IPFrom = DefaultAgentIPFrom
	}
	if opts.Agent.IPFrom != IPFromPod && opts.Agent.IPFrom != IPFromNode {
		return nil, fmt.Errorf("kube driver: agent-ip-from %q: want %s or %s", opts.Agent.IPFrom, IPFromNode, IPFromPod)
	}
	if opts.Agent.Schema == "" {
		opts.Agent.Schema = DefaultAgentSchema
	}
	if opts.Agent.Port == 0 {
		opts.Agent.Port = DefaultAgentPort
	}
	if opts.Agent.Port < 1 || opts.Agent.Port > 65535 {
		return nil, fmt.Errorf("kube driver: agent port %d: want 1-65535", opts.Agent.Port)
	}
	if len(opts.DeprovisionKinds) == 0 {
		opts.DeprovisionKinds = DefaultDeprovisionKinds
	}
	kinds, err := parseKinds(opts.DeprovisionKinds)
	if err != nil {
		return nil, err
	}
	selector, err := labels.Parse(opts.Selector)
	if err != nil {
		return nil, fmt.Errorf("kube driver: label selector %q: %w", opts.Selector, err)
	}
	if opts.CacheWait <= 0 {
		opts.CacheWait = DefaultCacheWait
	}
	if opts.OrphanGrace == 0 {
		opts.OrphanGrace = DefaultOrphanGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}

	cfg := rest.CopyConfig(opts.Config)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "berth"
	}
	// client-go's defaults (5 requests a second) would make a provision of
	// a few nodes wait on the client's own rate limiter.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	pods, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	dyn, err := dynamic.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("kube driver: %w", err)
	}
	d := &Driver{
		opts:     opts,
		logger:   opts.Logger,
		pods:     pods,
		dyn:      dyn,
		mapper:   restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(pods.Discovery())),
		selector: selector,
		implied:  impliedLabels(selector),
		kinds:    kinds,
		stop:     make(chan struct{}),
	}
	for _, gk := range kinds {
		if gk != podKind {
			d.deleteOrder = append(d.deleteOrder, gk)
		}
	}
	if slices.Contains(kinds, podKind) {
		d.deleteOrder = append(d.deleteOrder, podKind)
	}
	// The informers see only pods that are nodes, and Berth's own.
	watched := selector.DeepCopySelector()
	for _, key := range []string{LabelClusterID, LabelNodeID} {
		req, err := labels.NewRequirement(key, selection.Exists, nil)
		if err != nil {
			return nil, err
		}
		watched = watched.Add(*req)
	}
	for _, ns := range namespaces {
		factory := informers.NewSharedInformerFactoryWithOptions(pods, 0,
			informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = watched.String() }))
		podInformer := factory.Core().V1().Pods()
		informer := podInformer.Informer()
		if err := informer.SetTransform(stripManagedFields); err != nil {
			return nil, err
		}
		d.caches = append(d.caches, &podCache{namespace: ns, synced: informer.HasSynced, lister: podInformer.Lister().Pods(ns)})
		d.factories = append(d.factories, factory)
		factory.Start(d.stop)
	}
	if opts.OrphanGrace > 0 {
		d.sweeper.Add(1)
		go d.sweepLoop()
	}
	return d, nil
}

// podKind is the kind that makes a node.
var podKind = schema.GroupKind{Kind: "Pod"}

// stripManagedFields drops what the cache never reads, to keep it small.
func stripManagedFields(obj any) (any, error) {
	if accessor, err := meta.Accessor(obj); err == nil {
		accessor.SetManagedFields(nil)
	}
	return obj, nil
}

func checkNamespaces(namespaces []string) ([]string, error) {
	var out []string
	for _, ns := range namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("kube driver: namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("kube driver: at least one namespace is required")
	}
	return out, nil
}

// parseKinds reads "Kind" (core group) or "Kind.group" items.
func parseKinds(items []string) ([]schema.GroupKind, error) {
	var kinds []schema.GroupKind
	for _, item := range items {
		kind, group, _ := strings.Cut(strings.TrimSpace(item), ".")
		if kind == "" || strings.ToUpper(kind[:1]) != kind[:1] {
			return nil, fmt.Errorf("kube driver: deprovision kind %q: want Kind or Kind.group, such as Pod or StatefulSet.apps", item)
		}
		gk := schema.GroupKind{Group: group, Kind: kind}
		if !slices.Contains(kinds, gk) {
			kinds = append(kinds, gk)
		}
	}
	return kinds, nil
}

// impliedLabels are the labels a selector requires to have one value.
func impliedLabels(selector labels.Selector) map[string]string {
	implied := map[string]string{}
	reqs, _ := selector.Requirements()
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			if values := r.Values().List(); len(values) == 1 {
				implied[r.Key()] = values[0]
			}
		}
	}
	return implied
}

// Close stops the informers. Nodes are Kubernetes objects: they keep running.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		for _, f := range d.factories {
			f.Shutdown()
		}
		d.sweeper.Wait()
	})
	return nil
}

// Ready reports an error until every namespace's pod cache has synced.
func (d *Driver) Ready(ctx context.Context) error {
	var pending []string
	for _, c := range d.caches {
		if !c.synced() {
			pending = append(pending, c.namespace)
		}
	}
	if len(pending) > 0 {
		return fmt.Errorf("the pod cache of namespace(s) %s has not synced with the Kubernetes API server yet", strings.Join(pending, ", "))
	}
	return nil
}

// Discover lists the nodes in the pod caches, grouped by cluster, in ID
// order. It makes no API call. Pods being deleted are left out: their node
// is being deprovisioned.
func (d *Driver) Discover(ctx context.Context) (platform.DiscoveryResponse, error) {
	if err := d.Ready(ctx); err != nil {
		return platform.DiscoveryResponse{}, platform.Wrap(platform.EUNAVAILABLE, err, "discovery is not available yet")
	}
	type key struct{ cluster, node string }
	chosen := map[key]*corev1.Pod{}
	for _, c := range d.caches {
		pods, err := c.lister.List(labels.Everything())
		if err != nil {
			return platform.DiscoveryResponse{}, fmt.Errorf("reading the pod cache of namespace %s: %w", c.namespace, err)
		}
		for _, pod := range pods {
			if pod.DeletionTimestamp != nil {
				continue
			}
			k := key{pod.Labels[LabelClusterID], pod.Labels[LabelNodeID]}
			// Node IDs are unique in a cluster; should two pods claim one,
			// the oldest is the node.
			if have, ok := chosen[k]; !ok || olderThan(pod, have) {
				chosen[k] = pod
			}
		}
	}
	keys := make([]key, 0, len(chosen))
	for k := range chosen {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].cluster != keys[j].cluster {
			return keys[i].cluster < keys[j].cluster
		}
		return keys[i].node < keys[j].node
	})
	resp := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{}}
	for _, k := range keys {
		pod := chosen[k]
		n := len(resp.Clusters)
		if n == 0 || resp.Clusters[n-1].ClusterID != k.cluster {
			resp.Clusters = append(resp.Clusters, platform.ClusterDiscovery{ClusterID: k.cluster})
			n++
		}
		node := platform.DiscoveredNode{
			AgentAddress: agentAddress(pod, d.opts.Agent),
			NodeID:       k.node,
			NodeClass:    pod.Labels[LabelNodeClass],
			Addresses:    podAddresses(pod),
		}
		if group, ok := pod.Labels[LabelNodeGroup]; ok {
			node.NodeGroup = &group
		}
		resp.Clusters[n-1].Nodes = append(resp.Clusters[n-1].Nodes, node)
	}
	return resp, nil
}

func olderThan(a, b *corev1.Pod) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}

// object is one rendered object of a node, with where it goes.
type object struct {
	u        *unstructured.Unstructured
	resource schema.GroupVersionResource
	desc     string // Kind namespace/name, for messages
}

// plannedNode is a node whose objects are rendered but not yet applied.
type plannedNode struct {
	id      string
	objects []*object
	pod     *object
}

// Provision renders and applies up to req.Provision.Count nodes, never more
// than the group's desired_count minus the nodes it already has. Every node
// is rendered (and checked) before anything is applied; a node's Pod is
// applied after its other objects; if an apply fails, every object created
// for the request is deleted and the error names the object and the API
// server's message. A request with an Idempotency-Key whose nodes exist is
// answered with them, and nothing is applied.
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
	attributes := req.Attributes()
	namespace, err := d.nodeNamespace(attributes)
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	group := req.Group()

	idem := req.Idempotency
	if idem != nil {
		// Retries with one key run one at a time: the second finds the
		// first's nodes.
		unlock := d.locks.Lock("\x00idempotency\x00" + idem.Key)
		defer unlock()
		first, err := d.replay(ctx, idem)
		if err != nil {
			return platform.ProvisionResponse{}, err
		}
		if first != nil {
			d.logger.InfoContext(ctx, "provision retried; answering with the nodes of the first attempt", "cluster_id", req.Cluster.ClusterID,
				"idempotency_key", idem.Key, "node_ids", first.NodeIDs, "request_id", platform.RequestID(ctx))
			return *first, nil
		}
	}
	stampedAt := time.Now().UTC()

	unlock := d.locks.Lock(req.Cluster.ClusterID + "/" + req.Provision.NodeGroupID)
	defer unlock()
	// A live list, not the cache: the count must include what an earlier
	// provision created a moment ago.
	existing, err := d.listNodePods(ctx, req.Cluster.ClusterID)
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	taken := map[string]bool{}
	inGroup := 0
	var peers []catalog.Peer
	for _, pod := range existing {
		taken[pod.Labels[LabelNodeID]] = true
		if pod.DeletionTimestamp != nil {
			continue
		}
		if pod.Labels[LabelNodeGroup] == req.Provision.NodeGroupID {
			inGroup++
		}
		peers = append(peers, catalog.Peer{
			NodeID: pod.Labels[LabelNodeID], NodeGroup: pod.Labels[LabelNodeGroup],
			NodeClass: pod.Labels[LabelNodeClass], Namespace: pod.Namespace,
		})
	}
	n := min(req.Provision.Count, group.DesiredCount-inGroup)
	resp := platform.ProvisionResponse{Count: 0, NodeIDs: []string{}}
	if n <= 0 {
		return resp, nil
	}

	var planned []*plannedNode
	for i := range n {
		id := platform.NewNodeID(func(id string) bool { return taken[id] })
		taken[id] = true
		tctx := catalog.Context{
			ClusterID:  req.Cluster.ClusterID,
			NodeID:     id,
			NodeGroup:  req.Provision.NodeGroupID,
			NodeClass:  group.NodeClass,
			Store:      req.Cluster.Store,
			Version:    req.StoreVersion(),
			Attributes: attributes,
			Namespace:  namespace,
			Peers:      slices.Clone(peers),
		}
		node, err := d.render(tmpl, tctx)
		if err != nil {
			return platform.ProvisionResponse{}, err
		}
		if idem != nil {
			for _, obj := range node.objects {
				stamp(obj.u, idem, stampedAt, i)
			}
		}
		planned = append(planned, node)
		peers = append(peers, catalog.Peer{NodeID: id, NodeGroup: tctx.NodeGroup, NodeClass: tctx.NodeClass, Namespace: node.pod.u.GetNamespace()})
	}

	// The request's client going away must not leave half-created nodes,
	// but a hung API server must not hold the request for ever.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), operationTimeout)
	defer cancel()
	var created []*object
	for _, node := range planned {
		for _, obj := range node.objects {
			attempted, err := d.apply(ctx, obj)
			if attempted {
				// A failed apply may still have written the object.
				created = append(created, obj)
			}
			if err != nil {
				d.rollback(ctx, created)
				return platform.ProvisionResponse{}, err
			}
		}
	}
	for _, node := range planned {
		resp.NodeIDs = append(resp.NodeIDs, node.id)
		names := make([]string, len(node.objects))
		for i, obj := range node.objects {
			names[i] = obj.desc
		}
		d.logger.InfoContext(ctx, "node provisioned", "cluster_id", req.Cluster.ClusterID, "node_id", node.id,
			"node_group", req.Provision.NodeGroupID, "store", req.Cluster.Store, "version", req.StoreVersion(),
			"objects", names, "request_id", platform.RequestID(ctx))
	}
	resp.Count = len(planned)
	d.waitForCache(ctx, func() bool {
		for _, node := range planned {
			if d.cachedPod(node.pod.u.GetNamespace(), node.pod.u.GetName()) == nil {
				return false
			}
		}
		return true
	})
	return resp, nil
}

// nodeNamespace is where a node's objects go unless the template names
// another: the namespace attribute, else the first configured namespace.
func (d *Driver) nodeNamespace(attributes map[string]any) (string, error) {
	value, ok := attributes[NamespaceAttribute]
	if !ok || value == nil {
		return d.opts.Namespaces[0], nil
	}
	ns, ok := value.(string)
	if !ok {
		return "", platform.Errorf(platform.EINVALID, "attribute %q must be a string naming a namespace, one of: %s", NamespaceAttribute, strings.Join(d.opts.Namespaces, ", "))
	}
	if !slices.Contains(d.opts.Namespaces, ns) {
		return "", platform.Errorf(platform.EINVALID, "attribute %q: namespace %q is not one this platform manages; it manages: %s", NamespaceAttribute, ns, strings.Join(d.opts.Namespaces, ", "))
	}
	return ns, nil
}

// render turns the template's documents into the node's objects: each
// labelled, in an allowed namespace, of a namespaced kind that deprovision
// deletes, and exactly one of them the node's Pod, which comes last.
func (d *Driver) render(tmpl *catalog.Template, tctx catalog.Context) (*plannedNode, error) {
	node := &plannedNode{id: tctx.NodeID}
	var pods []string
	for _, doc := range tmpl.Documents() {
		var raw map[string]any
		if err := doc.Render(tctx, &raw); err != nil {
			return nil, err
		}
		data, err := json.Marshal(raw)
		if err != nil {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s is not a Kubernetes object: %v", doc.Name, err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s is not a Kubernetes object: %v", doc.Name, err)
		}
		gvk := u.GroupVersionKind()
		if u.GetName() == "" {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: the %s has no metadata.name (server-side apply needs one; generateName is not supported)", doc.Name, gvk.Kind)
		}
		if !slices.Contains(d.kinds, gvk.GroupKind()) {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %s is not a kind deprovision deletes (%s), so the node could not be removed completely",
				doc.Name, kindName(gvk.GroupKind()), strings.Join(d.opts.DeprovisionKinds, ", "))
		}
		mapping, err := d.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: the API server has no kind %s in %s", doc.Name, gvk.Kind, gvk.GroupVersion())
		} else if err != nil {
			return nil, apiError(err, fmt.Sprintf("looking up kind %s", gvk.Kind))
		}
		if mapping.Scope.Name() != meta.RESTScopeNameNamespace {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %s is not a namespaced kind; templates may only create objects in a namespace", doc.Name, gvk.Kind)
		}
		if u.GetNamespace() == "" {
			u.SetNamespace(tctx.Namespace)
		}
		desc := fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
		if !slices.Contains(d.opts.Namespaces, u.GetNamespace()) {
			return nil, platform.Errorf(platform.EINVALID, "%s (template %s): namespace %q is not one this platform manages; it manages: %s",
				desc, doc.Name, u.GetNamespace(), strings.Join(d.opts.Namespaces, ", "))
		}
		objLabels := u.GetLabels()
		if objLabels == nil {
			objLabels = map[string]string{}
		}
		for k, v := range d.implied {
			objLabels[k] = v
		}
		objLabels[LabelClusterID] = tctx.ClusterID
		objLabels[LabelNodeID] = tctx.NodeID
		objLabels[LabelNodeGroup] = tctx.NodeGroup
		objLabels[LabelNodeClass] = tctx.NodeClass
		u.SetLabels(objLabels)
		obj := &object{u: u, resource: mapping.Resource, desc: desc}
		if gvk.GroupKind() == podKind {
			pods = append(pods, desc)
			node.pod = obj
			if !d.selector.Matches(labels.Set(objLabels)) {
				return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %s does not match the label selector %q, so discovery would not list it",
					doc.Name, desc, d.selector.String())
			}
			continue
		}
		node.objects = append(node.objects, obj)
	}
	if len(pods) != 1 {
		return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s must describe exactly one Pod, the node; it has %d", tmpl.Name, len(pods))
	}
	// The Pod last: once it exists, so does everything else of the node.
	node.objects = append(node.objects, node.pod)
	return node, nil
}

func kindName(gk schema.GroupKind) string {
	if gk.Group == "" {
		return gk.Kind
	}
	return gk.Kind + "." + gk.Group
}

// apply creates one object with server-side apply. An object of that name
// that already exists is a conflict, never taken over: it may belong to
// another node or to someone else. attempted says whether the apply itself
// was sent (and so may have created the object).
func (d *Driver) apply(ctx context.Context, obj *object) (attempted bool, err error) {
	client := d.dyn.Resource(obj.resource).Namespace(obj.u.GetNamespace())
	existing, err := client.Get(ctx, obj.u.GetName(), metav1.GetOptions{})
	switch {
	case err == nil:
		owner := "not a Berth node's"
		if l := existing.GetLabels(); l[LabelNodeID] != "" {
			owner = fmt.Sprintf("node %s of cluster %s", l[LabelNodeID], l[LabelClusterID])
		}
		return false, platform.Errorf(platform.ECONFLICT, "%s already exists (%s); a template's object names must be unique to the node, such as \"{{ .NodeID }}\"", obj.desc, owner)
	case !apierrors.IsNotFound(err):
		return false, apiError(err, "reading "+obj.desc)
	}
	_, err = client.Apply(ctx, obj.u.GetName(), obj.u, metav1.ApplyOptions{FieldManager: FieldManager})
	if err != nil {
		return true, apiError(err, "applying "+obj.desc)
	}
	return true, nil
}

// rollback deletes the objects of a failed provision, newest first.
func (d *Driver) rollback(ctx context.Context, objects []*object) {
	// A fresh time limit: the provision's may be what ran out.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), operationTimeout)
	defer cancel()
	for i := len(objects) - 1; i >= 0; i-- {
		obj := objects[i]
		err := d.dyn.Resource(obj.resource).Namespace(obj.u.GetNamespace()).Delete(ctx, obj.u.GetName(), deleteOptions(""))
		if err != nil && !apierrors.IsNotFound(err) {
			d.logger.ErrorContext(ctx, "deleting an object of a failed provision", "object", obj.desc, "error", err,
				"request_id", platform.RequestID(ctx))
		}
	}
}

func deleteOptions(uid types.UID) metav1.DeleteOptions {
	background := metav1.DeletePropagationBackground
	opts := metav1.DeleteOptions{PropagationPolicy: &background}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	return opts
}

// Deprovision deletes every object labelled with the node's cluster and node
// IDs (and matching the selector), kind by kind in the configured order but
// the Pod last, in every configured namespace. Objects already being deleted
// are left to their finalizers. ENOTFOUND when no object (not already being
// deleted) carries the labels.
//
// With the Pod last, a deprovision cut short (by a crash, a time limit or an
// API error) leaves the node listed, and a second one finishes the job.
func (d *Driver) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), operationTimeout)
	defer cancel()
	selector := d.selector.DeepCopySelector()
	for key, value := range map[string]string{LabelClusterID: req.ClusterID, LabelNodeID: req.NodeID} {
		r, err := labels.NewRequirement(key, selection.Equals, []string{value})
		if err != nil {
			return platform.Wrap(platform.EINVALID, err, "%s %q cannot be a label value", key, value)
		}
		selector = selector.Add(*r)
	}
	var deleted []string
	for _, gk := range d.deleteOrder {
		mapping, err := d.mapper.RESTMapping(gk)
		if meta.IsNoMatchError(err) {
			d.logger.DebugContext(ctx, "deprovision skips a kind the API server does not have", "kind", kindName(gk))
			continue
		} else if err != nil {
			return apiError(err, "looking up kind "+kindName(gk))
		}
		for _, ns := range d.opts.Namespaces {
			client := d.dyn.Resource(mapping.Resource).Namespace(ns)
			list, err := client.List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
			if err != nil {
				return apiError(err, fmt.Sprintf("listing %s in namespace %s", mapping.Resource.Resource, ns))
			}
			for _, item := range list.Items {
				if item.GetDeletionTimestamp() != nil {
					// Already being deleted (a finalizer holds it): by an
					// earlier deprovision, or by someone else.
					continue
				}
				desc := fmt.Sprintf("%s %s/%s", gk.Kind, ns, item.GetName())
				err := client.Delete(ctx, item.GetName(), deleteOptions(item.GetUID()))
				if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					return apiError(err, "deleting "+desc)
				}
				deleted = append(deleted, desc)
			}
		}
	}
	if len(deleted) == 0 {
		return platform.Errorf(platform.ENOTFOUND, "cluster %q has no node %q on this platform", req.ClusterID, req.NodeID)
	}
	d.logger.InfoContext(ctx, "node deprovisioned", "cluster_id", req.ClusterID, "node_id", req.NodeID,
		"objects", deleted, "request_id", platform.RequestID(ctx))
	d.waitForCache(ctx, func() bool {
		for _, c := range d.caches {
			pods, _ := c.lister.List(labels.SelectorFromSet(labels.Set{LabelClusterID: req.ClusterID, LabelNodeID: req.NodeID}))
			for _, pod := range pods {
				if pod.DeletionTimestamp == nil {
					return false
				}
			}
		}
		return true
	})
	return nil
}

// listNodePods lists, from the API server, the pods of a cluster in every
// configured namespace.
func (d *Driver) listNodePods(ctx context.Context, clusterID string) ([]corev1.Pod, error) {
	selector := d.selector.DeepCopySelector()
	r, err := labels.NewRequirement(LabelClusterID, selection.Equals, []string{clusterID})
	if err != nil {
		return nil, platform.Wrap(platform.EINVALID, err, "cluster ID %q cannot be a label value", clusterID)
	}
	exists, _ := labels.NewRequirement(LabelNodeID, selection.Exists, nil)
	selector = selector.Add(*r, *exists)
	var pods []corev1.Pod
	for _, ns := range d.opts.Namespaces {
		list, err := d.pods.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
		if err != nil {
			return nil, apiError(err, "listing the pods of cluster "+clusterID+" in namespace "+ns)
		}
		pods = append(pods, list.Items...)
	}
	sort.SliceStable(pods, func(i, j int) bool { return olderThan(&pods[i], &pods[j]) })
	return pods, nil
}

func (d *Driver) cachedPod(namespace, name string) *corev1.Pod {
	for _, c := range d.caches {
		if c.namespace == namespace {
			pod, err := c.lister.Get(name)
			if err == nil {
				return pod
			}
		}
	}
	return nil
}

// waitForCache waits, up to CacheWait, until done reports that the pod
// cache shows a change just made, so that a discovery right after the
// answer agrees with it. Past the wait the answer goes out anyway.
func (d *Driver) waitForCache(ctx context.Context, done func() bool) {
	deadline := time.Now().Add(d.opts.CacheWait)
	for !done() {
		if time.Now().After(deadline) {
			d.logger.WarnContext(ctx, "the pod cache has not caught up with a change yet", "waited", d.opts.CacheWait,
				"request_id", platform.RequestID(ctx))
			return
		}
		select {
		case <-d.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// apiError turns a failed API call into a platform error that names what
// was being done and carries the API server's own message.
func apiError(err error, doing string) error {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return platform.Wrap(platform.EUNAVAILABLE, err, "%s: the Kubernetes API server cannot be reached", doing)
	}
	code := platform.EUNPROCESSABLE
	switch {
	case apierrors.IsUnauthorized(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
		apierrors.IsTooManyRequests(err), apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err):
		code = platform.EUNAVAILABLE
	}
	// The message is the whole story; a cause would repeat it.
	return platform.Errorf(code, "%s: the API server answered: %s", doing, status.Status().Message)
}
