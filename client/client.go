// Package client is a typed Go client for any server of the Replicante
// Platform API (Berth's own or another implementation): GET /discover,
// POST /provision and POST /deprovision under a base URL.
//
// Paths are joined onto the base URL the way Replicante Core's client does
// ({base}discover), so a base URL that works for Core works here too.
//
// Nodes and Logs read Berth's operator endpoints (GET /v1/nodes and GET
// /v1/nodes/{cluster}/{node}/logs), which other Platform servers lack.
// Berth serves them at its root whatever its API's base path, so the client
// sends them to the base URL's scheme and host only.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/berthio/berth/platform"
)

// MaxResponseBytes bounds the body the client reads from a platform, so that a
// broken or hostile server cannot make it buffer without limit.
const MaxResponseBytes = 64 << 20

// DefaultTimeout bounds each request, body included, unless WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// maxLogErrorBytes bounds the error body Logs reads.
const maxLogErrorBytes = 1 << 20

// maxErrorPrefix is how much of an unstructured error body goes into Error.Message.
const maxErrorPrefix = 200

// Client talks to one Platform server. It is safe for concurrent use.
type Client struct {
	base           string
	rootURL        string // scheme, host and "/": where the operator endpoints are
	discoverURL    string
	provisionURL   string
	deprovisionURL string
	http           *http.Client
	token          string
	timeout        time.Duration
	maxResponse    int64 // MaxResponseBytes; lowered by tests only
}

// Option configures a Client built by New.
type Option func(*options)

type options struct {
	caBundle   string
	insecure   bool
	certFile   string
	keyFile    string
	certGiven  bool
	token      string
	timeout    time.Duration
	httpClient *http.Client
}

// WithCABundle trusts only the PEM certificates in the file at path for the
// server's certificate, like Core's tls_ca_bundle setting.
func WithCABundle(path string) Option {
	return func(o *options) { o.caBundle = path }
}

// WithInsecureSkipVerify accepts any server certificate, like Core's
// tls_insecure_skip_verify setting. Only for tests and throwaway setups.
func WithInsecureSkipVerify() Option {
	return func(o *options) { o.insecure = true }
}

// WithClientCertificate presents the certificate and key in the given PEM
// files to servers that require mutual TLS.
func WithClientCertificate(certFile, keyFile string) Option {
	return func(o *options) {
		o.certFile, o.keyFile, o.certGiven = certFile, keyFile, true
	}
}

// WithToken sends "Authorization: Bearer <token>" with every request. An
// empty token sends no header.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithTimeout bounds each request, from sending to reading the whole answer.
// Zero or less means no bound beyond the caller's context.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithHTTPClient sends requests with c as it is. It cannot be combined with
// the TLS options, which would otherwise have to modify c's transport behind
// the caller's back; configure c's transport instead.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) { o.httpClient = c }
}

// New returns a client for the Platform served at baseURL, which must be an
// http or https URL. The API paths are appended to it after a '/' is added
// to its path if it lacks one: http://h:1 and http://h:1/ both lead to
// http://h:1/discover, http://h:1/api/ to http://h:1/api/discover.
func New(baseURL string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	base, err := normaliseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	httpClient, err := o.buildHTTPClient()
	if err != nil {
		return nil, err
	}
	return &Client{
		base:           base,
		rootURL:        rootOf(base),
		discoverURL:    base + "discover",
		provisionURL:   base + "provision",
		deprovisionURL: base + "deprovision",
		http:           httpClient,
		token:          o.token,
		timeout:        o.timeout,
		maxResponse:    MaxResponseBytes,
	}, nil
}

func normaliseBaseURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("platform URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("platform URL %q: scheme must be http or https (for example http://127.0.0.1:9876/)", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("platform URL %q has no host", raw)
	}
	// The paths are appended as strings, as Core does; a query or fragment
	// would end up in front of them.
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("platform URL %q must not have a query or fragment", raw)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		if u.RawPath != "" {
			u.RawPath += "/"
		}
	}
	return u.String(), nil
}

// rootOf returns the root of a normalised base URL, keeping its user
// information, which net/http sends as basic authentication.
func rootOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		// normaliseBaseURL produced base from a parsed URL.
		panic(fmt.Sprintf("client: normalised base URL %q does not parse: %v", base, err))
	}
	return (&url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host, Path: "/"}).String()
}

