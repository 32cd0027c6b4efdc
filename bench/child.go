package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/driver/local"
	"github.com/berthio/berth/server"
	"github.com/berthio/berth/stores"
)

// The bench starts itself again as a child process to measure memory: a
// process holding only the local driver and Berth's server, or only the
// baseline handler, without the load generator's own memory.
const (
	childEnv        = "BERTH_BENCH_CHILD" // "serve" or "baseline"
	childDataDirEnv = "BERTH_BENCH_DATA_DIR"
	childCatalogEnv = "BERTH_BENCH_CATALOG"
	childPortsEnv   = "BERTH_BENCH_PORTS"
	childBodyEnv    = "BERTH_BENCH_BODY" // the file the baseline serves
)

// gcPath makes a child collect garbage and return memory to the kernel, so
// that two RSS readings compare what is live rather than where the
// collector happened to be. berth serve has no such endpoint: figures taken
// after it are labelled so.
const gcPath = "/debug/bench/gc"

// runChild serves until SIGTERM; it prints the same line berth serve does,
// so that the parent finds its address either way.
func runChild(role string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var handler http.Handler
	switch role {
	case "serve":
		layers := []catalog.Layer{}
		if dir := os.Getenv(childCatalogEnv); dir != "" {
			layers = append(layers, catalog.Layer{Name: dir, FS: os.DirFS(dir)})
		}
		cat, err := catalog.New(append(layers, catalog.Layer{Name: "built-in", FS: stores.FS()})...)
		if err != nil {
			return err
		}
		ports := local.DefaultPortRange
		if p := os.Getenv(childPortsEnv); p != "" {
			if ports, err = local.ParsePortRange(p); err != nil {
				return err
			}
		}
		// Logs as berth serve's defaults: text, info, on stderr.
		logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
		driver, err := local.Open(local.Options{DataDir: os.Getenv(childDataDirEnv), Catalog: cat, Ports: ports, GracePeriod: 5 * time.Second, Logger: logger})
		if err != nil {
			return err
		}
		defer driver.Close()
		handler = server.New(driver, server.Options{Logger: logger})
	case "baseline":
		body, err := os.ReadFile(os.Getenv(childBodyEnv))
		if err != nil {
			return err
		}
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		})
	default:
		return fmt.Errorf("unknown role %q", role)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+gcPath, func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		debug.FreeOSMemory()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		_ = json.NewEncoder(w).Encode(map[string]uint64{"heap_inuse": m.HeapInuse, "sys": m.Sys, "goroutines": uint64(runtime.NumGoroutine())})
	})
	mux.Handle("/", handler)
	fmt.Printf("bench child %s serving the Platform API on http://%s/ (pid %d)\n", role, ln.Addr(), os.Getpid())
	return server.Serve(ctx, ln, mux, server.DefaultTimeouts)
}

// child is a running child process: the bench's own, or berth serve.
type child struct {
	cmd     *exec.Cmd
	url     string // scheme and host
	hasGC   bool
	done    chan error
	logFile *os.File
}

var servingLine = regexp.MustCompile(`serving the Platform API on (https?://[^/ ]+)/`)

// startChild starts role ("serve" or "baseline") of the bench itself, or,
// for "serve" when berthBin is set, `berth serve`, with its stderr in
// logPath, and waits until it serves.
func startChild(ctx context.Context, role, berthBin, logPath string, env map[string]string) (*child, error) {
	var cmd *exec.Cmd
	hasGC := true
	if role == "serve" && berthBin != "" {
		args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", env[childDataDirEnv], "--grace-period", "5s"}
		if dir := env[childCatalogEnv]; dir != "" {
			args = append(args, "--catalog", dir)
		}
		if ports := env[childPortsEnv]; ports != "" {
			args = append(args, "--port-range", ports)
		}
		cmd = exec.Command(berthBin, args...)
		hasGC = false
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(self)
		cmd.Env = append(os.Environ(), childEnv+"="+role)
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	c := &child{cmd: cmd, hasGC: hasGC, done: make(chan error, 1), logFile: logFile}
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		found := false
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil && !found {
				found = true
				urls <- m[1]
			}
		}
		close(urls)
	}()
	go func() { c.done <- cmd.Wait() }()
	select {
	case u, ok := <-urls:
		if ok {
			c.url = u
			return c, nil
		}
		c.stop()
		return nil, fmt.Errorf("%s exited without serving; see %s", cmd.Path, logPath)
	case <-time.After(2 * time.Minute):
	case <-ctx.Done():
	}
	c.stop()
	return nil, fmt.Errorf("%s did not start serving; see %s", cmd.Path, logPath)
}

// stop sends SIGTERM and waits for the child, then kills it past 30s.
func (c *child) stop() {
	defer c.logFile.Close()
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// memory is what /proc/PID/status says of a process, in MB (10^6 bytes).
type memory struct {
	rss, hwm float64
	threads  int
}

func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	for _, line := range strings.Split(string(data), "\n") {
		key, value, _ := strings.Cut(line, ":")
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		n, _ := strconv.ParseFloat(fields[0], 64)
		switch key {
		case "VmRSS":
			m.rss = n * 1024 / 1e6
		case "VmHWM":
			m.hwm = n * 1024 / 1e6
		case "Threads":
			m.threads = int(n)
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
	}
	return m, nil
}

func (c *child) memory() (memory, error) { return readMemory(c.cmd.Process.Pid) }

// collect asks the child to collect garbage and return memory to the kernel.
func (c *child) collect(ctx context.Context, client *http.Client) error {
	if !c.hasGC {
		return errors.New("berth serve cannot be asked to collect garbage")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+gcPath, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", gcPath, resp.StatusCode)
	}
	return nil
}

// children lists the PIDs whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		end := strings.LastIndexByte(string(data), ')')
		fields := strings.Fields(string(data[end+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}
