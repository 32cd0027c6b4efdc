package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berthio/berth/driver/local"
)

// sleepCatalog is a catalogue layered with --catalog: a store "sleep" whose
// node is one `sleep infinity` process, so that Berth's own memory per
// running node can be told from the store's.
var sleepCatalog = map[string]string{
	"local/stores.yaml": `- store: sleep
  versions: sleep/versions.yaml
  requires:
    binaries: [sleep]
`,
	"local/sleep/versions.yaml": `- version: ">=0.0.0"
  template: sleep/sleep.yaml
`,
	"local/sleep/sleep.yaml": `ports: [agent]
agent_address: "http://127.0.0.1:{{ .Ports.agent }}"
processes:
  - name: sleep
    argv: [sleep, infinity]
`,
}

// memoryPorts is where the running sleep nodes get their (unused) ports.
var memoryPorts = local.PortRange{Min: 15000, Max: 19999}

// stateMemory is the memory with many nodes in state.
type stateMemory struct {
	idle, loaded, collected memory // after start; after discovery load; after a collection
	collectedOK             bool
}

// nodeMemory is the memory with no and with running nodes.
type nodeMemory struct {
	nodes               int
	before, after       memory // raw readings
	beforeGC, afterGC   memory // after a collection
	collectedOK         bool
	storeRSS            float64 // mean RSS of one node's process, MB
	childProcs, perNode int     // processes under Berth, and per node
	left                int
}

type memoryFigures struct {
	nodes          int
	berth, base    stateMemory
	running        nodeMemory
	bytes          int
	berthIsBinary  bool
	discoveryLoads int
}

