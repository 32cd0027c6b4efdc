package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berthio/berth/platform"
)

func TestInFlightLimit(t *testing.T) {
	d := &fakeDriver{block: make(chan struct{}), entered: make(chan struct{}, 8), canceled: make(chan struct{})}
	s, _ := newTestServer(t, d, Options{MaxInFlight: 2})
	results := make(chan int, 2)
	for i := 0; i < 2; i++ {
		go func() { results <- do(t, s, http.MethodPost, "/provision", validProvision).Code }()
		<-d.entered
	}
	rec := do(t, s, http.MethodPost, "/provision", validProvision)
	body := errorBody(t, rec, http.StatusTooManyRequests)
	if rec.Header().Get("Retry-After") == "" || !strings.Contains(body["error_msg"].(string), "in flight") {
		t.Errorf("third provision: Retry-After %q, body %v", rec.Header().Get("Retry-After"), body)
	}
	if rec := do(t, s, http.MethodPost, "/deprovision", `{"cluster_id":"c","node_id":"n"}`); rec.Code != http.StatusTooManyRequests {
		t.Errorf("deprovision past the limit = %d, want 429", rec.Code)
	}
	close(d.block)
	for i := 0; i < 2; i++ {
		if code := <-results; code != http.StatusOK {
			t.Errorf("a provision within the limit answered %d", code)
		}
	}
	// Discovery is not bounded, and slots come back.
	if rec := do(t, s, http.MethodGet, "/discover", ""); rec.Code != http.StatusOK {
		t.Errorf("discover = %d", rec.Code)
	}
	d.block = nil
	if rec := do(t, s, http.MethodPost, "/provision", validProvision); rec.Code != http.StatusOK {
		t.Errorf("provision after the others finished = %d", rec.Code)
	}
}

func TestTokens(t *testing.T) {
	digest := sha256.Sum256([]byte("hashed"))
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("# comment\n\n plain \nsha256:"+hex.EncodeToString(digest[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]bool{"plain": true, "hashed": true, "": false, "plain ": false, "Plain": false, "sha256:" + hex.EncodeToString(digest[:]): false} {
		if got := tokens.Valid(token); got != want {
			t.Errorf("Valid(%q) = %v, want %v", token, got, want)
		}
	}
	for name, content := range map[string]string{
		"empty":        "# nothing\n",
		"bad digest":   "sha256:abc\n",
		"short hex":    "sha256:" + strings.Repeat("a", 62) + "\n",
		"not hex":      "sha256:" + strings.Repeat("g", 64) + "\n",
		"no such file": "",
	} {
		p := filepath.Join(t.TempDir(), "tokens")
		if name != "no such file" {
			os.WriteFile(p, []byte(content), 0o600)
		}
		if _, err := LoadTokens(p); err == nil {
			t.Errorf("%s: LoadTokens succeeded", name)
		}
	}
	// A failed reload keeps the tokens in use.
	os.WriteFile(path, []byte(""), 0o600)
	if err := tokens.Reload(); err == nil || !tokens.Valid("plain") {
		t.Errorf("failed reload: %v; plain still valid: %v", err, tokens.Valid("plain"))
	}

	s, _ := newTestServer(t, &fakeDriver{}, Options{Tokens: tokens})
	for _, tt := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 401},
		{"/discover", "", 401},
		{"/no-such-path", "", 401},
		{"/discover", "Bearer plain", 200},
		{"/discover", "Bearer hashed", 200},
		{"/discover", "Bearer wrong", 401},
		{"/discover", "plain", 401},
		{"/v1/nodes", "Bearer wrong", 401},
	} {
		rec := do(t, s, http.MethodGet, tt.path, "", "Authorization", tt.auth)
		if rec.Code != tt.want {
			t.Errorf("GET %s with %q = %d, want %d", tt.path, tt.auth, rec.Code, tt.want)
		}
		if tt.want == 401 && rec.Header().Get("WWW-Authenticate") != `Bearer realm="berth"` {
			t.Errorf("GET %s: 401 without WWW-Authenticate", tt.path)
		}
	}
}

// TestSlowClientsAreCutOff trickles headers and a body slower than the
// timeouts allow: the server closes those connections, and keeps serving.
func TestSlowClientsAreCutOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s, _ := newTestServer(t, &fakeDriver{}, Options{})
	go func() {
		done <- Serve(ctx, ln, s, Timeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond, Write: time.Second, Idle: time.Second, Shutdown: time.Second})
	}()
	defer func() {
		cancel()
		<-done
	}()

	trickle := func(prefix string, drip string) error {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, prefix); err != nil {
			return err
		}
		// Keep dripping one byte every 100 ms for up to 10 s; the server
		// must close the connection long before.
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			if _, err := conn.Write([]byte{drip[i%len(drip)]}); err != nil {
				return nil // closed by the server
			}
			conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := bufio.NewReader(conn).ReadByte(); err != nil && !isTimeout(err) {
				return nil // the server answered or closed
			}
		}
		return io.ErrNoProgress
	}
	if err := trickle("GET /discover HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaaaaaaaaaaaaaa"); err != nil {
		t.Errorf("trickled headers: %v", err)
	}
	if err := trickle("POST /provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", "{"); err != nil {
		t.Errorf("trickled body: %v", err)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/discover")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("server after slow clients: %v %v", resp, err)
	}
	resp.Body.Close()
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestClusterIDsDifferingOnlyInCase(t *testing.T) {
	group := "default"
	d := &fakeDriver{discover: platform.DiscoveryResponse{Clusters: []platform.ClusterDiscovery{
		{ClusterID: "c1", Nodes: []platform.DiscoveredNode{{NodeID: "n", AgentAddress: "a", NodeClass: "c", NodeGroup: &group}}},
	}}}
	s, _ := newTestServer(t, d, Options{})
	body := strings.Replace(validProvision, `"cluster_id": "c1"`, `"cluster_id": "C1"`, 1)
	if !strings.Contains(body, "C1") {
		t.Fatalf("validProvision has no cluster_id c1:\n%s", validProvision)
	}
	got := errorBody(t, do(t, s, http.MethodPost, "/provision", body), http.StatusConflict)
	if msg := got["error_msg"].(string); !strings.Contains(msg, `"c1"`) || len(d.provisions) != 0 {
		t.Errorf("error_msg %q, %d provisions", msg, len(d.provisions))
	}
	if rec := do(t, s, http.MethodPost, "/provision", strings.Replace(validProvision, `"cluster_id": "c1"`, `"cluster_id": "c1"`, 1)); rec.Code != http.StatusOK {
		t.Errorf("provision into the existing cluster = %d", rec.Code)
	}
}
