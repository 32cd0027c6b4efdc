package docker

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/podmantest"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

// testCatalog is the built-in catalogue under a layer of test templates:
// busybox nodes, a Redis node with an agent sidecar, and a template whose
// image exists nowhere.
var testCatalog = fstest.MapFS{
	"docker/stores.yaml": {Data: []byte(`
- store: sleeper
  versions: sleeper.yaml
- store: redis
  attributes: {sidecar: true}
  versions: redis-sidecar.yaml
- store: missing
  versions: missing.yaml
- store: badstart
  versions: badstart.yaml
`)},
	"docker/badstart.yaml": {Data: []byte(`[{version: ">=0", template: badstart-node.yaml}]`)},
	// The engine creates these containers, then cannot start the second.
	"docker/badstart-node.yaml": {Data: []byte(`
pull: never
agent_port: store
containers:
  - name: main
    image: ` + podmantest.BusyboxImage + `
    ports: {store: 6379}
    mounts: [{target: /data}]
    command: [sleep, "3600"]
  - name: broken
    image: ` + podmantest.BusyboxImage + `
    user: no-such-user
    command: [sleep, "3600"]
`)},
	"docker/sleeper.yaml":       {Data: []byte(`[{version: ">=0", template: sleeper-node.yaml}]`)},
	"docker/redis-sidecar.yaml": {Data: []byte(`[{version: ">=0", template: redis-sidecar-node.yaml}]`)},
	"docker/missing.yaml":       {Data: []byte(`[{version: ">=0", template: missing-node.yaml}]`)},
	"docker/sleeper-node.yaml": {Data: []byte(`
pull: never
agent_address: "http://{{ .NodeID }}:1"
containers:
  - name: main
    image: ` + podmantest.BusyboxImage + `
    command: [sleep, "3600"]
    stop_signal: KILL
`)},
	// The agent is busybox's httpd, serving a page that says whether it
	// reached Redis by the node ID on the cluster's network.
	"docker/redis-sidecar-node.yaml": {Data: []byte(`
pull: never
agent_port: agent
containers:
  - name: redis
    image: ` + podmantest.RedisImage + `
    ports: {store: 6379}
    mounts: [{target: /data}]
    command: [redis-server, --port, "6379", --protected-mode, "no", --dir, /data]
  - name: agent
    image: ` + podmantest.BusyboxImage + `
    ports: {agent: 8080}
    mounts: [{target: /www, tmpfs: true}]
    env: {REDIS: "{{ .NodeID }}:{{ .Ports.store }}"}
    command:
      - sh
      - -c
      - 'until echo PING | nc -w 1 ${REDIS%:*} ${REDIS#*:} | grep -q PONG; do sleep 0.2; done; echo reached $REDIS > /www/index.html; exec httpd -f -p 8080 -h /www'
`)},
	"docker/missing-node.yaml": {Data: []byte(`
agent_port: store
containers:
  - name: main
    image: localhost/berth-test/no-such-image:1
    ports: {store: 6379}
`)},
}

type fixture struct {
	engine *podmantest.Engine
	driver *Driver
	api    *client.Client
}

