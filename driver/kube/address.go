package kube

import (
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// Annotations a pod may carry to say where its agent listens. They are read
// in the order of the Platform specification's Kubernetes example (see
// agentAddress). An annotation whose value is empty counts as absent:
// a template's structure is fixed, so a template can only leave an
// annotation out by rendering it empty.
const (
	AnnotationAgentAddress = "k8s.replicante.io/agent-address"
	AnnotationAgentIPFrom  = "k8s.replicante.io/agent-ip-from"
	AnnotationAgentSchema  = "k8s.replicante.io/agent-schema"
	AnnotationAgentPort    = "k8s.replicante.io/agent-port"
)

// Values of the agent-ip-from setting: the IP of the node the pod runs on
// (status.hostIP) or the pod's own IP (status.podIP).
const (
	IPFromNode = "node"
	IPFromPod  = "pod"
)

// AgentConfig is the platform's configured fallback for pods whose
// annotations do not say where their agent is.
type AgentConfig struct {
	IPFrom string // IPFromPod or IPFromNode
	Schema string // such as "http"
	Port   int
}

// agentAddress returns the address of a pod's agent:
//
//  1. the agent-address annotation, as it is, if the pod has it;
//  2. otherwise a target IP: the node's (status.hostIP) or the pod's
//     (status.podIP), as the agent-ip-from annotation says ("node" or
//     "pod"), else as the platform's configured agent-ip-from;
//  3. then {schema}://{target_ip}:{port} from the agent-schema and agent-port
//     annotations when both are present, else from the platform's configured
//     schema and port.
//
// An agent-ip-from annotation other than "node" or "pod" counts as absent.
// A pod whose target IP is not known yet (not scheduled, or no IP assigned)
// has no address: "" until the kubelet reports one.
func agentAddress(pod *corev1.Pod, cfg AgentConfig) string {
	ann := pod.Annotations
	if addr := ann[AnnotationAgentAddress]; addr != "" {
		return addr
	}
	ipFrom := ann[AnnotationAgentIPFrom]
	if ipFrom != IPFromNode && ipFrom != IPFromPod {
		ipFrom = cfg.IPFrom
	}
	ip := pod.Status.PodIP
	if ipFrom == IPFromNode {
		ip = pod.Status.HostIP
	}
	if ip == "" {
		return ""
	}
	schema, port := ann[AnnotationAgentSchema], ann[AnnotationAgentPort]
	if schema == "" || port == "" {
		schema, port = cfg.Schema, strconv.Itoa(cfg.Port)
	}
	// JoinHostPort brackets an IPv6 address, as a URL needs.
	return schema + "://" + net.JoinHostPort(ip, port)
}

// podAddresses names the pod's addresses by container port name
// ("store": "10.1.2.3:6379"), once the pod has an IP.
func podAddresses(pod *corev1.Pod) map[string]string {
	if pod.Status.PodIP == "" {
		return nil
	}
	addresses := map[string]string{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name != "" {
				addresses[p.Name] = net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(p.ContainerPort)))
			}
		}
	}
	if len(addresses) == 0 {
		return nil
	}
	return addresses
}
