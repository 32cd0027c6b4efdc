package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
)

// fakeOperator serves the operator endpoints of a Berth server.
type fakeOperator struct {
	mu       sync.Mutex
	nodes    []platform.NodeStatus
	noNodes  bool              // answer /v1/nodes with 501, like a driver that cannot show nodes
	logs     map[string]string // "cluster/node/process" -> log
	followed chan struct{}     // closed when a followed request ends
	queries  []string
}

func startOperatorFake(t *testing.T) (*fakeOperator, *httptest.Server) {
	t.Helper()
	t.Setenv("BERTH_URL", "")
	t.Setenv("BERTH_TOKEN", "")
	t.Setenv("BERTH_CONFIG", "")
	f := &fakeOperator{logs: map[string]string{}, followed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.noNodes {
			writeTestJSON(w, http.StatusNotImplemented, map[string]any{"error": true,
				"error_msg": "this platform's driver cannot show its nodes, so /v1/nodes is not available; the local driver can"})
			return
		}
		writeTestJSON(w, http.StatusOK, map[string]any{"nodes": f.nodes})
	})
	mux.HandleFunc("GET /v1/nodes/{cluster}/{node}/logs", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.RawQuery)
		process := r.URL.Query().Get("process")
		if process == "" {
			process = "main"
		}
		key := r.PathValue("cluster") + "/" + r.PathValue("node") + "/" + process
		log, ok := f.logs[key]
		f.mu.Unlock()
		if !ok {
			writeTestJSON(w, http.StatusNotFound, map[string]any{"error": true,
				"error_msg": "no node " + r.PathValue("node") + " in cluster " + r.PathValue("cluster")})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(log))
		if r.URL.Query().Get("follow") != "true" {
			return
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(f.followed)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func TestNodesTable(t *testing.T) {
	f, srv := startOperatorFake(t)
	now := time.Now()
	f.nodes = []platform.NodeStatus{
		{ClusterID: "alpha", NodeID: "node-1", NodeGroup: "primary", State: platform.StateRunning,
			Addresses: map[string]string{"store": "127.0.0.1:20000", "agent": "127.0.0.1:20001"},
			Processes: []platform.ProcessStatus{{Name: "redis", PID: 4242, Restarts: 2}, {Name: "agent", PID: 4243, Restarts: 1}},
			CreatedAt: now.Add(-90 * time.Minute)},
		{ClusterID: "alpha", NodeID: "node-2", NodeGroup: "replica", State: platform.StateRestarting,
			Addresses: map[string]string{"store": "127.0.0.1:20002"},
			Processes: []platform.ProcessStatus{{Name: "redis", PID: 0, Restarts: 5}},
			CreatedAt: now.Add(-(3*24*time.Hour + time.Hour))},
		{ClusterID: "b", NodeID: "n3", State: platform.StateStarting, Processes: []platform.ProcessStatus{},
			CreatedAt: now.Add(-10*time.Minute - 30*time.Second)},
	}
	// A base path on --url does not move the operator endpoints.
	r := runCLI(t, "", "nodes", "--url", srv.URL+"/platform/")
	mustSucceed(t, r)
	want := "" +
		"CLUSTER  NODE    GROUP    STATE       PID        RESTARTS  PORTS                    AGE\n" +
		"alpha    node-1  primary  running     4242,4243  3         agent=20001,store=20000  1h\n" +
		"alpha    node-2  replica  restarting  -          5         store=20002              3d\n" +
		"b        n3      -        starting    -          0         -                        10m\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	r = runCLI(t, "", "nodes", "--url", srv.URL, "--cluster", "b")
	mustSucceed(t, r)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "b ") {
		t.Errorf("--cluster b printed:\n%s", r.stdout)
	}
}