// newFixture starts an engine with both test images and opens a driver on it.
func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	e := podmantest.Start(t)
	e.ImportBusybox(t, podmantest.BusyboxImage)
	e.ImportRedis(t, podmantest.RedisImage)
	f := &fixture{engine: e}
	f.driver = openDriver(t, e, opts)
	api, err := client.New(client.WithHost(e.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	f.api = api
	return f
}

func openDriver(t *testing.T, e *podmantest.Engine, opts Options) *Driver {
	t.Helper()
	cat, err := catalog.New(catalog.Layer{Name: "test", FS: testCatalog}, catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Catalog = e.Host, cat
	if opts.GracePeriod == 0 {
		opts.GracePeriod = 2 * time.Second
	}
	d, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

// uniqueCluster returns a cluster ID no other test on this machine uses:
// network names are machine-wide in Podman (see package podmantest).
func uniqueCluster(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func provisionRequest(cluster, store, version, group string, desired, count int, attrs map[string]any) platform.ProvisionRequest {
	return platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			ClusterID: cluster, Store: store, StoreVersion: version, Attributes: attrs,
			Nodes: map[string]platform.NodeGroup{group: {DesiredCount: desired, NodeClass: "small"}},
		},
		Provision: platform.ProvisionSpec{NodeGroupID: group, Count: count},
	}
}

func (f *fixture) provision(t *testing.T, req platform.ProvisionRequest) []string {
	t.Helper()
	resp, err := f.driver.Provision(context.Background(), req)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	if resp.Count != len(resp.NodeIDs) {
		t.Fatalf("provision answered count %d with %d node IDs", resp.Count, len(resp.NodeIDs))
	}
	return resp.NodeIDs
}

func (f *fixture) discover(t *testing.T, cluster string) []platform.DiscoveredNode {
	t.Helper()
	resp, err := f.driver.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Clusters {
		if c.ClusterID == cluster {
			return c.Nodes
		}
	}
	return nil
}

// leftovers lists, through the engine's own API, every container, volume
// and network of a cluster.
func (f *fixture) leftovers(t *testing.T, cluster string) []string {
	t.Helper()
	return f.engine.Objects(t, LabelCluster+"="+cluster)
}

// redisCommand sends one inline command and returns the first reply line,
// or for a bulk reply its text.
func redisCommand(addr, command string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(conn, command+"\r\n"); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "$") {
		var n int
		fmt.Sscanf(line, "$%d", &n)
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf), nil
	}
	return line, nil
}

// eventually retries check until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitPong(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 20*time.Second, "redis at "+addr, func() error {
		reply, err := redisCommand(addr, "PING")
		if err == nil && reply != "+PONG" {
			err = fmt.Errorf("PING answered %q", reply)
		}
		return err
	})
}

// TestRedisPrimaryAndReplicas provisions the built-in Redis template: a
// primary and two replicas that find it by its node ID, each answering on
// 127.0.0.1; then removes them all and checks with the engine that nothing
// is left.
func TestRedisPrimaryAndReplicas(t *testing.T) {
	f := newFixture(t, Options{})
	cluster := uniqueCluster("redis")
	primary := f.provision(t, provisionRequest(cluster, "redis", "7.0", "primary", 1, 1, nil))
	replicaReq := provisionRequest(cluster, "redis", "7.0", "replica", 2, 5, nil)
	replicaReq.Cluster.Nodes["primary"] = platform.NodeGroup{DesiredCount: 1, NodeClass: "small"}
	replicas := f.provision(t, replicaReq)
	if len(primary) != 1 || len(replicas) != 2 {
		t.Fatalf("provisioned %v and %v; want 1 primary and 2 replicas", primary, replicas)
	}
	// A full group gets nothing more.
	if more := f.provision(t, replicaReq); len(more) != 0 {
		t.Fatalf("a full group got %v", more)
	}

	nodes := f.discover(t, cluster)
	if len(nodes) != 3 {
		t.Fatalf("discovery lists %d nodes, want 3: %+v", len(nodes), nodes)
	}
	for _, n := range nodes {
		wantGroup := "replica"
		if n.NodeID == primary[0] {
			wantGroup = "primary"
		}
		if n.NodeGroup == nil || *n.NodeGroup != wantGroup || n.NodeClass != "small" {
			t.Errorf("node %s: group %v, class %q; want %s, small", n.NodeID, n.NodeGroup, n.NodeClass, wantGroup)
		}
		store, agent := n.Addresses["store"], n.Addresses["agent"]
		if !strings.HasPrefix(store, "127.0.0.1:") || n.AgentAddress != "http://"+agent || !strings.HasPrefix(agent, "127.0.0.1:") {
			t.Errorf("node %s: addresses %v, agent %q; want both published on 127.0.0.1", n.NodeID, n.Addresses, n.AgentAddress)
		}
		waitPong(t, store)
		if n.NodeID != primary[0] {
			eventually(t, 30*time.Second, "replica "+n.NodeID+" linked to its primary", func() error {
				info, err := redisCommand(store, "INFO replication")
				if err == nil && !(strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") &&
					strings.Contains(info, "master_host:"+primary[0])) {
					err = fmt.Errorf("INFO replication: %s", info)
				}
				return err
			})
		}
	}

	for _, n := range nodes {
		if err := f.driver.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: n.NodeID}); err != nil {
			t.Fatalf("deprovision %s: %v", n.NodeID, err)
		}
	}
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	err := f.driver.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: primary[0]})
	if platform.ErrorCode(err) != platform.ENOTFOUND || !strings.Contains(err.Error(), primary[0]) {
		t.Errorf("second deprovision: %v; want not found naming the node", err)
	}
}

