package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// One case per rule of the agent address, and per fallback, in the order
// the Platform specification gives them.
func TestAgentAddressRules(t *testing.T) {
	podIP, hostIP := "10.244.0.7", "192.0.2.10"
	cfg := AgentConfig{IPFrom: IPFromPod, Schema: "http", Port: 37000}
	nodeCfg := AgentConfig{IPFrom: IPFromNode, Schema: "http", Port: 37000}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		cfg         AgentConfig
		podIP       string
		want        string
	}{
		{"1: agent-address wins over everything",
			map[string]string{AnnotationAgentAddress: "https://agent.example:1", AnnotationAgentIPFrom: "node", AnnotationAgentSchema: "tcp", AnnotationAgentPort: "2"},
			cfg, podIP, "https://agent.example:1"},
		{"1: agent-address needs no IP",
			map[string]string{AnnotationAgentAddress: "http://n1.ns.svc:37000"}, cfg, "", "http://n1.ns.svc:37000"},
		{"1 fallback: an empty agent-address is absent",
			map[string]string{AnnotationAgentAddress: ""}, cfg, podIP, "http://10.244.0.7:37000"},
		{"2: agent-ip-from node takes the host IP",
			map[string]string{AnnotationAgentIPFrom: "node"}, cfg, podIP, "http://192.0.2.10:37000"},
		{"2: agent-ip-from pod takes the pod IP",
			map[string]string{AnnotationAgentIPFrom: "pod"}, nodeCfg, podIP, "http://10.244.0.7:37000"},
		{"2 fallback: no agent-ip-from uses the configured pod",
			nil, cfg, podIP, "http://10.244.0.7:37000"},
		{"2 fallback: no agent-ip-from uses the configured node",
			nil, nodeCfg, podIP, "http://192.0.2.10:37000"},
		{"2 fallback: an unknown agent-ip-from is absent",
			map[string]string{AnnotationAgentIPFrom: "service"}, nodeCfg, podIP, "http://192.0.2.10:37000"},
		{"2: no target IP yet, no address",
			map[string]string{AnnotationAgentSchema: "https", AnnotationAgentPort: "8443"}, cfg, "", ""},
		{"3: agent-schema and agent-port together",
			map[string]string{AnnotationAgentSchema: "https", AnnotationAgentPort: "8443"}, cfg, podIP, "https://10.244.0.7:8443"},
		{"3 fallback: agent-schema alone uses the configured schema and port",
			map[string]string{AnnotationAgentSchema: "https"}, AgentConfig{IPFrom: IPFromPod, Schema: "tcp", Port: 4000}, podIP, "tcp://10.244.0.7:4000"},
		{"3 fallback: agent-port alone uses the configured schema and port",
			map[string]string{AnnotationAgentPort: "8443"}, AgentConfig{IPFrom: IPFromPod, Schema: "tcp", Port: 4000}, podIP, "tcp://10.244.0.7:4000"},
		{"3: IPv6 target in brackets",
			nil, cfg, "fd00::7", "http://[fd00::7]:37000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Annotations: tc.annotations},
				Status:     corev1.PodStatus{PodIP: tc.podIP},
			}
			if tc.podIP != "" {
				pod.Status.HostIP = hostIP
			}
			if got := agentAddress(pod, tc.cfg); got != tc.want {
				t.Errorf("agent address %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPodAddresses(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{Ports: []corev1.ContainerPort{{Name: "store", ContainerPort: 6379}, {ContainerPort: 1}}},
		{Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9121}}},
	}}}
	if got := podAddresses(pod); got != nil {
		t.Errorf("addresses without a pod IP: %v", got)
	}
	pod.Status.PodIP = "10.0.0.1"
	got := podAddresses(pod)
	if len(got) != 2 || got["store"] != "10.0.0.1:6379" || got["metrics"] != "10.0.0.1:9121" {
		t.Errorf("addresses %v", got)
	}
}

func TestOptionParsing(t *testing.T) {
	kinds, err := parseKinds([]string{"Pod", " StatefulSet.apps", "Pod"})
	if err != nil || len(kinds) != 2 || kinds[1].Group != "apps" || kinds[1].Kind != "StatefulSet" {
		t.Errorf("parseKinds: %v, %v", kinds, err)
	}
	for _, bad := range []string{"", "pods", ".apps"} {
		if _, err := parseKinds([]string{bad}); err == nil {
			t.Errorf("parseKinds accepted %q", bad)
		}
	}
	if _, err := checkNamespaces([]string{"ok", "Not_OK"}); err == nil {
		t.Error("checkNamespaces accepted Not_OK")
	}
	if ns, err := checkNamespaces([]string{"a", "b", "a"}); err != nil || len(ns) != 2 {
		t.Errorf("checkNamespaces: %v, %v", ns, err)
	}
	if _, err := checkNamespaces(nil); err == nil {
		t.Error("checkNamespaces accepted no namespace")
	}
}
