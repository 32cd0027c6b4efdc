// Package docker runs data store nodes as containers on any engine that
// speaks the Docker Engine API: Docker itself, or Podman's compatible
// service.
//
// A node is one or more containers described by a template of the
// catalogue's "docker" folder, with its data in one named volume. The nodes
// of a cluster share one network, on which each node's first container is
// reachable by the node ID (its network alias). Ports are published on a
// configurable host IP (127.0.0.1 by default) at ports the engine chooses.
//
// The engine is the driver's only state. Every container and volume carries
// labels (prefix io.berth.) naming its cluster, node, group, class and store,
// and the network its cluster and store; discovery is one label-filtered
// container list, whatever the number of nodes, and all containers of a node,
// running or not, make one node. Any number of Berth processes can therefore
// serve the same engine, and restarting Berth changes nothing. Idempotency
// keys live in labels too (idempotency.go), and so do the markers that let a
// Berth finish or undo the work of one that crashed (markers.go).
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/keylock"
	"github.com/berthio/berth/platform"
)

// DriverName is the name of this driver's folder in the catalogue.
const DriverName = "docker"

// Defaults for Options.
const (
	DefaultHostIP      = "127.0.0.1"
	DefaultGracePeriod = 10 * time.Second
)

// Catalog finds the template of a node.
type Catalog interface {
	Lookup(catalog.Request) (*catalog.Template, error)
}

// Options configure a Driver.
type Options struct {
	// Host is the engine's address (unix:///run/docker.sock,
	// tcp://host:2376); empty means DOCKER_HOST, else the engine's default
	// socket. DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and DOCKER_API_VERSION
	// are honoured as the docker command line does.
	Host    string
	Catalog Catalog
	// HostIP is the host address container ports are published on.
	HostIP string
	// GracePeriod is how long a deprovisioned node's containers get to
	// stop after their stop signal before they are killed.
	GracePeriod time.Duration
	// KeepData keeps a deprovisioned node's volume.
	KeepData bool
	// StaleAfter is how long a provision may take to make and start a
	// node, and a deprovision to remove one beyond the grace period,
	// before another Berth (or this one, restarted) takes it for the work
	// of a Berth that crashed, and undoes or finishes it (see markers.go):
	// DefaultStaleAfter when zero.
	StaleAfter time.Duration
	Logger     *slog.Logger
}

// Driver is the Docker Engine API driver.
type Driver struct {
	opts   Options
	engine *client.Client
	logger *slog.Logger

	mu       sync.Mutex
	clusters map[string]*clusterState // clusters with work in flight

	keys keylock.Set // provisions with one Idempotency-Key run one at a time

	// The sweep (markers.go).
	sweepNow  chan struct{}
	stopSweep context.CancelFunc
	sweepDone chan struct{}
	closeOnce sync.Once
	closeErr  error
	sweepMu   sync.Mutex
	watched   map[[2]string]bool // incomplete or marked nodes the last sweep saw
	lastAsked time.Time

	// hook, when set (by tests), is called at each step of making and
	// removing a node, to stop there as a crash would.
	hook atomic.Pointer[func(step, nodeID string)]
}

// Steps at which Driver.hook is called.
const (
	stepNetwork          = "network"           // the cluster's network exists
	stepMarked           = "marked"            // the provision marker exists
	stepVolume           = "volume"            // and the volume
	stepContainerCreated = "container-created" // and one more container
	stepContainerStarted = "container-started" // one more container started
	stepStarted          = "started"           // all started, marker still there
	stepDeprovisionMark  = "deprovision-marked"
	stepStopped          = "stopped"           // containers stopped
	stepContainerRemoved = "container-removed" // one more container removed
	stepVolumeRemoved    = "volume-removed"    // volume removed, marker still there
)

func (d *Driver) step(step, nodeID string) {
	if hook := d.hook.Load(); hook != nil {
		(*hook)(step, nodeID)
	}
}

