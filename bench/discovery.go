package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/driver/local"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

// seedPortBase is the first port of seeded nodes: node i has store port
// base+2i and agent port base+2i+1. Nothing listens on them.
const seedPortBase = 20000

// maxSeedNodes is how many nodes fit in the port space above seedPortBase.
const maxSeedNodes = (65535 - seedPortBase) / 2

// seedNodes returns n nodes spread evenly over clusters clusters, with IDs
// as long as Berth's own (node-xxxxxxxx), so that the answer has the size a
// real one of that many nodes has.
func seedNodes(n, clusters int) ([]local.SeedNode, error) {
	if n < 1 || clusters < 1 || clusters > n {
		return nil, fmt.Errorf("want 1 <= clusters (%d) <= nodes (%d)", clusters, n)
	}
	if n > maxSeedNodes {
		return nil, fmt.Errorf("at most %d nodes can be seeded (two ports each from %d)", maxSeedNodes, seedPortBase)
	}
	nodes := make([]local.SeedNode, n)
	for i := range nodes {
		port := seedPortBase + 2*i
		nodes[i] = local.SeedNode{
			ClusterID: fmt.Sprintf("cluster-%04d", i%clusters),
			NodeID:    fmt.Sprintf("node-%08x", uint32(i)*2654435761), // spread, not sequential
			Ports:     map[string]int{"store": port, "agent": port + 1},
		}
	}
	return nodes, nil
}

// builtinCatalog is the catalogue berth serve has without --catalog.
func builtinCatalog() (*catalog.Catalog, error) {
	return catalog.New(catalog.Layer{Name: "built-in", FS: stores.FS()})
}

// discoveryFigures is what the discovery scenario measured.
type discoveryFigures struct {
	nodes, bytes         int
	cold                 time.Duration
	full, fullBase       sample
	notMod, notModBase   sample
	notModQuiet          sample // Berth without its request log
	fullElapsed, elapsed time.Duration
}

// measureDiscovery seeds nodes into a fresh local driver's state, serves it
// through Berth's server, and times discovery side by side with the
// baselines: a handler writing the same bytes, and one answering 304.
func measureDiscovery(ctx context.Context, cfg config) (*discoveryFigures, error) {
	seeded, err := seedNodes(cfg.nodes, cfg.clusters)
	if err != nil {
		return nil, err
	}
	dataDir, err := os.MkdirTemp("", "berth-bench-discovery-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dataDir)
	if err := local.Seed(dataDir, seeded); err != nil {
		return nil, err
	}
	cat, err := builtinCatalog()
	if err != nil {
		return nil, err
	}
	driver, err := local.Open(local.Options{DataDir: dataDir, Catalog: cat})
	if err != nil {
		return nil, err
	}
	defer driver.Close()
	berth, err := serveBerth(driver)
	if err != nil {
		return nil, err
	}
	defer berth.stop()

	f := &discoveryFigures{nodes: cfg.nodes}
	berthClient := newClient(cfg.clients)
	full := target{name: "Berth GET /discover", url: berth.url + "/discover", status: http.StatusOK, size: -1, client: berthClient}
	start := time.Now()
	body, header, err := full.once(ctx)
	if err != nil {
		return nil, err
	}
	f.cold = time.Since(start)
	f.bytes = len(body)
	var resp platform.DiscoveryResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("Berth's discovery answer: %w", err)
	}
	listed := 0
	for _, c := range resp.Clusters {
		listed += len(c.Nodes)
	}
	if listed != cfg.nodes || len(resp.Clusters) != cfg.clusters {
		return nil, fmt.Errorf("Berth lists %d nodes in %d clusters; %d in %d were seeded", listed, len(resp.Clusters), cfg.nodes, cfg.clusters)
	}
	etag := header.Get("ETag")
	if etag == "" {
		return nil, fmt.Errorf("Berth's discovery answer has no ETag")
	}
	full.size = int64(len(body))

	// The baselines do the least a server of these answers can: write the
	// bytes it already has, or say 304.
	contentType := header.Get("Content-Type")
	baseline, err := serveBaseline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("If-None-Match") != "" {
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(body)
	}))
	if err != nil {
		return nil, err
	}
	defer baseline.stop()
	baseClient := newClient(cfg.clients)
	fullBase := target{name: "baseline GET /discover", url: baseline.url + "/discover", status: http.StatusOK, size: full.size, client: baseClient}
	if got, _, err := fullBase.once(ctx); err != nil || string(got) != string(body) {
		return nil, fmt.Errorf("the baseline does not answer Berth's bytes (%v)", err)
	}
	notMod := full
	notMod.name, notMod.header, notMod.status, notMod.size = "Berth 304", http.Header{"If-None-Match": {etag}}, http.StatusNotModified, 0
	notModBase := fullBase
	notModBase.name, notModBase.header, notModBase.status, notModBase.size = "baseline 304", notMod.header, http.StatusNotModified, 0

	// A diagnostic third side: the same Berth server without its request
	// log line, to tell what that line costs on the 304 path.
	quiet, err := serveBerthLogging(driver, slog.DiscardHandler)
	if err != nil {
		return nil, err
	}
	defer quiet.stop()
	notModQuiet := notMod
	notModQuiet.name, notModQuiet.url, notModQuiet.client = "Berth 304 without request log", quiet.url+"/discover", newClient(cfg.clients)

	// Warm up: connections open, caches filled, on every side.
	for _, t := range []target{full, fullBase, notMod, notModBase, notModQuiet} {
		if _, err := t.load(ctx, cfg.clients, 2*cfg.clients, cfg.maxTime); err != nil {
			return nil, err
		}
	}
	start = time.Now()
	s, err := sideBySide(ctx, []target{full, fullBase}, cfg.clients, cfg.requests, cfg.rounds, cfg.maxTime)
	if err != nil {
		return nil, err
	}
	f.full, f.fullBase = s[0], s[1]
	f.fullElapsed = time.Since(start)
	s, err = sideBySide(ctx, []target{notMod, notModBase, notModQuiet}, cfg.clients, cfg.requests304, cfg.rounds, cfg.maxTime)
	if err != nil {
		return nil, err
	}
	f.notMod, f.notModBase, f.notModQuiet = s[0], s[1], s[2]
	f.elapsed = time.Since(start)
	return f, nil
}

