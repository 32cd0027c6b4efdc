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
	out, errOut, code := berthStatus(t, "conformance", "--url", srv.URL, "--quiet-period", "1s", "--wait-timeout", "60s")
	if code != 0 {
		t.Errorf("berth conformance: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	checks, summary := conformanceLines(t, out)
	for _, l := range checks {
		switch {
		case strings.HasPrefix(l, "FAIL"):
			t.Errorf("failed: %s", l)
		case strings.HasPrefix(l, "SKIP"):
			t.Errorf("skipped, so not checked: %s", l)
		case strings.HasPrefix(l, "WARN"):
			t.Logf("warning: %s", l)
		}
	}
	if !strings.Contains(summary, " 0 failed") {
		t.Errorf("summary %q", summary)
	}
	requireNoConformanceNodes(t, srv.URL)
	for _, object := range e.Objects(t, "io.berth.cluster") {
		if strings.Contains(object, "conformance-") {
			t.Errorf("the engine still has %s", object)
		}
	}
}
