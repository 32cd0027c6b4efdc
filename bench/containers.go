package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthio/berth/driver/docker"
	"github.com/berthio/berth/internal/podmantest"
	"github.com/berthio/berth/platform"
)

// countingProxy is a reverse proxy on a unix socket in front of the
// engine's: it counts the engine calls that go through it by method and
// path (with object IDs and names folded, such as GET /containers/{id}/json).
type countingProxy struct {
	socket string
	srv    *http.Server
	done   chan struct{}

	mu     sync.Mutex
	counts map[string]int
}

var apiVersionPrefix = regexp.MustCompile(`^/v[0-9]+\.[0-9]+`)

// callName folds a request into the name it is counted under.
func callName(r *http.Request) string {
	path := apiVersionPrefix.ReplaceAllString(r.URL.Path, "")
	parts := strings.Split(path, "/")
	if len(parts) >= 3 {
		switch parts[1] {
		case "containers", "volumes", "networks", "exec":
			if !contains([]string{"json", "create", "prune"}, parts[2]) {
				parts[2] = "{id}"
			}
		case "images":
			// Image names hold slashes: /images/docker.io/library/redis:7.0/json.
			if !contains([]string{"json", "create", "prune", "load", "search"}, parts[2]) {
				last := parts[len(parts)-1]
				parts = []string{"", "images", "{name}"}
				if last == "json" || last == "history" || last == "tag" || last == "push" {
					parts = append(parts, last)
				}
			}
		}
	}
	return r.Method + " " + strings.Join(parts, "/")
}

func startCountingProxy(engineSocket, socket string) (*countingProxy, error) {
	p := &countingProxy{socket: socket, done: make(chan struct{}), counts: map[string]int{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "engine"
			r.Out.Host = "engine"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", engineSocket)
		}},
		FlushInterval: -1,
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := callName(r)
		p.mu.Lock()
		p.counts[name]++
		p.mu.Unlock()
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = p.srv.Serve(ln); close(p.done) }()
	return p, nil
}

// take returns the calls counted since the last take, and forgets them.
func (p *countingProxy) take() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	counts := p.counts
	p.counts = map[string]int{}
	return counts
}

func (p *countingProxy) close() {
	_ = p.srv.Close()
	<-p.done
}

func total(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

func describeCalls(counts map[string]int, per int) string {
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s ×%s", name, number(float64(counts[name])/float64(per))))
	}
	return strings.Join(parts, ", ")
}

// inspectEachDiscovery is the baseline: discovery as the upstream
// playground platform does it (replicante-io/replicore, devtools/replidev
// src/platform/node_list.rs: `podman pod ps` with label filters, then one
// `podman pod inspect` per pod), here over the same engine API: one
// label-filtered list, then one inspect per container, and the same answer.
func inspectEachDiscovery(engine *client.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		filters := client.Filters{}.Add("label", docker.LabelNode).Add("label", docker.LabelCluster)
		list, err := engine.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		byCluster := map[string][]platform.DiscoveredNode{}
		for _, item := range list.Items {
			res, err := engine.ContainerInspect(ctx, item.ID, client.ContainerInspectOptions{})
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			c := res.Container
			labels := c.Config.Labels
			addresses := map[string]string{}
			for key, value := range labels {
				name, ok := strings.CutPrefix(key, docker.LabelPortPrefix)
				if !ok || c.NetworkSettings == nil {
					continue
				}
				for port, bindings := range c.NetworkSettings.Ports {
					if strconv.Itoa(int(port.Num())) != value || len(bindings) == 0 {
						continue
					}
					ip := bindings[0].HostIP
					if !ip.IsValid() || ip.IsUnspecified() {
						ip = netip.MustParseAddr(docker.DefaultHostIP)
					}
					addresses[name] = net.JoinHostPort(ip.String(), bindings[0].HostPort)
				}
			}
			group := labels[docker.LabelGroup]
			agent := labels[docker.LabelAgentAddress]
			if port := labels[docker.LabelAgentPort]; port != "" && agent == "" && addresses[port] != "" {
				scheme := labels[docker.LabelAgentScheme]
				if scheme == "" {
					scheme = "http"
				}
				agent = scheme + "://" + addresses[port]
			}
			cluster := labels[docker.LabelCluster]
			byCluster[cluster] = append(byCluster[cluster], platform.DiscoveredNode{
				AgentAddress: agent, NodeID: labels[docker.LabelNode], NodeClass: labels[docker.LabelClass],
				NodeGroup: &group, Addresses: addresses,
			})
		}
		resp := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{}}
		for id, nodes := range byCluster {
			sort.Slice(nodes, func(i, j int) bool { return nodes[i].NodeID < nodes[j].NodeID })
			resp.Clusters = append(resp.Clusters, platform.ClusterDiscovery{ClusterID: id, Nodes: nodes})
		}
		sort.Slice(resp.Clusters, func(i, j int) bool { return resp.Clusters[i].ClusterID < resp.Clusters[j].ClusterID })
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// harness lets the bench use the test suite's private Podman
// (internal/podmantest), which reports through testing.TB: a failure or a
// skip ends the scenario instead of a test. Only the methods podmantest
// calls are implemented; the embedded interface is nil.
type harness struct {
	testing.TB
	cleanups []func()
	errs     []string
}

