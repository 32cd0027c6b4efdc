package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berthio/berth/platform"
)

// The operator endpoints live at the root, beside /healthz, and not under
// the Platform API's base path: they are Berth's own, not part of the
// contract an orchestrator relies on, and their /v1 prefix versions them
// apart from it.
const (
	nodesPath = "/v1/nodes"
	// nodeLogsRoute is the routes key of the logs endpoint; matchNodeLogs
	// maps concrete paths to it, since the route table holds exact paths.
	// It lacks the leading '/' every request path has, so that no request
	// can hit it without going through matchNodeLogs.
	nodeLogsRoute = "v1/nodes/{cluster}/{node}/logs"
)

// MaxLogTail bounds tail=N, so that one request cannot make the server scan
// and hold an unbounded part of a file just to count lines.
const MaxLogTail = 100000

// logPollInterval is how often a followed log is checked for new data and
// for rotation: short enough to feel live, long enough to cost nothing.
const logPollInterval = 250 * time.Millisecond

// nodesResponse is the body of GET /v1/nodes. It is a server type and not a
// platform one because the operator endpoints are outside the contract.
type nodesResponse struct {
	Nodes []platform.NodeStatus `json:"nodes"`
}

// matchNodeLogs returns nodeLogsRoute and records the path's cluster and
// node as path values when path is /v1/nodes/{cluster}/{node}/logs, else "".
// Segments are only split here; handleNodeLogs validates them, so that a bad
// ID is a 400 that says why rather than a 404.
func matchNodeLogs(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, nodesPath+"/")
	if !ok {
		return ""
	}
	rest, ok = strings.CutSuffix(rest, "/logs")
	if !ok {
		return ""
	}
	cluster, node, ok := strings.Cut(rest, "/")
	if !ok || cluster == "" || node == "" || strings.Contains(node, "/") {
		return ""
	}
	r.SetPathValue("cluster", cluster)
	r.SetPathValue("node", node)
	return nodeLogsRoute
}

// inspector returns the driver as a NodeInspector, or answers 501: a driver
// that cannot show its nodes still serves the Platform API, and the
// operator learns that this platform lacks the feature rather than that
// the path is wrong.
func (s *Server) inspector(w http.ResponseWriter, r *http.Request) (NodeInspector, bool) {
	if inspector, ok := s.driver.(NodeInspector); ok {
		return inspector, true
	}
	s.writeError(w, r, http.StatusNotImplemented, platform.Errorf(platform.EUNPROCESSABLE,
		"this platform's driver cannot show its nodes, so %s is not available; the local driver can", r.URL.Path))
	return nil, false
}

func (s *Server) handleNodes(w http.ResponseWriter, r *http.Request) {
	inspector, ok := s.inspector(w, r)
	if !ok {
		return
	}
	nodes, err := inspector.Nodes(r.Context())
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	// Tools reading the answer may count on arrays, never null.
	out := make([]platform.NodeStatus, len(nodes))
	for i, node := range nodes {
		if node.Processes == nil {
			node.Processes = []platform.ProcessStatus{}
		}
		out[i] = node
	}
	s.writeJSON(w, r, http.StatusOK, nodesResponse{Nodes: out})
}

// logRequest is a validated GET /v1/nodes/{cluster}/{node}/logs.
type logRequest struct {
	cluster, node, process string
	tail                   int // -1: the whole file
	follow                 bool
}

func parseLogRequest(r *http.Request) (logRequest, error) {
	req := logRequest{cluster: r.PathValue("cluster"), node: r.PathValue("node"), tail: -1}
	if err := platform.ValidateID(req.cluster); err != nil {
		return req, platform.Errorf(platform.EINVALID, "cluster ID in the path: %v", err)
	}
	if err := platform.ValidateID(req.node); err != nil {
		return req, platform.Errorf(platform.EINVALID, "node ID in the path: %v", err)
	}
	query := r.URL.Query()
	if query.Has("process") {
		req.process = query.Get("process")
		if err := platform.ValidateID(req.process); err != nil {
			return req, platform.Errorf(platform.EINVALID, "process: %v", err)
		}
	}
	if query.Has("tail") {
		raw := query.Get("tail")
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 || n > MaxLogTail {
			return req, platform.Errorf(platform.EINVALID, "tail: must be a number of lines from 0 to %d, not %q", MaxLogTail, raw)
		}
		req.tail = n
	}
	if query.Has("follow") {
		raw := query.Get("follow")
		follow, err := strconv.ParseBool(raw)
		if err != nil {
			return req, platform.Errorf(platform.EINVALID, "follow: must be true or false, not %q", raw)
		}
		req.follow = follow
	}
	return req, nil
}

// nodeLogsHandler returns the handler of the logs endpoint. It is built
// once per Server so that its shutdown watch, which must outlive single
// requests, is not global state.
func (s *Server) nodeLogsHandler() http.HandlerFunc {
	shutdowns := &shutdownWatch{done: map[*http.Server]chan struct{}{}}
	return func(w http.ResponseWriter, r *http.Request) {
		s.handleNodeLogs(w, r, shutdowns)
	}
}

