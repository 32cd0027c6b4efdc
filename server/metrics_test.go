package server

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/berthio/berth/platform"
)

func TestMetrics(t *testing.T) {
	d := newInspectorDriver(t)
	d.nodes = []platform.NodeStatus{
		{ClusterID: "c1", NodeID: "a", Store: "redis", State: platform.StateRunning},
		{ClusterID: "c1", NodeID: "b", Store: "redis", State: platform.StateRunning},
		{ClusterID: "c2", NodeID: "c", Store: "etcd", State: platform.StateRestarting},
	}
	s, _ := newTestServer(t, d, Options{})
	do(t, s, http.MethodGet, "/discover", "")
	do(t, s, http.MethodGet, "/discover", "")
	do(t, s, http.MethodPost, "/provision", validProvision)
	do(t, s, http.MethodGet, "/no/such/path/1", "")
	do(t, s, http.MethodGet, "/no/such/path/2", "")
	d.fakeDriver.err = platform.Errorf(platform.ENOTFOUND, "no such node")
	do(t, s, http.MethodPost, "/deprovision", `{"cluster_id":"c1","node_id":"zz"}`)
	d.fakeDriver.err = errors.New("disk on fire")
	do(t, s, http.MethodPost, "/deprovision", `{"cluster_id":"c1","node_id":"zz"}`)
	d.fakeDriver.err = nil

	rec := do(t, s, http.MethodGet, "/metrics", "")
	if rec.Code != 200 {
		t.Fatalf("GET /metrics = %d", rec.Code)
	}
	text := rec.Body.String()
	for _, want := range []string{
		`berth_http_requests_total{code="200",method="GET",route="/discover"} 2`,
		`berth_http_requests_total{code="200",method="POST",route="/provision"} 1`,
		`berth_http_requests_total{code="404",method="GET",route="other"} 2`,
		`berth_http_requests_total{code="404",method="POST",route="/deprovision"} 1`,
		`berth_http_request_duration_seconds_count{route="/discover"} 2`,
		`berth_driver_operation_duration_seconds_count{operation="provision"} 1`,
		`berth_driver_operation_errors_total{code="not_found",operation="deprovision"} 1`,
		`berth_driver_operation_errors_total{code="internal",operation="deprovision"} 1`,
		`berth_nodes{cluster="c1",state="running",store="redis"} 2`,
		`berth_nodes{cluster="c2",state="restarting",store="etcd"} 1`,
		`berth_operations_in_flight 0`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Paths that do not exist share one label value.
	if strings.Contains(text, "/no/such/path") {
		t.Error("an unknown path became a label value")
	}
}
