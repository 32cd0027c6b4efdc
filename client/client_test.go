package client

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berthio/berth/platform"
)

func TestNewJoinsPaths(t *testing.T) {
	tests := []struct {
		base string
		want string
	}{
		{"http://h:1", "http://h:1/discover"},
		{"http://h:1/", "http://h:1/discover"},
		{"http://h:1/api/", "http://h:1/api/discover"},
		{"http://h:1/api", "http://h:1/api/discover"},
		{"https://h/a/b", "https://h/a/b/discover"},
		{"HTTP://h:1", "http://h:1/discover"},
	}
	for _, tt := range tests {
		c, err := New(tt.base)
		if err != nil {
			t.Fatalf("New(%q): %v", tt.base, err)
		}
		if c.discoverURL != tt.want {
			t.Errorf("New(%q) discover URL = %q, want %q", tt.base, c.discoverURL, tt.want)
		}
		prefix := strings.TrimSuffix(tt.want, "discover")
		if c.provisionURL != prefix+"provision" || c.deprovisionURL != prefix+"deprovision" {
			t.Errorf("New(%q) URLs = %q, %q", tt.base, c.provisionURL, c.deprovisionURL)
		}
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, base := range []string{"", "ftp://h/", "localhost:9876", "http:///x", "http://h/?a=b", "http://h/#x", "://"} {
		if _, err := New(base); err == nil {
			t.Errorf("New(%q) succeeded, want an error", base)
		}
	}
}

// TestRequestsReachPaths runs each method against a server mounted under a
// base path, with and without a trailing slash on the base URL.
func TestRequestsReachPaths(t *testing.T) {
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/discover", func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path)
		io.WriteString(w, `{"clusters":[{"cluster_id":"c","nodes":[{"agent_address":"a:1","node_id":"n","node_class":"k","node_group":null}]}]}`)
	})
	mux.HandleFunc("POST /api/provision", func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path)
		io.WriteString(w, `{"count":1,"node_ids":["n"]}`)
	})
	mux.HandleFunc("POST /api/deprovision", func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, base := range []string{srv.URL + "/api", srv.URL + "/api/"} {
		seen = nil
		c, err := New(base)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		disc, err := c.Discover(ctx)
		if err != nil {
			t.Fatalf("%s: Discover: %v", base, err)
		}
		want := platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{{
			ClusterID: "c",
			Nodes:     []platform.DiscoveredNode{{AgentAddress: "a:1", NodeID: "n", NodeClass: "k"}},
		}}}
		if !reflect.DeepEqual(disc, want) {
			t.Errorf("%s: Discover = %+v, want %+v", base, disc, want)
		}
		prov, err := c.Provision(ctx, platform.ProvisionRequest{})
		if err != nil {
			t.Fatalf("%s: Provision: %v", base, err)
		}
		if prov.Count != 1 || !reflect.DeepEqual(prov.NodeIDs, []string{"n"}) {
			t.Errorf("%s: Provision = %+v", base, prov)
		}
		if err := c.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c", NodeID: "n"}); err != nil {
			t.Fatalf("%s: Deprovision: %v", base, err)
		}
		wantSeen := []string{"GET /api/discover", "POST /api/provision", "POST /api/deprovision"}
		if !reflect.DeepEqual(seen, wantSeen) {
			t.Errorf("%s: server saw %q, want %q", base, seen, wantSeen)
		}
	}
}

func TestHeadersAndBodies(t *testing.T) {
	type request struct {
		method, path, auth, contentType, accept, body string
	}
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, request{r.Method, r.URL.Path, r.Header.Get("Authorization"),
			r.Header.Get("Content-Type"), r.Header.Get("Accept"), string(body)})
		if r.URL.Path == "/discover" {
			io.WriteString(w, `{"clusters":[]}`)
		} else {
			io.WriteString(w, `{"count":0}`)
		}
	}))
	defer srv.Close()

	c, err := New(srv.URL, WithToken("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	raw := `{"cluster": {"cluster_id": "c"}, "extra": [1, 2]}`
	if _, err := c.ProvisionRaw(ctx, []byte(raw)); err != nil {
		t.Fatal(err)
	}
	if err := c.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: "c", NodeID: "n"}); err != nil {
		t.Fatal(err)
	}
	want := []request{
		{"GET", "/discover", "Bearer s3cret", "", "application/json", ""},
		{"POST", "/provision", "Bearer s3cret", "application/json", "application/json", raw},
		{"POST", "/deprovision", "Bearer s3cret", "application/json", "application/json", `{"cluster_id":"c","node_id":"n"}`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("server saw\n%+v\nwant\n%+v", got, want)
	}

	// Without a token there is no Authorization header at all.
	got = nil
	c, err = New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Discover(ctx); err != nil {
		t.Fatal(err)
	}
	if got[0].auth != "" {
		t.Errorf("Authorization = %q without a token", got[0].auth)
	}
}