// clusterState is what one Berth knows of a cluster beyond the engine's
// view: the nodes it is provisioning or deprovisioning right now.
type clusterState struct {
	refs int // guarded by Driver.mu

	mu       sync.Mutex
	pending  map[string]*node // being provisioned, by node ID
	stopping map[string]bool  // being deprovisioned
	busy     map[string]*sync.Mutex
}

// Open connects to the engine. It does not wait for the engine to answer:
// Ready tells whether it does, and every call names the address it tried.
func Open(opts Options) (*Driver, error) {
	if opts.Catalog == nil {
		return nil, errors.New("docker driver: a catalogue is required")
	}
	if opts.HostIP == "" {
		opts.HostIP = DefaultHostIP
	}
	if _, err := netip.ParseAddr(opts.HostIP); err != nil {
		return nil, fmt.Errorf("docker driver: host IP %q is not an IP address", opts.HostIP)
	}
	if opts.GracePeriod <= 0 {
		opts.GracePeriod = DefaultGracePeriod
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	clientOpts := []client.Opt{client.FromEnv}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	engine, err := client.New(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("docker driver: engine address: %w", err)
	}
	d := &Driver{opts: opts, engine: engine, logger: opts.Logger, clusters: map[string]*clusterState{},
		sweepNow: make(chan struct{}, 1), sweepDone: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopSweep = cancel
	go d.sweepLoop(ctx)
	return d, nil
}

// Close stops the sweep and releases the engine connection. Nodes keep
// running.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.stopSweep()
		<-d.sweepDone
		d.closeErr = d.engine.Close()
	})
	return d.closeErr
}

// Host returns the engine address the driver uses.
func (d *Driver) Host() string { return d.engine.DaemonHost() }

// Ready reports whether the engine answers.
func (d *Driver) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := d.engine.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return platform.Errorf(platform.EUNAVAILABLE, "the container engine at %s does not answer: %v", d.Host(), err)
	}
	return nil
}

// Discover lists every complete node on the engine, with one container list
// call.
func (d *Driver) Discover(ctx context.Context) (platform.DiscoveryResponse, error) {
	nodes, err := d.list(ctx, "")
	if err != nil {
		return platform.DiscoveryResponse{}, err
	}
	d.noteIncomplete(nodes)
	resp := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{}}
	for _, n := range nodes {
		if !n.Complete {
			continue
		}
		last := len(resp.Clusters) - 1
		if last < 0 || resp.Clusters[last].ClusterID != n.ClusterID {
			resp.Clusters = append(resp.Clusters, platform.ClusterDiscovery{ClusterID: n.ClusterID})
			last++
		}
		group := n.Group
		var addresses map[string]string
		if len(n.Addresses) > 0 {
			addresses = n.Addresses
		}
		resp.Clusters[last].Nodes = append(resp.Clusters[last].Nodes, platform.DiscoveredNode{
			AgentAddress: n.AgentAddress,
			NodeID:       n.NodeID,
			NodeClass:    n.Class,
			NodeGroup:    &group,
			Addresses:    addresses,
		})
	}
	return resp, nil
}

// list returns the nodes of one cluster, or of all clusters for "", from
// one label-filtered list of every container, running or not: complete
// nodes and incomplete ones.
func (d *Driver) list(ctx context.Context, clusterID string) ([]*node, error) {
	filters := client.Filters{}.Add("label", LabelNode)
	if clusterID != "" {
		filters.Add("label", LabelCluster+"="+clusterID)
	} else {
		filters.Add("label", LabelCluster)
	}
	res, err := d.engine.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		return nil, d.engineError(err, "listing containers")
	}
	return groupNodes(res.Items, d.opts.HostIP), nil
}

