// Command bench measures Berth against the limits of its job: each figure is
// measured side by side with a baseline that does only the unavoidable part
// of the work (a handler writing the same bytes, redis-server started by
// hand, a container inspected per call), in the same run, and printed with
// the ratio and the goal from issue 8.
//
//	go run ./bench                          # every scenario with the default sizes
//	go run ./bench -scenarios discovery     # one scenario
//	go run ./bench -h                       # sizes and other flags
//
// It prints Markdown (bench/RESULTS.md holds a run). These are benchmarks,
// not tests: nothing here fails on a time. It listens on 127.0.0.1 only and
// removes every node, process and container it started, also when
// interrupted with Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

// config is every size the scenarios take.
type config struct {
	scenarios []string

	// Discovery at scale.
	nodes, clusters   int
	clients           int
	requests          int // full answers per side
	requests304       int // 304 answers per side
	rounds            int // interleaved rounds each side's requests are split in
	maxTime           time.Duration
	provisionNodes    int
	containers        int
	memoryNodes       int // nodes in state for the memory figure
	runningNodes      int // running sleep nodes for the per-node overhead
	berthBin          string
	containerRequests int // discoveries timed per side
	out, progress     io.Writer
}

var allScenarios = []string{"discovery", "provision", "memory", "containers"}

func main() {
	if role := os.Getenv(childEnv); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	cfg := config{out: os.Stdout, progress: os.Stderr}
	var scenarios string
	flag.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated: "+strings.Join(allScenarios, ", "))
	flag.IntVar(&cfg.nodes, "nodes", 10000, "discovery: nodes seeded in the local driver's state")
	flag.IntVar(&cfg.clusters, "clusters", 1000, "discovery and memory: clusters the seeded nodes are spread over")
	flag.IntVar(&cfg.clients, "clients", 16, "discovery: concurrent clients")
	flag.IntVar(&cfg.requests, "requests", 8000, "discovery: full answers timed per side")
	flag.IntVar(&cfg.requests304, "requests-304", 100000, "discovery: 304 answers timed per side")
	flag.IntVar(&cfg.rounds, "rounds", 10, "discovery: rounds each side's requests are split in, rotating which side goes first")
	flag.DurationVar(&cfg.maxTime, "max-time", time.Minute, "discovery: bound on one side of one round; fewer requests are timed past it")
	flag.IntVar(&cfg.provisionNodes, "provision-nodes", 50, "provision: Redis nodes provisioned (and as many started directly)")
	flag.IntVar(&cfg.memoryNodes, "memory-nodes", 10000, "memory: nodes seeded in state")
	flag.IntVar(&cfg.runningNodes, "running-nodes", 64, "memory: running local nodes (sleep processes) for the per-node overhead")
	flag.IntVar(&cfg.containers, "containers", 50, "containers: Redis containers (one per node) on a private Podman engine")
	flag.IntVar(&cfg.containerRequests, "container-requests", 50, "containers: discoveries timed per side")
	flag.StringVar(&cfg.berthBin, "berth", "", "memory: measure this berth binary (berth serve) instead of the bench's own driver+server process")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (Berth's server and driver run in this process) to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench takes no arguments (got %q); see -h\n", flag.Args())
		os.Exit(2)
	}
	for _, s := range strings.Split(scenarios, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "unknown scenario %q; want some of %s\n", s, strings.Join(allScenarios, ", "))
			os.Exit(2)
		}
		cfg.scenarios = append(cfg.scenarios, s)
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Args[1:]); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, args []string) error {
	fmt.Fprintf(cfg.out, "## Run\n\n    %s\n\n", strings.TrimSpace("go run ./bench "+strings.Join(args, " ")))
	fmt.Fprint(cfg.out, describeMachine())
	var failed []string
	for _, name := range cfg.scenarios {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(cfg.progress, "bench: %s...\n", name)
		start := time.Now()
		var rep *report
		var err error
		switch name {
		case "discovery":
			rep, err = benchDiscovery(ctx, cfg)
		case "provision":
			rep, err = benchProvision(ctx, cfg)
		case "memory":
			rep, err = benchMemory(ctx, cfg)
		case "containers":
			rep, err = benchContainers(ctx, cfg)
		}
		if err != nil {
			// One scenario failing does not hide the others' figures.
			failed = append(failed, name)
			rep = &report{Title: name, NotRun: err.Error()}
		}
		rep.Elapsed = time.Since(start)
		rep.write(cfg.out)
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios that did not run: %s", strings.Join(failed, ", "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
