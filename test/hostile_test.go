package test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthio/berth/internal/testenv"
)

// TestHostileRequests sends requests an attacker might and checks that each
// answers 4xx with a clear message and changes nothing.
func TestHostileRequests(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir)
	request := func(cluster, store, version, attrs string) string {
		return `{"cluster": {"cluster_id": ` + cluster + `, "store": ` + store + `, "store_version": ` + version +
			`, "attributes": ` + attrs + `, "nodes": {"default": {"desired_count": 3, "node_class": "small"}}},
			"provision": {"node_group_id": "default", "count": 1}}`
	}
	valid := func(attrs string) string { return request(`"hostile"`, `"redis"`, `"7.0"`, attrs) }
	huge := strings.Repeat("x", 10<<20)
	nested := strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200)

	// Seed one real cluster, so that case-only differences have something to clash with.
	berth(t, "provision", "--url", srv.URL, "--cluster", "Existing", "--store", "redis", "--version", "7.0")
	before := berth(t, "discover", "--url", srv.URL, "-o", "json")

	for _, tt := range []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"path traversal in the cluster ID", "provision", request(`"../../etc"`, `"redis"`, `"7.0"`, `{}`), 400, "cluster.cluster_id"},
		{"path traversal in the store", "provision", request(`"c"`, `"../../bin"`, `"7.0"`, `{}`), 400, "cluster.store"},
		{"slash in the cluster ID", "provision", request(`"a/b"`, `"redis"`, `"7.0"`, `{}`), 400, "only letters, digits"},
		{"path traversal in a deprovision", "deprovision", `{"cluster_id": "..", "node_id": "../../state.db"}`, 400, "cluster_id"},
		{"NUL in the cluster ID", "provision", request(`"a\u0000b"`, `"redis"`, `"7.0"`, `{}`), 400, "cluster.cluster_id"},
		{"NUL in an attribute", "provision", valid(`{"maxmemory": "1mb\u0000--port 1"}`), 400, "NUL"},
		{"10 MB string", "provision", valid(`{"maxmemory": "` + huge + `"}`), 413, "larger than"},
		{"deeply nested attributes", "provision", valid(nested), 400, "nests deeper"},
		{"count out of range", "provision", strings.Replace(valid(`{}`), `"count": 1`, `"count": 70000`, 1), 400, "provision.count"},
		{"negative desired_count", "provision", strings.Replace(valid(`{}`), `"desired_count": 3`, `"desired_count": -1`, 1), 400, "desired_count"},
		{"huge number", "provision", strings.Replace(valid(`{}`), `"count": 1`, `"count": 1e400`, 1), 400, "provision.count"},
		{"duplicate JSON keys", "provision", strings.Replace(valid(`{}`), `"store": "redis"`, `"store": "redis", "store": "etcd"`, 1), 400, "duplicate key"},
		{"cluster ID differing only in case", "provision", request(`"existing"`, `"redis"`, `"7.0"`, `{}`), 409, "differs only in case"},
		{"template action in an attribute", "provision", valid(`{"maxmemory": "{{ .Dirs.node }}"}`), 400, "template delimiters"},
		{"YAML injection in an attribute", "provision", valid(`{"maxmemory": "0\n  - --port\n  - \"6379\"\n", "appendonly": "{{"}`), 400, "template delimiters"},
		{"unknown store", "provision", request(`"c"`, `"bash"`, `"7.0"`, `{}`), 422, "no template"},
		{"version that is no version", "provision", request(`"c"`, `"redis"`, `"latest; rm -rf /"`, `{}`), 400, "cluster.store_version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL+tt.path, "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var body map[string]any
			if err := json.Unmarshal(data, &body); err != nil {
				t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, data)
			}
			msg, _ := body["error_msg"].(string)
			if resp.StatusCode != tt.status || !strings.Contains(msg, tt.want) {
				t.Fatalf("answer %d %q, want %d with %q", resp.StatusCode, msg, tt.status, tt.want)
			}
		})
	}
	if after := berth(t, "discover", "--url", srv.URL, "-o", "json"); after != before {
		t.Errorf("hostile requests changed the platform:\n%s\n%s", before, after)
	}
	entries, _ := os.ReadDir(filepath.Join(dataDir, "nodes"))
	if len(entries) != 1 || entries[0].Name() != "Existing" {
		t.Errorf("node directories after the hostile requests: %v", entries)
	}
	for _, c := range discover(t, srv.URL).Clusters {
		for _, n := range c.Nodes {
			berth(t, "deprovision", "--url", srv.URL, "--cluster", c.ClusterID, "--node", n.NodeID)
		}
	}
}
