//go:build tools

// Package tools pins k8s.io/kubernetes so that
//
//	go build k8s.io/kubernetes/cmd/kube-apiserver
//
// works in this module. See DEVELOPERS.md, "A real Kubernetes API server".
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"
