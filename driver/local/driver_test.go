package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

// testPorts keeps this package's nodes out of the default range, which the
// end-to-end tests (running at the same time) use.
var testPorts = PortRange{Min: 40000, Max: 44999}

func newTestDriver(t *testing.T, dataDir string) *Driver {
	t.Helper()
	cat, err := catalog.New(catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{DataDir: dataDir, Catalog: cat, GracePeriod: 5 * time.Second, Ports: testPorts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// cleanupNodes deprovisions whatever a test left behind, so no redis-server
// outlives the test run.
func cleanupNodes(t *testing.T, d *Driver) {
	t.Cleanup(func() {
		resp, err := d.Discover(context.Background())
		if err != nil {
			return
		}
		for _, c := range resp.Clusters {
			for _, n := range c.Nodes {
				_ = d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: c.ClusterID, NodeID: n.NodeID})
			}
		}
	})
}

func redisRequest(cluster, group string, desired, count int) platform.ProvisionRequest {
	return platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			ClusterID:    cluster,
			Store:        "redis",
			StoreVersion: "7.0",
			Attributes:   map[string]any{},
			Nodes: map[string]platform.NodeGroup{
				group: {DesiredCount: desired, NodeClass: "small", Attributes: map[string]any{}},
			},
		},
		Provision: platform.ProvisionSpec{NodeGroupID: group, Count: count},
	}
}

// ping sends PING over RESP and waits for PONG, retrying while the server starts.
func ping(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = conn.Write([]byte("PING\r\n"))
			if err == nil {
				var line string
				line, err = bufio.NewReader(conn).ReadString('\n')
				if err == nil && strings.TrimSpace(line) == "+PONG" {
					conn.Close()
					return
				}
				if err == nil {
					err = fmt.Errorf("answered %q", line)
				}
			}
			conn.Close()
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("redis on port %d does not answer PING: %v", port, lastErr)
}

func nodeRecordOf(t *testing.T, d *Driver, cluster, node string) *nodeRecord {
	t.Helper()
	var rec *nodeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getNode(tx, cluster, node)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRedisNodesLifecycle(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	ctx := context.Background()
	dataDir := t.TempDir()
	d := newTestDriver(t, dataDir)
	cleanupNodes(t, d)

	generation := d.DiscoveryGeneration()
	resp, err := d.Provision(ctx, redisRequest("c1", "default", 3, 3))
	if err != nil {
		t.Fatal(err)
	}
	if d.DiscoveryGeneration() == generation {
		t.Error("a provision did not move the discovery generation")
	}
	if resp.Count != 3 || len(resp.NodeIDs) != 3 {
		t.Fatalf("provision = %+v, want 3 nodes", resp)
	}
	var recs []*nodeRecord
	for _, id := range resp.NodeIDs {
		rec := nodeRecordOf(t, d, "c1", id)
		if rec == nil || rec.State != stateRunning {
			t.Fatalf("node %s record = %+v, want running", id, rec)
		}
		ping(t, rec.Ports["store"])
		if want := fmt.Sprintf("http://127.0.0.1:%d", rec.Ports["agent"]); rec.Spec.AgentAddress != want {
			t.Errorf("agent address = %q, want %q", rec.Spec.AgentAddress, want)
		}
		recs = append(recs, rec)
	}

	disc, err := d.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(disc.Clusters) != 1 || disc.Clusters[0].ClusterID != "c1" || len(disc.Clusters[0].Nodes) != 3 {
		t.Fatalf("discovery = %+v, want one cluster c1 with 3 nodes", disc)
	}
	for _, n := range disc.Clusters[0].Nodes {
		if n.NodeGroup == nil || *n.NodeGroup != "default" || n.NodeClass != "small" || n.AgentAddress == "" {
			t.Errorf("discovered node %+v: want group default, class small and an agent address", n)
		}
	}

	// A full group creates nothing.
	resp, err = d.Provision(ctx, redisRequest("c1", "default", 3, 1))
	if err != nil || resp.Count != 0 || len(resp.NodeIDs) != 0 {
		t.Fatalf("provision into a full group = %+v, %v; want count 0", resp, err)
	}

	victim := recs[0]
	if err := d.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c1", NodeID: victim.NodeID}); err != nil {
		t.Fatal(err)
	}
	for _, p := range victim.Processes {
		if p.alive() {
			t.Errorf("process %d of the deprovisioned node still runs", p.PID)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nodes", "c1", victim.NodeID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("node directory still there: %v", err)
	}
	if rec := nodeRecordOf(t, d, "c1", victim.NodeID); rec != nil {
		t.Errorf("record still there: %+v", rec)
	}
	if n := portOwnerCount(t, d); n != 4 {
		t.Errorf("%d ports allocated after one of three nodes went, want 4", n)
	}
	err = d.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c1", NodeID: victim.NodeID})
	if platform.ErrorCode(err) != platform.ENOTFOUND || !strings.Contains(err.Error(), victim.NodeID) || !strings.Contains(err.Error(), "c1") {
		t.Fatalf("second deprovision = %v, want not found naming cluster and node", err)
	}
	// The other nodes are untouched.
	for _, rec := range recs[1:] {
		ping(t, rec.Ports["store"])
	}
}

func portOwnerCount(t *testing.T, d *Driver) int {
	n := 0
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPorts).ForEach(func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConcurrentProvisionsHonourDesiredCount(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	ctx := context.Background()
	d := newTestDriver(t, t.TempDir())
	cleanupNodes(t, d)

	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := d.Provision(ctx, redisRequest("race", "g", 3, 1))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			created += resp.Count
			mu.Unlock()
		}()
	}
	wg.Wait()
	disc, err := d.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if created != 3 || len(disc.Clusters) != 1 || len(disc.Clusters[0].Nodes) != 3 {
		t.Fatalf("20 concurrent provisions created %d nodes, discovery %+v; want exactly 3", created, disc)
	}
}