// Provision creates up to req.Provision.Count nodes, never more than the
// group's desired_count minus the nodes it has. Every node is rendered
// first, with the cluster's nodes before it as peers; then the images are
// made present, the cluster's network, each node's marker, volume and
// containers created, the containers started and the marker removed. If any
// step fails, everything created for the request is removed again.
//
// A request with an Idempotency-Key waits for the other provisions of its
// key in this Berth, then is answered from the nodes that carry the key, if
// any (see idempotency.go).
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
	var layout portLayout
	if err := tmpl.Decode(&layout); err != nil {
		return platform.ProvisionResponse{}, err
	}
	ports, err := layout.ports()
	if err != nil {
		return platform.ProvisionResponse{}, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", tmpl.Name, err)
	}

	if req.Idempotency != nil {
		unlock := d.keys.Lock(keyHash(req.Idempotency.Key))
		defer unlock()
		first, err := d.replay(ctx, req.Idempotency)
		if err != nil {
			return platform.ProvisionResponse{}, err
		}
		if first != nil {
			d.logger.InfoContext(ctx, "provision retried; answering as the first time", "cluster_id", req.Cluster.ClusterID,
				"idempotency_key", req.Idempotency.Key, "node_ids", first.NodeIDs, "request_id", platform.RequestID(ctx))
			return *first, nil
		}
	}

	cs := d.cluster(req.Cluster.ClusterID)
	defer d.release(req.Cluster.ClusterID, cs)
	planned, err := d.reserve(ctx, cs, req, tmpl, ports)
	if err != nil {
		return platform.ProvisionResponse{}, err
	}
	resp := platform.ProvisionResponse{Count: len(planned), NodeIDs: make([]string, 0, len(planned))}
	if len(planned) == 0 {
		return resp, nil
	}
	// The request's client going away must not leave half-made nodes.
	ctx = context.WithoutCancel(ctx)
	err = d.create(ctx, req, planned)
	cs.mu.Lock()
	for _, p := range planned {
		delete(cs.pending, p.NodeID)
	}
	cs.mu.Unlock()
	if err != nil {
		for _, p := range planned {
			rmErr := d.removeNode(ctx, p.node, p.created, true)
			if rmErr == nil {
				// Kept when the node could not be removed: the sweep
				// tries again once it expires.
				rmErr = d.unmark(ctx, p.ClusterID, p.NodeID, MarkerProvision)
			}
			if rmErr != nil {
				d.logger.ErrorContext(ctx, "removing node after failed provision", "cluster_id", p.ClusterID,
					"node_id", p.NodeID, "error", rmErr, "request_id", platform.RequestID(ctx))
			}
		}
		d.removeNetworkIfUnused(ctx, cs, req.Cluster.ClusterID)
		return platform.ProvisionResponse{}, err
	}
	for _, p := range planned {
		resp.NodeIDs = append(resp.NodeIDs, p.NodeID)
		d.logger.InfoContext(ctx, "node provisioned", "cluster_id", p.ClusterID, "node_id", p.NodeID,
			"node_group", p.Group, "store", p.Store, "version", p.Version, "containers", len(p.spec.Containers),
			"request_id", platform.RequestID(ctx))
	}
	return resp, nil
}

// plannedNode is a node a provision is making.
type plannedNode struct {
	*node
	spec nodeSpec
	// created are the IDs of the containers made so far.
	created []string
}

