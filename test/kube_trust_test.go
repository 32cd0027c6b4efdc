package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/internal/kubetest"
	"github.com/berthio/berth/platform"
)

// kubeBerthCluster starts an API server with deploy/kubernetes/ applied and
// returns it with a kubeconfig for Berth's ServiceAccount, so that several
// berth serve processes, one after the other, can use it.
func kubeBerthCluster(t *testing.T) (*kubetest.Cluster, string) {
	t.Helper()
	c := kubetest.Start(t)
	c.CreateNamespace(t, "berth")
	c.ApplyFile(t, filepath.Join("..", "deploy", "kubernetes", "rbac.yaml"), "berth")
	return c, c.WriteKubeconfig(t, t.TempDir(), c.ServiceAccountToken(t, "berth", "berth"), "berth")
}

// serveKube starts berth serve --driver kube and waits until it is ready.
func serveKube(t *testing.T, kubeconfig string, args ...string) *berthServer {
	t.Helper()
	srv := startBerth(t, append([]string{"--driver", "kube", "--kubeconfig", kubeconfig, "--data-dir", t.TempDir()}, args...)...)
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

// TestKubeIdempotentRetries: with the kube driver a provision sent three
// times with one Idempotency-Key, across a restart of berth, makes its
// nodes once and gets one answer; the key with another request is 422. The
// key lives on the Kubernetes objects, not in Berth's data directory (each
// berth serve here has a new, empty one).
func TestKubeIdempotentRetries(t *testing.T) {
	c, kubeconfig := kubeBerthCluster(t)
	srv := serveKube(t, kubeconfig)
	const body = `{"cluster": {"cluster_id": "retry", "store": "redis", "store_version": "7.0",
		"nodes": {"default": {"desired_count": 5, "node_class": "small"}}},
		"provision": {"node_group_id": "default", "count": 2}}`
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
	srv2 := serveKube(t, kubeconfig)
	if code, again := postProvision(t, srv2.URL, "key-1", body); code != 200 || again != first {
		t.Fatalf("retry after a restart: %d %s, want %s", code, again, first)
	}
	disc := discover(t, srv2.URL)
	if len(disc.Clusters) != 1 || len(disc.Clusters[0].Nodes) != 2 {
		t.Fatalf("retries provisioned more than once: %+v", disc)
	}
	pods, err := c.Admin(t).CoreV1().Pods("berth").List(context.Background(), metav1.ListOptions{LabelSelector: "k8s.replicante.io/cluster-id=retry"})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods %v, %v", pods, err)
	}
	for _, p := range pods.Items {
		if p.Annotations["k8s.replicante.io/idempotency-key"] != "key-1" {
			t.Errorf("pod %s does not carry the key: %v", p.Name, p.Annotations)
		}
	}
	code, other := postProvision(t, srv2.URL, "key-1", strings.Replace(body, `"count": 2`, `"count": 1`, 1))
	if code != 422 || !strings.Contains(other, "another provision request") {
		t.Fatalf("same key, other request: %d %s", code, other)
	}
	if code, _ := postProvision(t, srv2.URL, "key-2", body); code != 200 {
		t.Fatalf("a new key: %d", code)
	}
	api, err := client.New(srv2.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range discover(t, srv2.URL).Clusters {
		for _, n := range cl.Nodes {
			if err := api.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: cl.ClusterID, NodeID: n.NodeID}); err != nil {
				t.Error(err)
			}
		}
	}
}