// TestSidecarAgent runs a node of two containers: the agent sidecar reaches
// Redis by the node ID, and discovery's agent address is the published
// port of the sidecar's agent port.
func TestSidecarAgent(t *testing.T) {
	f := newFixture(t, Options{})
	cluster := uniqueCluster("sidecar")
	ids := f.provision(t, provisionRequest(cluster, "redis", "7.0", "default", 1, 1, map[string]any{"sidecar": true}))
	nodes := f.discover(t, cluster)
	if len(nodes) != 1 || nodes[0].NodeID != ids[0] {
		t.Fatalf("discovery: %+v; want the one node %v", nodes, ids)
	}
	n := nodes[0]
	if n.AgentAddress != "http://"+n.Addresses["agent"] || n.Addresses["store"] == "" {
		t.Fatalf("agent address %q, addresses %v", n.AgentAddress, n.Addresses)
	}
	waitPong(t, n.Addresses["store"])
	eventually(t, 30*time.Second, "agent sidecar", func() error {
		resp, err := http.Get(n.AgentAddress + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if want := "reached " + ids[0] + ":6379"; !strings.Contains(string(body), want) {
			return fmt.Errorf("%s: %q, want %q", resp.Status, body, want)
		}
		return nil
	})
	containers, err := f.api.ContainerList(context.Background(), client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", LabelNode+"="+ids[0])})
	if err != nil || len(containers.Items) != 2 {
		t.Fatalf("engine lists %d containers for the node (%v); want 2", len(containers.Items), err)
	}
	for _, c := range containers.Items {
		for _, key := range []string{LabelCluster, LabelNode, LabelGroup, LabelClass, LabelStore, LabelVersion, LabelContainer} {
			if c.Labels[key] == "" {
				t.Errorf("container %v lacks label %s: %v", c.Names, key, c.Labels)
			}
		}
	}
	if err := f.driver.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestConcurrentProvisionsKeepDesiredCount: provisions racing in one Berth
// never push a group past its desired_count.
func TestConcurrentProvisionsKeepDesiredCount(t *testing.T) {
	f := newFixture(t, Options{})
	cluster := uniqueCluster("race")
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.driver.Provision(context.Background(), provisionRequest(cluster, "sleeper", "1.0", "default", 3, 2, nil))
			if err != nil {
				t.Errorf("provision: %v", err)
				return
			}
			mu.Lock()
			total += resp.Count
			mu.Unlock()
		}()
	}
	wg.Wait()
	nodes := f.discover(t, cluster)
	if total != 3 || len(nodes) != 3 {
		t.Fatalf("provisions created %d nodes and discovery lists %d; want 3", total, len(nodes))
	}
	for _, n := range nodes {
		if n.AgentAddress != "http://"+n.NodeID+":1" || n.Addresses != nil {
			t.Errorf("node %s: agent %q, addresses %v; want the literal agent address and no ports", n.NodeID, n.AgentAddress, n.Addresses)
		}
	}
	// A second driver on the same engine (another Berth, or this one
	// restarted) sees the same nodes and can remove them.
	other := openDriver(t, f.engine, Options{})
	for _, n := range nodes {
		if err := other.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: n.NodeID}); err != nil {
			t.Fatal(err)
		}
	}
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestMissingImage: a provision whose image cannot be had fails with 422
// naming the image and the step, and leaves nothing behind; one whose
// container cannot start is removed again, containers and volume.
func TestMissingImage(t *testing.T) {
	f := newFixture(t, Options{})
	cluster := uniqueCluster("missing")
	_, err := f.driver.Provision(context.Background(), provisionRequest(cluster, "missing", "1.0", "default", 1, 1, nil))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(platform.ErrorMessage(err), "pulling image localhost/berth-test/no-such-image:1") {
		t.Fatalf("provision with a missing image: %v; want unprocessable naming the pull", err)
	}
	t.Logf("missing image: %v", platform.ErrorMessage(err))
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}

	// A node already in the cluster keeps the network while a failed
	// provision removes only what it made.
	keep := f.provision(t, provisionRequest(cluster, "sleeper", "1.0", "sleepers", 1, 1, nil))
	_, err = f.driver.Provision(context.Background(), provisionRequest(cluster, "badstart", "1.0", "default", 2, 2, nil))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(platform.ErrorMessage(err), "starting container broken") {
		t.Fatalf("provision whose container cannot start: %v; want unprocessable naming the step", err)
	}
	t.Logf("container that cannot start: %v", platform.ErrorMessage(err))
	left := f.leftovers(t, cluster)
	if len(left) != 3 || !strings.Contains(strings.Join(left, " "), keep[0]) {
		t.Errorf("after the failed provision: %v; want only the sleeper's container, volume and the network", left)
	}
	if nodes := f.discover(t, cluster); len(nodes) != 1 || nodes[0].NodeID != keep[0] {
		t.Errorf("discovery lists %+v; want only %s", nodes, keep[0])
	}
	if err := f.driver.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: keep[0]}); err != nil {
		t.Fatal(err)
	}
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestStoppedNodeStaysListed: discovery lists a node whose container is not
// running, and deprovision removes it; with KeepData its volume stays.
func TestStoppedNodeStaysListed(t *testing.T) {
	f := newFixture(t, Options{KeepData: true})
	cluster := uniqueCluster("stopped")
	ids := f.provision(t, provisionRequest(cluster, "sleeper", "1.0", "default", 1, 1, nil))
	name := containerName(cluster, ids[0], "main")
	timeout := 0
	if _, err := f.api.ContainerStop(context.Background(), name, client.ContainerStopOptions{Timeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	if nodes := f.discover(t, cluster); len(nodes) != 1 || nodes[0].NodeID != ids[0] {
		t.Fatalf("discovery with the container stopped: %+v", nodes)
	}
	if err := f.driver.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cluster, NodeID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	// KeepData keeps the volume, and only the volume.
	left := f.leftovers(t, cluster)
	if len(left) != 1 || left[0] != "volume "+volumeName(cluster, ids[0]) {
		t.Errorf("left behind with KeepData: %v; want the volume only", left)
	}
	if _, err := f.api.VolumeRemove(context.Background(), volumeName(cluster, ids[0]), client.VolumeRemoveOptions{}); err != nil {
		t.Error(err)
	}
}

// TestEngineUnavailable: with no engine at the address, readiness,
// discovery and provisions fail with EUNAVAILABLE naming the address.
func TestEngineUnavailable(t *testing.T) {
	cat, err := catalog.New(catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	host := "unix://" + t.TempDir() + "/no-engine.sock"
	d, err := Open(Options{Host: host, Catalog: cat})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	_, discoverErr := d.Discover(ctx)
	_, provisionErr := d.Provision(ctx, provisionRequest("c", "redis", "7.0", "default", 1, 1, nil))
	deprovisionErr := d.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c", NodeID: "node-12345678"})
	for what, err := range map[string]error{"ready": d.Ready(ctx), "discover": discoverErr, "provision": provisionErr, "deprovision": deprovisionErr} {
		if platform.ErrorCode(err) != platform.EUNAVAILABLE || !strings.Contains(platform.ErrorMessage(err), host) {
			t.Errorf("%s: %v; want unavailable naming %s", what, err, host)
		}
	}
}