func TestErrorBodies(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name     string
		status   int
		body     string
		wantMsg  string
		wantErr  string
		wantBody map[string]any
	}{
		{
			name:     "replicante error",
			status:   404,
			body:     `{"error":true,"error_msg":"no node \"x\" in cluster \"y\""}`,
			wantMsg:  `no node "x" in cluster "y"`,
			wantErr:  `platform answered 404 Not Found: no node "x" in cluster "y"`,
			wantBody: map[string]any{"error": true, "error_msg": `no node "x" in cluster "y"`},
		},
		{
			name:    "unknown node group",
			status:  400,
			body:    `{"error":true,"error_msg":"bad group","node_group_id":"g","defined_node_groups":["a"]}`,
			wantMsg: "bad group",
			wantErr: "platform answered 400 Bad Request: bad group",
			wantBody: map[string]any{"error": true, "error_msg": "bad group", "node_group_id": "g",
				"defined_node_groups": []any{"a"}},
		},
		{
			name:     "JSON object without error_msg",
			status:   409,
			body:     `{"reason":"busy"}`,
			wantMsg:  `409 Conflict with body "{\"reason\":\"busy\"}"`,
			wantErr:  `platform answered 409 Conflict with body "{\"reason\":\"busy\"}"`,
			wantBody: map[string]any{"reason": "busy"},
		},
		{
			name:    "not JSON",
			status:  502,
			body:    "  <html>bad gateway</html>\n",
			wantMsg: `502 Bad Gateway with body "<html>bad gateway</html>"`,
			wantErr: `platform answered 502 Bad Gateway with body "<html>bad gateway</html>"`,
		},
		{
			name:    "empty",
			status:  500,
			body:    "",
			wantMsg: "500 Internal Server Error with an empty body",
			wantErr: "platform answered 500 Internal Server Error with an empty body",
		},
		{
			name:    "long body is cut",
			status:  503,
			body:    long,
			wantMsg: `503 Service Unavailable with body "` + long[:200] + `"...`,
			wantErr: `platform answered 503 Service Unavailable with body "` + long[:200] + `"...`,
		},
		{
			name:    "unknown status",
			status:  599,
			body:    "oops",
			wantMsg: `status 599 with body "oops"`,
			wantErr: `platform answered status 599 with body "oops"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c, err := New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Discover(context.Background())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Discover error = %v (%T), want *Error", err, err)
			}
			if e.StatusCode != tt.status || e.Message != tt.wantMsg || !reflect.DeepEqual(e.Body, tt.wantBody) {
				t.Errorf("got %+v, want status %d message %q body %v", e, tt.status, tt.wantMsg, tt.wantBody)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.wantErr)
			}
		})
	}
}

func TestBadSuccessBodies(t *testing.T) {
	for _, body := range []string{"", "null", "[]", "{", `{"clusters":"no","count":"no"}`, "<html>"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, body)
		}))
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Discover(context.Background()); err == nil || !strings.Contains(err.Error(), "discover") {
			t.Errorf("Discover with body %q: err = %v, want an error naming discover", body, err)
		}
		if _, err := c.Provision(context.Background(), platform.ProvisionRequest{}); err == nil || !strings.Contains(err.Error(), "provision") {
			t.Errorf("Provision with body %q: err = %v, want an error naming provision", body, err)
		}
		srv.Close()
	}
}

func TestResponseSizeLimit(t *testing.T) {
	if got := byteSize(MaxResponseBytes); got != "64 MiB" {
		t.Errorf("byteSize(MaxResponseBytes) = %q, want 64 MiB", got)
	}
	const limit = 1000
	for _, withLength := range []bool{true, false} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !withLength {
				// Flushing first forces chunked encoding, so that the
				// limit is enforced while reading rather than from the header.
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, `{"clusters":[],"pad":"`+strings.Repeat("x", limit)+`"}`)
		}))
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		c.maxResponse = limit
		_, err = c.Discover(context.Background())
		if err == nil || !strings.Contains(err.Error(), "larger than the 1000 bytes limit") {
			t.Errorf("Discover of a body over the limit (Content-Length %v): err = %v, want the limit", withLength, err)
		}
		srv.Close()
	}
}

func TestDeprovisionStatuses(t *testing.T) {
	tests := []struct {
		status  int
		body    string
		wantErr bool
	}{
		{200, `{"ok":true}`, false},
		{200, "not json, ignored", false},
		{204, "", false},
		{404, `{"error":true,"error_msg":"no such node"}`, true},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}))
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "c", NodeID: "n"})
		if (err != nil) != tt.wantErr {
			t.Errorf("Deprovision answered %d: err = %v, want error %v", tt.status, err, tt.wantErr)
		}
		srv.Close()
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"clusters":[]}`)
	}))
	// The handshake refused on purpose below would otherwise be logged.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	c, err := New(srv.URL, WithCABundle(caFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Discover(ctx); err != nil {
		t.Errorf("Discover trusting the server's certificate: %v", err)
	}

	c, err = New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Discover(ctx)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("Discover without the CA: err = %v, want an unknown authority error", err)
	}

	c, err = New(srv.URL, WithInsecureSkipVerify())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Discover(ctx); err != nil {
		t.Errorf("Discover with InsecureSkipVerify: %v", err)
	}
}

func TestOptionFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opt  Option
		want string
	}{
		{"missing CA", WithCABundle(missing), missing},
		{"CA without certificates", WithCABundle(notPEM), notPEM},
		{"missing client certificate", WithClientCertificate(missing, notPEM), missing},
		{"client certificate without key", WithClientCertificate(notPEM, ""), "key file"},
	}
	for _, tt := range tests {
		_, err := New("https://h/", tt.opt)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tt.name, err, tt.want)
		}
	}
	if _, err := New("https://h/", WithHTTPClient(http.DefaultClient), WithInsecureSkipVerify()); err == nil {
		t.Error("WithHTTPClient with a TLS option succeeded, want an error")
	}
}

func TestTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Discover(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Discover past the context deadline: err = %v, want DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Discover took %s despite a 50ms deadline", elapsed)
	}

	c, err = New(srv.URL, WithTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Discover(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "client timeout") {
		t.Errorf("Discover past WithTimeout: err = %v, want DeadlineExceeded naming the client timeout", err)
	}
}

func TestWithHTTPClient(t *testing.T) {
	var used bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		used = true
		return &http.Response{
			StatusCode: 200,
			Body:       io.NopCloser(strings.NewReader(`{"count":2,"node_ids":["a","b"]}`)),
			Header:     http.Header{},
			Request:    r,
		}, nil
	})}
	c, err := New("http://example.invalid/", WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Provision(context.Background(), platform.ProvisionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !used || resp.Count != 2 {
		t.Errorf("used = %v, resp = %+v", used, resp)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestOperatorRoot(t *testing.T) {
	tests := []struct{ base, want string }{
		{"http://h:1", "http://h:1/"},
		{"http://h:1/platform/", "http://h:1/"},
		{"https://h/a/b", "https://h/"},
		{"http://u:p@h:1/api/", "http://u:p@h:1/"},
	}
	for _, tt := range tests {
		c, err := New(tt.base)
		if err != nil {
			t.Fatal(err)
		}
		if c.rootURL != tt.want {
			t.Errorf("New(%q) root = %q, want %q", tt.base, c.rootURL, tt.want)
		}
	}
}

func TestNodes(t *testing.T) {
	var seen []string
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		if r.URL.Path != "/v1/nodes" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, `{"nodes":[{"cluster_id":"c","node_id":"n","node_group":"g","node_class":"k","store":"redis",
			"version":"7.0","state":"running","agent_address":"","addresses":{"store":"127.0.0.1:20000"},
			"processes":[{"name":"redis","pid":42,"state":"running","restarts":2}],"created_at":"2026-01-02T03:04:05Z"}]}`)
	}))
	defer srv.Close()
	// The base path does not matter: the operator endpoints are at the root.
	c, err := New(srv.URL+"/platform/", WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []platform.NodeStatus{{ClusterID: "c", NodeID: "n", NodeGroup: "g", NodeClass: "k", Store: "redis",
		Version: "7.0", State: "running", Addresses: map[string]string{"store": "127.0.0.1:20000"},
		Processes: []platform.ProcessStatus{{Name: "redis", PID: 42, State: "running", Restarts: 2}}, CreatedAt: created}}
	if !reflect.DeepEqual(nodes, want) {
		t.Errorf("Nodes = %+v\nwant %+v", nodes, want)
	}
	if want := []string{"GET /v1/nodes Bearer tok"}; !reflect.DeepEqual(seen, want) {
		t.Errorf("server saw %q, want %q", seen, want)
	}
}

