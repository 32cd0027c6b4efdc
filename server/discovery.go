package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DiscoveryVersioner is implemented by drivers that can tell cheaply whether
// their discovery answer may have changed: the generation changes whenever
// the node set does. The server then encodes discovery only when the
// generation moved, and answers every other poll from its cache.
type DiscoveryVersioner interface {
	DiscoveryGeneration() uint64
}

// discoveryCache holds the last encoded discovery answer.
type discoveryCache struct {
	refresh    sync.Mutex // held by the one request that re-encodes
	mu         sync.Mutex
	valid      bool
	generation uint64
	body       []byte
	etag       string
}

func (c *discoveryCache) get(generation uint64) (body []byte, etag string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.valid && c.generation == generation {
		return c.body, c.etag, true
	}
	return nil, "", false
}

// handleDiscover answers GET /discover. Each answer carries an ETag; a
// client that sends it back in If-None-Match gets 304 with no body while
// the answer is unchanged.
func (s *Server) handleDiscover(w http.ResponseWriter, r *http.Request) {
	body, etag, err := s.encodedDiscovery(r)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-cache")
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func (s *Server) encodedDiscovery(r *http.Request) ([]byte, string, error) {
	versioner, cached := s.driver.(DiscoveryVersioner)
	var generation uint64
	if cached {
		// Read the generation before discovering: a change during the
		// discovery moves it again, so a stale answer is never kept.
		generation = versioner.DiscoveryGeneration()
		if body, etag, ok := s.discovery.get(generation); ok {
			return body, etag, nil
		}
		// One poller refreshes the cache; the others wait for its answer
		// instead of each asking the driver after every change.
		s.discovery.refresh.Lock()
		defer s.discovery.refresh.Unlock()
		generation = versioner.DiscoveryGeneration()
		if body, etag, ok := s.discovery.get(generation); ok {
			return body, etag, nil
		}
	}
	start := time.Now()
	resp, err := s.driver.Discover(r.Context())
	s.metrics.observe("discover", start, err)
	if err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(withEmptyLists(resp)); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	body, etag := buf.Bytes(), `"`+base64.RawURLEncoding.EncodeToString(sum[:12])+`"`
	if cached {
		s.discovery.mu.Lock()
		s.discovery.valid, s.discovery.generation, s.discovery.body, s.discovery.etag = true, generation, body, etag
		s.discovery.mu.Unlock()
	}
	return body, etag, nil
}

// etagMatches implements If-None-Match's weak comparison for one ETag.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, candidate := range strings.Split(header, ",") {
		candidate = strings.TrimPrefix(strings.TrimSpace(candidate), "W/")
		if candidate == "*" || candidate == etag {
			return true
		}
	}
	return false
}
