package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/berthio/berth/platform"
)

// fakePlatform is an in-memory Platform server. New nodes appear in
// discovery, and deprovisioned ones leave it, only after lagPolls further
// discoveries, like a platform that provisions asynchronously.
type fakePlatform struct {
	mu            sync.Mutex
	clusters      []*fakeCluster
	lagPolls      int
	omitNodeIDs   bool
	failMsg       string // when set, provision answers 400 with this error_msg
	discoverCalls int
	provisions    [][]byte
	deprovisions  []platform.DeprovisionRequest
	auth          []string
	nextID        int
}

type fakeCluster struct {
	id    string
	nodes []*fakeNode
}

type fakeNode struct {
	node       platform.DiscoveredNode
	listedFrom int // first discovery call that lists it
	goneFrom   int // first discovery call that no longer lists it; 0 for never
}

func (f *fakePlatform) cluster(id string) *fakeCluster {
	for _, c := range f.clusters {
		if c.id == id {
			return c
		}
	}
	c := &fakeCluster{id: id}
	f.clusters = append(f.clusters, c)
	return c
}

// add seeds a node that discovery lists at once.
func (f *fakePlatform) add(clusterID string, node platform.DiscoveredNode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cluster(clusterID)
	c.nodes = append(c.nodes, &fakeNode{node: node})
}

func (f *fakePlatform) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	switch r.Method + " " + r.URL.Path {
	case "GET /discover":
		f.discoverCalls++
		resp := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{}}
		for _, c := range f.clusters {
			cd := platform.ClusterDiscovery{ClusterID: c.id, Nodes: []platform.DiscoveredNode{}}
			for _, n := range c.nodes {
				if n.listedFrom <= f.discoverCalls && (n.goneFrom == 0 || f.discoverCalls < n.goneFrom) {
					cd.Nodes = append(cd.Nodes, n.node)
				}
			}
			resp.Clusters = append(resp.Clusters, cd)
		}
		writeTestJSON(w, http.StatusOK, resp)
	case "POST /provision":
		body := readBody(r)
		f.provisions = append(f.provisions, body)
		if f.failMsg != "" {
			writeTestJSON(w, http.StatusBadRequest, map[string]any{"error": true, "error_msg": f.failMsg})
			return
		}
		req, err := platform.DecodeProvisionRequest(body)
		if err != nil {
			writeTestJSON(w, http.StatusBadRequest, map[string]any{"error": true, "error_msg": platform.ErrorMessage(err)})
			return
		}
		c := f.cluster(req.Cluster.ClusterID)
		group := req.Provision.NodeGroupID
		resp := platform.ProvisionResponse{Count: req.Provision.Count}
		for i := 0; i < req.Provision.Count; i++ {
			f.nextID++
			id := fmt.Sprintf("%s-%d", c.id, f.nextID)
			c.nodes = append(c.nodes, &fakeNode{
				node: platform.DiscoveredNode{
					AgentAddress: fmt.Sprintf("127.0.0.1:%d", 10000+f.nextID),
					NodeID:       id,
					NodeClass:    req.Group().NodeClass,
					NodeGroup:    &group,
				},
				listedFrom: f.discoverCalls + 1 + f.lagPolls,
			})
			if !f.omitNodeIDs {
				resp.NodeIDs = append(resp.NodeIDs, id)
			}
		}
		writeTestJSON(w, http.StatusOK, resp)
	case "POST /deprovision":
		req, err := platform.DecodeDeprovisionRequest(readBody(r))
		if err != nil {
			writeTestJSON(w, http.StatusBadRequest, map[string]any{"error": true, "error_msg": platform.ErrorMessage(err)})
			return
		}
		for _, c := range f.clusters {
			for _, n := range c.nodes {
				if c.id == req.ClusterID && n.node.NodeID == req.NodeID && n.goneFrom == 0 {
					f.deprovisions = append(f.deprovisions, req)
					n.goneFrom = f.discoverCalls + 1 + f.lagPolls
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
		}
		writeTestJSON(w, http.StatusNotFound, map[string]any{"error": true,
			"error_msg": fmt.Sprintf("no node %q in cluster %q", req.NodeID, req.ClusterID)})
	default:
		http.NotFound(w, r)
	}
}

