package test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/internal/podmantest"
	"github.com/berthio/berth/platform"
)

// dockerEngine starts a private Podman with the busybox and Redis images
// the tests run.
func dockerEngine(t *testing.T) *podmantest.Engine {
	t.Helper()
	e := podmantest.Start(t)
	e.ImportBusybox(t, podmantest.BusyboxImage)
	e.ImportRedis(t, podmantest.RedisImage)
	return e
}

// startDockerBerth runs berth serve --driver docker against the engine.
func startDockerBerth(t *testing.T, e *podmantest.Engine, args ...string) *berthServer {
	t.Helper()
	return startBerth(t, append([]string{"--driver", "docker", "--docker-host", e.Host, "--docker-grace-period", "2s",
		"--data-dir", t.TempDir()}, args...)...)
}

// uniqueCluster returns a cluster ID no other test on the machine uses:
// Podman's network names are machine-wide (see package podmantest).
func uniqueCluster(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestDockerRedisCluster is the Docker driver end to end, on a real engine
// and through the real binary: three Redis nodes of one cluster in two
// groups answer PING on 127.0.0.1, discovery shows their groups and classes,
// a killed Redis process is restarted by the engine, a restarted Berth sees
// the same nodes, and deprovisions leave nothing on the engine.
func TestDockerRedisCluster(t *testing.T) {
	e := dockerEngine(t)
	srv := startDockerBerth(t, e)
	if code, body := getStatus(t, srv.Root+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	cluster := uniqueCluster("cache")
	var prov platform.ProvisionResponse
	out := berth(t, "provision", "--url", srv.URL, "--cluster", cluster, "--store", "redis", "--version", "7.0",
		"--group", "primary", "--class", "large", "--desired", "1", "--wait", "-o", "json")
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 1 {
		t.Fatalf("primary provision: %q (%v)", out, err)
	}
	primary := prov.NodeIDs[0]
	// The replicas' request declares both groups, as Replicante Core's do.
	req := `{"cluster": {"cluster_id": "` + cluster + `", "store": "redis", "store_version": "7.0",
		"nodes": {"primary": {"desired_count": 1, "node_class": "large"},
		          "replica": {"desired_count": 2, "node_class": "small"}}},
		"provision": {"node_group_id": "replica", "count": 2}}`
	reqFile := filepath.Join(t.TempDir(), "replicas.json")
	if err := os.WriteFile(reqFile, []byte(req), 0o644); err != nil {
		t.Fatal(err)
	}
	out = berth(t, "provision", "--url", srv.URL, "-f", reqFile, "--wait", "-o", "json")
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 2 {
		t.Fatalf("replica provision: %q (%v)", out, err)
	}
	replicas := prov.NodeIDs

	resp := discover(t, srv.URL)
	for _, id := range append([]string{primary}, replicas...) {
		n := findNode(resp, cluster, id)
		if n == nil {
			t.Fatalf("discovery lacks node %s: %+v", id, resp)
		}
		group, class := "replica", "small"
		if id == primary {
			group, class = "primary", "large"
		}
		if n.NodeGroup == nil || *n.NodeGroup != group || n.NodeClass != class {
			t.Errorf("node %s: group %v class %q; want %s %s", id, n.NodeGroup, n.NodeClass, group, class)
		}
		store := n.Addresses["store"]
		if !strings.HasPrefix(store, "127.0.0.1:") || !strings.HasPrefix(n.AgentAddress, "http://127.0.0.1:") {
			t.Errorf("node %s: addresses %v, agent %q; want them on 127.0.0.1", id, n.Addresses, n.AgentAddress)
		}
		waitPong(t, store)
	}
	table := berth(t, "discover", "--url", srv.URL)
	if !strings.Contains(table, primary) || !strings.Contains(table, "large") {
		t.Errorf("discover table:\n%s", table)
	}

	// Kill the primary's redis-server: the engine starts it again.
	container := "berth-" + cluster + "-" + primary + "-redis"
	var killed struct {
		State        struct{ Pid int }
		RestartCount int
	}
	e.Inspect(t, container, &killed)
	if killed.State.Pid <= 0 {
		t.Fatalf("container %s has no process: %+v", container, killed)
	}
	if err := syscall.Kill(killed.State.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if findNode(discover(t, srv.URL), cluster, primary) == nil {
		t.Error("a node whose process was killed left discovery")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var now struct {
			State        struct{ Pid int }
			RestartCount int
		}
		e.Inspect(t, container, &now)
		if now.State.Pid > 0 && now.State.Pid != killed.State.Pid && now.RestartCount > killed.RestartCount {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed redis was not restarted: %+v", now)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitPong(t, findNode(discover(t, srv.URL), cluster, primary).Addresses["store"])

	// The engine is the only state: a new Berth lists exactly the same.
	before := mustJSON(t, findCluster(discover(t, srv.URL), cluster))
	srv.stop(t)
	srv = startDockerBerth(t, e)
	if after := mustJSON(t, findCluster(discover(t, srv.URL), cluster)); after != before {
		t.Errorf("a restarted berth discovers\n%s\nwhere the first discovered\n%s", after, before)
	}

	for _, id := range append(replicas, primary) {
		berth(t, "deprovision", "--url", srv.URL, "--cluster", cluster, "--node", id, "--wait")
	}
	if left := e.Objects(t, "io.berth.cluster="+cluster); len(left) != 0 {
		t.Errorf("the engine still has: %v", left)
	}
	_, stderr, code := berthStatus(t, "deprovision", "--url", srv.URL, "--cluster", cluster, "--node", primary)
	if code != 1 || !strings.Contains(stderr, primary) {
		t.Errorf("deprovision of a removed node: exit %d, %q; want 1 naming it", code, stderr)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDockerMissingImage: a provision whose image can be neither found nor
// pulled fails, naming the image, and leaves nothing on the engine.
func TestDockerMissingImage(t *testing.T) {
	e := dockerEngine(t)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"docker/stores.yaml":         "- store: ghost\n  versions: ghost-versions.yaml\n",
		"docker/ghost-versions.yaml": "- version: \">=1.0\"\n  template: ghost.yaml\n",
		"docker/ghost.yaml": `agent_port: store
containers:
  - name: ghost
    image: localhost/berth-test/ghost:1
    ports: {store: 7000}
    mounts: [{target: /data}]
`,
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := startDockerBerth(t, e, "--catalog", dir)
	cluster := uniqueCluster("ghost")
	_, stderr, code := berthStatus(t, "provision", "--url", srv.URL, "--cluster", cluster, "--store", "ghost", "--version", "1.0")
	if code != 1 || !strings.Contains(stderr, "pulling image localhost/berth-test/ghost:1") {
		t.Fatalf("provision of a missing image: exit %d, stderr %q; want 1 naming the pull of the image", code, stderr)
	}
	if left := e.Objects(t, "io.berth.cluster="+cluster); len(left) != 0 {
		t.Errorf("the engine still has: %v", left)
	}
	if c := findCluster(discover(t, srv.URL), cluster); c != nil {
		t.Errorf("discovery lists %+v", c)
	}
}

func findCluster(resp platform.DiscoveryResponse, cluster string) *platform.ClusterDiscovery {
	for i := range resp.Clusters {
		if resp.Clusters[i].ClusterID == cluster {
			return &resp.Clusters[i]
		}
	}
	return nil
}

// TestDockerEngineUnavailable: with no engine at --docker-host, berth serve
// starts, /readyz is 503 and provisions are 503, both naming the address.
// It needs no engine.
func TestDockerEngineUnavailable(t *testing.T) {
	host := "unix://" + filepath.Join(t.TempDir(), "no-engine.sock")
	srv := startBerth(t, "--driver", "docker", "--docker-host", host, "--data-dir", t.TempDir())
	code, body := getStatus(t, srv.Root+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, host) {
		t.Errorf("/readyz without an engine: %d %s; want 503 naming %s", code, body, host)
	}
	resp, err := http.Post(srv.URL+"provision", "application/json", strings.NewReader(`{"cluster": {"cluster_id": "c",
		"store": "redis", "store_version": "7.0", "nodes": {"default": {"desired_count": 1, "node_class": "default"}}},
		"provision": {"node_group_id": "default"}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(data), host) {
		t.Errorf("provision without an engine: %d %s; want 503 naming %s", resp.StatusCode, data, host)
	}
	if !strings.Contains(srv.logs.String(), "container engine not ready") {
		t.Errorf("berth serve did not warn at start:\n%s", srv.logs)
	}
}

// TestDockerServeRejectsBadFlags: a wrong engine address or host IP is a
// usage error (exit 2) before anything is served.
func TestDockerServeRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--docker-host-ip", "not-an-ip"},
		{"--docker-host", "no-scheme"},
	} {
		_, stderr, code := berthStatus(t, append([]string{"serve", "--driver", "docker", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
		if code != 2 || !strings.Contains(stderr, args[1]) {
			t.Errorf("berth serve --driver docker %v: exit %d, stderr %q; want 2 naming %s", args, code, stderr, args[1])
		}
	}
}
