package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
)

// fakeDriver records its calls and answers with what a test configured.
type fakeDriver struct {
	mu           sync.Mutex
	discovers    int
	provisions   []platform.ProvisionRequest
	deprovisions []platform.DeprovisionRequest
	requestIDs   []string

	discover  platform.DiscoveryResponse
	provision platform.ProvisionResponse
	err       error // returned by every call
	panic     any   // when set, every call panics with it

	// When block is set, calls signal entered and wait for block to close
	// or for their context to end.
	block    chan struct{}
	entered  chan struct{}
	canceled chan struct{} // closed when a blocked call saw its context end
}

func (d *fakeDriver) call(ctx context.Context) error {
	d.mu.Lock()
	d.requestIDs = append(d.requestIDs, platform.RequestID(ctx))
	p := d.panic
	d.mu.Unlock()
	if p != nil {
		panic(p)
	}
	if d.block != nil {
		d.entered <- struct{}{}
		select {
		case <-d.block:
		case <-ctx.Done():
			close(d.canceled)
			return ctx.Err()
		}
	}
	return d.err
}

func (d *fakeDriver) Discover(ctx context.Context) (platform.DiscoveryResponse, error) {
	d.mu.Lock()
	d.discovers++
	d.mu.Unlock()
	if err := d.call(ctx); err != nil {
		return platform.DiscoveryResponse{}, err
	}
	return d.discover, nil
}

func (d *fakeDriver) Provision(ctx context.Context, req platform.ProvisionRequest) (platform.ProvisionResponse, error) {
	d.mu.Lock()
	d.provisions = append(d.provisions, req)
	d.mu.Unlock()
	if err := d.call(ctx); err != nil {
		return platform.ProvisionResponse{}, err
	}
	return d.provision, nil
}

func (d *fakeDriver) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	d.mu.Lock()
	d.deprovisions = append(d.deprovisions, req)
	d.mu.Unlock()
	return d.call(ctx)
}

func (d *fakeDriver) calls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.discovers + len(d.provisions) + len(d.deprovisions)
}

// readyDriver is a fakeDriver that also implements Readier.
type readyDriver struct {
	*fakeDriver
	ready error
}

func (d readyDriver) Ready(context.Context) error { return d.ready }

// syncBuffer is a log destination safe to read while a server writes to it.
type syncBuffer struct{ testenv.Buffer }

// lines returns the JSON log records written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, rec)
	}
	return out
}

func newTestServer(t *testing.T, driver platform.Driver, opts Options) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return New(driver, opts), logs
}

// do serves one request; headers are name, value pairs.
func do(t *testing.T, h http.Handler, method, path, body string, headers ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorBody checks an error response: status, JSON content type, and the
// Replicante error object. It returns the decoded body.
func errorBody(t *testing.T, rec *httptest.ResponseRecorder, status int) map[string]any {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rec.Body, err)
	}
	if body["error"] != true {
		t.Errorf(`body["error"] = %#v, want true (body %s)`, body["error"], rec.Body)
	}
	if msg, ok := body["error_msg"].(string); !ok || msg == "" {
		t.Errorf(`body["error_msg"] = %#v, want a message`, body["error_msg"])
	}
	return body
}

const validProvision = `{
  "cluster": {
    "cluster_id": "c1",
    "store": "redis",
    "store_version": "7.0",
    "attributes": {"maxmemory": "100mb"},
    "nodes": {"default": {"desired_count": 3, "node_class": "small"}, "other": {"desired_count": 1, "node_class": "big"}}
  },
  "provision": {"node_group_id": "default", "count": 2}
}`

