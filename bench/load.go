package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/server"
)

// target is one side of a comparison: where to send requests and what a
// right answer is.
type target struct {
	name   string
	url    string
	header http.Header
	status int
	size   int64 // body length every answer must have; -1: any
	client *http.Client
}

// newClient returns a client that keeps one connection per concurrent
// client, as a poller such as Replicante Core does, and never goes through a
// proxy: every request of the bench is for 127.0.0.1.
func newClient(clients int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        clients * 2,
			MaxIdleConnsPerHost: clients * 2,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
		Timeout: time.Minute,
	}
}

// once sends one request and returns its body.
func (t target) once(ctx context.Context) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", t.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the answer: %w", t.name, err)
	}
	if resp.StatusCode != t.status {
		return nil, nil, fmt.Errorf("%s: status %d, want %d: %.200s", t.name, resp.StatusCode, t.status, body)
	}
	return body, resp.Header, nil
}

// load sends requests from clients concurrent closed-loop clients (each
// sends its next request when its last answer is read in full) and returns
// every request's latency, from sending it to having read its whole body.
// It stops early, with what it has, after maxTime.
func (t target) load(ctx context.Context, clients, requests int, maxTime time.Duration) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	var (
		next    atomic.Int64
		mu      sync.Mutex
		all     = make(sample, 0, requests)
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	fail := func(err error) {
		firstMu.Lock()
		if first == nil {
			first = err
		}
		firstMu.Unlock()
		cancel()
	}
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make(sample, 0, requests/clients+1)
			defer func() {
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
			for next.Add(1) <= int64(requests) && ctx.Err() == nil {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
				if err != nil {
					fail(err)
					return
				}
				for k, v := range t.header {
					req.Header[k] = v
				}
				start := time.Now()
				resp, err := t.client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s: %w", t.name, err))
					}
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				elapsed := time.Since(start)
				switch {
				case err != nil:
					if ctx.Err() == nil {
						fail(fmt.Errorf("%s: reading the answer: %w", t.name, err))
					}
					return
				case resp.StatusCode != t.status:
					fail(fmt.Errorf("%s: status %d, want %d", t.name, resp.StatusCode, t.status))
					return
				case t.size >= 0 && n != t.size:
					fail(fmt.Errorf("%s: a %d-byte answer, want %d bytes", t.name, n, t.size))
					return
				}
				mine = append(mine, elapsed)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return all, nil
}

// sideBySide times every target in rounds that rotate which goes first
// (a b, b a, ... or a b c, b c a, c a b, ...), so that a drift of the machine
// during the run weighs on all alike. Each target gets requests in all.
func sideBySide(ctx context.Context, targets []target, clients, requests, rounds int, maxTime time.Duration) ([]sample, error) {
	rounds = max(1, min(rounds, requests))
	samples := make([]sample, len(targets))
	for r := 0; r < rounds; r++ {
		n := requests / rounds
		if r < requests%rounds {
			n++
		}
		for k := range targets {
			i := (r + k) % len(targets)
			s, err := targets[i].load(ctx, clients, n, maxTime)
			if err != nil {
				return nil, err
			}
			samples[i] = append(samples[i], s...)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return samples, nil
}

// served is an HTTP server on 127.0.0.1 that stop shuts down.
type served struct {
	url  string // scheme and host, no trailing slash
	stop func()
}

// serveBerth serves driver through Berth's own server and Serve, as berth
// serve does. Its request log is formatted as berth serve's default (text,
// info) but discarded: the cost of the line is counted, not the terminal's.
func serveBerth(driver platform.Driver) (*served, error) {
	return serveBerthLogging(driver, slog.NewTextHandler(io.Discard, nil))
}

// serveBerthLogging is serveBerth with another log handler.
func serveBerthLogging(driver platform.Driver, logs slog.Handler) (*served, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := server.New(driver, server.Options{Logger: slog.New(logs)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, ln, srv, server.DefaultTimeouts) }()
	return &served{url: "http://" + ln.Addr().String(), stop: func() { cancel(); <-done }}, nil
}

// serveBaseline serves h with a plain net/http server, as anyone would.
func serveBaseline(h http.Handler) (*served, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	return &served{url: "http://" + ln.Addr().String(), stop: func() { _ = srv.Close(); <-done }}, nil
}
