// Package kubetest runs a real Kubernetes API server for tests: Debian's
// etcd and kube-apiserver v1.37.2, both on 127.0.0.1 with free ports and a
// temporary directory, an admin token, and service-account tokens that the
// server itself signs.
//
// kube-apiserver is built from k8s.io/kubernetes by scripts/kube-apiserver
// (the separate module tools/kube-apiserver) and cached outside the
// repository; this package only reuses that binary. There is no kubelet,
// scheduler or controller manager: pods stay Pending unless a test writes
// their status as a kubelet would (SetPodIPs), namespaces are never
// finalised, and no default ServiceAccount appears by itself
// (CreateNamespace makes one, as the controller manager would).
//
// Locally a missing etcd or kube-apiserver skips the test with the command
// that provides it; under CI=true it fails the test (see package testenv).
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/berthio/berth/internal/testenv"
)

// Version is the kube-apiserver release the tests run.
const Version = "v1.37.2"

// BuildCommand builds (or finds) the cached kube-apiserver.
const BuildCommand = "scripts/kube-apiserver"

// EtcdInstall installs Debian's etcd.
const EtcdInstall = "apt-get install -y etcd-server"

// APIServerPath is where scripts/kube-apiserver caches the binary:
// $BERTH_KUBE_APISERVER if set, else
// ${XDG_CACHE_HOME:-~/.cache}/berth/kube-apiserver-v1.37.2.
func APIServerPath() string {
	if p := os.Getenv("BERTH_KUBE_APISERVER"); p != "" {
		return p
	}
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "berth", "kube-apiserver-"+Version)
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// Host is the API server's URL: https://127.0.0.1:PORT.
	Host string
	// CAFile is the PEM certificate that the API server's certificate is
	// signed with.
	CAFile string
	// AdminToken is a bearer token of a member of system:masters.
	AdminToken string
	// Dir is the cluster's temporary directory.
	Dir string

	caPEM []byte
	procs []*process
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// Shared starts one cluster for a whole test binary, on first use:
//
//	var cluster kubetest.Shared
//	func TestMain(m *testing.M) { code := m.Run(); cluster.Stop(); os.Exit(code) }
//	func TestX(t *testing.T) { c := cluster.Get(t) ... }
//
// Tests share it, so each works in namespaces of its own.
type Shared struct {
	once    sync.Once
	cluster *Cluster
	err     error
}

// Get returns the shared cluster, starting it the first time. A missing
// prerequisite skips the test (fails it under CI), as does a cluster that
// failed to start (that always fails).
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	etcd, apiserver := Require(t)
	s.once.Do(func() { s.cluster, s.err = start(etcd, apiserver) })
	if s.err != nil {
		t.Fatalf("starting a Kubernetes API server: %v", s.err)
	}
	return s.cluster
}

// Stop stops the shared cluster if it was started.
func (s *Shared) Stop() {
	if s.cluster != nil {
		s.cluster.Stop()
	}
}

