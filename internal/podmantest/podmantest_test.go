package podmantest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestEngine starts an engine, builds both images and reads them back
// through the Docker-compatible API.
func TestEngine(t *testing.T) {
	e := Start(t)
	e.ImportBusybox(t, BusyboxImage)
	e.ImportRedis(t, RedisImage)
	resp, err := e.HTTPClient().Get("http://podman/v1.41/images/json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("images: %s", resp.Status)
	}
	var images []struct{ RepoTags []string }
	if err := json.NewDecoder(resp.Body).Decode(&images); err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, img := range images {
		tags = append(tags, img.RepoTags...)
	}
	for _, want := range []string{BusyboxImage, RedisImage} {
		if !strings.Contains(strings.Join(tags, " "), want) {
			t.Errorf("engine has %v, not %s", tags, want)
		}
	}
	out, err := e.Podman("run", "--rm", BusyboxImage, "echo", "hello")
	if err != nil || strings.TrimSpace(out) != "hello" {
		t.Errorf("busybox echo: %q, %v", out, err)
	}
	out, err = e.Podman("run", "--rm", RedisImage, "redis-server", "--version")
	if err != nil || !strings.HasPrefix(out, "Redis server v=") {
		t.Errorf("redis-server --version: %q, %v", out, err)
	}
}
