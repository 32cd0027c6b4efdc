// Package test holds end-to-end tests that build the berth binary and drive
// it as a user would: berth serve on loopback, the CLI against it, real
// redis-server nodes.
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
)

var berthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	berthBin = filepath.Join(dir, "berth")
	build := exec.Command("go", "build", "-race", "-o", berthBin, "../cmd/berth")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building berth:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// berthServer is a running `berth serve`.
type berthServer struct {
	cmd  *exec.Cmd
	URL  string // the API base URL, ending in "/"
	Root string // scheme and host
	logs *testenv.Buffer
	done chan error
}

var listenLine = regexp.MustCompile(`serving the Platform API on (https?://[^ ]+/) `)

func startBerth(t *testing.T, args ...string) *berthServer {
	t.Helper()
	cmd := exec.Command(berthBin, append([]string{"serve", "--listen", "127.0.0.1:0", "--grace-period", "5s"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &berthServer{cmd: cmd, logs: &testenv.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listenLine.FindStringSubmatch(sc.Text()); m != nil {
				urls <- m[1]
			}
		}
		close(urls)
	}()
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() { s.stop(t) })
	select {
	case u, ok := <-urls:
		if !ok {
			t.Fatalf("berth serve exited without serving: %s", s.logs)
		}
		s.URL = u
		parsed, _ := url.Parse(u)
		s.Root = parsed.Scheme + "://" + parsed.Host
	case <-time.After(30 * time.Second):
		t.Fatalf("berth serve did not start: %s", s.logs)
	}
	return s
}

// stop sends SIGTERM and waits for berth to exit.
func (s *berthServer) stop(t *testing.T) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("berth serve exited with %v; logs:\n%s", err, s.logs)
		}
	case <-time.After(40 * time.Second):
		_ = s.cmd.Process.Kill()
		t.Errorf("berth serve did not stop on SIGTERM")
	}
}

