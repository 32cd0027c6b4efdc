package kubetest

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The harness's cluster serves its own version, accepts pods once a
// namespace has its default ServiceAccount, lets a test play kubelet, and
// authenticates the service-account tokens it signs.
func TestCluster(t *testing.T) {
	c := Start(t)
	admin := c.Admin(t)
	v, err := admin.Discovery().ServerVersion()
	if err != nil || v.GitVersion != Version {
		t.Fatalf("server version %v, %v; want %s", v, err, Version)
	}
	ns := UniqueName("kubetest")
	c.CreateNamespace(t, ns)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.SetPodIPs(t, ns, "p", "10.1.0.7", "192.0.2.1")
	got, err := admin.CoreV1().Pods(ns).Get(ctx, "p", metav1.GetOptions{})
	if err != nil || got.Status.PodIP != "10.1.0.7" || got.Status.HostIP != "192.0.2.1" {
		t.Fatalf("pod status %+v, %v", got.Status, err)
	}

	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(c.Config(c.ServiceAccountToken(t, ns, "nobody")))
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "system:serviceaccount:"+ns+":nobody") {
		t.Errorf("a service account with no role listed pods: %v", err)
	}
}
