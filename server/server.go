// Package server serves the Platform API over HTTP: it decodes and validates
// requests into platform types, calls a platform.Driver, and renders answers
// and errors in the shapes Replicante's clients expect. It also serves the
// operational endpoints (/healthz, /readyz). It knows nothing of drivers.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/berthio/berth/platform"
)

// DefaultMaxBodyBytes bounds request bodies unless Options say otherwise.
const DefaultMaxBodyBytes = 1 << 20

// Options configure a Server.
type Options struct {
	// BasePath is the prefix the Platform API is served under, such as
	// "/platform/". Empty or "/" serves it at the root. /healthz and /readyz
	// are always at the root.
	BasePath string
	// MaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Logger receives one line per request and the details of internal
	// errors (default: discard).
	Logger *slog.Logger
	// Tokens, when set, are required as bearer tokens on every endpoint but
	// /healthz.
	Tokens *Tokens
	// MaxInFlight bounds provisions and deprovisions running at once
	// (default DefaultMaxInFlight); past it requests get 429 at once.
	MaxInFlight int
}

// DefaultMaxInFlight is the default bound on provisions and deprovisions in
// flight.
const DefaultMaxInFlight = 16

// Readier is implemented by drivers that can tell whether they can serve:
// /readyz answers 503 while Ready returns an error.
type Readier interface {
	Ready(ctx context.Context) error
}

// Server is the HTTP handler of a Platform.
type Server struct {
	driver    platform.Driver
	maxBody   int64
	logger    *slog.Logger
	routes    map[string]map[string]http.HandlerFunc // path -> method -> handler
	basePath  string
	tokens    *Tokens
	inFlight  chan struct{} // one slot per provision or deprovision running
	discovery discoveryCache
	metrics   *metrics
}

// New returns a Server that serves driver.
func New(driver platform.Driver, opts Options) *Server {
	s := &Server{
		driver:   driver,
		maxBody:  opts.MaxBodyBytes,
		logger:   opts.Logger,
		basePath: CleanBasePath(opts.BasePath),
		tokens:   opts.Tokens,
		metrics:  newMetrics(driver),
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	s.inFlight = make(chan struct{}, opts.MaxInFlight)
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	api := strings.TrimSuffix(s.basePath, "/")
	s.routes = map[string]map[string]http.HandlerFunc{
		api + "/discover":    {http.MethodGet: s.handleDiscover},
		api + "/provision":   {http.MethodPost: s.bounded(s.handleProvision)},
		api + "/deprovision": {http.MethodPost: s.bounded(s.handleDeprovision)},
		"/healthz":           {http.MethodGet: s.handleHealthz},
		"/readyz":            {http.MethodGet: s.handleReadyz},
		"/metrics":           {http.MethodGet: s.handleMetrics},
		nodesPath:            {http.MethodGet: s.handleNodes},
		nodeLogsRoute:        {http.MethodGet: s.nodeLogsHandler()},
	}
	return s
}

// CleanBasePath normalises a base path to begin and end with "/".
func CleanBasePath(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return "/"
	}
	return "/" + p + "/"
}

// BasePath returns the normalised prefix the API is served under.
func (s *Server) BasePath() string { return s.basePath }

// ServeHTTP routes a request. Unknown paths are 404 and known paths with
// another method 405 with Allow, both with a JSON error body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.withRequestLog(s.route)(w, r)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(w, r) {
		return
	}
	methods, ok := s.routes[r.URL.Path]
	if !ok {
		methods, ok = s.routes[matchNodeLogs(r)]
	}
	if !ok {
		s.writeError(w, r, http.StatusNotFound, platform.Errorf(platform.ENOTFOUND, "no endpoint %s; the Platform API is served under %s", r.URL.Path, s.basePath))
		return
	}
	handler, ok := methods[r.Method]
	if !ok && r.Method == http.MethodHead {
		handler, ok = methods[http.MethodGet]
	}
	if !ok {
		allowed := make([]string, 0, len(methods)+1)
		for m := range methods {
			allowed = append(allowed, m)
			if m == http.MethodGet {
				allowed = append(allowed, http.MethodHead)
			}
		}
		sort.Strings(allowed)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		s.writeError(w, r, http.StatusMethodNotAllowed, platform.Errorf(platform.EINVALID, "method %s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allowed, " or ")))
		return
	}
	handler(w, r)
}

// bounded runs h only while fewer than MaxInFlight bounded requests run;
// past that it answers 429 with Retry-After at once. A queue would only hide
// an overload until clients time out.
func (s *Server) bounded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.inFlight <- struct{}{}:
			s.metrics.inFlight.Inc()
			defer func() {
				s.metrics.inFlight.Dec()
				<-s.inFlight
			}()
			h(w, r)
		default:
			w.Header().Set("Retry-After", "1")
			s.writeError(w, r, http.StatusTooManyRequests, platform.Errorf(platform.EUNAVAILABLE,
				"%d provisions and deprovisions are already in flight; retry later", cap(s.inFlight)))
		}
	}
}