// reserve decides how many nodes to make, gives them IDs and renders their
// templates, all under the cluster's lock, and marks them pending: nodes on
// the engine and nodes other provisions of this Berth are making both
// count towards desired_count.
func (d *Driver) reserve(ctx context.Context, cs *clusterState, req platform.ProvisionRequest, tmpl *catalog.Template, ports map[string]int) ([]*plannedNode, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	existing, err := d.list(ctx, req.Cluster.ClusterID)
	if err != nil {
		return nil, err
	}
	d.noteIncomplete(existing)
	taken := map[string]bool{}
	inGroup := 0
	var peers []*node
	for _, n := range existing {
		taken[n.NodeID] = true
		if _, pending := cs.pending[n.NodeID]; pending {
			continue // counted below
		}
		if !n.Complete {
			// A crashed provision's, removed by the sweep, or another
			// Berth's in the making: neither a peer nor counted.
			continue
		}
		if n.Group == req.Provision.NodeGroupID {
			inGroup++
		}
		if !cs.stopping[n.NodeID] {
			peers = append(peers, n)
		}
	}
	for _, n := range cs.pending {
		taken[n.NodeID] = true
		if n.Group == req.Provision.NodeGroupID {
			inGroup++
		}
		peers = append(peers, n)
	}
	group := req.Group()
	count := min(req.Provision.Count, group.DesiredCount-inGroup)
	var planned []*plannedNode
	var last time.Time
	for i := 0; i < count; i++ {
		// Creation times increase within a request, so that a retry can
		// list its nodes in the order the first answer did.
		created := time.Now().UTC().Round(0)
		if !created.After(last) {
			created = last.Add(time.Nanosecond)
		}
		last = created
		n := &node{
			ClusterID: req.Cluster.ClusterID,
			NodeID:    platform.NewNodeID(func(id string) bool { return taken[id] }),
			Group:     req.Provision.NodeGroupID,
			Class:     group.NodeClass,
			Store:     req.Cluster.Store,
			Version:   req.StoreVersion(),
			Created:   created,
			Ports:     ports,
			Complete:  true,
		}
		if req.Idempotency != nil {
			n.IdempotencyKey, n.Digest = keyHash(req.Idempotency.Key), req.Idempotency.Digest
		}
		taken[n.NodeID] = true
		p := &plannedNode{node: n}
		if err := tmpl.Render(templateContext(n, req.Attributes(), peers), &p.spec); err != nil {
			return nil, err
		}
		if err := p.spec.check(); err != nil {
			return nil, platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", tmpl.Name, err)
		}
		planned = append(planned, p)
		peers = append(peers, n)
	}
	for _, p := range planned {
		cs.pending[p.NodeID] = p.node
	}
	return planned, nil
}

// templateContext is what a node's template renders with: its identity,
// its container ports, and the cluster's other nodes oldest first, whose
// ports are reached at their node ID on the cluster's network.
func templateContext(n *node, attributes map[string]any, peers []*node) catalog.Context {
	ctx := catalog.Context{
		ClusterID:  n.ClusterID,
		NodeID:     n.NodeID,
		NodeGroup:  n.Group,
		NodeClass:  n.Class,
		Store:      n.Store,
		Version:    n.Version,
		Attributes: attributes,
		Ports:      n.Ports,
	}
	sorted := append([]*node(nil), peers...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Created.Before(sorted[j].Created) })
	for _, p := range sorted {
		if p.NodeID != n.NodeID {
			ctx.Peers = append(ctx.Peers, catalog.Peer{NodeID: p.NodeID, NodeGroup: p.Group, NodeClass: p.Class, Ports: p.Ports})
		}
	}
	return ctx
}