func readBody(r *http.Request) []byte {
	var buf bytes.Buffer
	buf.ReadFrom(r.Body)
	return buf.Bytes()
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// startFake serves a fresh fake platform and clears the environment that
// would change the CLI's defaults.
func startFake(t *testing.T) (*fakePlatform, *httptest.Server) {
	t.Helper()
	t.Setenv("BERTH_URL", "")
	t.Setenv("BERTH_TOKEN", "")
	t.Setenv("BERTH_CONFIG", "")
	f := &fakePlatform{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func mustSucceed(t *testing.T, r result) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func seed(f *fakePlatform) {
	group := "primary"
	empty := ""
	f.add("alpha", platform.DiscoveredNode{AgentAddress: "10.0.0.1:37000", NodeID: "alpha-node-1", NodeClass: "large", NodeGroup: &group})
	f.add("alpha", platform.DiscoveredNode{AgentAddress: "10.0.0.2:37000", NodeID: "n2", NodeClass: "small"})
	f.add("b", platform.DiscoveredNode{AgentAddress: "10.0.0.3:37000", NodeID: "n3", NodeClass: "c", NodeGroup: &empty})
}

func TestDiscoverTable(t *testing.T) {
	f, srv := startFake(t)
	seed(f)
	r := runCLI(t, "", "discover", "--url", srv.URL)
	mustSucceed(t, r)
	want := "" +
		"CLUSTER  NODE          GROUP    CLASS  AGENT\n" +
		"alpha    alpha-node-1  primary  large  10.0.0.1:37000\n" +
		"alpha    n2            -        small  10.0.0.2:37000\n" +
		"b        n3            -        c      10.0.0.3:37000\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}

	_, empty := startFake(t)
	r = runCLI(t, "", "discover", "--url", empty.URL)
	mustSucceed(t, r)
	if want := "CLUSTER  NODE  GROUP  CLASS  AGENT\n"; r.stdout != want {
		t.Errorf("stdout without nodes = %q, want %q", r.stdout, want)
	}
}

func TestDiscoverWide(t *testing.T) {
	f, srv := startFake(t)
	group := "g"
	f.add("c", platform.DiscoveredNode{AgentAddress: "http://127.0.0.1:20001", NodeID: "n1", NodeClass: "small", NodeGroup: &group,
		Addresses: map[string]string{"store": "127.0.0.1:20000", "agent": "127.0.0.1:20001"}})
	f.add("c", platform.DiscoveredNode{AgentAddress: "http://127.0.0.1:20003", NodeID: "n2", NodeClass: "small", NodeGroup: &group})
	r := runCLI(t, "", "discover", "--url", srv.URL, "-o", "wide")
	mustSucceed(t, r)
	want := "" +
		"CLUSTER  NODE  GROUP  CLASS  AGENT                   ADDRESSES\n" +
		"c        n1    g      small  http://127.0.0.1:20001  agent=127.0.0.1:20001 store=127.0.0.1:20000\n" +
		"c        n2    g      small  http://127.0.0.1:20003  -\n"
	if r.stdout != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, want)
	}
}

func TestDiscoverJSON(t *testing.T) {
	f, srv := startFake(t)
	seed(f)
	r := runCLI(t, "", "discover", "--url", srv.URL+"/", "-o", "json")
	mustSucceed(t, r)
	want := `{
  "clusters": [
    {
      "cluster_id": "alpha",
      "nodes": [
        {"agent_address": "10.0.0.1:37000", "node_id": "alpha-node-1", "node_class": "large", "node_group": "primary"},
        {"agent_address": "10.0.0.2:37000", "node_id": "n2", "node_class": "small", "node_group": null}
      ]
    },
    {
      "cluster_id": "b",
      "nodes": [{"agent_address": "10.0.0.3:37000", "node_id": "n3", "node_class": "c", "node_group": ""}]
    }
  ]
}`
	assertSameJSON(t, []byte(r.stdout), []byte(want))
	if !strings.HasPrefix(r.stdout, "{\n  \"clusters\": [\n") {
		t.Errorf("stdout is not indented JSON:\n%s", r.stdout)
	}
}

// assertSameJSON compares two JSON documents value for value: key order and
// spacing aside, they must be identical (numbers compared as written).
func assertSameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	decode := func(data []byte) any {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("invalid JSON %q: %v", data, err)
		}
		return v
	}
	if g, w := decode(got), decode(want); !reflect.DeepEqual(g, w) {
		t.Errorf("JSON differs\ngot:  %s\nwant: %s", got, want)
	}
}

