package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthio/berth/platform"
)

// inspectorDriver is a fakeDriver that also implements NodeInspector over
// log files in a temporary directory.
type inspectorDriver struct {
	*fakeDriver
	nodes    []platform.NodeStatus
	nodesErr error
	dir      string

	mu    sync.Mutex
	opens int
}

func newInspectorDriver(t *testing.T) *inspectorDriver {
	return &inspectorDriver{fakeDriver: &fakeDriver{}, dir: t.TempDir()}
}

func (d *inspectorDriver) Nodes(ctx context.Context) ([]platform.NodeStatus, error) {
	return d.nodes, d.nodesErr
}

// logPath is where the log of a process lives; process "" is "main".
func (d *inspectorDriver) logPath(cluster, node, process string) string {
	if process == "" {
		process = "main"
	}
	return filepath.Join(d.dir, cluster+"."+node+"."+process+".log")
}

func (d *inspectorDriver) OpenLog(ctx context.Context, cluster, node, process string) (*os.File, error) {
	d.mu.Lock()
	d.opens++
	d.mu.Unlock()
	f, err := os.Open(d.logPath(cluster, node, process))
	if err != nil {
		return nil, platform.Wrap(platform.ENOTFOUND, err, "no log of process %q of node %s in cluster %s", process, node, cluster)
	}
	return f, nil
}

func (d *inspectorDriver) openCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.opens
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, path, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
}

func TestNodes(t *testing.T) {
	d := newInspectorDriver(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d.nodes = []platform.NodeStatus{
		{ClusterID: "c", NodeID: "n1", NodeGroup: "default", NodeClass: "small", Store: "redis", Version: "7.0",
			State: platform.StateRunning, AgentAddress: "127.0.0.1:20001",
			Addresses: map[string]string{"store": "127.0.0.1:20000"},
			Processes: []platform.ProcessStatus{{Name: "redis", PID: 42, State: "running", Restarts: 1, StartedAt: created}},
			CreatedAt: created},
		{ClusterID: "c", NodeID: "n2", State: platform.StateStarting, CreatedAt: created},
	}
	s, _ := newTestServer(t, d, Options{BasePath: "/platform/"})
	rec := do(t, s, http.MethodGet, "/v1/nodes", "")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/nodes = %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}
	var got nodesResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := append([]platform.NodeStatus(nil), d.nodes...)
	want[1].Processes = []platform.ProcessStatus{}
	if !reflect.DeepEqual(got.Nodes, want) {
		t.Errorf("nodes = %+v\nwant %+v", got.Nodes, want)
	}
	if !strings.Contains(rec.Body.String(), `"processes":[]`) {
		t.Errorf("a node without processes is not listed with []: %s", rec.Body)
	}

	d.nodes = nil
	rec = do(t, s, http.MethodGet, "/v1/nodes", "")
	if body := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusOK || body != `{"nodes":[]}` {
		t.Errorf("GET /v1/nodes without nodes = %d %s, want 200 {\"nodes\":[]}", rec.Code, body)
	}

	d.nodesErr = platform.Errorf(platform.EUNAVAILABLE, "state store is closed")
	errorBody(t, do(t, s, http.MethodGet, "/v1/nodes", ""), http.StatusServiceUnavailable)

	// Outside the base path only, and GET only.
	errorBody(t, do(t, s, http.MethodGet, "/platform/v1/nodes", ""), http.StatusNotFound)
	rec = do(t, s, http.MethodPost, "/v1/nodes", "{}")
	errorBody(t, rec, http.StatusMethodNotAllowed)
	if allow := rec.Header().Get("Allow"); allow != "GET, HEAD" {
		t.Errorf("Allow = %q, want GET, HEAD", allow)
	}
}

func TestOperatorEndpointsNotImplemented(t *testing.T) {
	d := &fakeDriver{}
	s, _ := newTestServer(t, d, Options{})
	for _, path := range []string{"/v1/nodes", "/v1/nodes/c/n/logs"} {
		body := errorBody(t, do(t, s, http.MethodGet, path, ""), http.StatusNotImplemented)
		if msg := body["error_msg"].(string); !strings.Contains(msg, "cannot show its nodes") {
			t.Errorf("GET %s: error_msg = %q", path, msg)
		}
	}
	if d.calls() != 0 {
		t.Errorf("the driver was called %d times", d.calls())
	}
}

func TestNodeLogsNotFound(t *testing.T) {
	d := newInspectorDriver(t)
	writeFile(t, d.logPath("c", "n", ""), "x\n")
	s, _ := newTestServer(t, d, Options{})
	for _, path := range []string{
		"/v1/nodes/c/other/logs",
		"/v1/nodes/c/n/logs?process=agent",
		// Paths that are not the logs endpoint at all.
		"/v1/nodes/c/n/log",
		"/v1/nodes/c/logs",
		"/v1/nodes//n/logs",
		"/v1/nodes/c/n/x/logs",
		"/v1/nodes/c/n/logs/",
		"/v1/nodes/",
	} {
		errorBody(t, do(t, s, http.MethodGet, path, ""), http.StatusNotFound)
	}
	if rec := do(t, s, http.MethodGet, "/v1/nodes/c/n/logs", ""); rec.Code != http.StatusOK || rec.Body.String() != "x\n" {
		t.Errorf("GET the existing log = %d %q", rec.Code, rec.Body)
	}
}