// withEmptyLists returns resp with [] where a driver left a nil list:
// Replicante's client does not accept null for clusters or nodes.
func withEmptyLists(resp platform.DiscoveryResponse) platform.DiscoveryResponse {
	out := platform.DiscoveryResponse{Clusters: make([]platform.ClusterDiscovery, len(resp.Clusters))}
	for i, c := range resp.Clusters {
		if c.Nodes == nil {
			c.Nodes = []platform.DiscoveredNode{}
		}
		out.Clusters[i] = c
	}
	return out
}

func (s *Server) handleProvision(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, err := platform.DecodeProvisionRequest(body)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	if err := s.checkClusterCase(r.Context(), req.Cluster.ClusterID); err != nil {
		s.renderError(w, r, err)
		return
	}
	if req.Idempotency, err = s.idempotency(r, req); err != nil {
		s.renderError(w, r, err)
		return
	}
	start := time.Now()
	resp, err := s.driver.Provision(r.Context(), req)
	s.metrics.observe("provision", start, err)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	if resp.NodeIDs == nil {
		resp.NodeIDs = []string{}
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}

// IdempotencyKeyHeader names a provision across the client's retries.
const IdempotencyKeyHeader = "Idempotency-Key"

// IdempotentDriver is implemented by drivers that honour Idempotency-Key
// (see platform.ProvisionRequest.Idempotency). A key sent to another driver
// is refused, rather than ignored: a client that sends one relies on it.
type IdempotentDriver interface {
	HonoursIdempotencyKeys() bool
}

// idempotency reads the request's Idempotency-Key, if any.
func (s *Server) idempotency(r *http.Request, req platform.ProvisionRequest) (*platform.Idempotency, error) {
	values := r.Header.Values(IdempotencyKeyHeader)
	if len(values) == 0 {
		return nil, nil
	}
	key := values[0]
	if len(values) > 1 || key == "" || len(key) > 255 || strings.IndexFunc(key, func(c rune) bool { return c <= ' ' || c > '~' }) >= 0 {
		return nil, platform.Errorf(platform.EINVALID, "%s must be one value of 1 to 255 printable ASCII characters without spaces", IdempotencyKeyHeader)
	}
	if d, ok := s.driver.(IdempotentDriver); !ok || !d.HonoursIdempotencyKeys() {
		return nil, platform.Errorf(platform.EUNPROCESSABLE, "this platform's driver does not support %s", IdempotencyKeyHeader)
	}
	// The digest is of the decoded request, so that a retry that orders
	// keys or spaces differently is still the same request.
	canonical, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(canonical)
	return &platform.Idempotency{Key: key, Digest: hex.EncodeToString(digest[:])}, nil
}

// checkClusterCase refuses a cluster ID that differs only in case from one
// the platform has: on case-insensitive file systems, in DNS names and in
// people's heads the two would be the same cluster.
func (s *Server) checkClusterCase(ctx context.Context, clusterID string) error {
	disc, err := s.driver.Discover(ctx)
	if err != nil {
		return err
	}
	for _, c := range disc.Clusters {
		if c.ClusterID != clusterID && strings.EqualFold(c.ClusterID, clusterID) {
			return platform.Errorf(platform.ECONFLICT, "cluster ID %q differs only in case from the existing cluster %q; use %q",
				clusterID, c.ClusterID, c.ClusterID)
		}
	}
	return nil
}

func (s *Server) handleDeprovision(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, err := platform.DecodeDeprovisionRequest(body)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	start := time.Now()
	err = s.driver.Deprovision(r.Context(), req)
	s.metrics.observe("deprovision", start, err)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if readier, ok := s.driver.(Readier); ok {
		if err := readier.Ready(r.Context()); err != nil {
			s.renderError(w, r, platform.Wrap(platform.EUNAVAILABLE, err, "driver is not ready"))
			return
		}
	}
	s.writeJSON(w, r, http.StatusOK, map[string]string{"status": "ready"})
}

// readBody checks the content type and reads a bounded body. On failure it
// has already answered.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mediaType, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")) {
			s.writeError(w, r, http.StatusUnsupportedMediaType, platform.Errorf(platform.EINVALID, "Content-Type %q is not JSON; send application/json", ct))
			return nil, false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.writeError(w, r, http.StatusRequestEntityTooLarge, platform.Errorf(platform.EINVALID, "request body is larger than %d bytes", tooLarge.Limit))
			return nil, false
		}
		s.writeError(w, r, http.StatusBadRequest, platform.Errorf(platform.EINVALID, "reading request body: %v", err))
		return nil, false
	}
	return body, true
}

// String describes the server for logs.
func (s *Server) String() string { return fmt.Sprintf("platform API under %s", s.basePath) }

// NodeInspector is implemented by drivers that can show operators their
// nodes in detail: GET /v1/nodes, GET /v1/nodes/{cluster}/{node}/logs.
type NodeInspector interface {
	// Nodes lists every node with its state and processes.
	Nodes(ctx context.Context) ([]platform.NodeStatus, error)
	// OpenLog opens the current log file of one process of a node (process
	// "" means the node's first process); ENOTFOUND for an unknown node or
	// process. Log files may be rotated: a follower reopens the log when
	// the file it holds is no longer the current one.
	OpenLog(ctx context.Context, clusterID, nodeID, process string) (*os.File, error)
}
