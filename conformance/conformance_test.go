package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthio/berth/platform"
)

// testCluster is the cluster ID every test run uses, so that a fake can
// recognise the kit's requests.
const testCluster = "conformance-test"

// fakeNode is one node of the fake platform.
type fakeNode struct {
	cluster, id, group, class string
	listed                    int // discoveries that listed it
}

// fake is a correct in-memory Platform server; its fault fields each break
// one rule.
type fake struct {
	mu             sync.Mutex
	nodes          []*fakeNode
	next           int
	busy           bool
	provisionDelay time.Duration
	deprovisions   []NodeRef
	provisions     int
	replaced       bool

	// Faults.
	discoverStatus    int                                 // status of discovery answers (0: 200)
	contentType       string                              // Content-Type of discovery answers
	nodeView          func(n *fakeNode, m map[string]any) // edits each listed node
	docView           func(doc map[string]any)            // edits each discovery body
	provisionStatus   int                                 // status of successful provisions (0: 200)
	provisionAnswer   func(resp map[string]any)           // edits successful provision answers
	acceptBody        []byte                              // a provision body answered 200 with count 0
	plainErrors       bool                                // provision errors are text/plain
	noGroupDetails    bool                                // unknown-group errors lack their details
	unknownGroupAdds  bool                                // unknown-group requests add a node anyway
	busyFails         bool                                // discovery fails while a provision is in flight
	deprovisionStatus int                                 // status of successful deprovisions (0: 204)
	deprovisionKeeps  bool                                // deprovision answers success and removes nothing
	replaces          bool                                // the first deprovisioned node is replaced
	missingSucceeds   bool                                // deprovisioning an unknown node succeeds
	onProvision       func()                              // called once nodes are created
	patchBody         func(body []byte) []byte            // rewrites provision bodies before validation
}

func newFake(seed bool) *fake {
	f := &fake{provisionDelay: 20 * time.Millisecond}
	if seed {
		f.nodes = []*fakeNode{
			{cluster: "foreign", id: "f-1", group: "g", class: "c"},
			{cluster: "foreign", id: "f-2", group: "g", class: "c"},
		}
	}
	return f
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.Method + " " + r.URL.Path {
	case "GET /discover":
		f.discover(w)
	case "POST /provision":
		f.provision(w, body)
	case "POST /deprovision":
		f.deprovision(w, body)
	default:
		writeError(w, http.StatusNotFound, "no such endpoint", nil)
	}
}

