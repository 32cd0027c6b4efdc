package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/berthio/berth/internal/testenv"
)

// TestIdempotentRetries sends one provision three times with the same
// Idempotency-Key, across a restart of berth: one node, three equal
// answers. The key with another request is 422.
func TestIdempotentRetries(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	srv := startBerth(t, "--data-dir", dataDir)
	const body = `{"cluster": {"cluster_id": "retry", "store": "redis", "store_version": "7.0",
		"nodes": {"default": {"desired_count": 5, "node_class": "small"}}},
		"provision": {"node_group_id": "default", "count": 1}}`
	code, first := postProvision(t, srv.URL, "key-1", body)
	if code != 200 {
		t.Fatalf("first provision: %d %s", code, first)
	}
	// The same request written differently is still the same request.
	var compact bytes.Buffer
	json.Compact(&compact, []byte(body))
	if code, again := postProvision(t, srv.URL, "key-1", compact.String()); code != 200 || again != first {
		t.Fatalf("retry: %d %s, want the first answer %s", code, again, first)
	}
	srv.stop(t)
	srv2 := startBerth(t, "--data-dir", dataDir)
	if code, again := postProvision(t, srv2.URL, "key-1", body); code != 200 || again != first {
		t.Fatalf("retry after a restart: %d %s, want %s", code, again, first)
	}
	disc := discover(t, srv2.URL)
	if len(disc.Clusters) != 1 || len(disc.Clusters[0].Nodes) != 1 {
		t.Fatalf("retries provisioned more than once: %+v", disc)
	}
	code, other := postProvision(t, srv2.URL, "key-1", strings.Replace(body, `"count": 1`, `"count": 2`, 1))
	if code != 422 || !strings.Contains(other, "another provision request") {
		t.Fatalf("same key, other request: %d %s", code, other)
	}
	if code, _ := postProvision(t, srv2.URL, "key-2", body); code != 200 {
		t.Fatalf("a new key: %d", code)
	}
	if code, bad := postProvision(t, srv2.URL, "bad key", body); code != 400 {
		t.Fatalf("a key with a space: %d %s", code, bad)
	}
	for _, c := range discover(t, srv2.URL).Clusters {
		for _, n := range c.Nodes {
			berth(t, "deprovision", "--url", srv2.URL, "--cluster", c.ClusterID, "--node", n.NodeID)
		}
	}
}

// postProvision sends a provision, with an Idempotency-Key unless key is "",
// and returns the status and the body.
func postProvision(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"provision", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}
