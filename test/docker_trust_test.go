package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthio/berth/internal/podmantest"
	"github.com/berthio/berth/platform"
)

// dockerContainer is what the engine's API says of one container.
type dockerContainer struct {
	Names  []string
	State  string
	Labels map[string]string
}

// dockerContainers lists every container of a cluster, running or not.
func dockerContainers(t *testing.T, e *podmantest.Engine, cluster string) []dockerContainer {
	t.Helper()
	filters, _ := json.Marshal(map[string][]string{"label": {"io.berth.cluster=" + cluster}})
	resp, err := e.HTTPClient().Get("http://podman/" + podmantest.APIVersion + "/containers/json?all=true&filters=" + string(filters))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var containers []dockerContainer
	if err := json.NewDecoder(resp.Body).Decode(&containers); err != nil {
		t.Fatal(err)
	}
	return containers
}

// TestDockerIdempotentRetries: with the docker driver a provision sent
// three times with one Idempotency-Key, across a restart of berth, makes its
// node once and gets one answer; the key with another request is 422. The
// key lives on the containers and volumes, not in Berth's data directory
// (each berth serve here has a new, empty one).
func TestDockerIdempotentRetries(t *testing.T) {
	e := dockerEngine(t)
	srv := startDockerBerth(t, e)
	cluster := uniqueCluster("retry")
	body := `{"cluster": {"cluster_id": "` + cluster + `", "store": "redis", "store_version": "7.0",
		"nodes": {"default": {"desired_count": 5, "node_class": "small"}}},
		"provision": {"node_group_id": "default", "count": 1}}`
	code, first := postProvision(t, srv.URL, "key-1", body)
	if code != 200 {
		t.Fatalf("first provision: %d %s", code, first)
	}
	var compact bytes.Buffer
	json.Compact(&compact, []byte(body))
	if code, again := postProvision(t, srv.URL, "key-1", compact.String()); code != 200 || again != first {
		t.Fatalf("retry: %d %s, want the first answer %s", code, again, first)
	}
	srv.stop(t)
	srv = startDockerBerth(t, e)
	if code, again := postProvision(t, srv.URL, "key-1", body); code != 200 || again != first {
		t.Fatalf("retry after a restart: %d %s, want %s", code, again, first)
	}
	if c := findCluster(discover(t, srv.URL), cluster); c == nil || len(c.Nodes) != 1 {
		t.Fatalf("retries provisioned more than once: %+v", c)
	}
	if containers := dockerContainers(t, e, cluster); len(containers) != 1 {
		t.Fatalf("the engine has %d containers, want 1", len(containers))
	}
	code, other := postProvision(t, srv.URL, "key-1", strings.Replace(body, `"count": 1`, `"count": 2`, 1))
	if code != 422 || !strings.Contains(other, "another provision request") {
		t.Fatalf("same key, other request: %d %s", code, other)
	}
	if code, second := postProvision(t, srv.URL, "key-2", body); code != 200 || second == first {
		t.Fatalf("a new key: %d %s", code, second)
	}
	for _, n := range findCluster(discover(t, srv.URL), cluster).Nodes {
		berth(t, "deprovision", "--url", srv.URL, "--cluster", cluster, "--node", n.NodeID)
	}
	if left := e.Objects(t, "io.berth.cluster="+cluster); len(left) != 0 {
		t.Errorf("the engine still has: %v", left)
	}
}