// create makes the planned nodes: images, network, then each node's
// volume and containers, then starts them.
func (d *Driver) create(ctx context.Context, req platform.ProvisionRequest, planned []*plannedNode) error {
	pulled := map[string]bool{}
	for _, p := range planned {
		for _, image := range p.spec.images() {
			if pulled[image] {
				continue
			}
			if err := d.ensureImage(ctx, image, p.spec.Pull); err != nil {
				return err
			}
			pulled[image] = true
		}
	}
	if err := d.ensureNetwork(ctx, req.Cluster.ClusterID, req.Cluster.Store); err != nil {
		return err
	}
	d.step(stepNetwork, planned[0].NodeID)
	for _, p := range planned {
		if err := d.createNode(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// ensureImage makes an image present as the pull policy says.
func (d *Driver) ensureImage(ctx context.Context, image, policy string) error {
	if policy != PullAlways {
		_, err := d.engine.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !cerrdefs.IsNotFound(err) {
			return d.engineError(err, "inspecting image %s", image)
		}
		if policy == PullNever {
			return platform.Errorf(platform.EUNPROCESSABLE, "image %s is not on the container engine and the template's pull policy is never", image)
		}
	}
	pull, err := d.engine.ImagePull(ctx, image, client.ImagePullOptions{})
	if err == nil {
		err = pull.Wait(ctx)
	}
	if err != nil {
		return d.engineError(err, "pulling image %s", image)
	}
	return nil
}

// ensureNetwork creates the cluster's network unless it exists.
func (d *Driver) ensureNetwork(ctx context.Context, clusterID, store string) error {
	name := networkName(clusterID)
	_, err := d.engine.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return d.engineError(err, "cluster %s: inspecting network %s", clusterID, name)
	}
	_, err = d.engine.NetworkCreate(ctx, name, client.NetworkCreateOptions{
		Driver: "bridge",
		Labels: map[string]string{LabelCluster: clusterID, LabelStore: store,
			LabelCreated: time.Now().UTC().Format(time.RFC3339Nano)},
	})
	if err != nil {
		// Another provision may have made it first; engines do not all
		// say so with a conflict.
		if _, inspectErr := d.engine.NetworkInspect(ctx, name, client.NetworkInspectOptions{}); inspectErr == nil {
			return nil
		}
		return d.engineError(err, "cluster %s: creating network %s", clusterID, name)
	}
	return nil
}

// createNode creates one node's marker, volume and containers, starts the
// containers and removes the marker.
func (d *Driver) createNode(ctx context.Context, p *plannedNode) error {
	if _, err := d.mark(ctx, p.ClusterID, p.NodeID, MarkerProvision, time.Now().Add(d.opts.StaleAfter), false); err != nil {
		return err
	}
	d.step(stepMarked, p.NodeID)
	labels := p.labels()
	volume := volumeName(p.ClusterID, p.NodeID)
	if _, err := d.engine.VolumeCreate(ctx, client.VolumeCreateOptions{Name: volume, Labels: labels}); err != nil {
		return d.engineError(err, "node %s: creating volume %s", p.NodeID, volume)
	}
	d.step(stepVolume, p.NodeID)
	netName := networkName(p.ClusterID)
	for i, c := range p.spec.Containers {
		cfg := &container.Config{
			Image:        c.Image,
			Entrypoint:   c.Entrypoint,
			Cmd:          c.Command,
			Env:          envList(c.Env),
			User:         c.User,
			WorkingDir:   c.WorkingDir,
			StopSignal:   c.StopSignal,
			Labels:       p.containerLabels(labels, c),
			ExposedPorts: network.PortSet{},
		}
		host := &container.HostConfig{
			PortBindings:  network.PortMap{},
			RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(p.spec.RestartPolicy)},
		}
		hostIP, _ := netip.ParseAddr(d.opts.HostIP)
		for _, port := range c.Ports {
			cp, _ := network.PortFrom(uint16(port), network.TCP)
			cfg.ExposedPorts[cp] = struct{}{}
			host.PortBindings[cp] = []network.PortBinding{{HostIP: hostIP, HostPort: ""}}
		}
		for _, m := range c.Mounts {
			mnt := mount.Mount{Type: mount.TypeVolume, Source: volume, Target: m.Target, ReadOnly: m.ReadOnly}
			if m.Tmpfs {
				mnt = mount.Mount{Type: mount.TypeTmpfs, Target: m.Target, ReadOnly: m.ReadOnly}
			}
			host.Mounts = append(host.Mounts, mnt)
		}
		// The node's first container answers to the node ID on the
		// cluster's network; the others to <node ID>-<name>.
		alias := p.NodeID
		if i > 0 {
			alias = p.NodeID + "-" + c.Name
		} else {
			cfg.Hostname = p.NodeID
		}
		netCfg := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			netName: {Aliases: []string{alias}},
		}}
		name := containerName(p.ClusterID, p.NodeID, c.Name)
		res, err := d.engine.ContainerCreate(ctx, client.ContainerCreateOptions{
			Name: name, Config: cfg, HostConfig: host, NetworkingConfig: netCfg,
		})
		if err != nil {
			return d.engineError(err, "node %s: creating container %s", p.NodeID, c.Name)
		}
		p.created = append(p.created, res.ID)
		d.step(stepContainerCreated, p.NodeID)
	}
	for i, id := range p.created {
		if _, err := d.engine.ContainerStart(ctx, id, client.ContainerStartOptions{}); err != nil {
			return d.engineError(err, "node %s: starting container %s", p.NodeID, p.spec.Containers[i].Name)
		}
		d.step(stepContainerStarted, p.NodeID)
	}
	d.step(stepStarted, p.NodeID)
	return d.unmark(ctx, p.ClusterID, p.NodeID, MarkerProvision)
}