func TestProvisionWithFlags(t *testing.T) {
	f, srv := startFake(t)
	r := runCLI(t, "", "provision", "--url", srv.URL,
		"--cluster", "demo", "--store", "redis", "--version", "7.0", "--count", "2", "--class", "big",
		"--attr", "maxmemory=100mb",
		"--attr", "port=6379",
		"--attr", "ratio=1.50",
		"--attr", "persist=true",
		"--attr", `limits={"cpu":2,"tags":["a","b"]}`,
		"--attr", `quoted="7.0"`,
		"--attr", "empty=",
		"--attr", "eq=a=b",
		"--attr", "two=1 2",
		"--attr", "nothing=null",
		"--group-attr", "role=primary",
		"--group-attr", "replicas=3",
	)
	mustSucceed(t, r)
	if want := "provisioned 2 node(s) in cluster demo: demo-1 demo-2\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	if len(f.provisions) != 1 {
		t.Fatalf("server received %d provision requests, want 1", len(f.provisions))
	}
	want := `{
	  "cluster": {
	    "attributes": {
	      "maxmemory": "100mb", "port": 6379, "ratio": 1.50, "persist": true,
	      "limits": {"cpu": 2, "tags": ["a", "b"]}, "quoted": "7.0", "empty": "",
	      "eq": "a=b", "two": "1 2", "nothing": null
	    },
	    "cluster_id": "demo",
	    "store": "redis",
	    "store_version": "7.0",
	    "nodes": {
	      "default": {"attributes": {"role": "primary", "replicas": 3}, "desired_count": 2, "node_class": "big"}
	    }
	  },
	  "provision": {"node_group_id": "default", "count": 2}
	}`
	assertSameJSON(t, f.provisions[0], []byte(want))
	// 1.50 must reach the platform as written, not re-encoded as 1.5.
	if !bytes.Contains(f.provisions[0], []byte(`"ratio":1.50`)) {
		t.Errorf("body %s does not carry ratio as 1.50", f.provisions[0])
	}
}

func TestProvisionDesiredAndGroup(t *testing.T) {
	tests := []struct {
		args        []string
		wantGroup   string
		wantDesired int
		wantCount   int
	}{
		{nil, "default", 1, 1},
		{[]string{"--count", "3"}, "default", 3, 3},
		{[]string{"--desired", "5"}, "default", 5, 1},
		{[]string{"--desired", "5", "--count", "2", "--group", "replicas"}, "replicas", 5, 2},
	}
	for _, tt := range tests {
		f, srv := startFake(t)
		args := append([]string{"provision", "--url", srv.URL, "--cluster", "c", "--store", "redis", "--version", "7"}, tt.args...)
		mustSucceed(t, runCLI(t, "", args...))
		var req platform.ProvisionRequest
		if err := json.Unmarshal(f.provisions[0], &req); err != nil {
			t.Fatal(err)
		}
		group, ok := req.Cluster.Nodes[tt.wantGroup]
		if !ok || req.Provision.NodeGroupID != tt.wantGroup || group.DesiredCount != tt.wantDesired ||
			req.Provision.Count != tt.wantCount || group.NodeClass != "default" {
			t.Errorf("%q: request %s, want group %s desired %d count %d", tt.args, f.provisions[0], tt.wantGroup, tt.wantDesired, tt.wantCount)
		}
	}
}

func TestProvisionFromFile(t *testing.T) {
	// Odd spacing, an SDK-only field and an unknown field: all must reach
	// the platform byte for byte.
	raw := `{ "cluster": {"cluster_id": "filed", "store": "redis", "store_version": "7.0",
  "nodes": {"default": {"desired_count": 1, "node_class": "x", "store_version": "7.0"}}},
  "provision": {"node_group_id": "default", "count": 1}, "x-extra": [1,2,3] }
`
	path := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
	}{
		{"file", "", []string{"-f", path}},
		{"stdin", raw, []string{"-f", "-"}},
		{"stdin long flag", raw, []string{"--file", "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := startFake(t)
			r := runCLI(t, tc.stdin, append([]string{"provision", "--url", srv.URL}, tc.args...)...)
			mustSucceed(t, r)
			if len(f.provisions) != 1 || string(f.provisions[0]) != raw {
				t.Errorf("server received %q, want %q", f.provisions, raw)
			}
			if want := "provisioned 1 node(s) in cluster filed: filed-1\n"; r.stdout != want {
				t.Errorf("stdout = %q, want %q", r.stdout, want)
			}
		})
	}
}

