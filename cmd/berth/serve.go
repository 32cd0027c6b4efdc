package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/server"
	"github.com/berthio/berth/stores"
)

// driverFactory is one kind of driver berth serve can run: its flags, and
// how to open it. Each driver has a file of its own (driver_local.go, ...).
type driverFactory struct {
	name string
	// addFlags adds the driver's own flags; their help starts with the
	// driver's name ("local driver: ...").
	addFlags func(f *pflag.FlagSet)
	// open opens the driver; the returned function closes it.
	open func(ctx context.Context, env driverEnv) (platform.Driver, func() error, error)
}

// driverEnv is what every driver is opened with.
type driverEnv struct {
	dataDir string
	catalog *catalog.Catalog
	logger  *slog.Logger
}

// driverFactories lists the drivers this binary has; the first is the default.
func driverFactories() []*driverFactory {
	return []*driverFactory{localDriver(), dockerDriver(), kubeDriver()}
}

type serveOptions struct {
	listen     string
	dataDir    string
	driver     string
	catalogDir string
	basePath   string
	logFormat  string
	logLevel   string
	maxBody    int64
	maxFlight  int
	tlsCert    string
	tlsKey     string
	tlsCA      string
	tokenFile  string
	pprof      string
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	factories := driverFactories()
	var names []string
	for _, f := range factories {
		names = append(names, f.name)
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the Platform API",
		Long: `Serve the Replicante Platform API: GET /discover, POST /provision and
POST /deprovision under --base-path, and GET /healthz and GET /readyz at the root.

With the local driver (the default) nodes are processes on this machine, with
their state and files under --data-dir; they keep running when berth stops.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return serve(cmd, o, factories) },
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:9876", "address to serve on (host:port; port 0 picks a free one)")
	f.StringVar(&o.dataDir, "data-dir", "./berth-data", "directory for the driver's state and the nodes' files")
	f.StringVar(&o.driver, "driver", factories[0].name, "where nodes run: "+strings.Join(names, ", "))
	f.StringVar(&o.catalogDir, "catalog", "", "template catalogue directory consulted before the built-in one (docs/catalog.md)")
	f.StringVar(&o.basePath, "base-path", "/", "URL prefix of the Platform API, such as /platform/")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.Int64Var(&o.maxBody, "max-body-bytes", server.DefaultMaxBodyBytes, "largest request body accepted")
	f.IntVar(&o.maxFlight, "max-in-flight", server.DefaultMaxInFlight, "provisions and deprovisions served at once; more get 429 with Retry-After")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate to serve HTTPS with (with --tls-key; reloaded on SIGHUP)")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.tlsCA, "tls-client-ca", "", "PEM CA bundle: clients must present a certificate it signed (needs --tls-cert)")
	f.StringVar(&o.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this loopback address, such as 127.0.0.1:6060")
	f.StringVar(&o.tokenFile, "auth-token-file", "", "file of bearer tokens, one per line or sha256:<hex>; every endpoint but /healthz then needs one (reloaded on SIGHUP)")
	for _, factory := range factories {
		factory.addFlags(f)
	}
	return cmd
}

func serve(cmd *cobra.Command, o serveOptions, factories []*driverFactory) error {
	logger, err := newLogger(cmd.ErrOrStderr(), o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	var factory *driverFactory
	var names []string
	for _, f := range factories {
		names = append(names, f.name)
		if f.name == o.driver {
			factory = f
		}
	}
	if factory == nil {
		return usageErrorf("unknown driver %q; this berth has: %s", o.driver, strings.Join(names, ", "))
	}
	if o.maxBody <= 0 {
		return usageErrorf("--max-body-bytes must be positive")
	}
	if o.maxFlight <= 0 {
		return usageErrorf("--max-in-flight must be positive")
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	if o.tlsCA != "" && o.tlsCert == "" {
		return usageErrorf("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked in the TLS handshake")
	}
	var reloaders []func() error
	var tlsConfig *server.TLS
	if o.tlsCert != "" {
		if tlsConfig, err = server.NewTLS(o.tlsCert, o.tlsKey, o.tlsCA); err != nil {
			return err
		}
		reloaders = append(reloaders, tlsConfig.Reload)
	}
	var tokens *server.Tokens
	if o.tokenFile != "" {
		if tokens, err = server.LoadTokens(o.tokenFile); err != nil {
			return err
		}
		reloaders = append(reloaders, tokens.Reload)
	}
	cat, err := loadCatalog(o.catalogDir)
	if err != nil {
		return err
	}
	driver, closeDriver, err := factory.open(cmd.Context(), driverEnv{dataDir: o.dataDir, catalog: cat, logger: logger})
	if err != nil {
		return err
	}
	defer closeDriver()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", o.listen, err)
	}
	srv := server.New(driver, server.Options{
		BasePath: o.basePath, MaxBodyBytes: o.maxBody, MaxInFlight: o.maxFlight, Tokens: tokens, Logger: logger,
	})
	scheme := "http"
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig.Config())
		scheme = "https"
	}
	stopReloading := reloadOnSIGHUP(logger, reloaders)
	defer stopReloading()
	if o.pprof != "" {
		stopProfiler, err := serveProfiler(o.pprof, logger)
		if err != nil {
			return err
		}
		defer stopProfiler()
	}

	out := cmd.OutOrStdout()
	dataDir, _ := filepath.Abs(o.dataDir)
	fmt.Fprintf(out, "berth %s serving the Platform API on %s://%s%s (driver %s)\n", version, scheme, ln.Addr(), srv.BasePath(), o.driver)
	fmt.Fprintf(out, "data dir: %s\n", dataDir)
	printStores(out, cat, o.driver)

	err = server.Serve(cmd.Context(), ln, srv, server.DefaultTimeouts)
	logger.Info("berth stopped; nodes keep running")
	return err
}

// serveProfiler serves net/http/pprof on its own listener, apart from the
// API and its auth, which is why it must be a loopback address.
func serveProfiler(addr string, logger *slog.Logger) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageErrorf("--pprof %q: want host:port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, usageErrorf("--pprof %q: the profiler is served without auth, so only on a loopback address such as 127.0.0.1:6060", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	logger.Info("profiler serving", "address", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}

// reloadOnSIGHUP reloads the certificate and the token file on SIGHUP;
// a reload that fails keeps what was loaded before.
func reloadOnSIGHUP(logger *slog.Logger, reloaders []func() error) (stop func()) {
	if len(reloaders) == 0 {
		return func() {}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				failed := false
				for _, reload := range reloaders {
					if err := reload(); err != nil {
						logger.Error("reloading on SIGHUP; keeping the previous one", "error", err)
						failed = true
					}
				}
				if !failed {
					logger.Info("reloaded on SIGHUP")
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// loadCatalog layers the --catalog directory over the built-in catalogue.
func loadCatalog(dir string) (*catalog.Catalog, error) {
	var layers []catalog.Layer
	if dir != "" {
		if info, err := os.Stat(dir); err != nil || !info.IsDir() {
			return nil, usageErrorf("--catalog %s: not a directory", dir)
		}
		layers = append(layers, catalog.Layer{Name: dir, FS: os.DirFS(dir)})
	}
	layers = append(layers, catalog.Layer{Name: "built-in", FS: stores.FS()})
	return catalog.New(layers...)
}

// printStores tells, for each store the driver's catalogue has, whether what
// its templates run is installed here.
func printStores(out io.Writer, cat *catalog.Catalog, driver string) {
	for _, info := range cat.Stores(driver) {
		var missing []string
		for _, bin := range info.Requires.Binaries {
			if _, err := exec.LookPath(bin); err != nil {
				missing = append(missing, bin)
			}
		}
		ranges := strings.Join(info.Ranges, ", ")
		switch {
		case len(missing) == 0:
			fmt.Fprintf(out, "store %s (%s): ready\n", info.Store, ranges)
		case info.Requires.Package != "":
			fmt.Fprintf(out, "store %s (%s): %s not found; install it with: apt-get install %s\n", info.Store, ranges, strings.Join(missing, ", "), info.Requires.Package)
		default:
			fmt.Fprintf(out, "store %s (%s): %s not found\n", info.Store, ranges, strings.Join(missing, ", "))
		}
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErrorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErrorf("--log-format %q: want text or json", format)
}