func writeError(w http.ResponseWriter, status int, msg string, details map[string]any) {
	body := map[string]any{"error": true, "error_msg": msg}
	for k, v := range details {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fake) discover(w http.ResponseWriter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busyFails && f.busy {
		writeError(w, http.StatusServiceUnavailable, "busy provisioning", nil)
		return
	}
	byCluster := map[string][]any{}
	var ids []string
	for _, n := range f.nodes {
		n.listed++
		m := map[string]any{
			"node_id":       n.id,
			"agent_address": fmt.Sprintf("http://127.0.0.1:%d", 30000+len(n.id)),
			"node_class":    n.class,
			"node_group":    n.group,
		}
		if f.nodeView != nil {
			f.nodeView(n, m)
		}
		if _, ok := byCluster[n.cluster]; !ok {
			ids = append(ids, n.cluster)
		}
		byCluster[n.cluster] = append(byCluster[n.cluster], m)
	}
	sort.Strings(ids)
	clusters := []any{}
	for _, id := range ids {
		clusters = append(clusters, map[string]any{"cluster_id": id, "nodes": byCluster[id]})
	}
	doc := map[string]any{"clusters": clusters}
	if f.docView != nil {
		f.docView(doc)
	}
	ct := "application/json"
	if f.contentType != "" {
		ct = f.contentType
	}
	w.Header().Set("Content-Type", ct)
	status := http.StatusOK
	if f.discoverStatus != 0 {
		status = f.discoverStatus
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(doc)
}

func (f *fake) provisionError(w http.ResponseWriter, err error) {
	if f.plainErrors {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "bad request\n")
		return
	}
	var perr *platform.Error
	var details map[string]any
	if errors.As(err, &perr) && !f.noGroupDetails {
		details = perr.Details
	}
	writeError(w, http.StatusBadRequest, platform.ErrorMessage(err), details)
}

func (f *fake) provision(w http.ResponseWriter, body []byte) {
	f.mu.Lock()
	f.provisions++
	if f.acceptBody != nil && bytes.Equal(body, f.acceptBody) {
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"count": 0, "node_ids": []}`)
		return
	}
	if f.patchBody != nil {
		body = f.patchBody(body)
	}
	req, err := platform.DecodeProvisionRequest(body)
	if err != nil {
		if f.unknownGroupAdds && strings.Contains(err.Error(), "is not defined in cluster.nodes") {
			var raw struct {
				Cluster struct {
					ClusterID string `json:"cluster_id"`
				} `json:"cluster"`
			}
			_ = json.Unmarshal(body, &raw)
			f.next++
			f.nodes = append(f.nodes, &fakeNode{cluster: raw.Cluster.ClusterID, id: fmt.Sprintf("n-%d", f.next), group: "?", class: "?"})
		}
		f.mu.Unlock()
		f.provisionError(w, err)
		return
	}
	group := req.Group()
	existing := 0
	for _, n := range f.nodes {
		if n.cluster == req.Cluster.ClusterID && n.group == req.Provision.NodeGroupID {
			existing++
		}
	}
	count := max(0, min(req.Provision.Count, group.DesiredCount-existing))
	ids := []string{}
	for range count {
		f.next++
		id := fmt.Sprintf("n-%d", f.next)
		ids = append(ids, id)
		f.nodes = append(f.nodes, &fakeNode{cluster: req.Cluster.ClusterID, id: id, group: req.Provision.NodeGroupID, class: group.NodeClass})
	}
	f.busy = true
	onProvision := f.onProvision
	f.mu.Unlock()
	if onProvision != nil {
		onProvision()
	}
	time.Sleep(f.provisionDelay)
	f.mu.Lock()
	f.busy = false
	resp := map[string]any{"count": count, "node_ids": ids}
	if f.provisionAnswer != nil {
		f.provisionAnswer(resp)
	}
	status := http.StatusOK
	if f.provisionStatus != 0 {
		status = f.provisionStatus
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

func (f *fake) deprovision(w http.ResponseWriter, body []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	req, err := platform.DecodeDeprovisionRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, platform.ErrorMessage(err), nil)
		return
	}
	f.deprovisions = append(f.deprovisions, NodeRef{ClusterID: req.ClusterID, NodeID: req.NodeID})
	status := http.StatusNoContent
	if f.deprovisionStatus != 0 {
		status = f.deprovisionStatus
	}
	for i, n := range f.nodes {
		if n.cluster != req.ClusterID || n.id != req.NodeID {
			continue
		}
		if !f.deprovisionKeeps {
			f.nodes = append(f.nodes[:i], f.nodes[i+1:]...)
			if f.replaces && !f.replaced {
				f.replaced = true
				f.next++
				f.nodes = append(f.nodes, &fakeNode{cluster: n.cluster, id: fmt.Sprintf("n-%d", f.next), group: n.group, class: n.class})
			}
		}
		w.WriteHeader(status)
		return
	}
	if f.missingSucceeds {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("cluster %s has no node %s", req.ClusterID, req.NodeID), nil)
}

// conformanceNodes returns the nodes of the kit's clusters.
func (f *fake) conformanceNodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range f.nodes {
		if strings.HasPrefix(n.cluster, testCluster) {
			out = append(out, n.cluster+"/"+n.id)
		}
	}
	return out
}

func testConfig(url string) Config {
	return Config{
		BaseURL:        url,
		ClusterID:      testCluster,
		RequestTimeout: 5 * time.Second,
		WaitTimeout:    500 * time.Millisecond,
		QuietPeriod:    100 * time.Millisecond,
		PollInterval:   10 * time.Millisecond,
		StablePolls:    3,
	}
}

// runAgainst runs the kit against f and returns the results by name.
func runAgainst(t *testing.T, f *fake, cfg Config) (*Report, map[string]Result) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	if cfg.BaseURL == "" {
		cfg = testConfig(srv.URL)
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	byName := map[string]Result{}
	for _, r := range rep.Results {
		byName[r.Name] = r
	}
	if len(byName) != len(Checks()) {
		t.Fatalf("report has %d results for %d checks", len(byName), len(Checks()))
	}
	return rep, byName
}

func describe(rep *Report) string {
	var b strings.Builder
	_ = rep.WriteText(&b)
	return b.String()
}

// TestCorrectPlatformPassesEverything runs the kit against the correct fake.
func TestCorrectPlatformPassesEverything(t *testing.T) {
	t.Parallel()
	f := newFake(true)
	rep, _ := runAgainst(t, f, Config{})
	for _, r := range rep.Results {
		if r.Status != Pass {
			t.Errorf("%s: %s %s", r.Name, r.Status, r.Reason)
		}
	}
	if rep.Passed != len(Checks()) || rep.Failed != 0 || rep.Skipped != 0 || !rep.OK() {
		t.Errorf("counts %d/%d/%d:\n%s", rep.Passed, rep.Failed, rep.Skipped, describe(rep))
	}
	if left := f.conformanceNodes(); len(left) > 0 {
		t.Errorf("nodes left behind: %v", left)
	}
	if !rep.Cleanup.Clean() || len(rep.Cleanup.Deprovisioned) != 1 {
		t.Errorf("cleanup %+v: want the one remaining node deprovisioned", rep.Cleanup)
	}
	for _, d := range f.deprovisions {
		if !strings.HasPrefix(d.ClusterID, testCluster) {
			t.Errorf("the kit deprovisioned %v in a cluster it did not create", d)
		}
	}
	if n := len(f.nodes); n != 2 {
		t.Errorf("the foreign cluster has %d nodes, want its 2", n)
	}
}

// breakCase is a fake that breaks exactly one rule.
type breakCase struct {
	check string
	seed  bool // seed the foreign cluster (true unless the fault needs an empty platform)
	fault func(f *fake, cfg *Config)
	// leaves says the fault keeps the kit from removing its nodes.
	leaves bool
}

func breakCases() []breakCase {
	inKitCluster := func(n *fakeNode) bool { return n.cluster == testCluster }
	cases := []breakCase{
		{check: checkDiscoverStatus, fault: func(f *fake, _ *Config) { f.discoverStatus = http.StatusNonAuthoritativeInfo }},
		{check: checkDiscoverJSON, fault: func(f *fake, _ *Config) {
			// The nil slice of a Go server: null while there is no cluster.
			f.docView = func(doc map[string]any) {
				if len(doc["clusters"].([]any)) == 0 {
					doc["clusters"] = nil
				}
			}
		}},
		{check: checkDiscoverClusterFields, fault: func(f *fake, _ *Config) {
			f.docView = func(doc map[string]any) {
				doc["clusters"] = append(doc["clusters"].([]any), map[string]any{"cluster_id": "emptied", "nodes": nil})
			}
		}},
		{check: checkDiscoverNodeFields, fault: func(f *fake, _ *Config) {
			f.nodeView = func(_ *fakeNode, m map[string]any) { m["agent_address"] = "" }
		}},
		{check: checkDiscoverNodeIDsUnique, fault: func(f *fake, _ *Config) {
			f.docView = func(doc map[string]any) {
				for _, c := range doc["clusters"].([]any) {
					c := c.(map[string]any)
					c["nodes"] = append(c["nodes"].([]any), c["nodes"].([]any)...)
				}
			}
		}},
		{check: checkDiscoverClustersUnique, fault: func(f *fake, _ *Config) {
			// One entry per node instead of one per cluster.
			f.docView = func(doc map[string]any) {
				var split []any
				for _, c := range doc["clusters"].([]any) {
					c := c.(map[string]any)
					for _, n := range c["nodes"].([]any) {
						split = append(split, map[string]any{"cluster_id": c["cluster_id"], "nodes": []any{n}})
					}
				}
				doc["clusters"] = split
			}
		}},
		{check: checkDiscoverNodeClass, fault: func(f *fake, _ *Config) {
			f.nodeView = func(_ *fakeNode, m map[string]any) { delete(m, "node_class") }
		}},
		{check: checkDiscoverNodeGroup, fault: func(f *fake, _ *Config) {
			f.nodeView = func(_ *fakeNode, m map[string]any) { m["node_group"] = 7 }
		}},
		{check: checkDiscoverContentType, fault: func(f *fake, _ *Config) { f.contentType = "text/plain; charset=utf-8" }},
		{check: checkDiscoverStable, fault: func(f *fake, _ *Config) {
			f.nodeView = func(n *fakeNode, m map[string]any) {
				m["agent_address"] = fmt.Sprintf("http://127.0.0.1:%d", 40000+n.listed)
			}
		}},
		{check: checkRejectErrorBody, fault: func(f *fake, _ *Config) { f.plainErrors = true }},
		{check: checkRejectUnknownGroupBody, fault: func(f *fake, _ *Config) { f.noGroupDetails = true }},
		{check: checkRejectNothing, fault: func(f *fake, _ *Config) { f.unknownGroupAdds = true }},
		{check: checkProvisionStatus, fault: func(f *fake, _ *Config) { f.provisionStatus = http.StatusCreated }},
		{check: checkProvisionCount, fault: func(f *fake, _ *Config) {
			f.provisionAnswer = func(resp map[string]any) { resp["count"] = fmt.Sprint(resp["count"]) }
		}},
		{check: checkProvisionNodeIDs, fault: func(f *fake, _ *Config) {
			f.provisionAnswer = func(resp map[string]any) {
				ids := resp["node_ids"].([]string)
				resp["node_ids"] = append(ids, ids[0])
			}
		}},
		{check: checkProvisionDiscovered, fault: func(f *fake, _ *Config) {
			f.docView = func(doc map[string]any) {
				var kept []any
				for _, c := range doc["clusters"].([]any) {
					if c.(map[string]any)["cluster_id"] != testCluster {
						kept = append(kept, c)
					}
				}
				doc["clusters"] = append([]any{}, kept...)
			}
		}},
		{check: checkProvisionNodeGroup, fault: func(f *fake, _ *Config) {
			f.nodeView = func(n *fakeNode, m map[string]any) {
				if inKitCluster(n) {
					m["node_group"] = nil
				}
			}
		}},
		{check: checkProvisionNodeClass, fault: func(f *fake, _ *Config) {
			f.nodeView = func(n *fakeNode, m map[string]any) {
				if inKitCluster(n) {
					m["node_class"] = "another-class"
				}
			}
		}},
		{check: checkNodeIDsStable, fault: func(f *fake, cfg *Config) {
			// IDs change once a node has been listed ten times: after the
			// kit saw them (the parallel loops add at most four listings
			// once the provision is answered) and within its 20 polls.
			f.provisionDelay = 0
			cfg.StablePolls = 20
			f.nodeView = func(n *fakeNode, m map[string]any) {
				if inKitCluster(n) && n.listed > 10 {
					m["node_id"] = n.id + "-renamed"
				}
			}
		}},
		{check: checkConcurrent, fault: func(f *fake, _ *Config) {
			f.provisionDelay = 100 * time.Millisecond
			f.busyFails = true
		}},
		{check: checkDeprovisionStatus, fault: func(f *fake, _ *Config) { f.deprovisionStatus = http.StatusAccepted }},
		{check: checkDeprovisionGone, leaves: true, fault: func(f *fake, _ *Config) { f.deprovisionKeeps = true }},
		{check: checkDeprovisionNotReplaced, fault: func(f *fake, _ *Config) { f.replaces = true }},
		{check: checkDeprovisionMissing, fault: func(f *fake, _ *Config) { f.missingSucceeds = true }},
	}
	for i := range cases {
		cases[i].seed = cases[i].check != checkDiscoverJSON
	}
	for _, rc := range rejectCaseSpecs {
		cases = append(cases, breakCase{check: rc.name, seed: true, fault: func(f *fake, cfg *Config) {
			k, err := newKit(*cfg)
			if err != nil {
				panic(err)
			}
			for _, c := range rejectCases(k.cfg.NodeGroup) {
				if c.name == rc.name {
					f.acceptBody = k.rejectBody(c)
				}
			}
		}})
	}
	return cases
}

// TestEveryCheckCanFail runs, for every check, a fake that breaks exactly
// that check's rule: that check fails (or warns) and no other does.
func TestEveryCheckCanFail(t *testing.T) {
	t.Parallel()
	covered := map[string]bool{}
	for _, bc := range breakCases() {
		covered[bc.check] = true
		t.Run(bc.check, func(t *testing.T) {
			t.Parallel()
			f := newFake(bc.seed)
			srv := httptest.NewServer(f)
			t.Cleanup(srv.Close)
			cfg := testConfig(srv.URL)
			bc.fault(f, &cfg)
			rep, results := runAgainst(t, f, cfg)
			target := results[bc.check]
			want := Fail
			if target.Level == SHOULD {
				want = Warn
			}
			if target.Status != want {
				t.Errorf("%s is %s (%s), want %s", bc.check, target.Status, target.Reason, want)
			}
			for _, r := range rep.Results {
				if r.Name != bc.check && (r.Status == Fail || r.Status == Warn) {
					t.Errorf("%s also %s: %s", r.Name, r.Status, r.Reason)
				}
			}
			if t.Failed() {
				t.Logf("report:\n%s", describe(rep))
			}
			if rep.OK() != (want == Warn) {
				t.Errorf("OK() = %v with %s %s", rep.OK(), bc.check, target.Status)
			}
			if left := f.conformanceNodes(); len(left) > 0 && !bc.leaves {
				t.Errorf("nodes left behind: %v (cleanup %+v)", left, rep.Cleanup)
			}
		})
	}
	for _, c := range Checks() {
		if !covered[c.Name] {
			t.Errorf("no fake breaks %s", c.Name)
		}
	}
}

// TestAcceptedInvalidRequestIsCleanedUp: a platform that fills in a missing
// store and provisions fails reject-missing-store only (its node is the
// accepted request's, not a rejected one's), and the cleanup removes it.
func TestAcceptedInvalidRequestIsCleanedUp(t *testing.T) {
	t.Parallel()
	f := newFake(true)
	f.patchBody = func(body []byte) []byte {
		var req map[string]any
		if json.Unmarshal(body, &req) != nil {
			return body
		}
		if cluster, ok := req["cluster"].(map[string]any); ok && cluster["store"] == nil && cluster["cluster_id"] != nil {
			cluster["store"] = "redis"
			body, _ = json.Marshal(req)
		}
		return body
	}
	rep, results := runAgainst(t, f, Config{})
	for _, r := range rep.Results {
		if (r.Status == Fail) != (r.Name == "reject-missing-store") || r.Status == Warn {
			t.Errorf("%s: %s %s", r.Name, r.Status, r.Reason)
		}
	}
	if r := results["reject-missing-store"]; !strings.Contains(r.Reason, "accepted") {
		t.Errorf("reject-missing-store: %s", r.Reason)
	}
	if left := f.conformanceNodes(); len(left) > 0 {
		t.Errorf("nodes left behind: %v", left)
	}
	found := false
	for _, ref := range rep.Cleanup.Deprovisioned {
		found = found || ref.ClusterID == testCluster+"-rejects"
	}
	if !found {
		t.Errorf("cleanup %+v did not remove the accepted request's node", rep.Cleanup)
	}
}

// TestInterruptCleansUp cancels the run while the provision is in flight:
// the cleanup still removes the nodes, with its own context.
func TestInterruptCleansUp(t *testing.T) {
	t.Parallel()
	f := newFake(true)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.onProvision = cancel
	rep, err := Run(ctx, testConfig(srv.URL))
	if !errors.Is(err, context.Canceled) || rep == nil || !rep.Interrupted {
		t.Fatalf("Run = %v, %v; want an interrupted report", rep, err)
	}
	if left := f.conformanceNodes(); len(left) > 0 {
		t.Errorf("nodes left behind: %v", left)
	}
	if len(rep.Cleanup.Deprovisioned) != 2 {
		t.Errorf("cleanup %+v, want the two provisioned nodes", rep.Cleanup)
	}
	byName := map[string]Result{}
	for _, r := range rep.Results {
		byName[r.Name] = r
	}
	if r := byName[checkProvisionStatus]; r.Status != Skip || !strings.Contains(r.Reason, "interrupted") {
		t.Errorf("provision-status after the interruption: %+v", r)
	}
	if r := byName["reject-missing-store"]; r.Status != Pass {
		t.Errorf("a check done before the interruption: %+v", r)
	}
	if rep.Failed != 0 {
		t.Errorf("an interruption failed checks:\n%s", describe(rep))
	}
}

// TestSelection runs only the discovery checks: nothing is provisioned.
func TestSelection(t *testing.T) {
	t.Parallel()
	f := newFake(true)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := testConfig(srv.URL)
	cfg.Only = []string{checkDiscoverJSON, checkDiscoverStatus, checkDeprovisionMissing}
	cfg.Skip = []string{checkDeprovisionMissing}
	rep, results := runAgainst(t, f, cfg)
	if f.provisions != 0 || len(f.deprovisions) != 0 {
		t.Errorf("discovery checks alone sent %d provisions and %v", f.provisions, f.deprovisions)
	}
	for _, c := range Checks() {
		r := results[c.Name]
		selected := c.Name == checkDiscoverJSON || c.Name == checkDiscoverStatus
		if selected != (r.Status == Pass) || !selected && r.Reason != "not selected" {
			t.Errorf("%s: %s %s", c.Name, r.Status, r.Reason)
		}
	}
	if got := rep.Summary(); got != fmt.Sprintf("2 passed, 0 failed, %d skipped", len(Checks())-2) {
		t.Errorf("summary %q", got)
	}

	// One rejection case alone sends its request only.
	f2 := newFake(true)
	srv2 := httptest.NewServer(f2)
	t.Cleanup(srv2.Close)
	cfg2 := testConfig(srv2.URL)
	cfg2.Only = []string{"reject-missing-store"}
	if _, results := runAgainst(t, f2, cfg2); results["reject-missing-store"].Status != Pass || f2.provisions != 1 {
		t.Errorf("reject-missing-store alone: %+v after %d provision requests", results["reject-missing-store"], f2.provisions)
	}

	cfg.Only = []string{"discover-nothing"}
	if _, err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "discover-nothing") {
		t.Errorf("unknown check name: %v", err)
	}
}

func TestUnreachablePlatform(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err := Run(context.Background(), testConfig(srv.URL))
	if err == nil || !strings.Contains(err.Error(), "cannot reach the platform") {
		t.Fatalf("Run against a closed port: %v", err)
	}

	// Missing credentials are the caller's mistake, not the platform's.
	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusUnauthorized, "a bearer token is required", nil)
	}))
	defer locked.Close()
	_, err = Run(context.Background(), testConfig(locked.URL))
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Run against a platform that wants a token: %v", err)
	}
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	rep := &Report{Results: []Result{
		{Name: "a-check", Level: MUST, Status: Pass, Reason: "fine"},
		{Name: "another-check", Level: SHOULD, Status: Warn, Reason: "two\nlines"},
		{Name: "c", Level: COMPAT, Status: Fail, Reason: "bad"},
	}, Passed: 1, Failed: 1, Warned: 1}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := "PASS  MUST    a-check        fine\n" +
		"WARN  SHOULD  another-check  two lines\n" +
		"FAIL  COMPAT  c              bad\n" +
		"1 passed, 1 failed\n"
	if b.String() != want {
		t.Errorf("text output:\n%s\nwant:\n%s", b.String(), want)
	}
	line := regexp.MustCompile(`^(PASS|FAIL|WARN|SKIP)  (MUST|COMPAT|SHOULD) *  \S+  .*$`)
	for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")[:3] {
		if !line.MatchString(l) {
			t.Errorf("line %q does not match the documented form", l)
		}
	}
}

// TestCatalogue keeps the check list sane: unique names, a level, a clause
// and a description each.
func TestCatalogue(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, c := range Checks() {
		if seen[c.Name] {
			t.Errorf("check %s listed twice", c.Name)
		}
		seen[c.Name] = true
		if c.Level != MUST && c.Level != COMPAT && c.Level != SHOULD || c.Clause == "" || c.Description == "" {
			t.Errorf("check %+v lacks a level, clause or description", c)
		}
		if !regexp.MustCompile(`^[a-z0-9-]+$`).MatchString(c.Name) {
			t.Errorf("check name %q is not lowercase words and dashes", c.Name)
		}
	}
}

// TestDocsListEveryCheck keeps docs/conformance.md true: a table row with
// the right level for every check, and no row for a check that is gone.
func TestDocsListEveryCheck(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../docs/conformance.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, c := range Checks() {
		if !strings.Contains(doc, fmt.Sprintf("| `%s` | %s |", c.Name, c.Level)) {
			t.Errorf("docs/conformance.md has no row for %s (%s)", c.Name, c.Level)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\| (MUST|COMPAT|SHOULD) \\|").FindAllStringSubmatch(doc, -1) {
		if _, ok := Lookup(m[1]); !ok {
			t.Errorf("docs/conformance.md lists %s, which is no check", m[1])
		}
	}
}