func TestNodeLogsBadRequests(t *testing.T) {
	d := newInspectorDriver(t)
	s, _ := newTestServer(t, d, Options{})
	tests := []struct{ path, field string }{
		{"/v1/nodes/-c/n/logs", "cluster ID"},
		{"/v1/nodes/c/n_/logs", "node ID"},
		{"/v1/nodes/c/" + strings.Repeat("n", 64) + "/logs", "node ID"},
		{"/v1/nodes/c%20d/n/logs", "cluster ID"},
		{"/v1/nodes/c/n/logs?process=", "process"},
		{"/v1/nodes/c/n/logs?process=..", "process"},
		{"/v1/nodes/c/n/logs?tail=-1", "tail"},
		{"/v1/nodes/c/n/logs?tail=100001", "tail"},
		{"/v1/nodes/c/n/logs?tail=ten", "tail"},
		{"/v1/nodes/c/n/logs?follow=yes", "follow"},
	}
	for _, tt := range tests {
		body := errorBody(t, do(t, s, http.MethodGet, tt.path, ""), http.StatusBadRequest)
		if msg, _ := body["error_msg"].(string); !strings.Contains(msg, tt.field) {
			t.Errorf("GET %s: error_msg %q does not name %s", tt.path, msg, tt.field)
		}
	}
	if n := d.openCount(); n != 0 {
		t.Errorf("OpenLog was called %d times for bad requests", n)
	}
}

func TestNodeLogsTail(t *testing.T) {
	d := newInspectorDriver(t)
	var long strings.Builder
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&long, "line %d\n", i)
	}
	lastLines := func(text string, n int) string {
		lines := strings.SplitAfter(text, "\n")
		lines = lines[:len(lines)-1] // after the final newline
		return strings.Join(lines[len(lines)-n:], "")
	}
	tests := []struct {
		name, file, query, want string
	}{
		{"whole file", "a\nb\nc\n", "", "a\nb\nc\n"},
		{"last two", "a\nb\nc\n", "?tail=2", "b\nc\n"},
		{"none", "a\nb\nc\n", "?tail=0", ""},
		{"more than there are", "a\nb\nc\n", "?tail=10", "a\nb\nc\n"},
		{"exactly all", "a\nb\nc\n", "?tail=3", "a\nb\nc\n"},
		{"unfinished last line", "a\nb\nc", "?tail=1", "c"},
		{"unfinished last line and one more", "a\nb\nc", "?tail=2", "b\nc"},
		{"empty lines", "a\n\n\n", "?tail=2", "\n\n"},
		{"empty file", "", "?tail=5", ""},
		{"across chunks", long.String(), "?tail=5000", lastLines(long.String(), 5000)},
		{"whole long file", long.String(), "", long.String()},
		{"process", "p\n", "?process=agent&tail=1", "p\n"},
	}
	s, _ := newTestServer(t, d, Options{})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := fmt.Sprintf("n%d", i)
			process := ""
			if strings.Contains(tt.query, "process=agent") {
				process = "agent"
			}
			writeFile(t, d.logPath("c", node, process), tt.file)
			rec := do(t, s, http.MethodGet, "/v1/nodes/c/"+node+"/logs"+tt.query, "")
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := rec.Body.String(); got != tt.want {
				t.Errorf("body = %.200q, want %.200q", got, tt.want)
			}
		})
	}
	writeFile(t, d.logPath("c", "h", ""), "data\n")
	if rec := do(t, s, http.MethodHead, "/v1/nodes/c/h/logs", ""); rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Errorf("HEAD = %d with %d bytes, want 200 without a body", rec.Code, rec.Body.Len())
	}
}

// follower is a client reading a followed log line by line.
type follower struct {
	t      *testing.T
	cancel context.CancelFunc
	lines  chan string
	ended  chan error
}

func follow(t *testing.T, url string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s = %s", url, resp.Status)
	}
	f := &follower{t: t, cancel: cancel, lines: make(chan string, 100), ended: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				f.lines <- line
			}
			if err != nil {
				f.ended <- err
				return
			}
		}
	}()
	t.Cleanup(cancel)
	return f
}

// expect waits for the next lines of the stream.
func (f *follower) expect(want ...string) {
	f.t.Helper()
	for _, w := range want {
		select {
		case got := <-f.lines:
			if got != w {
				f.t.Fatalf("line %q, want %q", got, w)
			}
		case err := <-f.ended:
			f.t.Fatalf("stream ended (%v) before line %q", err, w)
		case <-time.After(5 * time.Second):
			f.t.Fatalf("no line %q within 5s", w)
		}
	}
}

