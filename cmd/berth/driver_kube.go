package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/berthio/berth/driver/kube"
	"github.com/berthio/berth/platform"
)

// inClusterNamespaceFile holds the namespace of the pod Berth runs in.
const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// kubeDriver runs nodes as Kubernetes objects.
func kubeDriver() *driverFactory {
	var (
		kubeconfig, kubeContext string
		namespaces              []string
		selector                string
		agent                   kube.AgentConfig
		kinds                   []string
		orphanGrace             time.Duration
	)
	return &driverFactory{
		name: kube.DriverName,
		addFlags: func(f *pflag.FlagSet) {
			f.StringVar(&kubeconfig, "kubeconfig", "", "kube driver: kubeconfig file (default $KUBECONFIG, else the in-cluster configuration)")
			f.StringVar(&kubeContext, "kube-context", "", "kube driver: kubeconfig context to use (default its current context)")
			f.StringSliceVar(&namespaces, "kube-namespace", nil, "kube driver: namespaces Berth manages, comma-separated or repeated; nodes go into the first unless the namespace attribute or the template picks another (default the kubeconfig context's namespace, inside a cluster Berth's own, else default)")
			f.StringVar(&selector, "kube-selector", "", "kube driver: label selector narrowing which pods and objects are Berth's; its key=value terms are added to every provisioned object")
			f.StringVar(&agent.IPFrom, "kube-agent-ip-from", kube.DefaultAgentIPFrom, "kube driver: agent IP of pods without a k8s.replicante.io/agent-ip-from annotation: pod or node")
			f.StringVar(&agent.Schema, "kube-agent-schema", kube.DefaultAgentSchema, "kube driver: agent URL schema of pods without agent-schema and agent-port annotations")
			f.IntVar(&agent.Port, "kube-agent-port", kube.DefaultAgentPort, "kube driver: agent port of pods without agent-schema and agent-port annotations")
			f.DurationVar(&orphanGrace, "kube-orphan-grace", kube.DefaultOrphanGrace, "kube driver: how long objects of a node without a Pod (left by a crash) stay before the sweep deletes them; negative turns the sweep off")
			f.StringSliceVar(&kinds, "kube-deprovision-kinds", kube.DefaultDeprovisionKinds, "kube driver: kinds deprovision deletes, in order (Kind, or Kind.group such as StatefulSet.apps); templates may only create these")
		},
		open: func(ctx context.Context, env driverEnv) (platform.Driver, func() error, error) {
			cfg, namespace, err := kubeClientConfig(kubeconfig, kubeContext)
			if err != nil {
				return nil, nil, err
			}
			if len(namespaces) == 0 {
				namespaces = []string{namespace}
			}
			// client-go logs through klog; send it to Berth's log.
			klog.SetSlogLogger(env.logger.With("component", "client-go"))
			d, err := kube.Open(kube.Options{
				Config:           cfg,
				Catalog:          env.catalog,
				Namespaces:       namespaces,
				Selector:         selector,
				Agent:            agent,
				DeprovisionKinds: kinds,
				OrphanGrace:      orphanGrace,
				Logger:           env.logger,
			})
			if err != nil {
				return nil, nil, usageErrorf("%v", err)
			}
			return d, d.Close, nil
		},
	}
}

// kubeClientConfig finds the API server: --kubeconfig, else $KUBECONFIG,
// else the in-cluster configuration. It also returns the namespace nodes go
// into by default: the context's namespace, Berth's own pod's, or "default".
func kubeClientConfig(kubeconfig, kubeContext string) (*rest.Config, string, error) {
	if kubeconfig == "" && os.Getenv("KUBECONFIG") == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", usageErrorf("the kube driver needs an API server: give --kubeconfig, set KUBECONFIG, or run berth inside a cluster (%v)", err)
		}
		namespace := "default"
		if data, err := os.ReadFile(inClusterNamespaceFile); err == nil && strings.TrimSpace(string(data)) != "" {
			namespace = strings.TrimSpace(string(data))
		}
		return cfg, namespace, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, "", usageErrorf("kubeconfig: %v", err)
	}
	namespace, _, err := loader.Namespace()
	if err != nil || namespace == "" {
		namespace = "default"
	}
	return cfg, namespace, nil
}
