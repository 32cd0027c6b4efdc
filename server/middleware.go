package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/berthio/berth/platform"
)

// RequestIDHeader carries the request ID in both directions.
const RequestIDHeader = "X-Request-Id"

// requestID returns the ID of the request ctx belongs to.
func requestID(ctx context.Context) string { return platform.RequestID(ctx) }

// withRequestLog assigns a request ID (the client's, when it sent a sane
// one), recovers from panics, and logs one line per request.
func (s *Server) withRequestLog(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		r = r.WithContext(platform.WithRequestID(r.Context(), id))
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.logger.ErrorContext(r.Context(), "panic serving request", "request_id", id, "panic", p)
				if rec.status == 0 {
					// The panic is logged above; like any internal error its
					// detail is not sent.
					s.writeJSON(rec, r, http.StatusInternalServerError, map[string]any{"error": true, "error_msg": "internal error"})
				}
			}
			s.metrics.request(s.routeLabel(r), r.Method, rec.statusOrOK(), time.Since(start))
			level := slog.LevelInfo
			if rec.status >= 500 {
				level = slog.LevelError
			}
			s.logger.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.Int("status", rec.statusOrOK()),
				slog.Duration("duration", time.Since(start)),
				slog.String("request_id", id),
				slog.String("remote", r.RemoteAddr),
			)
		}()
		next(rec, r)
	}
}

// routeLabel names the route a request went to, for metrics: a known path,
// the logs route's pattern, or "other", so that arbitrary paths cannot grow
// the number of series.
func (s *Server) routeLabel(r *http.Request) string {
	if _, ok := s.routes[r.URL.Path]; ok {
		return r.URL.Path
	}
	if r.PathValue("cluster") != "" {
		return "/v1/nodes/{cluster}/{node}/logs"
	}
	return "other"
}

// validRequestID accepts client IDs that are safe to echo and log.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) statusOrOK() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// FlushError sends what the handler wrote so far, for streamed answers such
// as a followed log. http.ResponseController prefers it to Unwrap, so it
// also records the 200 that a flush before WriteHeader sends.
func (r *statusRecorder) FlushError() error {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return http.NewResponseController(r.ResponseWriter).Flush()
}

// Flush lets handlers that assert http.Flusher stream through the recorder.
func (r *statusRecorder) Flush() { _ = r.FlushError() }