// berth runs the CLI and returns its stdout; a non-zero exit fails the test.
func berth(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := berthStatus(t, args...)
	if code != 0 {
		t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func berthStatus(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(berthBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exitErr, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), 0
}

func discover(t *testing.T, url string) platform.DiscoveryResponse {
	t.Helper()
	var resp platform.DiscoveryResponse
	if err := json.Unmarshal([]byte(berth(t, "discover", "--url", url, "-o", "json")), &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func findNode(resp platform.DiscoveryResponse, cluster, node string) *platform.DiscoveredNode {
	for _, c := range resp.Clusters {
		for i := range c.Nodes {
			if c.ClusterID == cluster && c.Nodes[i].NodeID == node {
				return &c.Nodes[i]
			}
		}
	}
	return nil
}

// redisPing sends PING to a Redis address and returns the reply line.
func redisPing(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func waitPong(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		reply, err := redisPing(addr)
		if reply == "+PONG" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis at %s: %q, %v", addr, reply, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestQuickStart follows the README's quick start with the real binary.
func TestQuickStart(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir)

	out := berth(t, "provision", "--url", srv.URL, "--cluster", "demo", "--store", "redis", "--version", "7.0", "--wait", "-o", "json")
	var prov platform.ProvisionResponse
	if err := json.Unmarshal([]byte(out), &prov); err != nil || prov.Count != 1 || len(prov.NodeIDs) != 1 {
		t.Fatalf("provision output %q (%v): want one node", out, err)
	}
	nodeID := prov.NodeIDs[0]

	table := berth(t, "discover", "--url", srv.URL)
	if !strings.Contains(table, "CLUSTER") || !regexp.MustCompile(`demo\s+`+nodeID+`\s+default\s+default\s+http://127\.0\.0\.1:\d+`).MatchString(table) {
		t.Errorf("discover table does not list the node:\n%s", table)
	}
	node := findNode(discover(t, srv.URL), "demo", nodeID)
	if node == nil || node.Addresses["store"] == "" {
		t.Fatalf("discovery lacks the node or its store address: %+v", node)
	}
	waitPong(t, node.Addresses["store"])

	berth(t, "deprovision", "--url", srv.URL, "--cluster", "demo", "--node", nodeID, "--wait")
	if findNode(discover(t, srv.URL), "demo", nodeID) != nil {
		t.Fatal("node still listed after deprovision")
	}
	if reply, err := redisPing(node.Addresses["store"]); err == nil {
		t.Fatalf("redis still answers %q after deprovision", reply)
	}
	_, stderr, code := berthStatus(t, "deprovision", "--url", srv.URL, "--cluster", "demo", "--node", nodeID)
	if code != 1 || !strings.Contains(stderr, nodeID) {
		t.Fatalf("second deprovision: exit %d, stderr %q; want 1 naming the node", code, stderr)
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "nodes")); len(entries) != 0 {
		t.Errorf("node directories left behind: %v", entries)
	}
}

// TestNodesSurviveRestart stops berth with SIGTERM while a node runs; the node
// keeps serving and the next berth lists and removes it.
func TestNodesSurviveRestart(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir)
	out := berth(t, "provision", "--url", srv.URL, "--cluster", "keep", "--store", "redis", "--version", "7.0", "-o", "json")
	var prov platform.ProvisionResponse
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 1 {
		t.Fatalf("provision output %q: %v", out, err)
	}
	node := findNode(discover(t, srv.URL), "keep", prov.NodeIDs[0])
	waitPong(t, node.Addresses["store"])
	srv.stop(t)

	waitPong(t, node.Addresses["store"])
	srv2 := startBerth(t, "--data-dir", dataDir)
	if findNode(discover(t, srv2.URL), "keep", prov.NodeIDs[0]) == nil {
		t.Fatal("restarted berth does not list the node")
	}
	berth(t, "deprovision", "--url", srv2.URL, "--cluster", "keep", "--node", prov.NodeIDs[0])
	if reply, err := redisPing(node.Addresses["store"]); err == nil {
		t.Fatalf("redis still answers %q after deprovision", reply)
	}
}

// TestServeOptions covers the base path, the operational endpoints and
// the config file.
func TestServeOptions(t *testing.T) {
	dataDir := t.TempDir()
	config := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("data-dir: %s\nbase-path: /platform/\nlog-format: json\n", dataDir)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startBerth(t, "--config", config)
	if !strings.HasSuffix(srv.URL, "/platform/") {
		t.Fatalf("served at %s, want the config file's base path", srv.URL)
	}
	if resp := discover(t, srv.URL); len(resp.Clusters) != 0 {
		t.Fatalf("fresh platform lists %+v", resp)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/discover": 404, "/platform/discover": 200} {
		resp, err := http.Get(srv.Root + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "state.db")); err != nil {
		t.Errorf("the config file's data-dir is not used: %v", err)
	}
	srv.stop(t)
	if !strings.Contains(srv.logs.String(), `"msg":"request"`) {
		t.Errorf("no JSON request log lines:\n%s", srv.logs)
	}
}

// TestServeRejectsBadFlags checks usage errors exit with status 2.
func TestServeRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--driver", "nosuch"},
		{"serve", "--port-range", "10-5"},
		{"serve", "--log-format", "xml"},
		{"serve", "--no-such-flag"},
		{"serve", "extra-argument"},
	} {
		_, stderr, code := berthStatus(t, append(args, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")...)
		if code != 2 || stderr == "" {
			t.Errorf("berth %v: exit %d, stderr %q; want 2 with a message", args, code, stderr)
		}
	}
}

// TestCatalogAddsAnAgent follows docs/catalog.md: a user catalogue layered
// with --catalog replaces the Redis template with one that runs a second
// process on the agent port. A second redis-server stands in for the agent,
// so the test can check that something answers at the agent address.
func TestCatalogAddsAnAgent(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dir := t.TempDir()
	files := map[string]string{
		"local/stores.yaml":         "- store: redis\n  versions: redis/versions.yaml\n",
		"local/redis/versions.yaml": "- version: \">=6.0\"\n  template: redis/redis-with-agent.yaml\n",
		"local/redis/redis-with-agent.yaml": `ports: [store, agent]
agent_address: "http://127.0.0.1:{{ .Ports.agent }}"
processes:
  - name: redis
    argv: [redis-server, --port, "{{ .Ports.store }}", --bind, 127.0.0.1, --dir, "{{ .Dirs.data }}"]
  - name: agent
    argv: [redis-server, --port, "{{ .Ports.agent }}", --bind, 127.0.0.1, --dir, "{{ .Dirs.node }}"]
`,
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir, "--catalog", dir)
	out := berth(t, "provision", "--url", srv.URL, "--cluster", "agents", "--store", "redis", "--version", "7.2", "-o", "json")
	var prov platform.ProvisionResponse
	if err := json.Unmarshal([]byte(out), &prov); err != nil || len(prov.NodeIDs) != 1 {
		t.Fatalf("provision output %q: %v", out, err)
	}
	node := findNode(discover(t, srv.URL), "agents", prov.NodeIDs[0])
	waitPong(t, node.Addresses["store"])
	waitPong(t, strings.TrimPrefix(node.AgentAddress, "http://"))
	for _, name := range []string{"redis.log", "agent.log"} {
		if _, err := os.Stat(filepath.Join(dataDir, "nodes", "agents", node.NodeID, "logs", name)); err != nil {
			t.Errorf("log file: %v", err)
		}
	}
	berth(t, "deprovision", "--url", srv.URL, "--cluster", "agents", "--node", node.NodeID)
	for _, addr := range []string{node.Addresses["store"], node.Addresses["agent"]} {
		if reply, err := redisPing(addr); err == nil {
			t.Errorf("%s still answers %q after deprovision", addr, reply)
		}
	}
}

// TestConcurrentProvisionsOverHTTP sends twenty provisions at once into a
// group with desired_count 3 through the real server: exactly three nodes.
func TestConcurrentProvisionsOverHTTP(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	// All twenty run at once: past the in-flight bound they would get 429.
	srv := startBerth(t, "--data-dir", t.TempDir(), "--max-in-flight", "32")
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	req := platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			ClusterID: "crowd", Store: "redis", StoreVersion: "7.0", Attributes: map[string]any{},
			Nodes: map[string]platform.NodeGroup{"g": {DesiredCount: 3, NodeClass: "small", Attributes: map[string]any{}}},
		},
		Provision: platform.ProvisionSpec{NodeGroupID: "g", Count: 2},
	}
	results := make(chan platform.ProvisionResponse, 20)
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		go func() {
			resp, err := c.Provision(context.Background(), req)
			results <- resp
			errs <- err
		}()
	}
	var ids []string
	for i := 0; i < 20; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		resp := <-results
		if resp.Count != len(resp.NodeIDs) {
			t.Errorf("response %+v: count and node_ids disagree", resp)
		}
		ids = append(ids, resp.NodeIDs...)
	}
	disc := discover(t, srv.URL)
	if len(ids) != 3 || len(disc.Clusters) != 1 || len(disc.Clusters[0].Nodes) != 3 {
		t.Fatalf("20 concurrent provisions returned nodes %v and discovery %+v; want exactly 3", ids, disc)
	}
	for _, id := range ids {
		node := findNode(disc, "crowd", id)
		if node == nil {
			t.Fatalf("returned node %s is not discovered", id)
		}
		waitPong(t, node.Addresses["store"])
		if err := c.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "crowd", NodeID: id}); err != nil {
			t.Error(err)
		}
	}
}