func TestNodesErrors(t *testing.T) {
	status, body := 0, ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}

	status, body = http.StatusNotImplemented, `{"error":true,"error_msg":"this platform's driver cannot show its nodes"}`
	_, err = c.Nodes(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 501 || e.Message != "this platform's driver cannot show its nodes" {
		t.Errorf("501: err = %v, want *Error with the message", err)
	}

	status, body = http.StatusOK, `{"nodes":null}`
	nodes, err := c.Nodes(context.Background())
	if err != nil || nodes == nil || len(nodes) != 0 {
		t.Errorf(`{"nodes":null}: Nodes = %#v, %v; want an empty list`, nodes, err)
	}
	status, body = http.StatusOK, `[]`
	if _, err := c.Nodes(context.Background()); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Errorf("[]: err = %v, want a bad-answer error", err)
	}
}

func TestLogs(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Accept"))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "line 1\nline 2\n")
	}))
	defer srv.Close()
	c, err := New(srv.URL + "/api/")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		opts LogOptions
		want string
	}{
		{LogOptions{}, "/v1/nodes/c/n/logs? text/plain"},
		{LogOptions{Process: "agent", Tail: 10, Follow: true}, "/v1/nodes/c/n/logs?follow=true&process=agent&tail=10 text/plain"},
		{LogOptions{Tail: 3}, "/v1/nodes/c/n/logs?tail=3 text/plain"},
	}
	for _, tt := range tests {
		seen = nil
		rc, err := c.Logs(context.Background(), "c", "n", tt.opts)
		if err != nil {
			t.Fatalf("Logs(%+v): %v", tt.opts, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(data) != "line 1\nline 2\n" {
			t.Errorf("Logs(%+v) read %q, %v", tt.opts, data, err)
		}
		if len(seen) != 1 || seen[0] != tt.want {
			t.Errorf("Logs(%+v): server saw %q, want %q", tt.opts, seen, tt.want)
		}
	}
	if _, err := c.Logs(context.Background(), "c", "n", LogOptions{Tail: -1}); err == nil {
		t.Error("Logs with a negative tail succeeded")
	}
	if _, err := c.Logs(context.Background(), "", "n", LogOptions{}); err == nil {
		t.Error("Logs without a cluster ID succeeded")
	}
}

func TestLogsErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":true,"error_msg":"no node n in cluster c"}`)
	}))
	defer srv.Close()
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Logs(context.Background(), "c", "n", LogOptions{Follow: true})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 404 || e.Message != "no node n in cluster c" {
		t.Errorf("err = %v, want *Error 404 with the message", err)
	}
}

// TestLogsStream checks that a followed log streams past the client timeout
// and that closing the stream ends the request on the server.
func TestLogsStream(t *testing.T) {
	next := make(chan string)
	serverDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(serverDone)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case line := <-next:
				io.WriteString(w, line)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.Logs(context.Background(), "c", "n", LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for _, line := range []string{"first\n", "second\n"} {
		time.Sleep(150 * time.Millisecond) // past the client timeout
		next <- line
		n, err := rc.Read(buf)
		if err != nil || string(buf[:n]) != line {
			t.Fatalf("read %q, %v; want %q", buf[:n], err, line)
		}
	}
	rc.Close()
	select {
	case <-serverDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server still streams 5s after the stream was closed")
	}
}

func TestLogsTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := New(srv.URL, WithTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Logs(context.Background(), "c", "n", LogOptions{})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "client timeout") {
		t.Errorf("err = %v, want DeadlineExceeded naming the client timeout", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = c.Logs(ctx, "c", "n", LogOptions{})
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "client timeout") {
		t.Errorf("cancelled context: err = %v, want Canceled without blaming the client timeout", err)
	}
}
