package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/berthio/berth/platform"
)

// metrics are one Server's Prometheus metrics, in a registry of its own (no
// global state: two servers in one process do not share counters).
type metrics struct {
	registry     *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	inFlight     prometheus.Gauge
	driverTime   *prometheus.HistogramVec
	driverErrors *prometheus.CounterVec
}

func newMetrics(driver platform.Driver) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_requests_total",
			Help: "HTTP requests served, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_operations_in_flight",
			Help: "Provisions and deprovisions running now.",
		}),
		driverTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_driver_operation_duration_seconds",
			Help:    "Time the driver took for an operation (discover, provision, deprovision), whatever its outcome.",
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"operation"}),
		driverErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_driver_operation_errors_total",
			Help: "Driver operations that failed, by operation and error code.",
		}, []string{"operation", "code"}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.inFlight, m.driverTime, m.driverErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&nodeCollector{driver: driver})
	return m
}

// observe times a driver operation and counts its failure.
func (m *metrics) observe(operation string, start time.Time, err error) {
	m.driverTime.WithLabelValues(operation).Observe(time.Since(start).Seconds())
	if err != nil {
		m.driverErrors.WithLabelValues(operation, platform.ErrorCode(err)).Inc()
	}
}

func (m *metrics) request(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{ErrorLog: nil}).ServeHTTP(w, r)
}

var nodesDesc = prometheus.NewDesc("berth_nodes",
	"Nodes the driver manages, by cluster, store and state (from the driver's node status; "+
		"drivers without it report every discovered node with store and state \"unknown\").",
	[]string{"cluster", "store", "state"}, nil)

// nodeCollector counts nodes at scrape time, so that the figure is always
// the driver's own.
type nodeCollector struct {
	driver platform.Driver
}

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- nodesDesc }

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type key struct{ cluster, store, state string }
	counts := map[key]int{}
	if inspector, ok := c.driver.(NodeInspector); ok {
		nodes, err := inspector.Nodes(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(nodesDesc, err)
			return
		}
		for _, n := range nodes {
			counts[key{n.ClusterID, n.Store, n.State}]++
		}
	} else {
		disc, err := c.driver.Discover(ctx)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(nodesDesc, err)
			return
		}
		for _, cl := range disc.Clusters {
			counts[key{cl.ClusterID, "unknown", "unknown"}] += len(cl.Nodes)
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(nodesDesc, prometheus.GaugeValue, float64(n), k.cluster, k.store, k.state)
	}
}