// TestSIGKILLAndRestart kills berth with SIGKILL while nodes run and starts
// it again: the same processes are listed, none is started twice,
// discovery is identical, and the new berth supervises them.
func TestSIGKILLAndRestart(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	berth(t, "provision", "--url", srv.URL, "--cluster", "survivor", "--store", "redis", "--version", "7.0", "--count", "2")
	before, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	discBefore := berth(t, "discover", "--url", srv.URL, "-o", "json")
	if err := srv.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-srv.done

	srv2 := startBerth(t, "--data-dir", dataDir)
	c2, _ := client.New(srv2.URL)
	after, err := c2.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(before) != 2 || len(after) != 2 {
		t.Fatalf("nodes before %d, after %d; want 2", len(before), len(after))
	}
	for i := range before {
		b, a := before[i].Processes[0], after[i].Processes[0]
		if b.PID != a.PID || a.Restarts != 0 || after[i].State != platform.StateRunning {
			t.Errorf("node %s: process %+v before, %+v after the restart", before[i].NodeID, b, a)
		}
	}
	if discAfter := berth(t, "discover", "--url", srv2.URL, "-o", "json"); discAfter != discBefore {
		t.Errorf("discovery changed across the restart:\n%s\n%s", discBefore, discAfter)
	}
	// The new berth supervises the nodes it re-attached to.
	old := after[0].Processes[0].PID
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		nodes, err := c2.Nodes(context.Background())
		if err == nil && nodes[0].Processes[0].PID != old && nodes[0].Processes[0].PID != 0 && nodes[0].State == platform.StateRunning {
			waitPong(t, nodes[0].Addresses["store"])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed process not restarted: %+v, %v", nodes, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, n := range after {
		berth(t, "deprovision", "--url", srv2.URL, "--cluster", n.ClusterID, "--node", n.NodeID)
	}
}
