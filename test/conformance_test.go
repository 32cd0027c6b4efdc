package test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/internal/testcerts"
	"github.com/berthio/berth/internal/testenv"
)

// summaryLine is the last line of berth conformance's text output, which
// CI tooling reads.
var summaryLine = regexp.MustCompile(`^\d+ passed, \d+ failed(, \d+ skipped)?$`)

// checkLine is every other line: STATUS  LEVEL  name  reason.
var checkLine = regexp.MustCompile(`^(PASS|FAIL|WARN|SKIP)  (MUST|COMPAT|SHOULD) *  [a-z0-9-]+ *  \S`)

// conformanceLines splits text output into check lines and the summary.
func conformanceLines(t *testing.T, out string) ([]string, string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("output has no check lines:\n%s", out)
	}
	checks, summary := lines[:len(lines)-1], lines[len(lines)-1]
	if !summaryLine.MatchString(summary) {
		t.Errorf("last line %q is not the summary line", summary)
	}
	for _, l := range checks {
		if !checkLine.MatchString(l) {
			t.Errorf("line %q is not a check line", l)
		}
	}
	return checks, summary
}

// requireNoConformanceNodes fails if discovery lists a node in a cluster
// the kit created.
func requireNoConformanceNodes(t *testing.T, url string) {
	t.Helper()
	for _, c := range discover(t, url).Clusters {
		if strings.HasPrefix(c.ClusterID, "conformance-") && len(c.Nodes) > 0 {
			t.Errorf("cluster %s still lists %d node(s) after berth conformance", c.ClusterID, len(c.Nodes))
		}
	}
}

// TestConformanceAgainstBerth is the CI gate: the real berth conformance
// against a real berth serve with the local driver and Redis passes every
// MUST and COMPAT check, runs every check, and leaves nothing behind.
func TestConformanceAgainstBerth(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	srv := startBerth(t, "--data-dir", t.TempDir())
	requireConformance(t, srv, "30s")
}

// requireConformance runs berth conformance against srv and requires every
// check to pass or warn (a SKIP means something went unchecked), the summary
// to count no failure, and no node of the kit to be left.
func requireConformance(t *testing.T, srv *berthServer, waitTimeout string) {
	t.Helper()
	out, errOut, code := berthStatus(t, "conformance", "--url", srv.URL, "--quiet-period", "1s", "--wait-timeout", waitTimeout)
	if code != 0 {
		t.Errorf("berth conformance: exit %d\nstdout:\n%s\nstderr:\n%s\nberth serve:\n%s", code, out, errOut, srv.logs)
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
}

// TestConformanceInterrupted sends SIGINT while the kit watches for a
// replacement: it stops, reports, and still deprovisions its nodes.
func TestConformanceInterrupted(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	srv := startBerth(t, "--data-dir", t.TempDir())
	var stdout, stderr testenv.Buffer
	cmd := exec.Command(berthBin, "conformance", "--url", srv.URL, "--quiet-period", "2m", "--wait-timeout", "30s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stderr.String(), "quiet period") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("berth conformance never reached the quiet period:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		exitErr, ok := err.(*exec.ExitError)
		if !ok || exitErr.ExitCode() != 1 {
			t.Errorf("interrupted berth conformance: %v, want exit status 1", err)
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("berth conformance did not stop on SIGINT:\n%s", stderr.String())
	}
	_, summary := conformanceLines(t, stdout.String())
	if !strings.Contains(summary, "skipped") || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("summary %q, stderr:\n%s", summary, stderr.String())
	}
	requireNoConformanceNodes(t, srv.URL)
}

// TestConformanceJSONOutput runs checks that provision nothing, so it needs
// no store program.
func TestConformanceJSONOutput(t *testing.T) {
	srv := startBerth(t, "--data-dir", t.TempDir())
	out, errOut, code := berthStatus(t, "conformance", "--url", srv.URL, "-o", "json",
		"--only", "discover-json,reject-unknown-group", "--only", "deprovision-missing")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var rep struct {
		ClusterID string `json:"cluster_id"`
		Results   []struct {
			Name, Level, Status, Reason string
		} `json:"results"`
		Passed, Failed, Skipped int
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if !strings.HasPrefix(rep.ClusterID, "conformance-") || rep.Passed != 3 || rep.Failed != 0 || rep.Skipped != len(rep.Results)-3 {
		t.Errorf("report %+v", rep)
	}
}

// TestConformanceOverTLS runs the kit against Berth over HTTPS with a
// private CA, client certificates required and a bearer token: the kit's
// raw requests carry the same TLS settings and token as the client's.
func TestConformanceOverTLS(t *testing.T) {
	ca := testcerts.NewCA(t, "conformance")
	serverPair := ca.Server(t, "server")
	clientPair := ca.Client(t, "kit")
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokenFile, []byte("kit-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startBerth(t, "--data-dir", t.TempDir(), "--tls-cert", serverPair.CertFile, "--tls-key", serverPair.KeyFile,
		"--tls-client-ca", ca.CertFile, "--auth-token-file", tokenFile)
	conn := []string{"--url", srv.URL, "--ca", ca.CertFile, "--cert", clientPair.CertFile, "--key", clientPair.KeyFile}
	// Checks that provision nothing: no store program needed.
	only := []string{"--only", "discover-status,discover-json,reject-unknown-group,reject-error-body,deprovision-missing"}
	args := append(append([]string{"conformance", "--token", "kit-token"}, conn...), only...)
	out, errOut, code := berthStatus(t, args...)
	if code != 0 {
		t.Fatalf("berth conformance over TLS: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, summary := conformanceLines(t, out); !strings.HasPrefix(summary, "5 passed, 0 failed") {
		t.Errorf("summary %q\n%s", summary, out)
	}
	// Without the token the kit stops before judging anything.
	out, errOut, code = berthStatus(t, append(append([]string{"conformance"}, conn...), only...)...)
	if code != 1 || out != "" || !strings.Contains(errOut, "401") {
		t.Errorf("without the token: exit %d, stdout %q, stderr %q; want 1 naming the 401", code, out, errOut)
	}
}

// TestConformanceExitStatus: a platform that breaks a MUST rule exits 1
// with a FAIL line; a wrong command line exits 2.
func TestConformanceExitStatus(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"clusters": null}`))
	}))
	defer broken.Close()
	out, errOut, code := berthStatus(t, "conformance", "--url", broken.URL, "--only", "discover-json")
	if code != 1 {
		t.Errorf("against a broken platform: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	checks, summary := conformanceLines(t, out)
	if summary != "0 passed, 1 failed, "+strconv.Itoa(len(checks)-1)+" skipped" {
		t.Errorf("summary %q", summary)
	}
	if !regexp.MustCompile(`(?m)^FAIL  MUST    discover-json  .*clusters is null`).MatchString(out) {
		t.Errorf("no FAIL line for discover-json:\n%s", out)
	}

	for _, args := range [][]string{
		{"--only", "no-such-check"},
		{"--skip", "discover-json,no-such-check"},
		{"-o", "xml"},
		{"--wait-timeout", "0s"},
		{"--quiet-period", "-1s"},
		{"--attr", "no-equals-sign"},
		{"--store", ""},
		{"extra-argument"},
	} {
		_, stderr, code := berthStatus(t, append([]string{"conformance", "--url", broken.URL}, args...)...)
		if code != 2 || stderr == "" {
			t.Errorf("berth conformance %v: exit %d, stderr %q; want 2 with a message", args, code, stderr)
		}
	}
}