func (o *options) buildHTTPClient() (*http.Client, error) {
	tlsOptions := o.caBundle != "" || o.insecure || o.certGiven
	if o.httpClient != nil {
		if tlsOptions {
			return nil, errors.New("client.WithHTTPClient cannot be combined with the TLS options: configure the HTTP client's transport instead")
		}
		return o.httpClient, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.insecure}
	if o.caBundle != "" {
		pem, err := os.ReadFile(o.caBundle)
		if err != nil {
			return nil, fmt.Errorf("reading CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s has no PEM certificates", o.caBundle)
		}
		cfg.RootCAs = pool
	}
	if o.certGiven {
		if o.certFile == "" || o.keyFile == "" {
			return nil, errors.New("a client certificate needs both a certificate file and a key file")
		}
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s with key %s: %w", o.certFile, o.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = cfg
	return &http.Client{Transport: transport}, nil
}

// BaseURL returns the base URL the API paths are appended to, with its trailing '/'.
func (c *Client) BaseURL() string { return c.base }

// Discover lists every cluster and node on the platform.
func (c *Client) Discover(ctx context.Context) (platform.DiscoveryResponse, error) {
	var resp platform.DiscoveryResponse
	body, err := c.do(ctx, http.MethodGet, c.discoverURL, nil)
	if err != nil {
		return resp, err
	}
	return resp, decodeObject("discover", body, &resp)
}

// Provision asks the platform to provision nodes for req.
func (c *Client) Provision(ctx context.Context, req platform.ProvisionRequest) (platform.ProvisionResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return platform.ProvisionResponse{}, fmt.Errorf("encoding provision request: %w", err)
	}
	return c.ProvisionRaw(ctx, body)
}

// ProvisionRaw sends body unchanged as a provision request, so that a request
// written by hand reaches the platform exactly as written (including fields
// the platform package does not model).
func (c *Client) ProvisionRaw(ctx context.Context, body []byte) (platform.ProvisionResponse, error) {
	var resp platform.ProvisionResponse
	answer, err := c.do(ctx, http.MethodPost, c.provisionURL, body)
	if err != nil {
		return resp, err
	}
	return resp, decodeObject("provision", answer, &resp)
}

// Deprovision asks the platform to terminate one node. Any 2xx answer (the
// specification says 200 or 204) is success and its body is ignored.
func (c *Client) Deprovision(ctx context.Context, req platform.DeprovisionRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding deprovision request: %w", err)
	}
	_, err = c.do(ctx, http.MethodPost, c.deprovisionURL, body)
	return err
}

// Nodes lists every node of a Berth platform with its state and processes
// (GET /v1/nodes at the server's root). Servers whose driver cannot show
// its nodes answer 501, other Platform servers usually 404; both are an
// *Error.
func (c *Client) Nodes(ctx context.Context) ([]platform.NodeStatus, error) {
	body, err := c.do(ctx, http.MethodGet, c.rootURL+"v1/nodes", nil)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Nodes []platform.NodeStatus `json:"nodes"`
	}
	if err := decodeObject("nodes", body, &resp); err != nil {
		return nil, err
	}
	if resp.Nodes == nil {
		resp.Nodes = []platform.NodeStatus{}
	}
	return resp.Nodes, nil
}

// LogOptions say which log Logs reads and how much of it.
type LogOptions struct {
	// Process names the node's process; "" means its first one.
	Process string
	// Tail, when positive, limits the log to its last Tail lines; zero
	// means the whole log.
	Tail int
	// Follow keeps the stream open, sending what is appended to the log
	// (across rotations) until the caller closes it or cancels ctx.
	Follow bool
}

