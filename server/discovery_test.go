package server

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/berthio/berth/platform"
)

// versionedDriver is a fakeDriver with a discovery generation.
type versionedDriver struct {
	*fakeDriver
	generation atomic.Uint64
}

func (d *versionedDriver) DiscoveryGeneration() uint64 { return d.generation.Load() }

func TestDiscoveryETag(t *testing.T) {
	group := "g"
	d := &versionedDriver{fakeDriver: &fakeDriver{discover: platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{
		{ClusterID: "c", Nodes: []platform.DiscoveredNode{{NodeID: "n1", AgentAddress: "a", NodeClass: "x", NodeGroup: &group}}},
	}}}}
	s, _ := newTestServer(t, d, Options{})
	first := do(t, s, http.MethodGet, "/discover", "")
	etag := first.Header().Get("ETag")
	if first.Code != 200 || etag == "" || first.Body.Len() == 0 {
		t.Fatalf("first discovery: %d, ETag %q", first.Code, etag)
	}
	// Unchanged: served from the cache, the driver is not asked again.
	again := do(t, s, http.MethodGet, "/discover", "")
	if again.Body.String() != first.Body.String() || again.Header().Get("ETag") != etag || d.discovers != 1 {
		t.Fatalf("second discovery: ETag %q, %d driver calls", again.Header().Get("ETag"), d.discovers)
	}
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		rec := do(t, s, http.MethodGet, "/discover", "", "If-None-Match", inm)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 || rec.Header().Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d with %d bytes", inm, rec.Code, rec.Body.Len())
		}
	}
	if rec := do(t, s, http.MethodGet, "/discover", "", "If-None-Match", `"stale"`); rec.Code != 200 {
		t.Errorf("a stale ETag got %d", rec.Code)
	}
	// A change moves the generation: the answer and its ETag change.
	d.mu.Lock()
	d.discover.Clusters[0].Nodes = append(d.discover.Clusters[0].Nodes, platform.DiscoveredNode{NodeID: "n2", AgentAddress: "b", NodeClass: "x", NodeGroup: &group})
	d.mu.Unlock()
	d.generation.Add(1)
	changed := do(t, s, http.MethodGet, "/discover", "", "If-None-Match", etag)
	if changed.Code != 200 || changed.Header().Get("ETag") == etag || d.discovers != 2 {
		t.Fatalf("after a change: %d, ETag %q (was %q), %d driver calls", changed.Code, changed.Header().Get("ETag"), etag, d.discovers)
	}
}

func TestDiscoveryETagWithoutGeneration(t *testing.T) {
	d := &fakeDriver{}
	s, _ := newTestServer(t, d, Options{})
	etag := do(t, s, http.MethodGet, "/discover", "").Header().Get("ETag")
	rec := do(t, s, http.MethodGet, "/discover", "", "If-None-Match", etag)
	if rec.Code != http.StatusNotModified || d.discovers != 2 {
		t.Fatalf("without a generation: %d after %d driver calls; want 304 after 2", rec.Code, d.discovers)
	}
}

// TestDiscoveryRefreshesOnce checks that pollers arriving together after a
// change cause one discovery, not one each.
func TestDiscoveryRefreshesOnce(t *testing.T) {
	d := &versionedDriver{fakeDriver: &fakeDriver{block: make(chan struct{}), entered: make(chan struct{}, 16), canceled: make(chan struct{})}}
	s, _ := newTestServer(t, d, Options{})
	done := make(chan int, 8)
	for i := 0; i < 8; i++ {
		go func() { done <- do(t, s, http.MethodGet, "/discover", "").Code }()
	}
	<-d.entered // the first poller is in the driver; the others queue
	close(d.block)
	for i := 0; i < 8; i++ {
		if code := <-done; code != 200 {
			t.Errorf("poller got %d", code)
		}
	}
	if d.discovers != 1 {
		t.Errorf("8 concurrent pollers caused %d discoveries, want 1", d.discovers)
	}
}