// expectEnd waits for the stream to end.
func (f *follower) expectEnd() error {
	f.t.Helper()
	select {
	case line := <-f.lines:
		f.t.Fatalf("unexpected line %q", line)
	case err := <-f.ended:
		return err
	case <-time.After(5 * time.Second):
		f.t.Fatal("the stream did not end within 5s")
	}
	return nil
}

// serveTracked serves s on an httptest server and counts handlers that
// have returned.
func serveTracked(t *testing.T, s http.Handler) (*httptest.Server, chan struct{}) {
	t.Helper()
	returned := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return srv, returned
}

func TestNodeLogsFollow(t *testing.T) {
	d := newInspectorDriver(t)
	path := d.logPath("c", "n", "")
	writeFile(t, path, "old 1\nold 2\n")
	s, _ := newTestServer(t, d, Options{})
	srv, returned := serveTracked(t, s)

	f := follow(t, srv.URL+"/v1/nodes/c/n/logs?follow=true&tail=1")
	f.expect("old 2\n")
	appendFile(t, path, "new 1\n")
	f.expect("new 1\n")
	appendFile(t, path, "new 2\nnew 3\n")
	f.expect("new 2\n", "new 3\n")

	// The client goes away: the handler ends.
	f.cancel()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler still runs 5s after the client went away")
	}
}

func TestNodeLogsFollowFromEmpty(t *testing.T) {
	d := newInspectorDriver(t)
	path := d.logPath("c", "n", "")
	writeFile(t, path, "")
	s, _ := newTestServer(t, d, Options{})
	srv, _ := serveTracked(t, s)
	// The headers arrive before any data does: follow returns at once.
	f := follow(t, srv.URL+"/v1/nodes/c/n/logs?follow=1&tail=0")
	appendFile(t, path, "first\n")
	f.expect("first\n")
}

func TestNodeLogsFollowRotation(t *testing.T) {
	d := newInspectorDriver(t)
	path := d.logPath("c", "n", "")
	writeFile(t, path, "before\n")
	s, _ := newTestServer(t, d, Options{})
	srv, _ := serveTracked(t, s)
	f := follow(t, srv.URL+"/v1/nodes/c/n/logs?follow=true")
	f.expect("before\n")

	// The writer keeps its descriptor across the rename and writes a last
	// line to the old file before it switches to a new one.
	writer, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Long enough for polls to find no current file.
	time.Sleep(3 * logPollInterval)
	if _, err := writer.WriteString("last of the old file\n"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "first of the new file\n")
	f.expect("last of the old file\n", "first of the new file\n")
	appendFile(t, path, "second of the new file\n")
	f.expect("second of the new file\n")
	// The old file is no longer followed.
	if _, err := writer.WriteString("lost\n"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "third of the new file\n")
	f.expect("third of the new file\n")

	// A second rotation works as the first.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "newest\n")
	f.expect("newest\n")
}

func TestNodeLogsFollowTruncation(t *testing.T) {
	d := newInspectorDriver(t)
	path := d.logPath("c", "n", "")
	writeFile(t, path, "a rather long first line\n")
	s, _ := newTestServer(t, d, Options{})
	srv, _ := serveTracked(t, s)
	f := follow(t, srv.URL+"/v1/nodes/c/n/logs?follow=true")
	f.expect("a rather long first line\n")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * logPollInterval)
	appendFile(t, path, "short\n")
	f.expect("short\n")
}

// TestNodeLogsFollowOutlivesWriteTimeout serves through Serve, whose
// WriteTimeout would cut a response, and checks that shutting the server
// down ends a followed log at once rather than after the grace period.
func TestNodeLogsFollowOutlivesWriteTimeout(t *testing.T) {
	d := newInspectorDriver(t)
	path := d.logPath("c", "n", "")
	writeFile(t, path, "")
	s, _ := newTestServer(t, d, Options{})
	ln := listen(t)
	timeouts := testTimeouts(30 * time.Second)
	timeouts.Write = 300 * time.Millisecond
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, s, timeouts) }()

	f := follow(t, "http://"+ln.Addr().String()+"/v1/nodes/c/n/logs?follow=true")
	time.Sleep(2 * timeouts.Write)
	appendFile(t, path, "after the write timeout\n")
	f.expect("after the write timeout\n")

	stop()
	if err := f.expectEnd(); err != io.EOF {
		t.Errorf("stream ended with %v, want a clean end (EOF)", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve still waits 5s after the stop: the followed log held the shutdown")
	}
}

func TestStatusRecorderFlush(t *testing.T) {
	rec := httptest.NewRecorder()
	sr := &statusRecorder{ResponseWriter: rec}
	var w http.ResponseWriter = sr
	flusher, ok := w.(http.Flusher)
	if !ok {
		t.Fatal("statusRecorder is not an http.Flusher")
	}
	flusher.Flush()
	if !rec.Flushed || sr.status != http.StatusOK {
		t.Errorf("Flushed = %v, status = %d; want true and 200", rec.Flushed, sr.status)
	}
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Errorf("ResponseController.Flush: %v", err)
	}
}
