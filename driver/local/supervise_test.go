package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

// testCatalog layers a catalogue of one store, "test", whose template is
// body, over the built-in one.
func testCatalog(t *testing.T, body string) *catalog.Catalog {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "local", "stores.yaml"), "- store: test\n  versions: test/versions.yaml\n")
	writeFile(t, filepath.Join(dir, "local", "test", "versions.yaml"), "- version: '*'\n  template: test/t.yaml\n")
	writeFile(t, filepath.Join(dir, "local", "test", "t.yaml"), body)
	cat, err := catalog.New(catalog.Layer{Name: "test", FS: os.DirFS(dir)}, catalog.Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func openDriver(t *testing.T, dataDir string, cat *catalog.Catalog, opts ...func(*Options)) *Driver {
	t.Helper()
	o := Options{DataDir: dataDir, Catalog: cat, GracePeriod: 2 * time.Second, Ports: testPorts}
	for _, f := range opts {
		f(&o)
	}
	d, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func testRequest(cluster string) platform.ProvisionRequest {
	return storeRequest(cluster, "test", "1.0", map[string]int{"g": 5}, "g", 1)
}

const sleeper = `
ports: [agent]
agent_address: "http://127.0.0.1:{{ .Ports.agent }}"
restart_policy: %s
processes:
  - name: main
    argv: [sleep, "%d"]
`

// uniqueSleep returns a sleep duration no other test uses, so that its
// processes can be found by their command line.
func uniqueSleep() int { return 3000 + int(time.Now().UnixNano()%5000) }

func waitProcess(t *testing.T, d *Driver, cluster, node string, check func(processRecord) error) processRecord {
	t.Helper()
	var last processRecord
	eventually(t, 10*time.Second, func() error {
		rec := nodeRecordOf(t, d, cluster, node)
		if rec == nil || len(rec.Processes) == 0 {
			return fmt.Errorf("node %s has no process record", node)
		}
		last = rec.Processes[0]
		return check(last)
	})
	return last
}

func TestCrashedProcessIsRestarted(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	d := newTestDriver(t, t.TempDir())
	cleanupNodes(t, d)
	rec := provisionOK(t, d, redisRequest("crash", "default", 1, 1))[0]
	ping(t, rec.Ports["store"])
	old := rec.Processes[0]
	if err := syscall.Kill(old.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restarted := waitProcess(t, d, "crash", rec.NodeID, func(p processRecord) error {
		if p.PID == old.PID || p.State != stateRunning || !p.alive() {
			return fmt.Errorf("process not restarted yet: %+v", p)
		}
		return nil
	})
	if restarted.Restarts != 1 {
		t.Errorf("restarted process record %+v, want 1 restart", restarted)
	}
	disc, _ := d.Discover(context.Background())
	if len(disc.Clusters) != 1 || len(disc.Clusters[0].Nodes) != 1 {
		t.Fatalf("discovery after the restart: %+v", disc)
	}
	ping(t, rec.Ports["store"])
}

func TestDiscoveryListsANodeWhileItRestarts(t *testing.T) {
	sleep := uniqueSleep()
	d := openDriver(t, t.TempDir(), testCatalog(t, fmt.Sprintf(sleeper, "always", sleep)))
	cleanupNodes(t, d)
	rec := provisionOK(t, d, testRequest("restarting"))[0]
	pid := rec.Processes[0].PID
	syscall.Kill(pid, syscall.SIGKILL)
	waitProcess(t, d, "restarting", rec.NodeID, func(p processRecord) error {
		if p.State != stateRestarting {
			return fmt.Errorf("state %s, want restarting", p.State)
		}
		return nil
	})
	if disc, _ := d.Discover(context.Background()); len(disc.Clusters) != 1 || disc.Clusters[0].Nodes[0].NodeID != rec.NodeID {
		t.Fatalf("a restarting node is not discovered: %+v", disc)
	}
	if status, _ := d.Nodes(context.Background()); len(status) != 1 || status[0].State != stateRestarting {
		t.Fatalf("node status during the backoff: %+v", status)
	}
	p := waitProcess(t, d, "restarting", rec.NodeID, func(p processRecord) error {
		if p.State != stateRunning || p.PID == pid {
			return fmt.Errorf("not restarted: %+v", p)
		}
		return nil
	})
	if p.Restarts != 1 {
		t.Errorf("after one restart: %+v", p)
	}
}

func TestRestartPolicies(t *testing.T) {
	for _, tt := range []struct {
		policy, argv string
		restarts     bool
	}{
		{"never", `[sleep, "0.1"]`, false},
		{"never", `[false]`, false},
		{"on-failure", `[sleep, "0.1"]`, false},
		{"on-failure", `[false]`, true},
		{"always", `[sleep, "0.1"]`, true},
	} {
		t.Run(tt.policy+" "+tt.argv, func(t *testing.T) {
			tmpl := fmt.Sprintf("ports: [agent]\nagent_address: x\nrestart_policy: %s\nprocesses:\n  - name: main\n    argv: %s\n", tt.policy, tt.argv)
			d := openDriver(t, t.TempDir(), testCatalog(t, tmpl))
			cleanupNodes(t, d)
			rec := provisionOK(t, d, testRequest("policy"))[0]
			if tt.restarts {
				waitProcess(t, d, "policy", rec.NodeID, func(p processRecord) error {
					if p.Restarts < 1 {
						return fmt.Errorf("not restarted: %+v", p)
					}
					return nil
				})
				return
			}
			p := waitProcess(t, d, "policy", rec.NodeID, func(p processRecord) error {
				if p.State != stateExited {
					return fmt.Errorf("state %s, want exited", p.State)
				}
				return nil
			})
			time.Sleep(1500 * time.Millisecond) // past the first backoff
			if now := nodeRecordOf(t, d, "policy", rec.NodeID); now.Processes[0].Restarts != 0 || now.State != stateExited || p.LastExit == "" {
				t.Fatalf("policy %s restarted the process: %+v", tt.policy, now)
			}
		})
	}
}

func TestResourceLimits(t *testing.T) {
	tmpl := fmt.Sprintf(sleeper, "always", uniqueSleep()) + "    limits: {open_files: 123, cpu_seconds: 77, address_space: 1073741824}\n"
	d := openDriver(t, t.TempDir(), testCatalog(t, tmpl))
	cleanupNodes(t, d)
	rec := provisionOK(t, d, testRequest("limits"))[0]
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", rec.Processes[0].PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Max open files            123                  123",
		"Max cpu time              77                   77",
		"Max address space         1073741824           1073741824",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("limits lack %q:\n%s", want, data)
		}
	}
}

func TestLogsAreCapped(t *testing.T) {
	const tmpl = `
ports: [agent]
agent_address: x
processes:
  - name: chatty
    argv: [sh, -c, 'i=0; while [ $i -lt 20000 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done; exec sleep 300']
`
	dataDir := t.TempDir()
	d := openDriver(t, dataDir, testCatalog(t, tmpl), func(o *Options) {
		o.LogMaxBytes = 64 << 10
		o.LogCheckInterval = 50 * time.Millisecond
	})
	cleanupNodes(t, d)
	rec := provisionOK(t, d, testRequest("logs"))[0]
	logPath := filepath.Join(dataDir, "nodes", "logs", rec.NodeID, "logs", "chatty.log")
	eventually(t, 10*time.Second, func() error {
		rotated, err := os.Stat(logPath + ".1")
		if err != nil {
			return err
		}
		current, err := os.Stat(logPath)
		if err != nil {
			return err
		}
		if current.Size() > 64<<10 || rotated.Size() == 0 {
			return fmt.Errorf("log %d bytes, rotated %d bytes", current.Size(), rotated.Size())
		}
		return nil
	})
	if matches, _ := filepath.Glob(logPath + ".*"); len(matches) != 1 {
		t.Errorf("rotated files %v, want exactly one", matches)
	}
}

// crash closes a driver as a SIGKILL would leave things: processes running,
// state on disk, nothing cleaned up.
func crash(t *testing.T, d *Driver) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// editRecord changes a node's record directly in a closed driver's state.
func editRecord(t *testing.T, dataDir, cluster, node string, change func(tx *bolt.Tx, rec *nodeRecord) error) {
	t.Helper()
	db, err := openState(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		rec, err := getNode(tx, cluster, node)
		if err != nil || rec == nil {
			return fmt.Errorf("no record: %v", err)
		}
		return change(tx, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestReopenAdoptsRunningProcesses(t *testing.T) {
	dataDir := t.TempDir()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", uniqueSleep()))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("adopt"))[0]
	crash(t, d)

	d2 := openDriver(t, dataDir, cat)
	cleanupNodes(t, d2)
	now := nodeRecordOf(t, d2, "adopt", rec.NodeID)
	if now.Processes[0].PID != rec.Processes[0].PID || now.Processes[0].Restarts != 0 {
		t.Fatalf("after reopening the process is %+v, want the same PID %d", now.Processes[0], rec.Processes[0].PID)
	}
	// Berth is no longer the parent, yet it notices the exit and restarts.
	syscall.Kill(rec.Processes[0].PID, syscall.SIGKILL)
	waitProcess(t, d2, "adopt", rec.NodeID, func(p processRecord) error {
		if p.PID == rec.Processes[0].PID || p.State != stateRunning || p.Restarts != 1 {
			return fmt.Errorf("adopted process not restarted: %+v", p)
		}
		return nil
	})
}

func TestReopenRestartsProcessesThatAreGone(t *testing.T) {
	dataDir := t.TempDir()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", uniqueSleep()))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("gone"))[0]
	crash(t, d)
	syscall.Kill(rec.Processes[0].PID, syscall.SIGKILL)
	waitGone(context.Background(), rec.Processes, 5*time.Second)

	d2 := openDriver(t, dataDir, cat)
	cleanupNodes(t, d2)
	p := nodeRecordOf(t, d2, "gone", rec.NodeID).Processes[0]
	if p.PID == rec.Processes[0].PID || !p.alive() || p.Restarts != 1 {
		t.Fatalf("process after reopening: %+v", p)
	}
}

func TestReopenAdoptsUnrecordedProcess(t *testing.T) {
	dataDir := t.TempDir()
	sleep := uniqueSleep()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", sleep))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("unrecorded"))[0]
	crash(t, d)
	// As if Berth died after starting the process, before recording it.
	editRecord(t, dataDir, "unrecorded", rec.NodeID, func(tx *bolt.Tx, r *nodeRecord) error {
		r.Processes = []processRecord{{Name: "main", State: stateRunning}}
		return putNode(tx, r)
	})
	d2 := openDriver(t, dataDir, cat)
	cleanupNodes(t, d2)
	p := nodeRecordOf(t, d2, "unrecorded", rec.NodeID).Processes[0]
	if p.PID != rec.Processes[0].PID || p.StartTime != rec.Processes[0].StartTime {
		t.Fatalf("process after reopening: %+v, want the running one, pid %d", p, rec.Processes[0].PID)
	}
	if pids := processesWithArgv("sleep", fmt.Sprint(sleep)); len(pids) != 1 {
		t.Fatalf("processes %v run; want exactly one", pids)
	}
}

func TestReopenRollsBackUnansweredProvisions(t *testing.T) {
	dataDir := t.TempDir()
	sleep := uniqueSleep()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", sleep))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("unanswered"))[0]
	crash(t, d)
	editRecord(t, dataDir, "unanswered", rec.NodeID, func(tx *bolt.Tx, r *nodeRecord) error {
		r.State = stateStarting
		r.Processes = nil
		return putNode(tx, r)
	})
	d2 := openDriver(t, dataDir, cat)
	if got := nodeRecordOf(t, d2, "unanswered", rec.NodeID); got != nil {
		t.Fatalf("an unanswered node is still recorded: %+v", got)
	}
	if pids := processesWithArgv("sleep", fmt.Sprint(sleep)); len(pids) != 0 {
		t.Fatalf("processes %v of an unanswered node still run", pids)
	}
	if n := portOwnerCount(t, d2); n != 0 {
		t.Fatalf("%d ports still allocated", n)
	}
}

func TestReopenStopsProcessesWithoutRecord(t *testing.T) {
	dataDir := t.TempDir()
	sleep := uniqueSleep()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", sleep))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("stray"))[0]
	other := provisionOK(t, d, testRequest("kept"))[0]
	crash(t, d)
	editRecord(t, dataDir, "stray", rec.NodeID, func(tx *bolt.Tx, r *nodeRecord) error { return deleteNode(tx, r) })
	d2 := openDriver(t, dataDir, cat)
	cleanupNodes(t, d2)
	if rec.Processes[0].alive() {
		t.Fatal("a process no record claims still runs")
	}
	if !other.Processes[0].alive() {
		t.Fatal("the recorded node's process was stopped")
	}
}

func TestReopenFinishesInterruptedDeprovisions(t *testing.T) {
	dataDir := t.TempDir()
	cat := testCatalog(t, fmt.Sprintf(sleeper, "always", uniqueSleep()))
	d := openDriver(t, dataDir, cat)
	rec := provisionOK(t, d, testRequest("stopping"))[0]
	crash(t, d)
	editRecord(t, dataDir, "stopping", rec.NodeID, func(tx *bolt.Tx, r *nodeRecord) error {
		r.State = stateStopping
		return putNode(tx, r)
	})
	d2 := openDriver(t, dataDir, cat)
	if got := nodeRecordOf(t, d2, "stopping", rec.NodeID); got != nil || rec.Processes[0].alive() {
		t.Fatalf("interrupted deprovision not finished: record %+v, alive %v", got, rec.Processes[0].alive())
	}
}

func TestStepsCaptureAndFail(t *testing.T) {
	const tmpl = `
ports: [agent]
agent_address: x
init:
  - name: greet
    argv: [sh, -c, 'echo "hello from init" > greeting']
processes:
  - name: main
    argv: [sleep, "300"]
hooks:
  post_start:
    - name: read
      argv: [cat, greeting]
      capture: word
      match: 'hello (\w+)'
    - name: use
      argv: [sh, -c, 'test "$0" = from', "{{ .Captured.word }}"]
  pre_stop:
    - name: refuse
      when: '{{ eq (.Attr "refuse" "no") "yes" }}'
      argv: [sh, -c, 'echo cannot stop >&2; exit 3']
`
	d := openDriver(t, t.TempDir(), testCatalog(t, tmpl))
	cleanupNodes(t, d)
	rec := provisionOK(t, d, testRequest("steps"))[0]

	refusing := testRequest("refusing")
	refusing.Cluster.Attributes = map[string]any{"refuse": "yes"}
	r2 := provisionOK(t, d, refusing)[0]
	err := d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "refusing", NodeID: r2.NodeID})
	if err == nil || !strings.Contains(err.Error(), "cannot stop") || !strings.Contains(err.Error(), "pre_stop") {
		t.Fatalf("deprovision with a failing pre_stop hook: %v", err)
	}
	if nodeRecordOf(t, d, "refusing", r2.NodeID) == nil || !r2.Processes[0].alive() {
		t.Fatal("a node whose pre_stop hook failed was removed anyway")
	}
	if err := d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "steps", NodeID: rec.NodeID}); err != nil {
		t.Fatal(err)
	}

	const failing = `
ports: [agent]
agent_address: x
init:
  - argv: [sh, -c, 'echo init went wrong; exit 1']
processes:
  - name: main
    argv: [sleep, "300"]
`
	d3 := openDriver(t, t.TempDir(), testCatalog(t, failing))
	_, err = d3.Provision(context.Background(), testRequest("failing"))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), "init went wrong") {
		t.Fatalf("provision with a failing init step: %v", err)
	}
	if disc, _ := d3.Discover(context.Background()); len(disc.Clusters) != 0 {
		t.Fatalf("a failed init left %+v", disc)
	}
}