func TestDiscover(t *testing.T) {
	group := "default"
	d := &fakeDriver{discover: platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{{
		ClusterID: "c1",
		Nodes: []platform.DiscoveredNode{
			{AgentAddress: "http://127.0.0.1:1", NodeID: "n1", NodeClass: "small", NodeGroup: &group},
			{AgentAddress: "http://127.0.0.1:2", NodeID: "n2"},
		},
	}}}}
	s, _ := newTestServer(t, d, Options{})
	rec := do(t, s, http.MethodGet, "/discover", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var body struct {
		Clusters []struct {
			ClusterID string                       `json:"cluster_id"`
			Nodes     []map[string]json.RawMessage `json:"nodes"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Clusters) != 1 || body.Clusters[0].ClusterID != "c1" || len(body.Clusters[0].Nodes) != 2 {
		t.Fatalf("body = %s", rec.Body)
	}
	want := []map[string]string{
		{"agent_address": `"http://127.0.0.1:1"`, "node_id": `"n1"`, "node_class": `"small"`, "node_group": `"default"`},
		{"agent_address": `"http://127.0.0.1:2"`, "node_id": `"n2"`, "node_class": `""`, "node_group": `null`},
	}
	for i, node := range body.Clusters[0].Nodes {
		got := map[string]string{}
		for k, v := range node {
			got[k] = string(v)
		}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("node %d = %v, want %v", i, got, want[i])
		}
	}
}

func TestDiscoverEmpty(t *testing.T) {
	s, _ := newTestServer(t, &fakeDriver{}, Options{})
	rec := do(t, s, http.MethodGet, "/discover", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	if got := strings.TrimSpace(rec.Body.String()); got != `{"clusters":[]}` {
		t.Errorf("body = %s, want an empty list, not null", got)
	}
}

func TestProvision(t *testing.T) {
	d := &fakeDriver{provision: platform.ProvisionResponse{Count: 2, NodeIDs: []string{"n1", "n2"}}}
	s, _ := newTestServer(t, d, Options{})
	rec := do(t, s, http.MethodPost, "/provision", validProvision)
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	if got := strings.TrimSpace(rec.Body.String()); got != `{"count":2,"node_ids":["n1","n2"]}` {
		t.Errorf("body = %s", got)
	}
	if len(d.provisions) != 1 {
		t.Fatalf("driver got %d provisions", len(d.provisions))
	}
	req := d.provisions[0]
	if req.Cluster.ClusterID != "c1" || req.Provision.NodeGroupID != "default" || req.Provision.Count != 2 || req.Group().NodeClass != "small" {
		t.Errorf("driver got %#v", req)
	}
	if req.Attributes()["maxmemory"] != "100mb" {
		t.Errorf("attributes = %#v", req.Attributes())
	}
}

func TestProvisionNoNodeIDs(t *testing.T) {
	d := &fakeDriver{provision: platform.ProvisionResponse{Count: 0}}
	s, _ := newTestServer(t, d, Options{})
	rec := do(t, s, http.MethodPost, "/provision", validProvision)
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusOK || got != `{"count":0,"node_ids":[]}` {
		t.Errorf("status %d body %s", rec.Code, got)
	}
}

func TestDeprovision(t *testing.T) {
	d := &fakeDriver{}
	s, _ := newTestServer(t, d, Options{})
	rec := do(t, s, http.MethodPost, "/deprovision", `{"cluster_id": "c1", "node_id": "n1"}`)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status = %d, body %s", rec.Code, rec.Body)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("body = %q, want none", rec.Body)
	}
	want := []platform.DeprovisionRequest{{ClusterID: "c1", NodeID: "n1"}}
	if !reflect.DeepEqual(d.deprovisions, want) {
		t.Errorf("driver got %#v", d.deprovisions)
	}
}

func TestCleanBasePath(t *testing.T) {
	for in, want := range map[string]string{
		"":           "/",
		"/":          "/",
		"//":         "/",
		"platform":   "/platform/",
		"/platform":  "/platform/",
		"platform/":  "/platform/",
		"/platform/": "/platform/",
		"/a/b":       "/a/b/",
		"a/b/":       "/a/b/",
	} {
		if got := CleanBasePath(in); got != want {
			t.Errorf("CleanBasePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBasePath(t *testing.T) {
	tests := []struct {
		base   string
		prefix string // where the API is
	}{
		{"", ""},
		{"/", ""},
		{"/platform/", "/platform"},
		{"platform", "/platform"},
		{"/a/b", "/a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			d := readyDriver{fakeDriver: &fakeDriver{}}
			s, _ := newTestServer(t, d, Options{BasePath: tt.base})
			if got, want := s.BasePath(), tt.prefix+"/"; got != want {
				t.Errorf("BasePath() = %q, want %q", got, want)
			}
			endpoints := []struct {
				method, path, body string
				status             int
			}{
				{http.MethodGet, "/discover", "", http.StatusOK},
				{http.MethodPost, "/provision", validProvision, http.StatusOK},
				{http.MethodPost, "/deprovision", `{"cluster_id":"c","node_id":"n"}`, http.StatusNoContent},
			}
			for _, ep := range endpoints {
				rec := do(t, s, ep.method, tt.prefix+ep.path, ep.body)
				if rec.Code != ep.status {
					t.Errorf("%s %s = %d, want %d (%s)", ep.method, tt.prefix+ep.path, rec.Code, ep.status, rec.Body)
				}
				if tt.prefix != "" {
					before := d.calls()
					rec := do(t, s, ep.method, ep.path, ep.body)
					errorBody(t, rec, http.StatusNotFound)
					if d.calls() != before {
						t.Errorf("%s %s at the root reached the driver", ep.method, ep.path)
					}
					if msg := rec.Body.String(); !strings.Contains(msg, tt.prefix+"/") {
						t.Errorf("404 body %s does not name the base path", msg)
					}
				}
			}
			// The operational endpoints stay at the root.
			for _, p := range []string{"/healthz", "/readyz"} {
				if rec := do(t, s, http.MethodGet, p, ""); rec.Code != http.StatusOK {
					t.Errorf("GET %s = %d, want 200", p, rec.Code)
				}
				if tt.prefix != "" {
					errorBody(t, do(t, s, http.MethodGet, tt.prefix+p, ""), http.StatusNotFound)
				}
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	// /healthz does not ask the driver, even one that is not ready.
	s, _ := newTestServer(t, readyDriver{fakeDriver: &fakeDriver{}, ready: errors.New("down")}, Options{})
	rec := do(t, s, http.MethodGet, "/healthz", "")
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Errorf("status %d body %s", rec.Code, rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	t.Run("no Readier", func(t *testing.T) {
		s, _ := newTestServer(t, &fakeDriver{}, Options{})
		rec := do(t, s, http.MethodGet, "/readyz", "")
		if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"ready"}` {
			t.Errorf("status %d body %s", rec.Code, rec.Body)
		}
	})
	t.Run("ready", func(t *testing.T) {
		s, _ := newTestServer(t, readyDriver{fakeDriver: &fakeDriver{}}, Options{})
		if rec := do(t, s, http.MethodGet, "/readyz", ""); rec.Code != http.StatusOK {
			t.Errorf("status %d body %s", rec.Code, rec.Body)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		s, _ := newTestServer(t, readyDriver{fakeDriver: &fakeDriver{}, ready: errors.New("podman socket: connection refused")}, Options{})
		body := errorBody(t, do(t, s, http.MethodGet, "/readyz", ""), http.StatusServiceUnavailable)
		if body["error_msg"] != "driver is not ready" {
			t.Errorf("error_msg = %#v", body["error_msg"])
		}
		if body["error_cause"] != "podman socket: connection refused" {
			t.Errorf("error_cause = %#v", body["error_cause"])
		}
	})
}

func TestMethodNotAllowed(t *testing.T) {
	tests := []struct {
		method, path, allow string
	}{
		{http.MethodPost, "/discover", "GET, HEAD"},
		{http.MethodDelete, "/discover", "GET, HEAD"},
		{http.MethodGet, "/provision", "POST"},
		{http.MethodPut, "/provision", "POST"},
		{http.MethodHead, "/provision", "POST"},
		{http.MethodGet, "/deprovision", "POST"},
		{http.MethodDelete, "/deprovision", "POST"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
		{http.MethodPost, "/readyz", "GET, HEAD"},
		{http.MethodOptions, "/discover", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			d := &fakeDriver{}
			s, _ := newTestServer(t, d, Options{})
			rec := do(t, s, tt.method, tt.path, "")
			if got := rec.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
			if tt.method == http.MethodHead {
				if rec.Code != http.StatusMethodNotAllowed || rec.Body.Len() != 0 {
					t.Errorf("HEAD: status %d body %q", rec.Code, rec.Body)
				}
			} else {
				body := errorBody(t, rec, http.StatusMethodNotAllowed)
				if msg := body["error_msg"].(string); !strings.Contains(msg, tt.method) || !strings.Contains(msg, tt.path) {
					t.Errorf("error_msg = %q, want the method and path", msg)
				}
			}
			if d.calls() != 0 {
				t.Error("the driver was called")
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	s, _ := newTestServer(t, &fakeDriver{}, Options{})
	for _, p := range []string{"/", "/nope", "/discover/", "/Discover", "/platform/discover", "/discover/x", "/healthz/"} {
		t.Run(p, func(t *testing.T) {
			body := errorBody(t, do(t, s, http.MethodGet, p, ""), http.StatusNotFound)
			if msg := body["error_msg"].(string); !strings.Contains(msg, p) {
				t.Errorf("error_msg = %q, want the path", msg)
			}
		})
	}
}

func TestHead(t *testing.T) {
	d := &fakeDriver{discover: platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{{ClusterID: "c"}}}}
	s, _ := newTestServer(t, d, Options{})
	for _, p := range []string{"/discover", "/healthz", "/readyz"} {
		rec := do(t, s, http.MethodHead, p, "")
		if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
			t.Errorf("HEAD %s: status %d body %q", p, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("HEAD %s: Content-Type %q", p, ct)
		}
	}
	if d.discovers != 1 {
		t.Errorf("HEAD /discover called Discover %d times, want 1", d.discovers)
	}
}

func TestErrorStatus(t *testing.T) {
	tests := []struct {
		err    error
		status int
	}{
		{platform.Errorf(platform.EINVALID, "x"), http.StatusBadRequest},
		{platform.Errorf(platform.ENOTFOUND, "x"), http.StatusNotFound},
		{platform.Errorf(platform.ECONFLICT, "x"), http.StatusConflict},
		{platform.Errorf(platform.EUNPROCESSABLE, "x"), http.StatusUnprocessableEntity},
		{platform.Errorf(platform.EUNAVAILABLE, "x"), http.StatusServiceUnavailable},
		{platform.Errorf(platform.EINTERNAL, "x"), http.StatusInternalServerError},
		{platform.Errorf("no-such-code", "x"), http.StatusInternalServerError},
		{errors.New("x"), http.StatusInternalServerError},
		{fmt.Errorf("wrapped: %w", platform.Errorf(platform.ENOTFOUND, "x")), http.StatusNotFound},
	}
	for _, tt := range tests {
		if got := ErrorStatus(tt.err); got != tt.status {
			t.Errorf("ErrorStatus(%v) = %d, want %d", tt.err, got, tt.status)
		}
	}
}

func TestDriverErrors(t *testing.T) {
	codes := []struct {
		code   string
		status int
	}{
		{platform.EINVALID, http.StatusBadRequest},
		{platform.ENOTFOUND, http.StatusNotFound},
		{platform.ECONFLICT, http.StatusConflict},
		{platform.EUNPROCESSABLE, http.StatusUnprocessableEntity},
		{platform.EUNAVAILABLE, http.StatusServiceUnavailable},
	}
	endpoints := []struct{ method, path, body string }{
		{http.MethodGet, "/discover", ""},
		{http.MethodPost, "/provision", validProvision},
		{http.MethodPost, "/deprovision", `{"cluster_id":"c","node_id":"n"}`},
	}
	for _, ep := range endpoints {
		for _, c := range codes {
			t.Run(ep.path+"/"+c.code, func(t *testing.T) {
				msg := "redis 5.0 has no template; the catalogue has redis >=6.0"
				s, _ := newTestServer(t, &fakeDriver{err: fmt.Errorf("driver: %w", platform.Errorf(c.code, "%s", msg))}, Options{})
				body := errorBody(t, do(t, s, ep.method, ep.path, ep.body), c.status)
				if body["error_msg"] != msg {
					t.Errorf("error_msg = %#v, want %q", body["error_msg"], msg)
				}
				if _, ok := body["error_cause"]; ok {
					t.Errorf("error without cause has error_cause: %v", body)
				}
				if _, ok := body["error_trail"]; ok {
					t.Errorf("error without cause has error_trail: %v", body)
				}
			})
		}
	}
}

func TestErrorCauseChain(t *testing.T) {
	root := errors.New("dial unix /run/podman/podman.sock: connect: no such file or directory")
	err := platform.Wrap(platform.EUNAVAILABLE, fmt.Errorf("listing containers: %w", root), "the container engine is unreachable")
	s, _ := newTestServer(t, &fakeDriver{err: err}, Options{})
	body := errorBody(t, do(t, s, http.MethodGet, "/discover", ""), http.StatusServiceUnavailable)
	if body["error_msg"] != "the container engine is unreachable" {
		t.Errorf("error_msg = %#v", body["error_msg"])
	}
	if body["error_cause"] != root.Error() {
		t.Errorf("error_cause = %#v, want the root cause", body["error_cause"])
	}
	wantTrail := []any{"listing containers: " + root.Error(), root.Error()}
	if !reflect.DeepEqual(body["error_trail"], wantTrail) {
		t.Errorf("error_trail = %#v, want %#v", body["error_trail"], wantTrail)
	}
}

func TestInternalErrorsAreNotSent(t *testing.T) {
	const secret = "open /var/lib/berth/state.db: password=hunter2"
	tests := []struct {
		name string
		err  error
		msg  string
	}{
		{"plain", errors.New(secret), "internal error"},
		{"wrapped plain", fmt.Errorf("saving: %w", errors.New(secret)), "internal error"},
		// Even an *Error with code EINTERNAL is answered generically.
		{"EINTERNAL with cause", platform.Wrap(platform.EINTERNAL, errors.New(secret), "saving node state"), "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := newTestServer(t, &fakeDriver{err: tt.err}, Options{})
			rec := do(t, s, http.MethodGet, "/discover", "", RequestIDHeader, "req-42")
			body := errorBody(t, rec, http.StatusInternalServerError)
			if strings.Contains(rec.Body.String(), "hunter2") {
				t.Errorf("body leaks the internal error: %s", rec.Body)
			}
			for _, k := range []string{"error_cause", "error_trail"} {
				if _, ok := body[k]; ok {
					t.Errorf("internal error body has %s", k)
				}
			}
			if body["error_msg"] != tt.msg {
				t.Errorf("error_msg = %#v, want %q", body["error_msg"], tt.msg)
			}
			var logged bool
			for _, line := range logs.lines(t) {
				if line["msg"] == "internal error" && strings.Contains(fmt.Sprint(line["error"]), "hunter2") && line["request_id"] == "req-42" {
					logged = true
				}
			}
			if !logged {
				t.Errorf("the internal error was not logged with its request ID:\n%s", logs)
			}
		})
	}
}

func TestClientErrorsAreNotLoggedAsInternal(t *testing.T) {
	s, logs := newTestServer(t, &fakeDriver{err: platform.Errorf(platform.ENOTFOUND, "no node n")}, Options{})
	do(t, s, http.MethodPost, "/deprovision", `{"cluster_id":"c","node_id":"n"}`)
	if strings.Contains(logs.String(), `"msg":"internal error"`) {
		t.Errorf("a 404 was logged as an internal error:\n%s", logs)
	}
}

func TestUnknownNodeGroup(t *testing.T) {
	d := &fakeDriver{}
	s, _ := newTestServer(t, d, Options{})
	body := strings.Replace(validProvision, `"node_group_id": "default"`, `"node_group_id": "missing"`, 1)
	got := errorBody(t, do(t, s, http.MethodPost, "/provision", body), http.StatusBadRequest)
	if got["node_group_id"] != "missing" {
		t.Errorf("node_group_id = %#v", got["node_group_id"])
	}
	if want := []any{"default", "other"}; !reflect.DeepEqual(got["defined_node_groups"], want) {
		t.Errorf("defined_node_groups = %#v, want %#v", got["defined_node_groups"], want)
	}
	if d.calls() != 0 {
		t.Error("the driver was called")
	}
}

func TestBadRequestBodies(t *testing.T) {
	tests := []struct {
		name, path, body, want string
	}{
		{"malformed", "/provision", `{"cluster": `, "not valid JSON"},
		{"trailing garbage", "/provision", validProvision + ` {}`, "data after the JSON value"},
		{"trailing text", "/deprovision", `{"cluster_id":"c","node_id":"n"}x`, "data after the JSON value"},
		{"empty", "/deprovision", ``, "request body is empty"},
		{"array", "/deprovision", `[]`, "must be a JSON object"},
		{"validation", "/provision", strings.Replace(validProvision, `"desired_count": 3`, `"desired_count": "3"`, 1), "cluster.nodes.default.desired_count: must be an integer"},
		{"bad node ID", "/deprovision", `{"cluster_id":"c","node_id":"../../etc"}`, "node_id: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDriver{}
			s, _ := newTestServer(t, d, Options{})
			body := errorBody(t, do(t, s, http.MethodPost, tt.path, tt.body, "Content-Type", "application/json"), http.StatusBadRequest)
			if msg := body["error_msg"].(string); !strings.Contains(msg, tt.want) {
				t.Errorf("error_msg = %q, want it to contain %q", msg, tt.want)
			}
			if d.calls() != 0 {
				t.Error("the driver was called")
			}
		})
	}
}

func TestContentType(t *testing.T) {
	tests := []struct {
		contentType string
		ok          bool
	}{
		{"", true},
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON", true},
		{"application/merge-patch+json", true},
		{"text/plain", false},
		{"text/plain; charset=utf-8", false},
		{"application/x-www-form-urlencoded", false},
		{"multipart/form-data; boundary=x", false},
		{"application/jsonx", false},
		{"application/json;;", false},
	}
	for _, tt := range tests {
		for _, ep := range []struct{ path, body string }{
			{"/provision", validProvision},
			{"/deprovision", `{"cluster_id":"c","node_id":"n"}`},
		} {
			t.Run(ep.path+"/"+tt.contentType, func(t *testing.T) {
				d := &fakeDriver{}
				s, _ := newTestServer(t, d, Options{})
				rec := do(t, s, http.MethodPost, ep.path, ep.body, "Content-Type", tt.contentType)
				if tt.ok {
					if rec.Code >= 300 {
						t.Errorf("status = %d, body %s", rec.Code, rec.Body)
					}
					return
				}
				errorBody(t, rec, http.StatusUnsupportedMediaType)
				if d.calls() != 0 {
					t.Error("the driver was called")
				}
			})
		}
	}
}

func TestBodyLimit(t *testing.T) {
	deprovision := `{"cluster_id":"c","node_id":"n"}`
	t.Run("configured", func(t *testing.T) {
		limit := int64(len(deprovision) + 10)
		d := &fakeDriver{}
		s, _ := newTestServer(t, d, Options{MaxBodyBytes: limit})
		// Exactly the limit is fine.
		body := deprovision + strings.Repeat(" ", int(limit)-len(deprovision))
		if rec := do(t, s, http.MethodPost, "/deprovision", body); rec.Code != http.StatusNoContent {
			t.Errorf("body of %d bytes: status %d (%s)", len(body), rec.Code, rec.Body)
		}
		got := errorBody(t, do(t, s, http.MethodPost, "/deprovision", body+" "), http.StatusRequestEntityTooLarge)
		if msg := got["error_msg"].(string); !strings.Contains(msg, fmt.Sprint(limit)) {
			t.Errorf("error_msg = %q, want the limit", msg)
		}
		if len(d.deprovisions) != 1 {
			t.Errorf("driver got %d deprovisions, want 1", len(d.deprovisions))
		}
	})
	t.Run("default", func(t *testing.T) {
		d := &fakeDriver{}
		s, _ := newTestServer(t, d, Options{})
		// A request padded to exactly 1 MiB is served...
		body := validProvision + strings.Repeat(" ", DefaultMaxBodyBytes-len(validProvision))
		if rec := do(t, s, http.MethodPost, "/provision", body); rec.Code != http.StatusOK {
			t.Errorf("1 MiB body: status %d (%s)", rec.Code, rec.Body)
		}
		// ...and 2 MiB is not.
		big := validProvision + strings.Repeat(" ", 2<<20)
		errorBody(t, do(t, s, http.MethodPost, "/provision", big), http.StatusRequestEntityTooLarge)
		errorBody(t, do(t, s, http.MethodPost, "/deprovision", `{"cluster_id":"`+strings.Repeat("c", 2<<20)+`"}`), http.StatusRequestEntityTooLarge)
		if len(d.provisions) != 1 || len(d.deprovisions) != 0 {
			t.Errorf("driver got %d provisions and %d deprovisions, want 1 and 0", len(d.provisions), len(d.deprovisions))
		}
	})
}

func TestRequestID(t *testing.T) {
	generated := regexp.MustCompile(`^[0-9a-f]{24}$`)
	tests := []struct {
		name, sent string
		echoed     bool
	}{
		{"sent", "abc-123", true},
		{"sent uuid", "6f1c3c9e-8a0b-4c1e-9d2f-1b2c3d4e5f60", true},
		{"128 chars", strings.Repeat("r", 128), true},
		{"absent", "", false},
		{"too long", strings.Repeat("r", 129), false},
		{"space", "a b", false},
		{"control", "a\tb", false},
		{"non-ASCII", "réq", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDriver{}
			s, logs := newTestServer(t, d, Options{})
			rec := do(t, s, http.MethodGet, "/discover", "", RequestIDHeader, tt.sent)
			id := rec.Header().Get(RequestIDHeader)
			if tt.echoed && id != tt.sent {
				t.Errorf("%s = %q, want %q echoed", RequestIDHeader, id, tt.sent)
			}
			if !tt.echoed && !generated.MatchString(id) {
				t.Errorf("%s = %q, want a generated ID", RequestIDHeader, id)
			}
			if len(d.requestIDs) != 1 || d.requestIDs[0] != id {
				t.Errorf("driver saw request IDs %q, want %q", d.requestIDs, id)
			}
			var found bool
			for _, line := range logs.lines(t) {
				if line["msg"] == "request" {
					found = true
					want := map[string]any{"method": "GET", "path": "/discover", "status": 200.0, "request_id": id}
					for k, v := range want {
						if line[k] != v {
							t.Errorf("request log %s = %#v, want %#v", k, line[k], v)
						}
					}
				}
			}
			if !found {
				t.Errorf("no request log line:\n%s", logs)
			}
		})
	}
	// Two requests without an ID get different ones.
	s, _ := newTestServer(t, &fakeDriver{}, Options{})
	a := do(t, s, http.MethodGet, "/healthz", "").Header().Get(RequestIDHeader)
	b := do(t, s, http.MethodGet, "/healthz", "").Header().Get(RequestIDHeader)
	if a == b {
		t.Errorf("two requests got the same generated ID %q", a)
	}
}

func TestRequestLogLevels(t *testing.T) {
	d := &fakeDriver{err: platform.Errorf(platform.EUNAVAILABLE, "down")}
	s, logs := newTestServer(t, d, Options{})
	do(t, s, http.MethodGet, "/healthz", "")
	do(t, s, http.MethodGet, "/discover", "")
	do(t, s, http.MethodGet, "/nope", "")
	d.err = errors.New("boom")
	do(t, s, http.MethodGet, "/discover", "")
	var levels []string
	for _, line := range logs.lines(t) {
		if line["msg"] == "request" {
			levels = append(levels, fmt.Sprintf("%v %v", line["status"], line["level"]))
		}
	}
	want := []string{"200 INFO", "503 ERROR", "404 INFO", "500 ERROR"}
	if !reflect.DeepEqual(levels, want) {
		t.Errorf("request log levels = %q, want %q", levels, want)
	}
}

func TestPanic(t *testing.T) {
	const secret = "index out of range: hunter2"
	d := &fakeDriver{panic: secret}
	s, logs := newTestServer(t, d, Options{})
	ts := httptest.NewServer(s)
	defer ts.Close()

	resp, err := http.Get(ts.URL + "/discover")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", resp.StatusCode)
	}
	var body map[string]any
	if err := json.Unmarshal(data, &body); err != nil {
		t.Fatalf("body %q: %v", data, err)
	}
	if body["error"] != true || body["error_msg"] != "internal error" {
		t.Errorf("body = %s, want a generic internal error", data)
	}
	if strings.Contains(string(data), "hunter2") {
		t.Errorf("body leaks the panic: %s", data)
	}

	// The server keeps serving, on the same connection too.
	d.mu.Lock()
	d.panic = nil
	d.mu.Unlock()
	for i := 0; i < 2; i++ {
		resp, err := http.Get(ts.URL + "/discover")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("after the panic: status %d", resp.StatusCode)
		}
	}
	ts.Close() // the request log lines are all written once the server is closed
	if !strings.Contains(logs.String(), "hunter2") {
		t.Errorf("the panic was not logged:\n%s", logs)
	}
}