// labels are the labels of every object of the node.
func (n *node) labels() map[string]string {
	labels := map[string]string{
		LabelCluster: n.ClusterID,
		LabelNode:    n.NodeID,
		LabelGroup:   n.Group,
		LabelClass:   n.Class,
		LabelStore:   n.Store,
		LabelVersion: n.Version,
		LabelCreated: n.Created.Format(time.RFC3339Nano),
	}
	if n.IdempotencyKey != "" {
		labels[LabelIdempotencyKey] = n.IdempotencyKey
		labels[LabelRequestDigest] = n.Digest
	}
	return labels
}

// containerLabels add a container's name, its ports and the node's agent.
func (p *plannedNode) containerLabels(base map[string]string, c containerSpec) map[string]string {
	labels := make(map[string]string, len(base)+len(c.Ports)+3)
	for k, v := range base {
		labels[k] = v
	}
	labels[LabelContainer] = c.Name
	for name, port := range c.Ports {
		labels[LabelPortPrefix+name] = strconv.Itoa(port)
	}
	if p.spec.AgentAddress != "" {
		labels[LabelAgentAddress] = p.spec.AgentAddress
	} else {
		labels[LabelAgentPort] = p.spec.AgentPort
		labels[LabelAgentScheme] = p.spec.AgentScheme
	}
	return labels
}

// Deprovision stops a node's containers (stop signal, then SIGKILL after
// the grace period), removes them and the node's volume (unless data is
// kept), and removes the cluster's network with its last node. A marker
// says it is under way until it is done, so that an interrupted deprovision
// is finished by the sweep, or by deprovisioning the node again: that
// finishes the job even when only the volume or a marker of the node is
// left.
func (d *Driver) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	cs := d.cluster(req.ClusterID)
	defer d.release(req.ClusterID, cs)
	unlock := cs.lockNode(req.NodeID)
	defer unlock()

	nodes, err := d.list(ctx, req.ClusterID)
	if err != nil {
		return err
	}
	var n *node
	for _, candidate := range nodes {
		if candidate.NodeID == req.NodeID {
			n = candidate
		}
	}
	ctx = context.WithoutCancel(ctx)
	keepData := d.opts.KeepData
	if n == nil {
		// No container is left; an interrupted provision or deprovision
		// may have left the volume and its marker.
		markers, err := d.markersOf(ctx, req.ClusterID, req.NodeID)
		if err != nil {
			return err
		}
		m := markers[[2]string{req.ClusterID, req.NodeID}]
		if m == nil {
			return platform.Errorf(platform.ENOTFOUND, "cluster %q has no node %q on this platform", req.ClusterID, req.NodeID)
		}
		n = &node{ClusterID: req.ClusterID, NodeID: req.NodeID}
	}
	cs.mu.Lock()
	cs.stopping[n.NodeID] = true
	cs.mu.Unlock()
	defer func() {
		cs.mu.Lock()
		delete(cs.stopping, n.NodeID)
		cs.mu.Unlock()
	}()
	marker, err := d.mark(ctx, n.ClusterID, n.NodeID, MarkerDeprovision, time.Now().Add(d.opts.GracePeriod+d.opts.StaleAfter), keepData)
	if err != nil {
		return err
	}
	// Finishing a deprovision that was to keep the volume keeps it.
	keepData = keepData || marker[LabelKeepData] == "true"
	d.step(stepDeprovisionMark, n.NodeID)
	ids := make([]string, len(n.Containers))
	for i, c := range n.Containers {
		ids[i] = c.ID
	}
	if err := d.removeNode(ctx, n, ids, !keepData); err != nil {
		return err
	}
	if err := d.unmark(ctx, n.ClusterID, n.NodeID, MarkerProvision, MarkerDeprovision); err != nil {
		return err
	}
	d.removeNetworkIfUnused(ctx, cs, req.ClusterID)
	d.logger.InfoContext(ctx, "node deprovisioned", "cluster_id", n.ClusterID, "node_id", n.NodeID,
		"request_id", platform.RequestID(ctx))
	return nil
}