func (s *Server) handleNodeLogs(w http.ResponseWriter, r *http.Request, shutdowns *shutdownWatch) {
	inspector, ok := s.inspector(w, r)
	if !ok {
		return
	}
	req, err := parseLogRequest(r)
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	ctx := r.Context()
	reopen := func() (*os.File, error) { return inspector.OpenLog(ctx, req.cluster, req.node, req.process) }
	f, err := reopen()
	if err != nil {
		s.renderError(w, r, err)
		return
	}
	l := &logFollower{out: w, file: f, reopen: reopen, buf: make([]byte, 32<<10)}
	defer func() { l.file.Close() }()
	if req.tail >= 0 {
		offset, err := tailOffset(f, req.tail)
		if err == nil {
			_, err = f.Seek(offset, io.SeekStart)
		}
		if err != nil {
			s.renderError(w, r, fmt.Errorf("finding the last %d lines of %s: %w", req.tail, f.Name(), err))
			return
		}
		l.pos = offset
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	rc := http.NewResponseController(w)
	if req.follow {
		// The server's WriteTimeout bounds whole responses; a followed log
		// is meant to stay open for as long as the operator watches it.
		if err := rc.SetWriteDeadline(time.Time{}); err != nil {
			s.logger.DebugContext(ctx, "cannot lift the write deadline of a followed log", "request_id", requestID(ctx), "error", err)
		}
		l.flush = rc.Flush
		// Send the headers now: the client waits for them before it reads.
		if err := l.flush(); err != nil {
			return
		}
	}
	if _, err := l.copyAvailable(ctx); err != nil || !req.follow {
		s.logStreamEnd(ctx, err)
		return
	}
	if err := l.flush(); err != nil {
		return
	}
	stop := shutdowns.channel(r)
	ticker := time.NewTicker(logPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-ticker.C:
		}
		if err := l.poll(ctx); err != nil {
			s.logStreamEnd(ctx, err)
			return
		}
	}
}

// logStreamEnd logs why a log stream ended early. Once the answer has
// begun there is no error body to send, and a client that went away is
// routine, so the line is for debugging only.
func (s *Server) logStreamEnd(ctx context.Context, err error) {
	if err != nil && ctx.Err() == nil {
		s.logger.DebugContext(ctx, "log stream ended", "request_id", requestID(ctx), "error", err)
	}
}

// logFollower copies a log file to a client and, when followed, moves on
// to the new file when the log is rotated.
type logFollower struct {
	out    io.Writer
	flush  func() error
	reopen func() (*os.File, error)
	file   *os.File
	pos    int64 // offset of the next byte to send from file
	buf    []byte
}

// copyAvailable sends what file holds past pos and reports whether it sent
// anything.
func (l *logFollower) copyAvailable(ctx context.Context) (bool, error) {
	sent := false
	for ctx.Err() == nil {
		n, err := l.file.Read(l.buf)
		if n > 0 {
			if _, werr := l.out.Write(l.buf[:n]); werr != nil {
				return sent, fmt.Errorf("sending log: %w", werr)
			}
			l.pos += int64(n)
			sent = true
		}
		if errors.Is(err, io.EOF) {
			return sent, nil
		}
		if err != nil {
			return sent, fmt.Errorf("reading log file %s: %w", l.file.Name(), err)
		}
	}
	return sent, ctx.Err()
}

// poll sends new data, follows a truncation or a rotation, and flushes.
func (l *logFollower) poll(ctx context.Context) error {
	sent, err := l.copyAvailable(ctx)
	if err != nil {
		return err
	}
	held, err := l.file.Stat()
	if err != nil {
		return fmt.Errorf("checking log file %s: %w", l.file.Name(), err)
	}
	if held.Size() < l.pos {
		// Truncated in place (copytruncate): what is there now is new.
		if _, err := l.file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("rewinding truncated log file %s: %w", l.file.Name(), err)
		}
		l.pos = 0
		more, err := l.copyAvailable(ctx)
		if err != nil {
			return err
		}
		sent = sent || more
	} else if current, err := l.reopen(); err == nil {
		// An error here usually means the rotated file's successor does
		// not exist yet; keep the held file and look again at the next poll.
		info, err := current.Stat()
		if err != nil || os.SameFile(held, info) {
			current.Close()
		} else {
			// Rotated: the writer may have written to the old file until it
			// switched, so finish it before starting the new one.
			more, err := l.copyAvailable(ctx)
			l.file.Close()
			l.file, l.pos = current, 0
			if err != nil {
				return err
			}
			sent = sent || more
			if more, err = l.copyAvailable(ctx); err != nil {
				return err
			}
			sent = sent || more
		}
	}
	if sent {
		return l.flush()
	}
	return nil
}

// tailOffset returns the offset of the first of the last n lines of f.
// A final newline ends the last line rather than beginning an empty one,
// and a last line without one still counts, as tail(1) has it.
func tailOffset(f *os.File, n int) (int64, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := info.Size()
	if n == 0 {
		return size, nil
	}
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	// A newline at size-1 never starts one of the lines wanted.
	end := size - 1
	count := 0
	for end > 0 {
		start := max(end-chunk, 0)
		b := buf[:end-start]
		m, err := f.ReadAt(b, start)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		b = b[:m] // shorter only if the file was truncated meanwhile
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				count++
				if count == n {
					return start + int64(i) + 1, nil
				}
			}
		}
		end = start
	}
	return 0, nil
}

// shutdownWatch tells followed logs that the http.Server serving them is
// shutting down. Shutdown does not cancel request contexts, it waits for
// requests to end, so without this a follower would hold every shutdown
// for its whole grace period.
type shutdownWatch struct {
	mu   sync.Mutex
	done map[*http.Server]chan struct{}
}

// channel returns a channel closed when the server of r shuts down; nil,
// which never fires, when r does not say which server it came through.
func (sw *shutdownWatch) channel(r *http.Request) <-chan struct{} {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return nil
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	ch, ok := sw.done[srv]
	if !ok {
		// Registered once per http.Server: RegisterOnShutdown keeps every
		// function it is given.
		ch = make(chan struct{})
		sw.done[srv] = ch
		srv.RegisterOnShutdown(func() { close(ch) })
	}
	return ch
}