func benchDiscovery(ctx context.Context, cfg config) (*report, error) {
	f, err := measureDiscovery(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return discoveryReport(cfg, f), nil
}

func discoveryReport(cfg config, f *discoveryFigures) *report {
	rep := &report{
		Title: "Discovery at scale",
		Params: fmt.Sprintf("%d nodes in %d clusters seeded in the local driver's state (local.Seed), served by server.New + server.Serve; "+
			"baseline: a plain net/http handler writing the same %d bytes (or answering 304). %d concurrent keep-alive clients; "+
			"%d full answers and %d 304 answers timed per side, in %d rounds rotating which side goes first. "+
			"Latency is from sending the request to having read the whole answer.",
			f.nodes, cfg.clusters, f.bytes, cfg.clients, len(f.full), len(f.notMod), cfg.rounds),
	}
	rep.add(comparison{Figure: "full answer p50", Unit: "ms", Berth: ms(f.full.percentile(50)), Baseline: ms(f.fullBase.percentile(50)), GoalRatio: 1.25})
	rep.add(comparison{Figure: "full answer p99", Unit: "ms", Berth: ms(f.full.percentile(99)), Baseline: ms(f.fullBase.percentile(99)), GoalRatio: 1.5})
	rep.add(comparison{Figure: "304 p50", Unit: "µs", Berth: us(f.notMod.percentile(50)), Baseline: us(f.notModBase.percentile(50)), GoalRatio: 1.1})
	rep.add(comparison{Figure: "304 p99", Unit: "µs", Berth: us(f.notMod.percentile(99)), Baseline: us(f.notModBase.percentile(99)), GoalRatio: 1.1})
	rep.note("first answer after start (reads every record from bbolt and encodes it, no baseline): %.1f ms", ms(f.cold))
	rep.note("full answer p90: Berth %.2f ms, baseline %.2f ms", ms(f.full.percentile(90)), ms(f.fullBase.percentile(90)))
	rep.note("304 p90: Berth %.0f µs, baseline %.0f µs", us(f.notMod.percentile(90)), us(f.notModBase.percentile(90)))
	rep.note("diagnostic, same run: Berth's 304 without its request log line (slog discard handler): p50 %.0f µs (%.2fx the baseline), p99 %.0f µs",
		us(f.notModQuiet.percentile(50)), us(f.notModQuiet.percentile(50))/us(f.notModBase.percentile(50)), us(f.notModQuiet.percentile(99)))
	rep.note("the goal on 304 is applied to p50 and to p99 alike")
	return rep
}
