package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berthio/berth/internal/podmantest"
	"github.com/berthio/berth/internal/testenv"
)

// The memory scenario starts the test binary again as its child.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		if err := runChild(role); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tiny is a configuration small enough for the test suite. Nothing here
// checks a time: only that every figure is measured and finite.
func tiny() config {
	return config{
		nodes: 50, clusters: 5, clients: 4, requests: 200, requests304: 400, rounds: 2, maxTime: time.Minute,
		provisionNodes: 2, memoryNodes: 50, runningNodes: 2, containers: 2, containerRequests: 2,
		out: io.Discard, progress: io.Discard,
	}
}

func checkReport(t *testing.T, rep *report) {
	t.Helper()
	if len(rep.Rows) == 0 {
		t.Fatalf("%s: no figures", rep.Title)
	}
	for _, c := range rep.Rows {
		if math.IsNaN(c.Berth) || math.IsInf(c.Berth, 0) {
			t.Errorf("%s: Berth's figure is %v", c.Figure, c.Berth)
		}
		if !math.IsNaN(c.Baseline) {
			// A difference of two noisy readings may be negative with tiny
			// sizes; it must still be a number.
			if r := c.Ratio(); math.IsNaN(r) || math.IsInf(r, 0) {
				t.Errorf("%s: ratio %v (Berth %v, baseline %v)", c.Figure, r, c.Berth, c.Baseline)
			}
		}
	}
	var out bytes.Buffer
	rep.write(&out)
	if !strings.Contains(out.String(), "| figure |") {
		t.Errorf("%s: the report has no table:\n%s", rep.Title, out.String())
	}
}

func TestDiscoveryScenario(t *testing.T) {
	cfg := tiny()
	f, err := measureDiscovery(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]sample{"full": f.full, "full baseline": f.fullBase, "304": f.notMod, "304 baseline": f.notModBase, "304 quiet": f.notModQuiet} {
		want := cfg.requests
		if strings.HasPrefix(name, "304") {
			want = cfg.requests304
		}
		if len(s) != want {
			t.Errorf("%s: %d requests timed, want %d", name, len(s), want)
		}
	}
	checkReport(t, discoveryReport(cfg, f))
}

func TestProvisionScenario(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	f, err := measureProvision(context.Background(), tiny())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.berth) != 2 || len(f.baseline) != 2 || f.left != 0 {
		t.Errorf("%d nodes through Berth, %d direct, %d processes left; want 2, 2 and 0", len(f.berth), len(f.baseline), f.left)
	}
	checkReport(t, provisionReport(tiny(), f))
}

func TestMemoryScenario(t *testing.T) {
	testenv.RequireBinary(t, "sleep", "apt-get install -y coreutils")
	f, err := measureMemory(context.Background(), tiny())
	if err != nil {
		t.Fatal(err)
	}
	if f.running.childProcs != 2 || f.running.left != 0 {
		t.Errorf("%d processes under Berth with 2 sleep nodes, %d left after; want 2 and 0", f.running.childProcs, f.running.left)
	}
	checkReport(t, memoryReport(tiny(), f))
}

func TestVerdicts(t *testing.T) {
	for _, tc := range []struct {
		c    comparison
		want string
	}{
		{comparison{Berth: 1.2, Baseline: 1, GoalRatio: 1.25}, "met"},
		{comparison{Berth: 1.5, Baseline: 1, GoalRatio: 1.25}, "**MISSED**: 1.500x against 1.25x, 20.0% over"},
		{comparison{Berth: 160, Unit: "MB", Baseline: math.NaN(), GoalBelow: 150}, "**MISSED**: 160 MB against 150 MB, 6.7% over"},
		{comparison{Berth: 3, Baseline: 1}, "(no goal)"},
		{comparison{Berth: 1, Unit: "calls", Baseline: 51, GoalAtMost: 1}, "met"},
		{comparison{Berth: 2, Unit: "calls", Baseline: 51, GoalAtMost: 1}, "**MISSED**: 2 calls against at most 1 calls, 100.0% over"},
	} {
		if got := tc.c.verdict(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
	if p := (sample{3, 1, 2, 4}).percentile(50); p != 2 {
		t.Errorf("p50 of 1..4 = %v, want 2 (nearest rank)", p)
	}
	if p := (sample{3, 1, 2, 4}).percentile(100); p != 4 {
		t.Errorf("p100 of 1..4 = %v, want 4", p)
	}
}

func TestContainersScenario(t *testing.T) {
	podmantest.Require(t)
	f, notRun, err := measureContainers(context.Background(), tiny())
	if err != nil || notRun != "" {
		t.Fatalf("%v (not run: %q)", err, notRun)
	}
	last := f.calls[len(f.calls)-1]
	if last.nodes != 2 || total(last.berth) != last.discoveries {
		t.Errorf("at %d containers Berth made %v for %d discoveries; want one list call each", last.nodes, last.berth, last.discoveries)
	}
	if got := last.baseline["GET /containers/{id}/json"]; got != 2*last.discoveries {
		t.Errorf("the baseline made %d inspects for %d discoveries of 2 containers", got, last.discoveries)
	}
	checkReport(t, containersReport(tiny(), f))
}

func TestCallNames(t *testing.T) {
	for path, want := range map[string]string{
		"/v1.41/containers/json":                         "GET /containers/json",
		"/v1.41/containers/0123abcd/json":                "GET /containers/{id}/json",
		"/containers/berth-c-n-redis/start":              "GET /containers/{id}/start",
		"/v1.41/images/docker.io/library/redis:7.0/json": "GET /images/{name}/json",
		"/_ping":                                 "GET /_ping",
		"/v1.41/networks/berth-bench-0a1b2c-000": "GET /networks/{id}",
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://engine"+path, nil)
		if got := callName(r); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}
