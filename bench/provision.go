package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/driver/local"
	"github.com/berthio/berth/platform"
)

// provisionPorts is where the provision scenario's nodes get their ports:
// out of the ranges the test suite uses (20000-29999 end-to-end, 40000-44999
// for the local driver's tests) and below the kernel's ephemeral ports.
var provisionPorts = local.PortRange{Min: 15000, Max: 19999}

// provisionFigures is what the provision scenario measured.
type provisionFigures struct {
	berth, baseline sample // request (or exec) to PONG
	answered        sample // Berth: request to the provision's answer
	deprovision     sample
	argv            []string // the last direct redis-server's argv
	left            int      // processes left behind after cleanup
}

// measureProvision provisions Redis nodes one at a time through Berth's POST
// /provision and, alternately before or after each, starts redis-server
// directly with the same arguments (another port and directory), timing
// both to the first PONG.
func measureProvision(ctx context.Context, cfg config) (f *provisionFigures, err error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server is not installed (apt-get install -y redis-server)")
	}
	if cfg.provisionNodes < 1 {
		return nil, errors.New("-provision-nodes must be at least 1")
	}
	workDir, err := os.MkdirTemp("", "berth-bench-provision-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(workDir)
	dataDir := filepath.Join(workDir, "berth")
	cat, err := builtinCatalog()
	if err != nil {
		return nil, err
	}
	driver, err := local.Open(local.Options{DataDir: dataDir, Catalog: cat, Ports: provisionPorts, GracePeriod: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	defer driver.Close()
	berth, err := serveBerth(driver)
	if err != nil {
		return nil, err
	}
	defer berth.stop()
	client := newClient(1)

	f = &provisionFigures{}
	var nodeIDs []string
	var direct []*exec.Cmd
	const cluster = "bench-provision"
	defer func() {
		// Everything goes, whatever happened: Berth's nodes through
		// deprovision, the direct ones by signal.
		cleanup := context.WithoutCancel(ctx)
		for _, id := range nodeIDs {
			start := time.Now()
			if derr := deprovision(cleanup, client, berth.url, cluster, id); derr != nil {
				err = errors.Join(err, derr)
				continue
			}
			f.deprovision = append(f.deprovision, time.Since(start))
		}
		for _, cmd := range direct {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			_ = cmd.Wait()
		}
		f.left = len(berthProcesses(dataDir))
		for _, cmd := range direct {
			if processExists(cmd.Process.Pid) {
				f.left++
			}
		}
		if f.left > 0 {
			err = errors.Join(err, fmt.Errorf("%d processes were left behind", f.left))
		}
	}()

	for i := 0; i < cfg.provisionNodes && ctx.Err() == nil; i++ {
		viaBerth := func() error {
			id, elapsed, answered, err := provisionToPong(ctx, client, berth.url, cluster, cfg.provisionNodes)
			if id != "" {
				nodeIDs = append(nodeIDs, id)
			}
			if err != nil {
				return err
			}
			f.berth, f.answered = append(f.berth, elapsed), append(f.answered, answered)
			return nil
		}
		directly := func() error {
			cmd, argv, elapsed, err := startToPong(ctx, cat, filepath.Join(workDir, "direct", strconv.Itoa(i)))
			if cmd != nil {
				direct = append(direct, cmd)
			}
			if err != nil {
				return err
			}
			f.baseline, f.argv = append(f.baseline, elapsed), argv
			return nil
		}
		order := []func() error{viaBerth, directly}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, step := range order {
			if err := step(); err != nil {
				return f, err
			}
		}
	}
	return f, ctx.Err()
}

// provisionToPong provisions one node and waits until it answers PING on the
// store address discovery gives it.
func provisionToPong(ctx context.Context, client *http.Client, base, cluster string, desired int) (id string, elapsed, answered time.Duration, err error) {
	body := fmt.Sprintf(`{"cluster": {"cluster_id": %q, "store": "redis", "store_version": "7.0",
		"nodes": {"default": {"desired_count": %d, "node_class": "default"}}},
		"provision": {"node_group_id": "default", "count": 1}}`, cluster, desired)
	start := time.Now()
	var resp platform.ProvisionResponse
	if err := postJSON(ctx, client, base+"/provision", body, http.StatusOK, &resp); err != nil {
		return "", 0, 0, err
	}
	answered = time.Since(start)
	if resp.Count != 1 {
		return "", 0, 0, fmt.Errorf("provision answered %+v; want one node", resp)
	}
	id = resp.NodeIDs[0]
	addr, err := storeAddress(ctx, client, base, cluster, id)
	if err != nil {
		return id, 0, 0, err
	}
	if err := waitPong(ctx, addr); err != nil {
		return id, 0, 0, fmt.Errorf("node %s: %w", id, err)
	}
	return id, time.Since(start), answered, nil
}

// storeAddress finds a node's addresses.store in discovery.
func storeAddress(ctx context.Context, client *http.Client, base, cluster, nodeID string) (string, error) {
	body, _, err := target{name: "Berth GET /discover", url: base + "/discover", status: http.StatusOK, client: client}.once(ctx)
	if err != nil {
		return "", err
	}
	var disc platform.DiscoveryResponse
	if err := json.Unmarshal(body, &disc); err != nil {
		return "", err
	}
	for _, c := range disc.Clusters {
		for _, n := range c.Nodes {
			if c.ClusterID == cluster && n.NodeID == nodeID {
				if addr := n.Addresses["store"]; addr != "" {
					return addr, nil
				}
				return "", fmt.Errorf("node %s has no store address in discovery", nodeID)
			}
		}
	}
	return "", fmt.Errorf("discovery does not list node %s", nodeID)
}

// redisArgv renders the command line Berth's template gives a Redis node
// with port and dir: the arguments Berth runs. (redis-server rewrites its
// process title, so /proc/PID/cmdline cannot tell them.)
func redisArgv(cat *catalog.Catalog, port int, dir string) ([]string, error) {
	tmpl, err := cat.Lookup(catalog.Request{Driver: local.DriverName, Store: "redis", Version: "7.0", Attributes: map[string]any{}})
	if err != nil {
		return nil, err
	}
	body, _ := tmpl.Split("hooks")
	var spec local.NodeSpec
	err = body.Render(catalog.Context{
		ClusterID: "bench-direct", NodeID: "direct", NodeGroup: "default", NodeClass: "default",
		Store: "redis", Version: "7.0", Attributes: map[string]any{},
		Ports: map[string]int{"store": port, "agent": port + 1},
		Dirs:  map[string]string{"node": dir, "data": dir, "logs": dir},
	}, &spec)
	if err != nil {
		return nil, err
	}
	if len(spec.Processes) != 1 {
		return nil, fmt.Errorf("the Redis template has %d processes; the baseline starts one", len(spec.Processes))
	}
	return spec.Processes[0].Argv, nil
}

// startToPong starts redis-server as Berth does (the argv its template
// renders, in its own session, output to a log file) and waits for its first
// PONG. The port and the argv are ready before the clock starts.
func startToPong(ctx context.Context, cat *catalog.Catalog, dir string) (*exec.Cmd, []string, time.Duration, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, 0, err
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, 0, err
	}
	argv, err := redisArgv(cat, port, dir)
	if err != nil {
		return nil, nil, 0, err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, nil, 0, err
	}
	defer logFile.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, nil, 0, err
	}
	if err := waitPong(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err != nil {
		return cmd, argv, 0, fmt.Errorf("redis-server started directly: %w", err)
	}
	return cmd, argv, time.Since(start), nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitPong sends PING until the answer is PONG, trying again every 0.5 ms:
// finer than a Redis start, so the figures are the start, not the polling.
func waitPong(ctx context.Context, addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		reply, err := ping(addr)
		if reply == "+PONG" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG from %s after 30s: %q, %v", addr, reply, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func ping(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, "PING\r\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

func postJSON(ctx context.Context, client *http.Client, url, body string, status int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != status {
		return fmt.Errorf("POST %s: status %d, want %d: %s", url, resp.StatusCode, status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func deprovision(ctx context.Context, client *http.Client, base, cluster, nodeID string) error {
	return postJSON(ctx, client, base+"/deprovision", fmt.Sprintf(`{"cluster_id": %q, "node_id": %q}`, cluster, nodeID), http.StatusNoContent, nil)
}

// berthProcesses lists the live processes a Berth with dataDir started: the
// local driver marks each with BERTH_DATA_DIR in its environment.
func berthProcesses(dataDir string) []int {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil
	}
	want := []byte("BERTH_DATA_DIR=" + abs)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !processExists(pid) {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// processExists reports whether pid is a live process (not a zombie).
func processExists(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	end := bytes.LastIndexByte(data, ')')
	return end >= 0 && len(data) > end+2 && data[end+2] != 'Z' && data[end+2] != 'X'
}

func benchProvision(ctx context.Context, cfg config) (*report, error) {
	f, err := measureProvision(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return provisionReport(cfg, f), nil
}

func provisionReport(cfg config, f *provisionFigures) *report {
	rep := &report{
		Title: "Provisioning overhead",
		Params: fmt.Sprintf("%d Redis nodes provisioned one at a time through POST /provision (server.New + the local driver, in process), "+
			"each timed from the request to the first PONG on the store address that GET /discover gives; "+
			"baseline: redis-server started directly with the same arguments (rendered from the same template, with another port and directory), "+
			"in its own session with its output to a file, timed from exec to the first PONG. The two alternate which goes first.",
			len(f.berth)),
	}
	rep.add(comparison{Figure: "request to PONG, median", Unit: "ms", Berth: ms(f.berth.percentile(50)), Baseline: ms(f.baseline.percentile(50)), GoalRatio: 1.3})
	rep.add(comparison{Figure: "request to PONG, p90", Unit: "ms", Berth: ms(f.berth.percentile(90)), Baseline: ms(f.baseline.percentile(90))})
	rep.add(comparison{Figure: "request to PONG, max", Unit: "ms", Berth: ms(f.berth.percentile(100)), Baseline: ms(f.baseline.percentile(100))})
	rep.note("Berth's provision answered (request to 200, before PONG): median %.1f ms", ms(f.answered.percentile(50)))
	rep.note("redis-server argv: `%s`", strings.Join(f.argv, " "))
	rep.note("afterwards every node was deprovisioned (median %.0f ms each) and every direct redis-server stopped; processes left behind: %d",
		ms(f.deprovision.percentile(50)), f.left)
	return rep
}