// Start starts a cluster for one test and stops it when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	etcd, apiserver := Require(t)
	c, err := start(etcd, apiserver)
	if err != nil {
		t.Fatalf("starting a Kubernetes API server: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Require returns the paths of etcd and kube-apiserver, or skips the test
// naming the command that provides the missing one (fails it under CI).
func Require(t testing.TB) (etcd, apiserver string) {
	t.Helper()
	etcd = testenv.RequireBinary(t, "etcd", EtcdInstall)
	apiserver = APIServerPath()
	if info, err := os.Stat(apiserver); err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		if testenv.InCI() {
			t.Fatalf("kube-apiserver %s is not built at %s and CI=true (build it with: %s)", Version, apiserver, BuildCommand)
		}
		t.Skipf("kube-apiserver %s is not built at %s; build it with: %s (about ten minutes the first time)", Version, apiserver, BuildCommand)
	}
	return etcd, apiserver
}

func start(etcdBin, apiserverBin string) (c *Cluster, err error) {
	dir, err := os.MkdirTemp("", "berth-kubetest-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	etcd, err := c.run("etcd", etcdBin,
		"--name", "kubetest",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "kubetest="+peerURL,
		"--unsafe-no-fsync")
	if err != nil {
		return nil, err
	}
	if err := waitFor(etcd, 30*time.Second, func() bool {
		resp, err := http.Get(clientURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return nil, err
	}

	if err := c.writeFiles(); err != nil {
		return nil, err
	}
	port := strconv.Itoa(ports[2])
	c.Host = "https://127.0.0.1:" + port
	apiserver, err := c.run("kube-apiserver", apiserverBin,
		"--etcd-servers", clientURL,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", port,
		"--cert-dir", filepath.Join(dir, "certs"),
		"--tls-cert-file", filepath.Join(dir, "apiserver.pem"),
		"--tls-private-key-file", filepath.Join(dir, "apiserver-key.pem"),
		"--token-auth-file", filepath.Join(dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", filepath.Join(dir, "sa.pem"),
		"--service-account-signing-key-file", filepath.Join(dir, "sa-key.pem"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--anonymous-auth=false",
	)
	if err != nil {
		return nil, err
	}
	client, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	if err := waitFor(apiserver, 120*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, c.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// writeFiles writes the serving certificate, the service-account key pair
// and the token file.
func (c *Cluster) writeFiles() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	c.CAFile = filepath.Join(c.Dir, "ca.pem")
	c.AdminToken = randomHex(16)
	files := map[string][]byte{
		"ca.pem":            c.caPEM,
		"apiserver.pem":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"apiserver-key.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"sa-key.pem":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER}),
		"sa.pem":            pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":        []byte(c.AdminToken + ",kubetest-admin,kubetest-admin,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.caPEM) {
		return nil, errors.New("bad CA certificate")
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// run starts a process whose output goes to a log file in the cluster's
// directory. It dies with the test binary.
func (c *Cluster) run(name, bin string, args ...string) (*process, error) {
	p := &process{name: name, log: filepath.Join(c.Dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls ready until it holds, the process exits or the time is up;
// the error quotes the end of the process's log.
func waitFor(p *process, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ready() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, tail(p.log))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not ready after %s: %s", p.name, timeout, tail(p.log))
		}
	}
	return nil
}

func tail(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// Stop stops the API server, then etcd, and removes the cluster's
// directory.
func (c *Cluster) Stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	c.procs = nil
	if c.Dir != "" {
		os.RemoveAll(c.Dir)
	}
}

// Config returns a client configuration with the given bearer token.
func (c *Cluster) Config(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             100,
		Burst:           200,
	}
}

// AdminConfig returns an administrator's client configuration.
func (c *Cluster) AdminConfig() *rest.Config { return c.Config(c.AdminToken) }

// Admin returns an administrator's clientset.
func (c *Cluster) Admin(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// WriteKubeconfig writes a kubeconfig for the token into dir and returns
// its path, with namespace as the context's namespace ("" for none).
func (c *Cluster) WriteKubeconfig(t testing.TB, dir, token, namespace string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["kubetest"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: "kubetest", Namespace: namespace}
	cfg.CurrentContext = "kubetest"
	path := filepath.Join(dir, "kubeconfig-"+randomHex(4))
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// CreateNamespace creates a namespace and its default ServiceAccount (which
// pods need, and which only a controller manager would make). Namespaces
// are not deleted afterwards: without a controller manager they would never
// finish terminating.
func (c *Cluster) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	cs := c.Admin(t)
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	_, err = cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating the default service account of %s: %v", name, err)
	}
}

// UniqueName returns prefix and random characters, a valid namespace name.
func UniqueName(prefix string) string { return prefix + "-" + randomHex(4) }

// ServiceAccountToken asks the API server for a token of a ServiceAccount
// (the TokenRequest API, as a kubelet does for a pod).
func (c *Cluster) ServiceAccountToken(t testing.TB, namespace, name string) string {
	t.Helper()
	expiry := int64(2 * 60 * 60)
	tr, err := c.Admin(t).CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for service account %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// ApplyFile applies every object of a multi-document YAML file as the
// administrator (server-side apply), with namespace for objects that name
// none but need one.
func (c *Cluster) ApplyFile(t testing.TB, path, namespace string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.AdminConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs := c.Admin(t)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))
	var applied []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %s: %v", path, gvk, err)
		}
		var client dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			if obj.GetNamespace() == "" {
				obj.SetNamespace(namespace)
			}
			client = dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		}
		out, err := client.Apply(context.Background(), obj.GetName(), obj, metav1.ApplyOptions{FieldManager: "kubetest", Force: true})
		if err != nil {
			t.Fatalf("%s: applying %s %s: %v", path, gvk.Kind, obj.GetName(), err)
		}
		applied = append(applied, out)
	}
	return applied
}

// SetPodIPs writes a pod's status as a kubelet would: Running, with the pod
// IP and the host IP (either may be "").
func (c *Cluster) SetPodIPs(t testing.TB, namespace, name, podIP, hostIP string) {
	t.Helper()
	ctx := context.Background()
	pods := c.Admin(t).CoreV1().Pods(namespace)
	pod, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s: %v", namespace, name, err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP, pod.Status.HostIP = podIP, hostIP
	pod.Status.PodIPs, pod.Status.HostIPs = nil, nil
	if podIP != "" {
		pod.Status.PodIPs = []corev1.PodIP{{IP: podIP}}
	}
	if hostIP != "" {
		pod.Status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("writing the status of pod %s/%s: %v", namespace, name, err)
	}
}

// Logs returns the end of a process's log ("etcd" or "kube-apiserver"), for
// failure messages.
func (c *Cluster) Logs(name string) string {
	for _, p := range c.procs {
		if p.name == name {
			return tail(p.log)
		}
	}
	return ""
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToLower(hex.EncodeToString(b))
}