func TestProvisionJSONOutput(t *testing.T) {
	f, srv := startFake(t)
	f.omitNodeIDs = true
	r := runCLI(t, "", "provision", "--url", srv.URL, "--cluster", "c", "--store", "redis", "--version", "7", "-o", "json")
	mustSucceed(t, r)
	assertSameJSON(t, []byte(r.stdout), []byte(`{"count": 1, "node_ids": []}`))
}

func TestProvisionWait(t *testing.T) {
	for _, omitIDs := range []bool{false, true} {
		t.Run(fmt.Sprintf("omit node_ids %v", omitIDs), func(t *testing.T) {
			f, srv := startFake(t)
			seed(f) // nodes listed before must not count as new ones
			f.lagPolls = 2
			f.omitNodeIDs = omitIDs
			r := runCLI(t, "", "provision", "--url", srv.URL, "--cluster", "alpha", "--store", "redis",
				"--version", "7", "--count", "2", "--wait")
			mustSucceed(t, r)
			// One discovery before provisioning, then polls until the
			// third after provisioning lists the nodes.
			if f.discoverCalls != 4 {
				t.Errorf("discovery was called %d times, want 4", f.discoverCalls)
			}
			if r.stderr != "" {
				t.Errorf("stderr is not a terminal, yet got progress %q", r.stderr)
			}
		})
	}
}

func TestProvisionWaitTimeout(t *testing.T) {
	f, srv := startFake(t)
	f.lagPolls = 1000
	r := runCLI(t, "", "provision", "--url", srv.URL, "--cluster", "c", "--store", "redis",
		"--version", "7", "--count", "2", "--wait", "--wait-timeout", "1200ms")
	if r.code != 1 {
		t.Fatalf("exit status %d, want 1; stderr: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "does not list node(s) c-1, c-2") || !strings.Contains(r.stderr, "gave up after 1.2s") {
		t.Errorf("stderr = %q, want it to name the unlisted nodes and the timeout", r.stderr)
	}
	if want := "provisioned 2 node(s) in cluster c: c-1 c-2\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
}

func TestDeprovision(t *testing.T) {
	f, srv := startFake(t)
	seed(f)
	r := runCLI(t, "", "deprovision", "--url", srv.URL, "--cluster", "alpha", "--node", "n2")
	mustSucceed(t, r)
	if want := "deprovisioned node n2 of cluster alpha\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	want := []platform.DeprovisionRequest{{ClusterID: "alpha", NodeID: "n2"}}
	if !reflect.DeepEqual(f.deprovisions, want) {
		t.Errorf("server received %+v, want %+v", f.deprovisions, want)
	}

	f.lagPolls = 1
	r = runCLI(t, "", "deprovision", "--url", srv.URL, "--cluster", "alpha", "--node", "alpha-node-1", "--wait")
	mustSucceed(t, r)
	if f.discoverCalls != 2 {
		t.Errorf("discovery was called %d times, want 2 (listed once more, then gone)", f.discoverCalls)
	}

	r = runCLI(t, "", "deprovision", "--url", srv.URL, "--cluster", "alpha", "--node", "ghost")
	if r.code != 1 || !strings.Contains(r.stderr, `platform answered 404 Not Found: no node "ghost" in cluster "alpha"`) {
		t.Errorf("deprovisioning an unknown node: status %d, stderr %q", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	_, srv := startFake(t)
	path := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(path, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--url", srv.URL}
	required := []string{"--store", "redis", "--version", "7"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"discover", "--bogus"}, "unknown flag: --bogus"},
		{"unknown command", []string{"bogus"}, "unknown command"},
		{"positional argument", []string{"discover", "extra"}, "takes no arguments"},
		{"version argument", []string{"version", "extra"}, "takes no arguments"},
		{"bad output", []string{"discover", "-o", "yaml"}, "--output must be table, wide or json"},
		{"missing cluster", append([]string{"provision"}, required...), "--cluster is required"},
		{"missing all", []string{"provision"}, "--cluster, --store and --version are required"},
		{"file and cluster", []string{"provision", "-f", path, "--cluster", "c"}, "cannot be combined with --cluster"},
		{"bad attr", append([]string{"provision", "--cluster", "c", "--attr", "novalue"}, required...), "want key=value"},
		{"empty attr key", append([]string{"provision", "--cluster", "c", "--group-attr", "=1"}, required...), "key must not be empty"},
		{"zero count", append([]string{"provision", "--cluster", "c", "--count", "0"}, required...), "--count must be at least 1"},
		{"bad count", append([]string{"provision", "--cluster", "c", "--count", "two"}, required...), "invalid argument"},
		{"deprovision without cluster", []string{"deprovision", "--node", "n"}, "--cluster is required"},
		{"deprovision without node", []string{"deprovision", "--cluster", "c"}, "--node is required"},
		{"bad URL", []string{"discover", "--url", "localhost:9876"}, "scheme must be http or https"},
		{"cert without key", []string{"discover", "--cert", "c.pem"}, "--cert and --key go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if args[0] != "bogus" && args[0] != "version" && !containsURL(args) {
				args = append(append([]string{}, args...), base...)
			}
			r := runCLI(t, "", args...)
			if r.code != exitUsage {
				t.Fatalf("exit status %d, want %d; stderr: %s", r.code, exitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "berth: ") || !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "--help' for usage") {
				t.Errorf("stderr = %q, want a usage error mentioning %q", r.stderr, tt.want)
			}
		})
	}
}