// TestKubeSIGKILLDuringConcurrentProvisions kills berth serve --driver kube
// while 50 provisions run. After a restart every provision answered 200 has
// its nodes listed, every listed node has all its objects (its Pod and its
// Service), no node is listed twice, and what the cut provisions left is
// only objects of nodes that have no Pod, which deprovision (or, later, the
// sweep) removes.
func TestKubeSIGKILLDuringConcurrentProvisions(t *testing.T) {
	c, kubeconfig := kubeBerthCluster(t)
	srv := serveKube(t, kubeconfig, "--max-in-flight", "64")

	fire := startProvisions(srv, 50, func(i int) string {
		return fmt.Sprintf(`{"cluster": {"cluster_id": "crash-%d", "store": "redis", "store_version": "7.0",
			"nodes": {"default": {"desired_count": 3, "node_class": "small"}}},
			"provision": {"node_group_id": "default", "count": 3}}`, i%10)
	}, nil)
	fire.waitFor(30*time.Second, func(answered int) bool { return answered >= 6 })
	srv.cmd.Process.Kill()
	<-srv.done
	answered := fire.wait()
	t.Logf("%d nodes answered 200 before SIGKILL", len(answered))
	killedAt := time.Now()

	srv2 := serveKube(t, kubeconfig)
	listed := map[string]bool{} // cluster/node
	for _, cl := range discover(t, srv2.URL).Clusters {
		if len(cl.Nodes) > 3 {
			t.Errorf("cluster %s has %d nodes, desired 3", cl.ClusterID, len(cl.Nodes))
		}
		for _, n := range cl.Nodes {
			if listed[cl.ClusterID+"/"+n.NodeID] {
				t.Errorf("node %s is listed twice", n.NodeID)
			}
			listed[cl.ClusterID+"/"+n.NodeID] = true
		}
	}
	listedIDs := map[string]bool{}
	for k := range listed {
		listedIDs[k[strings.Index(k, "/")+1:]] = true
	}
	for _, id := range answered {
		if !listedIDs[id] {
			t.Errorf("node %s was answered 200 but is not listed after the restart", id)
		}
	}
	// Every object belongs to a listed node, whole, or to a node without a
	// pod.
	admin := c.Admin(t)
	ctx := context.Background()
	kinds := map[string]map[string]bool{} // cluster/node -> kinds
	pods, err := admin.CoreV1().Pods("berth").List(ctx, metav1.ListOptions{LabelSelector: "k8s.replicante.io/node-id"})
	if err != nil {
		t.Fatal(err)
	}
	services, err := admin.CoreV1().Services("berth").List(ctx, metav1.ListOptions{LabelSelector: "k8s.replicante.io/node-id"})
	if err != nil {
		t.Fatal(err)
	}
	mark := func(kind string, m metav1.ObjectMeta) {
		k := m.Labels["k8s.replicante.io/cluster-id"] + "/" + m.Labels["k8s.replicante.io/node-id"]
		if kinds[k] == nil {
			kinds[k] = map[string]bool{}
		}
		kinds[k][kind] = true
	}
	for _, p := range pods.Items {
		mark("Pod", p.ObjectMeta)
	}
	for _, s := range services.Items {
		mark("Service", s.ObjectMeta)
	}
	half := 0
	for k, has := range kinds {
		switch {
		case has["Pod"] && has["Service"]:
			if !listed[k] {
				t.Errorf("node %s is whole but not listed", k)
			}
		case has["Pod"]:
			t.Errorf("node %s has a pod but no Service", k)
		default:
			half++
			if listed[k] {
				t.Errorf("node %s has no pod but is listed", k)
			}
		}
	}
	t.Logf("%d nodes listed, %d half made (no pod); restarted and checked in %s", len(listed), half, time.Since(killedAt).Round(time.Millisecond))
	// Deprovisioning removes everything, the half-made nodes included.
	cl, err := client.New(srv2.URL)
	if err != nil {
		t.Fatal(err)
	}
	for k := range kinds {
		cluster, node, _ := strings.Cut(k, "/")
		if err := cl.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: node}); err != nil {
			t.Errorf("deprovision %s: %v", k, err)
		}
	}
	if resp := discover(t, srv2.URL); len(resp.Clusters) != 0 {
		t.Errorf("after deprovisioning discovery lists %+v", resp)
	}
	for _, list := range []func() (int, error){
		func() (int, error) {
			l, err := admin.CoreV1().Pods("berth").List(ctx, metav1.ListOptions{LabelSelector: "k8s.replicante.io/node-id"})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		},
		func() (int, error) {
			l, err := admin.CoreV1().Services("berth").List(ctx, metav1.ListOptions{LabelSelector: "k8s.replicante.io/node-id"})
			if err != nil {
				return 0, err
			}
			return len(l.Items), nil
		},
	} {
		if n, err := list(); err != nil || n != 0 {
			t.Errorf("after deprovisioning %d objects are left (%v)", n, err)
		}
	}
}
