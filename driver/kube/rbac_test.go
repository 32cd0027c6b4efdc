package kube

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthio/berth/platform"
)

// The manifests of deploy/kubernetes/ are accepted by the API server, and
// the permissions they grant suffice: the driver, running with a token of
// their ServiceAccount, provisions, discovers and deprovisions Redis nodes.
func TestDeployRBAC(t *testing.T) {
	c := cluster.Get(t)
	c.CreateNamespace(t, "berth")
	c.ApplyFile(t, "../../deploy/kubernetes/rbac.yaml", "berth")
	applied := c.ApplyFile(t, "../../deploy/kubernetes/deployment.yaml", "berth")
	if len(applied) != 2 || applied[0].GetKind() != "Deployment" {
		t.Fatalf("deployment.yaml applied %d objects", len(applied))
	}
	dep, err := c.Admin(t).AppsV1().Deployments("berth").Get(context.Background(), "berth", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--driver=kube") ||
		!strings.Contains(args, "--kube-namespace=berth") || dep.Spec.Template.Spec.ServiceAccountName != "berth" {
		t.Errorf("the Deployment runs %s as %q", args, dep.Spec.Template.Spec.ServiceAccountName)
	}

	token := c.ServiceAccountToken(t, "berth", "berth")
	d := openDriver(t, Options{Config: c.Config(token), Namespaces: []string{"berth"}})
	ctx := context.Background()
	resp, err := d.Provision(ctx, provisionRequest("rbac", "default", 3, 3, nil))
	if err != nil {
		t.Fatalf("provision with the deploy RBAC: %v", err)
	}
	resp2, err := d.Provision(ctx, provisionRequest("rbac", "default", 3, 1, nil))
	if err != nil || resp2.Count != 0 {
		t.Fatalf("provision into a full group: %+v, %v", resp2, err)
	}
	discovered, err := d.Discover(ctx)
	if err != nil || len(discovered.Clusters) != 1 || len(discovered.Clusters[0].Nodes) != 3 {
		t.Fatalf("discovery with the deploy RBAC: %+v, %v", discovered, err)
	}
	for _, id := range resp.NodeIDs {
		if err := d.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "rbac", NodeID: id}); err != nil {
			t.Fatalf("deprovision with the deploy RBAC: %v", err)
		}
	}
	admin := c.Admin(t)
	pods, _ := admin.CoreV1().Pods("berth").List(ctx, metav1.ListOptions{LabelSelector: LabelClusterID + "=rbac"})
	services, _ := admin.CoreV1().Services("berth").List(ctx, metav1.ListOptions{LabelSelector: LabelClusterID + "=rbac"})
	if len(pods.Items)+len(services.Items) > 0 {
		t.Errorf("deprovision left %d pods and %d services", len(pods.Items), len(services.Items))
	}

	// The role grants nothing outside its namespace.
	c.CreateNamespace(t, "berth-other")
	other, err := Open(Options{Config: c.Config(token), Catalog: testCatalog(t), Namespaces: []string{"berth-other"}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Provision(ctx, provisionRequest("rbac", "default", 1, 1, nil)); platform.ErrorCode(err) != platform.EUNPROCESSABLE ||
		!strings.Contains(err.Error(), "forbidden") {
		t.Errorf("provision outside the bound namespace: %v", err)
	}
}
