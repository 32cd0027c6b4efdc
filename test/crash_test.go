package test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
)

// TestSIGKILLDuringConcurrentProvisions kills berth while 50 provisions
// run. After a restart, every provision answered 200 has its node listed and
// running, no node exists twice, and every store process has a record.
func TestSIGKILLDuringConcurrentProvisions(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir, "--max-in-flight", "64")
	const body = `{"cluster": {"cluster_id": "crash", "store": "redis", "store_version": "7.0",
		"nodes": {"default": {"desired_count": 60, "node_class": "small"}}},
		"provision": {"node_group_id": "default", "count": 1}}`

	fire := startProvisions(srv, 50, func(int) string { return body }, nil)
	// Kill berth once some provisions are answered and others still run.
	fire.waitFor(30*time.Second, func(answered int) bool { return answered >= 10 })
	srv.cmd.Process.Kill()
	<-srv.done
	answered := fire.wait()
	t.Logf("%d provisions answered 200 before SIGKILL", len(answered))

	srv2 := startBerth(t, "--data-dir", dataDir)
	c, _ := client.New(srv2.URL)
	nodes, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]platform.NodeStatus{}
	recordedPIDs := map[int]bool{}
	for _, n := range nodes {
		if _, dup := byID[n.NodeID]; dup {
			t.Errorf("node %s is listed twice", n.NodeID)
		}
		byID[n.NodeID] = n
		for _, p := range n.Processes {
			if recordedPIDs[p.PID] {
				t.Errorf("pid %d is recorded for two nodes", p.PID)
			}
			recordedPIDs[p.PID] = true
		}
	}
	for _, id := range answered {
		n, ok := byID[id]
		if !ok {
			t.Errorf("node %s was answered 200 but is not listed after the restart", id)
			continue
		}
		if n.State != platform.StateRunning {
			t.Errorf("node %s is %s after the restart", id, n.State)
		}
		waitPong(t, n.Addresses["store"])
	}
	// No process of this data directory runs without a record.
	for _, pid := range markedProcesses(t, dataDir) {
		if !recordedPIDs[pid] {
			t.Errorf("process %d runs without a record", pid)
		}
	}
	disc := discover(t, srv2.URL)
	if len(disc.Clusters) == 1 && len(disc.Clusters[0].Nodes) != len(nodes) {
		t.Errorf("discovery lists %d nodes, the driver %d", len(disc.Clusters[0].Nodes), len(nodes))
	}
	for _, n := range nodes {
		if err := c.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: n.ClusterID, NodeID: n.NodeID}); err != nil {
			t.Error(err)
		}
	}
}

// TestSIGKILLDuringDeprovision kills berth while a stubborn node (it
// ignores SIGTERM) is being deprovisioned: after a restart the node is gone
// or listed, and deprovisioning again finishes the job.
func TestSIGKILLDuringDeprovision(t *testing.T) {
	catalog := t.TempDir()
	for name, content := range map[string]string{
		"local/stores.yaml":            "- store: stubborn\n  versions: stubborn/versions.yaml\n",
		"local/stubborn/versions.yaml": "- version: '*'\n  template: stubborn/t.yaml\n",
		"local/stubborn/t.yaml": `ports: [agent]
agent_address: "http://127.0.0.1:{{ .Ports.agent }}"
processes:
  - name: main
    argv: [sh, -c, 'trap "" TERM; while :; do sleep 1; done']
`,
	} {
		path := filepath.Join(catalog, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir, "--catalog", catalog, "--grace-period", "30s")
	out := berth(t, "provision", "--url", srv.URL, "--cluster", "stubborn", "--store", "stubborn", "--version", "1.0", "-o", "json")
	var prov platform.ProvisionResponse
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 1 {
		t.Fatalf("provision: %q %v", out, err)
	}
	node := prov.NodeIDs[0]
	done := make(chan int, 1)
	go func() {
		body, _ := json.Marshal(platform.DeprovisionRequest{ClusterID: "stubborn", NodeID: node})
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

	srv2 := startBerth(t, "--data-dir", dataDir, "--catalog", catalog, "--grace-period", "1s")
	if n := findNode(discover(t, srv2.URL), "stubborn", node); n != nil {
		berth(t, "deprovision", "--url", srv2.URL, "--cluster", "stubborn", "--node", node)
	}
	if findNode(discover(t, srv2.URL), "stubborn", node) != nil {
		t.Fatal("the node is still listed after deprovisioning it again")
	}
	if pids := markedProcesses(t, dataDir); len(pids) != 0 {
		t.Fatalf("processes %v of the deprovisioned node still run", pids)
	}
}

// provisionsUnderFire is a batch of provisions sent at once, to kill berth
// while they run.
type provisionsUnderFire struct {
	mu       sync.Mutex
	answered []string // node IDs of the provisions answered 200
	wg       sync.WaitGroup
}

// startProvisions sends n provisions at once, the i-th with body(i) after
// delay(i) (delay may be nil).
func startProvisions(srv *berthServer, n int, body func(i int) string, delay func(i int) time.Duration) *provisionsUnderFire {
	p := &provisionsUnderFire{}
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			<-start
			if delay != nil {
				time.Sleep(delay(i))
			}
			resp, err := http.Post(srv.URL+"provision", "application/json", strings.NewReader(body(i)))
			if err != nil {
				return // killed mid-request: not answered
			}
			defer resp.Body.Close()
			var pr platform.ProvisionResponse
			if resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&pr) == nil {
				p.mu.Lock()
				p.answered = append(p.answered, pr.NodeIDs...)
				p.mu.Unlock()
			}
		}()
	}
	close(start)
	return p
}

// waitFor polls until ready(the number of node IDs answered so far) holds,
// or until timeout.
func (p *provisionsUnderFire) waitFor(timeout time.Duration, ready func(answered int) bool) {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		n := len(p.answered)
		p.mu.Unlock()
		if ready(n) || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait waits for every provision to end (answered or cut off) and returns
// the node IDs answered 200.
func (p *provisionsUnderFire) wait() []string {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.answered...)
}

// markedProcesses lists the session leaders a berth with this data
// directory started, found by the environment berth gives them.
func markedProcesses(t *testing.T, dataDir string) []int {
	t.Helper()
	abs, _ := filepath.Abs(dataDir)
	want := []byte("BERTH_DATA_DIR=" + abs + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 3 && fields[0] != "Z" && fields[3] == e.Name() {
			pids = append(pids, pid)
		}
	}
	return pids
}
