package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Timeouts bound how long a connection may hold the server.
type Timeouts struct {
	ReadHeader time.Duration
	Read       time.Duration
	Write      time.Duration
	Idle       time.Duration
	// Shutdown is how long in-flight requests may run after a stop.
	Shutdown time.Duration
}

// DefaultTimeouts suit a Platform: provisions may take a while (a driver may
// stop processes for a grace period), headers and idle connections not.
var DefaultTimeouts = Timeouts{
	ReadHeader: 10 * time.Second,
	Read:       30 * time.Second,
	Write:      2 * time.Minute,
	Idle:       2 * time.Minute,
	Shutdown:   30 * time.Second,
}

// MaxHeaderBytes bounds request headers.
const MaxHeaderBytes = 64 << 10

// Serve serves handler on ln until ctx is done, then stops accepting and
// lets in-flight requests finish for at most t.Shutdown.
func Serve(ctx context.Context, ln net.Listener, handler http.Handler, t Timeouts) error {
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.Shutdown)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		// The grace period is over: cut the connections still open, which
		// also ends their requests' contexts.
		_ = srv.Close()
	}
	if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return err
}