// Logs streams the log of one process of a node of a Berth platform (GET
// /v1/nodes/{cluster}/{node}/logs at the server's root). The caller must
// close the stream; closing it ends a followed log.
//
// The client timeout bounds only the wait for the answer to begin, not the
// stream: a followed log has no end, and a long log takes as long as it
// takes. Bound the stream with ctx.
func (c *Client) Logs(ctx context.Context, clusterID, nodeID string, opts LogOptions) (io.ReadCloser, error) {
	if clusterID == "" || nodeID == "" {
		return nil, errors.New("reading a log needs both a cluster ID and a node ID")
	}
	if opts.Tail < 0 {
		return nil, fmt.Errorf("log tail must be zero (the whole log) or a positive number of lines, not %d", opts.Tail)
	}
	query := url.Values{}
	if opts.Process != "" {
		query.Set("process", opts.Process)
	}
	if opts.Tail > 0 {
		query.Set("tail", strconv.Itoa(opts.Tail))
	}
	if opts.Follow {
		query.Set("follow", "true")
	}
	endpoint := c.rootURL + "v1/nodes/" + url.PathEscape(clusterID) + "/" + url.PathEscape(nodeID) + "/logs"
	if len(query) > 0 {
		endpoint += "?" + query.Encode()
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	// Not context.WithTimeout: the deadline must stop applying once the
	// answer has begun, and a deadline cannot be lifted.
	var timer *time.Timer
	if c.timeout > 0 {
		timer = time.AfterFunc(c.timeout, cancel)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building request for %s: %w", endpoint, err)
	}
	req.Header.Set("Accept", "text/plain")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	timedOut := timer != nil && !timer.Stop()
	if timedOut && parent.Err() == nil {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, fmt.Errorf("GET %s: no answer within %s (the client timeout): %w", endpoint, c.timeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer cancel()
		defer resp.Body.Close()
		// An error body only needs its error_msg; a longer one is cut and
		// then described by its start.
		data, err := io.ReadAll(io.LimitReader(resp.Body, min(c.maxResponse, maxLogErrorBytes)))
		if err != nil {
			return nil, fmt.Errorf("GET %s: reading error response: %w", endpoint, err)
		}
		return nil, newError(resp.StatusCode, data)
	}
	return &logStream{ReadCloser: resp.Body, cancel: cancel}, nil
}

// logStream is a log's body that also releases the request's context when
// closed.
type logStream struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (s *logStream) Close() error {
	err := s.ReadCloser.Close()
	s.cancel()
	return err
}

// do sends one request and returns the body of a 2xx answer; any other
// status becomes an *Error.
func (c *Client) do(ctx context.Context, method, endpoint string, body []byte) ([]byte, error) {
	parent := ctx
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, reader)
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", endpoint, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(parent, ctx, err)
	}
	defer resp.Body.Close()
	if resp.ContentLength > c.maxResponse {
		return nil, fmt.Errorf("%s %s: response of %d bytes is larger than the %s limit", method, endpoint, resp.ContentLength, byteSize(c.maxResponse))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading response: %w", method, endpoint, c.transportError(parent, ctx, err))
	}
	if int64(len(data)) > c.maxResponse {
		return nil, fmt.Errorf("%s %s: response is larger than the %s limit", method, endpoint, byteSize(c.maxResponse))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, newError(resp.StatusCode, data)
	}
	return data, nil
}

// transportError says when a request failed because of the client's own
// timeout rather than the caller's context, since only then is raising the
// timeout the fix.
func (c *Client) transportError(parent, ctx context.Context, err error) error {
	if ctx.Err() != nil && parent.Err() == nil {
		return fmt.Errorf("no complete answer within %s (the client timeout): %w", c.timeout, err)
	}
	return err
}

// decodeObject parses a 2xx body, which must be a single JSON object.
func decodeObject(endpoint string, body []byte, v any) error {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return fmt.Errorf("%s: platform answered with %s, not a JSON object", endpoint, describeBody(trimmed))
	}
	if err := json.Unmarshal(trimmed, v); err != nil {
		return fmt.Errorf("%s: platform's answer is not a valid %s response: %w", endpoint, endpoint, err)
	}
	return nil
}

// Error is a non-2xx answer from a platform.
type Error struct {
	StatusCode int
	// Message is the body's error_msg when the body is a JSON object that
	// carries one (the Replicante error format), else the status and the
	// start of the body.
	Message string
	// Body is the decoded body when it is a JSON object, else nil. It holds
	// extra fields such as defined_node_groups.
	Body map[string]any
}

func (e *Error) Error() string {
	status := statusLine(e.StatusCode)
	if e.Message == "" {
		return "platform answered " + status
	}
	// A Message built from the status alone already names it.
	if strings.HasPrefix(e.Message, status) {
		return "platform answered " + e.Message
	}
	return "platform answered " + status + ": " + e.Message
}

func newError(status int, body []byte) *Error {
	e := &Error{StatusCode: status}
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil && obj != nil {
		e.Body = obj
		if msg, ok := obj["error_msg"].(string); ok && msg != "" {
			e.Message = msg
			return e
		}
	}
	e.Message = statusLine(status) + " with " + describeBody(bytes.TrimSpace(body))
	return e
}

func byteSize(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func statusLine(code int) string {
	if text := http.StatusText(code); text != "" {
		return strconv.Itoa(code) + " " + text
	}
	return "status " + strconv.Itoa(code)
}

// describeBody quotes at most maxErrorPrefix bytes of a body for a message.
func describeBody(body []byte) string {
	if len(body) == 0 {
		return "an empty body"
	}
	if len(body) > maxErrorPrefix {
		return fmt.Sprintf("body %q...", body[:maxErrorPrefix])
	}
	return fmt.Sprintf("body %q", body)
}