func TestNodesJSON(t *testing.T) {
	f, srv := startOperatorFake(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.nodes = []platform.NodeStatus{
		{ClusterID: "a", NodeID: "n1", NodeGroup: "g", NodeClass: "k", Store: "redis", Version: "7.0", State: "running",
			Processes: []platform.ProcessStatus{{Name: "redis", PID: 7, State: "running"}}, CreatedAt: created},
		{ClusterID: "b", NodeID: "n2", Processes: []platform.ProcessStatus{}, CreatedAt: created},
	}
	r := runCLI(t, "", "nodes", "--url", srv.URL, "-o", "json", "--cluster", "a")
	mustSucceed(t, r)
	want := `{"nodes": [{"cluster_id": "a", "node_id": "n1", "node_group": "g", "node_class": "k", "store": "redis",
		"version": "7.0", "state": "running", "agent_address": "",
		"processes": [{"name": "redis", "pid": 7, "state": "running", "restarts": 0}],
		"created_at": "2026-01-02T03:04:05Z"}]}`
	assertSameJSON(t, []byte(r.stdout), []byte(want))

	r = runCLI(t, "", "nodes", "--url", srv.URL, "-o", "json", "--cluster", "none")
	mustSucceed(t, r)
	assertSameJSON(t, []byte(r.stdout), []byte(`{"nodes": []}`))
}

func TestNodesNotImplemented(t *testing.T) {
	f, srv := startOperatorFake(t)
	f.noNodes = true
	r := runCLI(t, "", "nodes", "--url", srv.URL)
	want := "berth: listing nodes: platform answered 501 Not Implemented: this platform's driver cannot show its nodes, so /v1/nodes is not available; the local driver can\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

func TestFormatAge(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"},
		{45 * time.Second, "45s"},
		{59*time.Second + 999*time.Millisecond, "59s"},
		{time.Minute, "1m"},
		{3*time.Minute + 59*time.Second, "3m"},
		{2*time.Hour + 59*time.Minute, "2h"},
		{24 * time.Hour, "1d"},
		{4*24*time.Hour + 23*time.Hour, "4d"},
		{-time.Minute, "0s"},
	}
	for _, tt := range tests {
		if got := formatAge(now.Add(-tt.ago), now); got != tt.want {
			t.Errorf("formatAge(%s ago) = %q, want %q", tt.ago, got, tt.want)
		}
	}
	if got := formatAge(time.Time{}, now); got != "-" {
		t.Errorf("formatAge(zero) = %q, want -", got)
	}
}

func TestLogs(t *testing.T) {
	f, srv := startOperatorFake(t)
	f.logs["c/n/main"] = "ready\naccepting connections\n"
	f.logs["c/n/agent"] = "agent up\n"
	r := runCLI(t, "", "logs", "--url", srv.URL+"/platform/", "--cluster", "c", "--node", "n")
	mustSucceed(t, r)
	if r.stdout != f.logs["c/n/main"] {
		t.Errorf("stdout = %q, want the log", r.stdout)
	}
	r = runCLI(t, "", "logs", "--url", srv.URL, "--cluster", "c", "--node", "n", "--process", "agent", "--tail", "20")
	mustSucceed(t, r)
	if r.stdout != "agent up\n" {
		t.Errorf("stdout = %q, want the agent's log", r.stdout)
	}
	if want := []string{"", "process=agent&tail=20"}; strings.Join(f.queries, " ") != strings.Join(want, " ") {
		t.Errorf("queries = %q, want %q", f.queries, want)
	}

	r = runCLI(t, "", "logs", "--url", srv.URL, "--cluster", "c", "--node", "other")
	want := "berth: reading the log of node other of cluster c: platform answered 404 Not Found: no node other in cluster c\n"
	if r.code != exitFailure || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

func TestLogsFollowUntilInterrupted(t *testing.T) {
	f, srv := startOperatorFake(t)
	f.logs["c/n/main"] = "line 1\n"
	ctx, interrupt := context.WithCancel(t.Context())
	defer interrupt()
	var stdout, stderr testenv.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"logs", "--url", srv.URL, "--cluster", "c", "--node", "n", "-f"}, strings.NewReader(""), &stdout, &stderr)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for stdout.String() != "line 1\n" {
		if time.Now().After(deadline) {
			t.Fatalf("stdout %q after 5s, want the first line", stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case c := <-code:
		t.Fatalf("berth logs -f ended (exit %d, stderr %q) before it was interrupted", c, stderr.String())
	case <-time.After(100 * time.Millisecond):
	}
	interrupt() // what SIGINT does to the command's context
	select {
	case c := <-code:
		if c != exitOK || stderr.String() != "" {
			t.Errorf("exit %d, stderr %q after Ctrl-C; want 0 and nothing", c, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("berth logs -f still runs 5s after Ctrl-C")
	}
	select {
	case <-f.followed:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's follow request still runs 5s after Ctrl-C")
	}
	if want := "follow=true"; len(f.queries) != 1 || f.queries[0] != want {
		t.Errorf("queries = %q, want %q", f.queries, want)
	}
}

func TestOperatorUsageErrors(t *testing.T) {
	_, srv := startOperatorFake(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"nodes", "-o", "wide"}, "--output must be table or json"},
		{[]string{"nodes", "extra"}, "takes no arguments"},
		{[]string{"logs"}, "--cluster and --node are required"},
		{[]string{"logs", "--cluster", "c"}, "--node is required"},
		{[]string{"logs", "--node", "n"}, "--cluster is required"},
		{[]string{"logs", "--cluster", "c", "--node", "n", "--tail", "-1"}, "--tail must be 0"},
		{[]string{"logs", "--cluster", "c", "--node", "n", "--tail", "x"}, "invalid argument"},
	}
	for _, tt := range tests {
		r := runCLI(t, "", append(tt.args, "--url", srv.URL)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("berth %q: exit %d, stderr %q; want 2 and %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}