func containsURL(args []string) bool {
	for _, a := range args {
		if a == "--url" {
			return true
		}
	}
	return false
}

func TestServerErrorMessage(t *testing.T) {
	f, srv := startFake(t)
	f.failMsg = "cluster.store: redis 6.2 has no template; the catalogue has redis >=7.0"
	r := runCLI(t, "", "provision", "--url", srv.URL, "--cluster", "c", "--store", "redis", "--version", "6.2")
	if r.code != exitFailure {
		t.Fatalf("exit status %d, want 1; stderr: %s", r.code, r.stderr)
	}
	want := "berth: provisioning nodes: platform answered 400 Bad Request: " + f.failMsg + "\n"
	if r.stderr != want {
		t.Errorf("stderr = %q, want %q", r.stderr, want)
	}
}

func TestConnectionRefused(t *testing.T) {
	_, srv := startFake(t)
	url := srv.URL
	srv.Close()
	r := runCLI(t, "", "discover", "--url", url)
	if r.code != exitFailure || !strings.Contains(r.stderr, "is a platform serving at "+url+"/?") {
		t.Errorf("status %d, stderr %q: want exit 1 with a hint about --url", r.code, r.stderr)
	}
}

func TestTokenFlagAndEnvironment(t *testing.T) {
	f, srv := startFake(t)
	mustSucceed(t, runCLI(t, "", "discover", "--url", srv.URL, "--token", "flag-token"))
	t.Setenv("BERTH_TOKEN", "env-token")
	mustSucceed(t, runCLI(t, "", "discover", "--url", srv.URL))
	if want := []string{"Bearer flag-token", "Bearer env-token"}; !reflect.DeepEqual(f.auth, want) {
		t.Errorf("Authorization headers = %q, want %q", f.auth, want)
	}
}

func TestURLFromEnvironment(t *testing.T) {
	f, srv := startFake(t)
	t.Setenv("BERTH_URL", srv.URL)
	mustSucceed(t, runCLI(t, "", "discover"))
	if f.discoverCalls != 1 {
		t.Errorf("the platform at $BERTH_URL was called %d times, want 1", f.discoverCalls)
	}
}

func TestConfigFile(t *testing.T) {
	fromConfig, configSrv := startFake(t)
	fromFlag, flagSrv := startFake(t)
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("url: "+configSrv.URL+"\ntimeout: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustSucceed(t, runCLI(t, "", "discover", "--config", path))
	if fromConfig.discoverCalls != 1 || fromFlag.discoverCalls != 0 {
		t.Errorf("with url in the config file: calls config=%d flag=%d, want 1 and 0", fromConfig.discoverCalls, fromFlag.discoverCalls)
	}
	mustSucceed(t, runCLI(t, "", "discover", "--config", path, "--url", flagSrv.URL))
	if fromConfig.discoverCalls != 1 || fromFlag.discoverCalls != 1 {
		t.Errorf("with --url overriding the config file: calls config=%d flag=%d, want 1 and 1", fromConfig.discoverCalls, fromFlag.discoverCalls)
	}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, "", "version")
	mustSucceed(t, r)
	if !strings.HasPrefix(r.stdout, "berth "+version+" (go") {
		t.Errorf("stdout = %q, want berth %s and the Go version", r.stdout, version)
	}
}