// TestDockerSIGKILLDuringConcurrentProvisions kills berth serve --driver
// docker while 10 provisions of one node each run, and starts it again:
// every provision answered 200 has its node in discovery with its containers
// running, no node is listed twice or has containers twice, discovery never
// lists a half-made node, and within the sweep's time (30 s after the
// markers were made) every container and volume of the cluster belongs to
// a listed node: half-made nodes and their markers are removed.
func TestDockerSIGKILLDuringConcurrentProvisions(t *testing.T) {
	e := dockerEngine(t)
	// Nodes of four containers, created one by one and then started one by
	// one, so that a SIGKILL is likely to find some half-made.
	const perNode = 4
	template := `pull: never
agent_port: store
containers:
  - name: redis
    image: ` + podmantest.RedisImage + `
    ports: {store: 6379}
    mounts: [{target: /data}]
    command: [redis-server, --port, "6379", --protected-mode, "no", --dir, /data]
`
	for i := 1; i < perNode; i++ {
		template += fmt.Sprintf(`  - name: side%d
    image: %s
    command: [sleep, "3600"]
    stop_signal: KILL
`, i, podmantest.BusyboxImage)
	}
	dir := t.TempDir()
	for name, content := range map[string]string{
		"docker/stores.yaml":          "- store: redis4\n  versions: redis4-versions.yaml\n",
		"docker/redis4-versions.yaml": "- version: '*'\n  template: redis4.yaml\n",
		"docker/redis4.yaml":          template,
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := startDockerBerth(t, e, "--catalog", dir)
	cluster := uniqueCluster("crash")
	body := `{"cluster": {"cluster_id": "` + cluster + `", "store": "redis4", "store_version": "1.0",
		"nodes": {"default": {"desired_count": 20, "node_class": "small"}}},
		"provision": {"node_group_id": "default", "count": 1}}`

	// Staggered, so that some are answered while others are half-way
	// through.
	fire := startProvisions(srv, 10, func(int) string { return body }, func(i int) time.Duration {
		return time.Duration(i) * 150 * time.Millisecond
	})
	// Kill berth once three provisions are answered and another has made
	// a container it has not started yet (or, failing that moment, once
	// most of them are answered).
	fire.waitFor(60*time.Second, func(answered int) bool {
		if answered >= 8 {
			return true
		}
		halfMade := false
		if answered >= 3 {
			for _, c := range dockerContainers(t, e, cluster) {
				halfMade = halfMade || c.State == "created"
			}
		}
		return halfMade
	})
	srv.cmd.Process.Kill()
	<-srv.done
	answered := fire.wait()
	t.Logf("%d provisions answered 200 before SIGKILL; the engine has: %v", len(answered), e.Objects(t, "io.berth.cluster="+cluster))
	halfMade := map[string]bool{}
	for _, c := range dockerContainers(t, e, cluster) {
		if c.State == "created" {
			halfMade[c.Labels["io.berth.node"]] = true
		}
	}
	t.Logf("%d half-made nodes (a container created, not started)", len(halfMade))

	srv = startDockerBerth(t, e)
	started := time.Now()
	check := func() (listed map[string]bool, err error) {
		listed = map[string]bool{}
		c := findCluster(discover(t, srv.URL), cluster)
		byNode := map[string][]dockerContainer{}
		for _, ctr := range dockerContainers(t, e, cluster) {
			byNode[ctr.Labels["io.berth.node"]] = append(byNode[ctr.Labels["io.berth.node"]], ctr)
		}
		if c != nil {
			for _, n := range c.Nodes {
				if listed[n.NodeID] {
					t.Errorf("node %s is listed twice", n.NodeID)
				}
				listed[n.NodeID] = true
				ctrs := byNode[n.NodeID]
				running := 0
				for _, ctr := range ctrs {
					if ctr.State == "running" {
						running++
					}
				}
				if len(ctrs) != perNode || running != perNode {
					t.Errorf("listed node %s has containers %+v; want %d, running", n.NodeID, ctrs, perNode)
				}
			}
		}
		for _, id := range answered {
			if !listed[id] {
				t.Errorf("node %s was answered 200 but is not listed after the restart", id)
			}
		}
		// Every object of the cluster is a listed node's, or the network.
		var stray []string
		for _, object := range e.Objects(t, "io.berth.cluster="+cluster) {
			kind, name, _ := strings.Cut(object, " ")
			owner := ""
			for id := range listed {
				if name == "berth-"+cluster+"-"+id || (kind == "container" && strings.HasPrefix(name, "berth-"+cluster+"-"+id+"-")) {
					owner = id
				}
			}
			if owner == "" && object != "network berth-"+cluster {
				stray = append(stray, object)
			}
		}
		if len(stray) > 0 {
			return listed, fmt.Errorf("objects of no listed node: %v", stray)
		}
		return listed, nil
	}
	var listed map[string]bool
	for {
		var err error
		listed, err = check()
		if t.Failed() {
			t.FailNow()
		}
		if err == nil {
			break
		}
		if time.Since(started) > 90*time.Second {
			t.Fatalf("%v, %s after the restart", err, time.Since(started).Round(time.Second))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d nodes listed; every object of the cluster is theirs %s after the restart", len(listed), time.Since(started).Round(100*time.Millisecond))
	for id := range listed {
		waitPong(t, findNode(discover(t, srv.URL), cluster, id).Addresses["store"])
		berth(t, "deprovision", "--url", srv.URL, "--cluster", cluster, "--node", id)
	}
	if left := e.Objects(t, "io.berth.cluster="+cluster); len(left) != 0 {
		t.Errorf("the engine still has: %v", left)
	}
}

// TestDockerSIGKILLDuringDeprovision kills berth while a stubborn node (it
// ignores SIGTERM, and the grace period is 30 s) is being deprovisioned:
// after a restart the node is gone or listed, and deprovisioning it again
// finishes the job, leaving nothing on the engine.
func TestDockerSIGKILLDuringDeprovision(t *testing.T) {
	e := dockerEngine(t)
	dir := t.TempDir()
	for name, content := range map[string]string{
		"docker/stores.yaml":            "- store: stubborn\n  versions: stubborn-versions.yaml\n",
		"docker/stubborn-versions.yaml": "- version: '*'\n  template: stubborn.yaml\n",
		"docker/stubborn.yaml": `pull: never
agent_address: "http://{{ .NodeID }}:1"
containers:
  - name: main
    image: ` + podmantest.BusyboxImage + `
    mounts: [{target: /data}]
    command: [sh, -c, 'trap "" TERM; while :; do sleep 1; done']
    stop_signal: SIGTERM
`,
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := startDockerBerth(t, e, "--catalog", dir, "--docker-grace-period", "30s")
	cluster := uniqueCluster("stubborn")
	out := berth(t, "provision", "--url", srv.URL, "--cluster", cluster, "--store", "stubborn", "--version", "1.0", "-o", "json")
	var prov platform.ProvisionResponse
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 1 {
		t.Fatalf("provision: %q %v", out, err)
	}
	node := prov.NodeIDs[0]
	done := make(chan int, 1)
	go func() {
		body, _ := json.Marshal(platform.DeprovisionRequest{ClusterID: cluster, NodeID: node})
		resp, err := http.Post(srv.URL+"deprovision", "application/json", bytes.NewReader(body))
		if err != nil {
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(time.Second) // inside the 30 s grace period
	srv.cmd.Process.Kill()
	<-srv.done
	if code := <-done; code != 0 {
		t.Fatalf("deprovision answered %d before berth was killed", code)
	}
	t.Logf("after SIGKILL the engine has: %v", e.Objects(t, "io.berth.cluster="+cluster))

	srv = startDockerBerth(t, e, "--catalog", dir)
	if n := findNode(discover(t, srv.URL), cluster, node); n != nil {
		t.Logf("node %s is still listed; deprovisioning it again", node)
	} else {
		t.Logf("node %s is gone; deprovisioning it again", node)
	}
	start := time.Now()
	_, stderr, code := berthStatus(t, "deprovision", "--url", srv.URL, "--cluster", cluster, "--node", node)
	if code != 0 && !strings.Contains(stderr, "no node") {
		t.Fatalf("deprovision again: exit %d, %s", code, stderr)
	}
	t.Logf("the second deprovision took %s", time.Since(start).Round(100*time.Millisecond))
	if findNode(discover(t, srv.URL), cluster, node) != nil {
		t.Fatal("the node is still listed after deprovisioning it again")
	}
	if left := e.Objects(t, "io.berth.cluster="+cluster); len(left) != 0 {
		t.Fatalf("the engine still has: %v", left)
	}
	if code := dockerPostDeprovisionStatus(t, srv.URL, cluster, node); code != http.StatusNotFound {
		t.Errorf("a third deprovision: %d, want 404", code)
	}
}

func dockerPostDeprovisionStatus(t *testing.T, url, cluster, node string) int {
	t.Helper()
	body, _ := json.Marshal(platform.DeprovisionRequest{ClusterID: cluster, NodeID: node})
	resp, err := http.Post(url+"deprovision", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