// TestOtherAccountNeedsRoot checks that a Berth that is neither root nor the
// account a template names refuses the provision with 422 and creates
// nothing.
func TestOtherAccountNeedsRoot(t *testing.T) {
	if _, err := lookupCredential("nobody", ""); err != nil {
		t.Skipf("no account nobody here: %v", err)
	}
	geteuid = func() int { return 54321 }
	defer func() { geteuid = os.Geteuid }()
	tmpl := fmt.Sprintf(sleeper, "always", uniqueSleep()) + "    user: nobody\n"
	d := openDriver(t, t.TempDir(), testCatalog(t, tmpl))
	_, err := d.Provision(context.Background(), testRequest("account"))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), `runs as user "nobody"`) || !strings.Contains(err.Error(), "not root") {
		t.Fatalf("provision as another account without root: %v", err)
	}
	if disc, _ := d.Discover(context.Background()); len(disc.Clusters) != 0 {
		t.Fatalf("a refused provision left %+v", disc)
	}
}

// TestReopenFindsUnrecordedRedis is TestReopenAdoptsUnrecordedProcess and
// TestReopenStopsProcessesWithoutRecord with Redis, which writes over its
// environment when it retitles itself: Berth must know its processes by
// their logs too.
func TestReopenFindsUnrecordedRedis(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	dataDir := t.TempDir()
	d := newTestDriver(t, dataDir)
	unrecorded := provisionOK(t, d, redisRequest("unrecorded", "default", 1, 1))[0]
	stray := provisionOK(t, d, redisRequest("stray", "default", 1, 1))[0]
	ping(t, unrecorded.Ports["store"])
	ping(t, stray.Ports["store"])
	crash(t, d)
	editRecord(t, dataDir, "unrecorded", unrecorded.NodeID, func(tx *bolt.Tx, r *nodeRecord) error {
		r.Processes = []processRecord{{Name: "redis", State: stateRunning}}
		return putNode(tx, r)
	})
	editRecord(t, dataDir, "stray", stray.NodeID, func(tx *bolt.Tx, r *nodeRecord) error { return deleteNode(tx, r) })

	d2 := newTestDriver(t, dataDir)
	cleanupNodes(t, d2)
	p := nodeRecordOf(t, d2, "unrecorded", unrecorded.NodeID).Processes[0]
	if p.PID != unrecorded.Processes[0].PID {
		t.Errorf("unrecorded redis: record says pid %d, want the running %d", p.PID, unrecorded.Processes[0].PID)
	}
	if !waitGone(context.Background(), stray.Processes, 10*time.Second) {
		t.Errorf("redis %d without a record still runs", stray.Processes[0].PID)
	}
}
