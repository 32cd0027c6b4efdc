package test

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthio/berth/internal/kubetest"
)

// startKubeBerth starts a Kubernetes API server with the RBAC of
// deploy/kubernetes/ applied, and berth serve --driver kube running with a
// token of that ServiceAccount, ready (its pod cache synced).
//
// There is no kubelet, so pods never get an IP. The built-in Redis template
// needs none: it names each node's agent by the node's Service
// (k8s.replicante.io/agent-address), so the agent address is known, and
// stable, from the moment the node exists. The annotation rules that need
// pod or host IPs are tested in driver/kube, where the test writes pod
// status as a kubelet would.
func startKubeBerth(t *testing.T) *berthServer {
	t.Helper()
	c := kubetest.Start(t)
	c.CreateNamespace(t, "berth")
	c.ApplyFile(t, filepath.Join("..", "deploy", "kubernetes", "rbac.yaml"), "berth")
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), c.ServiceAccountToken(t, "berth", "berth"), "berth")
	srv := startBerth(t, "--driver", "kube", "--kubeconfig", kubeconfig, "--data-dir", t.TempDir())
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(srv.Root + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return srv
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth serve --driver kube is not ready: %v\n%s", err, srv.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestConformanceAgainstKube: berth conformance passes every MUST and
// COMPAT check against berth serve --driver kube on a real API server, runs
// every check, and leaves nothing behind.
func TestConformanceAgainstKube(t *testing.T) {
	srv := startKubeBerth(t)
	requireConformance(t, srv, "30s")
}

// TestKubeCLI: the README's quick start, with the kube driver.
func TestKubeCLI(t *testing.T) {
	srv := startKubeBerth(t)
	out := berth(t, "provision", "--url", srv.URL, "--cluster", "demo", "--store", "redis", "--version", "7.0", "--wait")
	resp := discover(t, srv.URL)
	if len(resp.Clusters) != 1 || len(resp.Clusters[0].Nodes) != 1 {
		t.Fatalf("after provision (%s) discovery lists %+v", out, resp)
	}
	node := resp.Clusters[0].Nodes[0]
	if want := "http://" + node.NodeID + ".berth.svc:37000"; node.AgentAddress != want {
		t.Errorf("agent address %q, want %q", node.AgentAddress, want)
	}
	berth(t, "deprovision", "--url", srv.URL, "--cluster", "demo", "--node", node.NodeID, "--wait")
	if resp := discover(t, srv.URL); len(resp.Clusters) != 0 {
		t.Errorf("after deprovision discovery lists %+v", resp)
	}
	_, errOut, code := berthStatus(t, "deprovision", "--url", srv.URL, "--cluster", "demo", "--node", node.NodeID)
	if code != 1 || !strings.Contains(errOut, "has no node") {
		t.Errorf("second deprovision: exit %d, %s", code, errOut)
	}

	// A namespace Berth does not manage is a 400 over HTTP.
	answer, err := http.Post(srv.URL+"provision", "application/json", strings.NewReader(`{
		"cluster": {"cluster_id": "demo", "store": "redis", "store_version": "7.0",
		            "attributes": {"namespace": "kube-system"},
		            "nodes": {"default": {"desired_count": 1, "node_class": "default"}}},
		"provision": {"node_group_id": "default"}}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(answer.Body)
	answer.Body.Close()
	if answer.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `namespace \"kube-system\" is not one this platform manages`) {
		t.Errorf("provision into kube-system: %d %s", answer.StatusCode, body)
	}
}

// TestKubeNotReady: when the API server refuses its credentials, berth serve
// --driver kube still starts, and answers /readyz and /discover with 503.
func TestKubeNotReady(t *testing.T) {
	c := kubetest.Start(t)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), "no-such-token", "berth")
	srv := startBerth(t, "--driver", "kube", "--kubeconfig", kubeconfig, "--data-dir", t.TempDir())
	time.Sleep(500 * time.Millisecond)
	for _, path := range []string{"/readyz", "/discover"} {
		resp, err := http.Get(srv.Root + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s: %d, want 503", path, resp.StatusCode)
		}
	}
}