func TestPanicAfterWrite(t *testing.T) {
	// A handler that panics after answering keeps its answer; the panic is
	// logged.
	s, logs := newTestServer(t, &fakeDriver{}, Options{})
	h := s.withRequestLog(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		panic("late")
	})
	rec := httptest.NewRecorder()
	h(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
	if rec.Code != http.StatusAccepted || rec.Body.Len() != 0 {
		t.Errorf("status %d body %q", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), "late") {
		t.Errorf("the panic was not logged:\n%s", logs)
	}
}

func TestAbortHandlerPanicPropagates(t *testing.T) {
	s, _ := newTestServer(t, &fakeDriver{panic: http.ErrAbortHandler}, Options{})
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	do(t, s, http.MethodGet, "/discover", "")
	t.Error("http.ErrAbortHandler was swallowed")
}

func TestString(t *testing.T) {
	s, _ := newTestServer(t, &fakeDriver{}, Options{BasePath: "p"})
	if got := s.String(); got != "platform API under /p/" {
		t.Errorf("String() = %q", got)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func testTimeouts(shutdown time.Duration) Timeouts {
	t := DefaultTimeouts
	t.Shutdown = shutdown
	return t
}

// waitRefused waits until addr refuses connections.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeGracefulShutdown(t *testing.T) {
	d := &fakeDriver{block: make(chan struct{}), entered: make(chan struct{}, 1), canceled: make(chan struct{})}
	s, _ := newTestServer(t, d, Options{})
	ln := listen(t)
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, s, testTimeouts(10*time.Second)) }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	type result struct {
		status int
		body   string
		err    error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := client.Get("http://" + addr + "/discover")
		if err != nil {
			results <- result{err: err}
			return
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- result{status: resp.StatusCode, body: string(data), err: err}
	}()
	select {
	case <-d.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the driver")
	}

	cancel()
	waitRefused(t, addr)
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v while a request was in flight", err)
	case r := <-results:
		t.Fatalf("the in-flight request ended early: %+v", r)
	default:
	}

	close(d.block)
	r := <-results
	if r.err != nil || r.status != http.StatusOK || strings.TrimSpace(r.body) != `{"clusters":[]}` {
		t.Errorf("in-flight request: %+v, want 200", r)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	select {
	case <-d.canceled:
		t.Error("the in-flight request's context was canceled during the grace period")
	default:
	}
}