func measureMemory(ctx context.Context, cfg config) (*memoryFigures, error) {
	workDir, err := os.MkdirTemp("", "berth-bench-memory-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(workDir)
	f := &memoryFigures{nodes: cfg.memoryNodes, berthIsBinary: cfg.berthBin != ""}

	// Part 1: many nodes in state, polled by discovery.
	seeded, err := seedNodes(cfg.memoryNodes, min(cfg.clusters, cfg.memoryNodes))
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(workDir, "state")
	if err := local.Seed(stateDir, seeded); err != nil {
		return nil, err
	}
	berth, err := startChild(ctx, "serve", cfg.berthBin, filepath.Join(workDir, "berth-state.log"), map[string]string{childDataDirEnv: stateDir})
	if err != nil {
		return nil, err
	}
	defer berth.stop()
	client := newClient(cfg.clients)
	full := target{name: "Berth GET /discover", url: berth.url + "/discover", status: http.StatusOK, size: -1, client: client}
	if f.berth.idle, err = settledMemory(berth); err != nil {
		return nil, err
	}
	body, _, err := full.once(ctx)
	if err != nil {
		return nil, err
	}
	f.bytes = len(body)
	bodyPath := filepath.Join(workDir, "discovery.json")
	if err := os.WriteFile(bodyPath, body, 0o600); err != nil {
		return nil, err
	}
	base, err := startChild(ctx, "baseline", "", filepath.Join(workDir, "baseline.log"), map[string]string{childBodyEnv: bodyPath})
	if err != nil {
		return nil, err
	}
	defer base.stop()
	fullBase := full
	fullBase.name, fullBase.url, fullBase.client = "baseline GET /discover", base.url+"/discover", newClient(cfg.clients)
	if f.base.idle, err = settledMemory(base); err != nil {
		return nil, err
	}
	// The load: as many full answers as clients, ten times over, and the
	// same again as 304s on Berth (the baseline has no ETag).
	f.discoveryLoads = 10 * cfg.clients
	for _, side := range []struct {
		t   target
		c   *child
		out *stateMemory
	}{{full, berth, &f.berth}, {fullBase, base, &f.base}} {
		if _, err := side.t.load(ctx, cfg.clients, f.discoveryLoads, cfg.maxTime); err != nil {
			return nil, err
		}
		if side.c == berth {
			_, header, err := side.t.once(ctx)
			if err != nil {
				return nil, err
			}
			notMod := side.t
			notMod.header, notMod.status, notMod.size = http.Header{"If-None-Match": {header.Get("ETag")}}, http.StatusNotModified, 0
			if _, err := notMod.load(ctx, cfg.clients, f.discoveryLoads, cfg.maxTime); err != nil {
				return nil, err
			}
		}
		if side.out.loaded, err = settledMemory(side.c); err != nil {
			return nil, err
		}
		if err := side.c.collect(ctx, client); err == nil {
			side.out.collectedOK = true
			if side.out.collected, err = settledMemory(side.c); err != nil {
				return nil, err
			}
		}
	}
	base.stop()
	berth.stop()

	// Part 2: Berth with no node, then with running nodes whose process is
	// `sleep infinity`.
	catDir := filepath.Join(workDir, "catalog")
	for name, text := range sleepCatalog {
		path := filepath.Join(catDir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	runDir := filepath.Join(workDir, "running")
	if f.running, err = measureRunningNodes(ctx, cfg, runDir, catDir, filepath.Join(workDir, "berth-running.log")); err != nil {
		return nil, err
	}
	return f, nil
}

// settledMemory reads a process's memory once it has been still for a
// moment: the collector's background work after a load ends first.
func settledMemory(c *child) (memory, error) {
	time.Sleep(500 * time.Millisecond)
	return c.memory()
}

func measureRunningNodes(ctx context.Context, cfg config, dataDir, catDir, logPath string) (m nodeMemory, err error) {
	m.nodes = cfg.runningNodes
	if m.nodes < 1 {
		return m, errors.New("-running-nodes must be at least 1")
	}
	berth, err := startChild(ctx, "serve", cfg.berthBin, logPath, map[string]string{
		childDataDirEnv: dataDir, childCatalogEnv: catDir, childPortsEnv: memoryPorts.String(),
	})
	if err != nil {
		return m, err
	}
	defer berth.stop()
	client := newClient(1)
	const cluster = "bench-memory"
	var ids []string
	defer func() {
		cleanup := context.WithoutCancel(ctx)
		for _, id := range ids {
			if derr := deprovision(cleanup, client, berth.url, cluster, id); derr != nil {
				err = errors.Join(err, derr)
			}
		}
		m.left = len(berthProcesses(dataDir))
		if m.left > 0 {
			err = errors.Join(err, fmt.Errorf("%d node processes were left behind", m.left))
		}
	}()
	provision := func() error {
		var resp struct {
			NodeIDs []string `json:"node_ids"`
		}
		body := fmt.Sprintf(`{"cluster": {"cluster_id": %q, "store": "sleep", "store_version": "1.0",
			"nodes": {"default": {"desired_count": %d, "node_class": "default"}}},
			"provision": {"node_group_id": "default", "count": 1}}`, cluster, m.nodes+1)
		if err := postJSON(ctx, client, berth.url+"/provision", body, http.StatusOK, &resp); err != nil {
			return err
		}
		ids = append(ids, resp.NodeIDs...)
		return nil
	}
	discover := target{name: "Berth GET /discover", url: berth.url + "/discover", status: http.StatusOK, size: -1, client: client}
	poll := func() error {
		_, err := discover.load(ctx, 1, 20, cfg.maxTime)
		return err
	}
	// Warm up with one node provisioned and deprovisioned, so that the code
	// paths of a provision have run once before the reading with no node.
	if err := provision(); err != nil {
		return m, err
	}
	if err := deprovision(ctx, client, berth.url, cluster, ids[0]); err != nil {
		return m, err
	}
	ids = nil
	if err := poll(); err != nil {
		return m, err
	}
	if m.before, err = settledMemory(berth); err != nil {
		return m, err
	}
	if err := berth.collect(ctx, client); err == nil {
		m.collectedOK = true
		if m.beforeGC, err = settledMemory(berth); err != nil {
			return m, err
		}
	}
	for i := 0; i < m.nodes; i++ {
		if err := provision(); err != nil {
			return m, err
		}
	}
	if err := poll(); err != nil {
		return m, err
	}
	if m.after, err = settledMemory(berth); err != nil {
		return m, err
	}
	if m.collectedOK {
		if err := berth.collect(ctx, client); err != nil {
			return m, err
		}
		if m.afterGC, err = settledMemory(berth); err != nil {
			return m, err
		}
	}
	kids := children(berth.cmd.Process.Pid)
	m.childProcs = len(kids)
	var total float64
	for _, pid := range kids {
		if mem, err := readMemory(pid); err == nil {
			total += mem.rss
		}
	}
	m.storeRSS = total / float64(max(len(kids), 1))
	m.perNode = int(math.Round(float64(m.childProcs) / float64(m.nodes)))
	return m, nil
}

func benchMemory(ctx context.Context, cfg config) (*report, error) {
	f, err := measureMemory(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return memoryReport(cfg, f), nil
}

func memoryReport(cfg config, f *memoryFigures) *report {
	who := "a child process holding only the local driver and Berth's server (the bench started again), logging as berth serve does"
	if f.berthIsBinary {
		who = "`" + cfg.berthBin + " serve`"
	}
	rep := &report{
		Title: "Memory",
		Params: fmt.Sprintf("Resident memory (VmRSS, MB = 10^6 bytes) of %s. With %d nodes in %d clusters seeded in state: "+
			"read after start, and after %d full discovery answers (%d bytes each) and as many 304s from %d clients; "+
			"baseline: a child process holding only the same answer's bytes and a net/http handler, under the same full-answer load. "+
			"Per running node: Berth with no node, then with %d running nodes of a `sleep infinity` store (a catalogue layered as with --catalog), "+
			"each read half a second after the last request.",
			who, f.nodes, min(cfg.clusters, f.nodes), f.discoveryLoads, f.bytes, cfg.clients, f.running.nodes),
	}
	rep.add(comparison{Figure: fmt.Sprintf("RSS with %d nodes in state, after start", f.nodes), Unit: "MB", Berth: f.berth.idle.rss, Baseline: f.base.idle.rss, GoalBelow: 150})
	rep.add(comparison{Figure: fmt.Sprintf("RSS with %d nodes in state, after discovery load", f.nodes), Unit: "MB", Berth: f.berth.loaded.rss, Baseline: f.base.loaded.rss, GoalBelow: 150})
	rep.add(comparison{Figure: "peak RSS (VmHWM) over all of the above", Unit: "MB", Berth: f.berth.loaded.hwm, Baseline: f.base.loaded.hwm, GoalBelow: 150})
	if f.berth.collectedOK && f.base.collectedOK {
		rep.add(comparison{Figure: "RSS after a forced collection (runtime.GC + debug.FreeOSMemory)", Unit: "MB", Berth: f.berth.collected.rss, Baseline: f.base.collected.rss})
	}
	r := f.running
	storeRSS := r.storeRSS
	perNode := (r.after.rss - r.before.rss) / float64(r.nodes)
	rep.add(comparison{Figure: fmt.Sprintf("Berth's RSS per running node (%d nodes), raw; baseline: RSS of one node's own process", r.nodes),
		Unit: "MB", Berth: perNode, Baseline: storeRSS, GoalBelow: 1})
	if r.collectedOK {
		perNodeGC := (r.afterGC.rss - r.beforeGC.rss) / float64(r.nodes)
		rep.add(comparison{Figure: fmt.Sprintf("Berth's RSS per running node (%d nodes), after a forced collection each time", r.nodes),
			Unit: "MB", Berth: perNodeGC, Baseline: storeRSS, GoalBelow: 1})
		rep.note("per running node, after forced collections: Berth %.1f MB with no node, %.1f MB with %d", r.beforeGC.rss, r.afterGC.rss, r.nodes)
	}
	rep.note("per running node, raw: Berth %.1f MB with no node, %.1f MB with %d; threads %d then %d", r.before.rss, r.after.rss, r.nodes, r.before.threads, r.after.threads)
	rep.note("processes under Berth with %d nodes: %d, that is %d per node (the store's own; no helper process)", r.nodes, r.childProcs, r.perNode)
	rep.note("with %d nodes in state: %d threads after the load; baseline %d", f.nodes, f.berth.loaded.threads, f.base.loaded.threads)
	rep.note("every sleep node was deprovisioned afterwards; processes left behind: %d", r.left)
	if !r.collectedOK {
		rep.note("berth serve has no way to be asked to collect garbage: only raw readings")
	}
	if !strings.Contains(who, "berth serve") && !f.berthIsBinary {
		rep.note("`-berth PATH` measures a real berth binary instead (raw readings only)")
	}
	return rep
}
