package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/internal/testcerts"
	"github.com/berthio/berth/platform"
)

// TestTLSClientCertificatesAndTokens serves Berth over HTTPS with a private
// CA, client certificates required and bearer tokens, and checks who gets in.
func TestTLSClientCertificatesAndTokens(t *testing.T) {
	ca := testcerts.NewCA(t, "berth-test")
	serverPair := ca.Server(t, "server")
	clientPair := ca.Client(t, "core")
	other := testcerts.NewCA(t, "stranger")
	strangerPair := other.Client(t, "stranger")

	tokenFile := filepath.Join(t.TempDir(), "tokens")
	// One token in the clear, one given by its SHA-256 ("hunter2").
	if err := os.WriteFile(tokenFile, []byte("# tokens\ns3cret-token\nsha256:f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startBerth(t, "--data-dir", t.TempDir(), "--tls-cert", serverPair.CertFile, "--tls-key", serverPair.KeyFile,
		"--tls-client-ca", ca.CertFile, "--auth-token-file", tokenFile)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("served at %s, want https", srv.URL)
	}
	ctx := context.Background()
	newClient := func(opts ...client.Option) *client.Client {
		c, err := client.New(srv.URL, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	trusted := []client.Option{client.WithCABundle(ca.CertFile), client.WithClientCertificate(clientPair.CertFile, clientPair.KeyFile)}

	for _, token := range []string{"s3cret-token", "hunter2"} {
		if _, err := newClient(append(trusted, client.WithToken(token))...).Discover(ctx); err != nil {
			t.Errorf("trusted client with token %q: %v", token, err)
		}
	}
	// A client that does not trust the CA fails the handshake.
	if _, err := newClient(client.WithClientCertificate(clientPair.CertFile, clientPair.KeyFile), client.WithToken("s3cret-token")).Discover(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("client without the CA: %v, want a certificate error", err)
	}
	// Without a client certificate, or with one another CA signed: refused.
	for name, opts := range map[string][]client.Option{
		"no client certificate":       {client.WithCABundle(ca.CertFile), client.WithToken("s3cret-token")},
		"stranger client certificate": {client.WithCABundle(ca.CertFile), client.WithClientCertificate(strangerPair.CertFile, strangerPair.KeyFile), client.WithToken("s3cret-token")},
	} {
		if _, err := newClient(opts...).Discover(ctx); err == nil {
			t.Errorf("%s: the server answered", name)
		}
	}
	// A wrong token, or none: 401 with WWW-Authenticate and a JSON body.
	tlsConfig := clientTLS(t, ca.CertFile, clientPair)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 10 * time.Second}
	for _, auth := range []string{"", "Bearer wrong", "Bearer ", "Basic czNjcmV0LXRva2Vu"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"discover", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer realm="berth"` || body["error"] != true || body["error_msg"] == "" {
			t.Errorf("Authorization %q: %d %v %v", auth, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	// /healthz stays open; /readyz and the operator endpoints need the token.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 401, "/v1/nodes": 401} {
		resp, err := hc.Get(srv.Root + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without a token = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// The CLI takes the same options.
	out := berth(t, "discover", "--url", srv.URL, "--ca", ca.CertFile, "--cert", clientPair.CertFile, "--key", clientPair.KeyFile, "--token", "s3cret-token", "-o", "json")
	var disc platform.DiscoveryResponse
	if err := json.Unmarshal([]byte(out), &disc); err != nil {
		t.Fatalf("discover over TLS: %q: %v", out, err)
	}
	_, stderr, code := berthStatus(t, "discover", "--url", srv.URL, "--ca", ca.CertFile, "--cert", clientPair.CertFile, "--key", clientPair.KeyFile, "--token", "nope")
	if code != 1 || !strings.Contains(stderr, "not valid") {
		t.Errorf("discover with a wrong token: exit %d, %q", code, stderr)
	}
}

// TestTLSReloadOnSIGHUP replaces the certificate and the tokens and sends
// SIGHUP: new connections get the new certificate and tokens, and an open
// connection keeps working.
func TestTLSReloadOnSIGHUP(t *testing.T) {
	ca := testcerts.NewCA(t, "reload")
	first := ca.Server(t, "first")
	dir := t.TempDir()
	certFile, keyFile, tokenFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "tokens")
	copyFile(t, first.CertFile, certFile)
	copyFile(t, first.KeyFile, keyFile)
	if err := os.WriteFile(tokenFile, []byte("old-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startBerth(t, "--data-dir", t.TempDir(), "--tls-cert", certFile, "--tls-key", keyFile, "--auth-token-file", tokenFile)

	tlsConfig := clientTLS(t, ca.CertFile, testcerts.Pair{})
	keepAlive := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}, Timeout: 10 * time.Second}
	get := func(c *http.Client, token string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"discover", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := get(keepAlive, "old-token")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("before reload: %v %v", resp, err)
	}
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Fatalf("certificate %s, want first", cn)
	}

	second := ca.Server(t, "second")
	copyFile(t, second.CertFile, certFile)
	copyFile(t, second.KeyFile, keyFile)
	if err := os.WriteFile(tokenFile, []byte("new-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}, Timeout: 10 * time.Second}
		resp, err := get(fresh, "new-token")
		if err == nil && resp.StatusCode == 200 && resp.TLS.PeerCertificates[0].Subject.CommonName == "second" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: %v %v", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The connection opened before the reload still serves (with the new tokens).
	resp, err = get(keepAlive, "new-token")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("kept-alive connection after reload: %v %v", resp, err)
	}
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != "first" {
		t.Errorf("kept-alive connection was re-established (certificate %s)", cn)
	}
	if resp, _ := get(keepAlive, "old-token"); resp == nil || resp.StatusCode != 401 {
		t.Errorf("the old token still works after reload: %v", resp)
	}
	// A broken certificate on the next SIGHUP keeps the current one.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	if resp, err := get(fresh, "new-token"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after a failed reload: %v %v", resp, err)
	}
	if !strings.Contains(srv.logs.String(), "keeping the previous one") {
		t.Errorf("a failed reload is not logged:\n%s", srv.logs)
	}
}

func clientTLS(t *testing.T, caFile string, pair testcerts.Pair) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s has no certificate", caFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if pair.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".tmp", to); err != nil {
		t.Fatal(err)
	}
}