type harnessStop struct {
	skip bool
	msg  string
}

func (h *harness) Helper()                         {}
func (h *harness) Name() string                    { return "bench" }
func (h *harness) Cleanup(f func())                { h.cleanups = append(h.cleanups, f) }
func (h *harness) Logf(format string, args ...any) {}
func (h *harness) Errorf(format string, args ...any) {
	h.errs = append(h.errs, fmt.Sprintf(format, args...))
}
func (h *harness) Fatal(args ...any) { panic(harnessStop{msg: fmt.Sprint(args...)}) }
func (h *harness) Fatalf(format string, args ...any) {
	panic(harnessStop{msg: fmt.Sprintf(format, args...)})
}
func (h *harness) Skipf(format string, args ...any) {
	panic(harnessStop{skip: true, msg: fmt.Sprintf(format, args...)})
}

// do runs fn; a Fatal in it is an error, a Skip is reported as skipped.
func (h *harness) do(fn func()) (skipped string, err error) {
	defer func() {
		if p := recover(); p != nil {
			stop, ok := p.(harnessStop)
			if !ok {
				panic(p)
			}
			if stop.skip {
				skipped = stop.msg
			} else {
				err = errors.New(stop.msg)
			}
		}
	}()
	fn()
	return "", nil
}

// close runs the cleanups, last first.
func (h *harness) close() error {
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	if len(h.errs) > 0 {
		return errors.New(strings.Join(h.errs, "; "))
	}
	return nil
}

// callsAt is the engine calls per discovery with some nodes on the engine.
type callsAt struct {
	nodes           int
	berth, baseline map[string]int
	discoveries     int
}

type containerFigures struct {
	nodes           int
	calls           []callsAt
	berth, baseline sample
	provisioned     time.Duration
}

const clusterSize = 10 // nodes per cluster, as in the discovery scenario

func measureContainers(ctx context.Context, cfg config) (f *containerFigures, notRun string, err error) {
	if cfg.containers < 1 {
		return nil, "", errors.New("-containers must be at least 1")
	}
	h := &harness{}
	defer func() { err = errors.Join(err, h.close()) }()
	var engine *podmantest.Engine
	skipped, err := h.do(func() {
		engine = podmantest.Start(h)
		engine.ImportRedis(h, podmantest.RedisImage)
	})
	if skipped != "" || err != nil {
		return nil, skipped, err
	}
	proxy, err := startCountingProxy(engine.Socket(), filepath.Join(engine.Dir, "counting.sock"))
	if err != nil {
		return nil, "", err
	}
	defer proxy.close()
	host := "unix://" + proxy.socket
	cat, err := builtinCatalog()
	if err != nil {
		return nil, "", err
	}
	driver, err := docker.Open(docker.Options{Host: host, Catalog: cat, GracePeriod: 2 * time.Second})
	if err != nil {
		return nil, "", err
	}
	defer driver.Close()
	berth, err := serveBerth(driver)
	if err != nil {
		return nil, "", err
	}
	defer berth.stop()
	api, err := client.New(client.WithHost(host))
	if err != nil {
		return nil, "", err
	}
	defer api.Close()
	baseline, err := serveBaseline(inspectEachDiscovery(api))
	if err != nil {
		return nil, "", err
	}
	defer baseline.stop()

	berthClient, baseClient := newClient(1), newClient(1)
	berthTarget := target{name: "Berth GET /discover", url: berth.url + "/discover", status: http.StatusOK, size: -1, client: berthClient}
	baseTarget := target{name: "inspect-each GET /discover", url: baseline.url + "/discover", status: http.StatusOK, size: -1, client: baseClient}

	// Podman keeps DNS records by network name machine-wide: cluster IDs,
	// and so network names, are unique to this run.
	var b [3]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	f = &containerFigures{}
	start := time.Now()
	for provisioned := 0; provisioned < cfg.containers && ctx.Err() == nil; {
		n := min(clusterSize, cfg.containers-provisioned)
		cluster := fmt.Sprintf("bench-%s-%03d", run, provisioned/clusterSize)
		body := fmt.Sprintf(`{"cluster": {"cluster_id": %q, "store": "redis", "store_version": "7.0",
			"nodes": {"default": {"desired_count": %d, "node_class": "default"}}},
			"provision": {"node_group_id": "default", "count": %d}}`, cluster, n, n)
		var resp platform.ProvisionResponse
		if err := postJSON(ctx, berthClient, berth.url+"/provision", body, http.StatusOK, &resp); err != nil {
			return nil, "", err
		}
		if resp.Count != n {
			return nil, "", fmt.Errorf("provision into %s answered %d nodes, want %d", cluster, resp.Count, n)
		}
		provisioned += n
		// Engine calls per discovery at this many nodes, on both sides, and
		// both answers list the same nodes.
		const discoveries = 3
		at := callsAt{nodes: provisioned, discoveries: discoveries}
		for _, side := range []struct {
			t   target
			out *map[string]int
		}{{berthTarget, &at.berth}, {baseTarget, &at.baseline}} {
			proxy.take()
			var listed int
			for i := 0; i < discoveries; i++ {
				body, _, err := side.t.once(ctx)
				if err != nil {
					return nil, "", err
				}
				if listed, err = countNodes(body); err != nil {
					return nil, "", fmt.Errorf("%s: %w", side.t.name, err)
				}
			}
			*side.out = proxy.take()
			if listed != provisioned {
				return nil, "", fmt.Errorf("%s lists %d nodes; %d were provisioned", side.t.name, listed, provisioned)
			}
		}
		f.calls = append(f.calls, at)
	}
	f.provisioned = time.Since(start)
	f.nodes = f.calls[len(f.calls)-1].nodes
	if err := sameAnswers(ctx, berthTarget, baseTarget); err != nil {
		return nil, "", err
	}
	s, err := sideBySide(ctx, []target{berthTarget, baseTarget}, 1, cfg.containerRequests, 5, cfg.maxTime)
	if err != nil {
		return nil, "", err
	}
	f.berth, f.baseline = s[0], s[1]
	// The engine, with every container, volume and network on it, goes
	// with the harness's cleanup (podman rm --all, system reset).
	return f, "", nil
}

