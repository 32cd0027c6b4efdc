package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/berthio/berth/platform"
)

// statusOf is the one table that maps error codes to HTTP statuses.
var statusOf = map[string]int{
	platform.EINVALID:       http.StatusBadRequest,
	platform.ENOTFOUND:      http.StatusNotFound,
	platform.ECONFLICT:      http.StatusConflict,
	platform.EUNPROCESSABLE: http.StatusUnprocessableEntity,
	platform.EUNAVAILABLE:   http.StatusServiceUnavailable,
	platform.EINTERNAL:      http.StatusInternalServerError,
}

// ErrorStatus returns the HTTP status for err's code.
func ErrorStatus(err error) int {
	if status, ok := statusOf[platform.ErrorCode(err)]; ok {
		return status
	}
	return http.StatusInternalServerError
}

// renderError answers with err's status and JSON body.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeError(w, r, ErrorStatus(err), err)
}

// writeError answers with the Replicante JSON error object:
// {"error": true, "error_msg": ..., "error_cause": ..., "error_trail": [...]}.
// Internal errors are logged in full and answered with a generic message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, status int, err error) {
	body := map[string]any{"error": true, "error_msg": platform.ErrorMessage(err)}
	var perr *platform.Error
	if platform.ErrorCode(err) == platform.EINTERNAL {
		s.logger.ErrorContext(r.Context(), "internal error", "request_id", requestID(r.Context()), "error", err.Error())
	} else if errors.As(err, &perr) {
		for k, v := range perr.Details {
			body[k] = v
		}
		if trail := causes(perr.Err); len(trail) > 0 {
			body["error_cause"] = trail[len(trail)-1]
			body["error_trail"] = trail
		}
	}
	s.writeJSON(w, r, status, body)
}

// causes lists the messages of err and of every error it wraps, outermost first.
func causes(err error) []string {
	var trail []string
	for err != nil {
		trail = append(trail, err.Error())
		err = errors.Unwrap(err)
	}
	return trail
}

func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, value any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // messages quote ranges such as ">=6.0"
	err := enc.Encode(value)
	data := buf.Bytes()
	if err != nil {
		s.logger.ErrorContext(r.Context(), "encoding response", "request_id", requestID(r.Context()), "error", err)
		status, data = http.StatusInternalServerError, []byte(`{"error":true,"error_msg":"internal error"}`+"\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		if _, err := w.Write(data); err != nil {
			s.logger.DebugContext(r.Context(), "writing response", "request_id", requestID(r.Context()), "error", err, slog.Int("status", status))
		}
	}
}