func TestServeShutdownTimeout(t *testing.T) {
	// A request still running when the grace period ends is cut off: its
	// connection closes and its context ends.
	d := &fakeDriver{block: make(chan struct{}), entered: make(chan struct{}, 1), canceled: make(chan struct{})}
	defer close(d.block)
	s, _ := newTestServer(t, d, Options{})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, s, testTimeouts(100*time.Millisecond)) }()

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + ln.Addr().String() + "/discover")
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got status %d", resp.StatusCode)
		}
		errc <- err
	}()
	<-d.entered
	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Serve = %v, want the grace period's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the grace period")
	}
	select {
	case <-d.canceled:
	case <-time.After(5 * time.Second):
		t.Error("the cut-off request's context did not end")
	}
	select {
	case err := <-errc:
		if strings.HasPrefix(err.Error(), "got status") {
			t.Errorf("the cut-off request was answered: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the cut-off request's connection stayed open")
	}
}

func TestServeListenerError(t *testing.T) {
	ln := listen(t)
	ln.Close()
	err := Serve(context.Background(), ln, http.NotFoundHandler(), DefaultTimeouts)
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve on a closed listener = %v, want its error", err)
	}
}

func TestServeCanceledBeforeStart(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Serve(ctx, ln, http.NotFoundHandler(), DefaultTimeouts); err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
	waitRefused(t, ln.Addr().String())
}