func countNodes(body []byte) (int, error) {
	var resp platform.DiscoveryResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range resp.Clusters {
		n += len(c.Nodes)
	}
	return n, nil
}

// sameAnswers checks that the baseline answers what Berth does: same
// clusters, nodes, groups, classes, agent and store addresses.
func sameAnswers(ctx context.Context, a, b target) error {
	var answers [2]platform.DiscoveryResponse
	for i, t := range []target{a, b} {
		body, _, err := t.once(ctx)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &answers[i]); err != nil {
			return err
		}
	}
	x, _ := json.Marshal(answers[0])
	y, _ := json.Marshal(answers[1])
	if string(x) != string(y) {
		return fmt.Errorf("the baseline does not answer what Berth does:\nBerth:    %.400s\nbaseline: %.400s", x, y)
	}
	return nil
}

func benchContainers(ctx context.Context, cfg config) (*report, error) {
	f, notRun, err := measureContainers(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if notRun != "" {
		return &report{Title: "Container discovery", NotRun: notRun}, nil
	}
	return containersReport(cfg, f), nil
}

func containersReport(cfg config, f *containerFigures) *report {
	rep := &report{
		Title: "Container discovery",
		Params: fmt.Sprintf("The Docker driver on a private Podman engine (internal/podmantest, the test suite's), with %d Redis containers (one node each) "+
			"in clusters of %d, served by server.New + server.Serve. Engine calls are counted by a reverse proxy on a unix socket in front of the engine's. "+
			"Baseline: a net/http discovery handler that does what the upstream playground platform does "+
			"(replicante-io/replicore devtools/replidev, src/platform/node_list.rs: list with label filters, then inspect each): "+
			"one label-filtered container list, then one inspect per container, and the same answer (checked equal). "+
			"%d discoveries timed per side, one client, in 5 rounds rotating which side goes first.",
			f.nodes, clusterSize, len(f.berth)),
	}
	last := f.calls[len(f.calls)-1]
	for _, at := range f.calls {
		rep.add(comparison{Figure: fmt.Sprintf("engine calls per discovery, %d containers", at.nodes), Unit: "calls",
			Berth: float64(total(at.berth)) / float64(at.discoveries), Baseline: float64(total(at.baseline)) / float64(at.discoveries), GoalAtMost: 1})
	}
	rep.add(comparison{Figure: fmt.Sprintf("discovery p50, %d containers", f.nodes), Unit: "ms", Berth: ms(f.berth.percentile(50)), Baseline: ms(f.baseline.percentile(50))})
	rep.add(comparison{Figure: fmt.Sprintf("discovery p99, %d containers", f.nodes), Unit: "ms", Berth: ms(f.berth.percentile(99)), Baseline: ms(f.baseline.percentile(99))})
	rep.note("calls of one discovery at %d containers: Berth %s; baseline %s", last.nodes, describeCalls(last.berth, last.discoveries), describeCalls(last.baseline, last.discoveries))
	rep.note("each count is the mean of %d discoveries per side; the baseline's first discovery also pays the client's one-off API version check (HEAD /_ping), hence its fractions", last.discoveries)
	rep.note("provisioning the %d containers took %.1f s (not a goal; it includes the calls counted above)", f.nodes, f.provisioned.Seconds())
	rep.note("afterwards the engine was stopped with every container, volume and network on it (podmantest's cleanup: podman rm --all, system reset)")
	return rep
}
