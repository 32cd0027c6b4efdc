package test

import (
	"strings"
	"testing"
)

// TestConformanceAgainstDockerBerth: the real berth conformance against
// berth serve --driver docker on a private Podman passes every MUST and
// COMPAT check, runs every check, and leaves no node, container, volume or
// network behind.
func TestConformanceAgainstDockerBerth(t *testing.T) {
	e := dockerEngine(t)
	srv := startDockerBerth(t, e)
	requireConformance(t, srv, "60s")
	for _, object := range e.Objects(t, "io.berth.cluster") {
		if strings.Contains(object, "conformance-") {
			t.Errorf("the engine still has %s", object)
		}
	}
}