func TestNodesOutliveTheDriver(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	ctx := context.Background()
	dataDir := t.TempDir()
	d := newTestDriver(t, dataDir)
	resp, err := d.Provision(ctx, redisRequest("keep", "default", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	rec := nodeRecordOf(t, d, "keep", resp.NodeIDs[0])
	d.Close()

	// A new driver on the same data directory sees the node and can remove it.
	d2 := newTestDriver(t, dataDir)
	cleanupNodes(t, d2)
	ping(t, rec.Ports["store"])
	disc, err := d2.Discover(ctx)
	if err != nil || len(disc.Clusters) != 1 || disc.Clusters[0].Nodes[0].NodeID != rec.NodeID {
		t.Fatalf("discovery after reopening = %+v, %v", disc, err)
	}
	if err := d2.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "keep", NodeID: rec.NodeID}); err != nil {
		t.Fatal(err)
	}
	if rec.Processes[0].alive() {
		t.Fatal("redis still runs after deprovision by the second driver")
	}
}

func TestProvisionFailuresLeaveNothing(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	userCatalog := t.TempDir()
	writeFile(t, filepath.Join(userCatalog, "local", "stores.yaml"), "- store: broken\n  versions: broken/versions.yaml\n")
	writeFile(t, filepath.Join(userCatalog, "local", "broken", "versions.yaml"),
		"- version: '>=2.0'\n  template: broken/missing-binary.yaml\n- version: '>=1.0'\n  template: broken/exits.yaml\n")
	writeFile(t, filepath.Join(userCatalog, "local", "broken", "missing-binary.yaml"),
		"ports: [store]\nagent_address: 'http://127.0.0.1:{{ .Ports.store }}'\nprocesses:\n  - name: main\n    argv: [berth-no-such-program]\n")
	// The second process cannot start (its interpreter does not exist), so
	// the first, already running, must be stopped again.
	badScript := filepath.Join(userCatalog, "bad-interpreter")
	writeFile(t, badScript, "#!/nonexistent/interpreter\n")
	if err := os.Chmod(badScript, 0o755); err != nil {
		t.Fatal(err)
	}
	sleepArg := fmt.Sprintf("%d", 300+os.Getpid()%600)
	writeFile(t, filepath.Join(userCatalog, "local", "broken", "exits.yaml"), fmt.Sprintf(
		"ports: [store]\nagent_address: 'http://127.0.0.1:{{ .Ports.store }}'\nprocesses:\n  - name: first\n    argv: [sleep, '%s']\n  - name: second\n    argv: [%s]\n",
		sleepArg, badScript))
	cat, err := catalog.New(catalog.Layer{Name: "user", FS: os.DirFS(userCatalog)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{DataDir: dataDir, Catalog: cat, Ports: testPorts})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	for _, version := range []string{"2.0", "1.0", "0.5"} {
		req := redisRequest("c", "default", 3, 2)
		req.Cluster.Store = "broken"
		req.Cluster.StoreVersion = version
		_, err := d.Provision(ctx, req)
		if platform.ErrorCode(err) != platform.EUNPROCESSABLE {
			t.Errorf("version %s: provision error = %v, want unprocessable", version, err)
		}
		disc, _ := d.Discover(ctx)
		if len(disc.Clusters) != 0 || portOwnerCount(t, d) != 0 {
			t.Errorf("version %s: failed provision left %+v and %d ports", version, disc, portOwnerCount(t, d))
		}
		if pids := processesWithArgv("sleep", sleepArg); len(pids) > 0 {
			t.Errorf("version %s: failed provision left processes %v running", version, pids)
		}
		entries, _ := os.ReadDir(filepath.Join(dataDir, "nodes"))
		if len(entries) != 0 {
			t.Errorf("version %s: failed provision left directories %v", version, entries)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// processesWithArgv lists the PIDs whose command line is exactly argv.
func processesWithArgv(argv ...string) []string {
	want := strings.Join(argv, "\x00") + "\x00"
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && string(data) == want {
			pids = append(pids, e.Name())
		}
	}
	return pids
}