// removeNode stops and removes a node's containers and, when removeVolume
// is set, its volume.
func (d *Driver) removeNode(ctx context.Context, n *node, ids []string, removeVolume bool) error {
	// All at once, so that a node of several containers takes one grace
	// period to stop, not one per container.
	grace := int((d.opts.GracePeriod + time.Second - 1) / time.Second)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := d.engine.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &grace}); err != nil && !cerrdefs.IsNotFound(err) {
				// Removal below forces it; the log says why it had to.
				d.logger.WarnContext(ctx, "stopping container", "cluster_id", n.ClusterID, "node_id", n.NodeID,
					"container", id, "error", err, "request_id", platform.RequestID(ctx))
			}
		}()
	}
	wg.Wait()
	d.step(stepStopped, n.NodeID)
	for _, id := range ids {
		_, err := d.engine.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return d.engineError(err, "node %s: removing container %s", n.NodeID, id)
		}
		d.step(stepContainerRemoved, n.NodeID)
	}
	if removeVolume {
		volume := volumeName(n.ClusterID, n.NodeID)
		if _, err := d.engine.VolumeRemove(ctx, volume, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return d.engineError(err, "node %s: removing volume %s", n.NodeID, volume)
		}
		d.step(stepVolumeRemoved, n.NodeID)
	}
	return nil
}

// removeNetworkIfUnused removes a cluster's network once no container of the
// cluster is left and no provision of this Berth is making one. Another
// Berth serving the same engine may be about to use it: the engine refuses
// to remove a network in use, and a provision that loses the race fails
// and rolls back.
func (d *Driver) removeNetworkIfUnused(ctx context.Context, cs *clusterState, clusterID string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if len(cs.pending) > 0 {
		return
	}
	nodes, err := d.list(ctx, clusterID)
	if err != nil || len(nodes) > 0 {
		return
	}
	name := networkName(clusterID)
	if _, err := d.engine.NetworkRemove(ctx, name, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		d.logger.WarnContext(ctx, "removing the network of a cluster without nodes", "cluster_id", clusterID,
			"network", name, "error", err, "request_id", platform.RequestID(ctx))
	}
}

// engineError turns an engine failure into a platform error whose message
// names the step (format and args) and gives the engine's own message, so
// that the user sees both: EUNAVAILABLE, naming the address tried, when the
// engine cannot be reached; else EUNPROCESSABLE, as the engine refused what
// the template asked for.
func (d *Driver) engineError(err error, format string, args ...any) error {
	step := fmt.Sprintf(format, args...)
	if unreachable(err) {
		return platform.Errorf(platform.EUNAVAILABLE, "%s: the container engine at %s is unavailable: %v", step, d.Host(), err)
	}
	return platform.Errorf(platform.EUNPROCESSABLE, "%s: %v", step, err)
}

func unreachable(err error) bool {
	return client.IsErrConnectionFailed(err) || cerrdefs.IsUnavailable(err) ||
		errors.Is(err, context.DeadlineExceeded)
}

// cluster returns the state of a cluster, held until release.
func (d *Driver) cluster(clusterID string) *clusterState {
	d.mu.Lock()
	defer d.mu.Unlock()
	cs := d.clusters[clusterID]
	if cs == nil {
		cs = &clusterState{pending: map[string]*node{}, stopping: map[string]bool{}, busy: map[string]*sync.Mutex{}}
		d.clusters[clusterID] = cs
	}
	cs.refs++
	return cs
}

func (d *Driver) release(clusterID string, cs *clusterState) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if cs.refs--; cs.refs == 0 {
		delete(d.clusters, clusterID)
	}
}

// lockNode serialises deprovisions of one node and returns the unlock
// function. The cluster state outlives it: its holder holds a reference.
func (cs *clusterState) lockNode(nodeID string) func() {
	cs.mu.Lock()
	l := cs.busy[nodeID]
	if l == nil {
		l = &sync.Mutex{}
		cs.busy[nodeID] = l
	}
	cs.mu.Unlock()
	l.Lock()
	return l.Unlock
}
