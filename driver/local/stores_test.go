package local

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/internal/testenv"
	"github.com/berthio/berth/platform"
)

// storeRequest is a provision request for one group of a store's cluster.
func storeRequest(cluster, store, version string, groups map[string]int, group string, count int) platform.ProvisionRequest {
	nodes := map[string]platform.NodeGroup{}
	for name, desired := range groups {
		nodes[name] = platform.NodeGroup{DesiredCount: desired, NodeClass: "small", Attributes: map[string]any{}}
	}
	return platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			ClusterID: cluster, Store: store, StoreVersion: version, Attributes: map[string]any{}, Nodes: nodes,
		},
		Provision: platform.ProvisionSpec{NodeGroupID: group, Count: count},
	}
}

func provisionOK(t *testing.T, d *Driver, req platform.ProvisionRequest) []*nodeRecord {
	t.Helper()
	resp, err := d.Provision(context.Background(), req)
	if err != nil {
		t.Fatalf("provision %s/%s: %v", req.Cluster.ClusterID, req.Provision.NodeGroupID, err)
	}
	var recs []*nodeRecord
	for _, id := range resp.NodeIDs {
		recs = append(recs, nodeRecordOf(t, d, req.Cluster.ClusterID, id))
	}
	return recs
}

// eventually retries check until it passes or timeout ends, then fails
// with its last error.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func TestEtcdCluster(t *testing.T) {
	testenv.RequireBinary(t, "etcd", "apt-get install -y etcd-server etcd-client")
	testenv.RequireBinary(t, "etcdctl", "apt-get install -y etcd-client")
	d := newTestDriver(t, t.TempDir())
	cleanupNodes(t, d)
	req := storeRequest("etcd1", "etcd", "3.4", map[string]int{"members": 3}, "members", 3)
	members := provisionOK(t, d, req)
	if len(members) != 3 {
		t.Fatalf("provisioned %d members, want 3", len(members))
	}
	endpoint := func(rec *nodeRecord) string { return fmt.Sprintf("http://127.0.0.1:%d", rec.Ports["client"]) }

	eventually(t, 30*time.Second, func() error {
		out, err := run("etcdctl", "--endpoints="+endpoint(members[0]), "endpoint", "health", "--cluster")
		if err == nil && strings.Count(out, "is healthy") != 3 {
			err = fmt.Errorf("endpoint health --cluster: %s", out)
		}
		return err
	})
	out, err := run("etcdctl", "--endpoints="+endpoint(members[1]), "member", "list")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 2 {
		t.Fatalf("member list: %v\n%s", err, out)
	}
	// A leader is elected: a write through one member is read through another.
	if _, err := run("etcdctl", "--endpoints="+endpoint(members[0]), "put", "berth", "yes"); err != nil {
		t.Fatal(err)
	}
	if out, err := run("etcdctl", "--endpoints="+endpoint(members[2]), "get", "berth", "--print-value-only"); err != nil || strings.TrimSpace(out) != "yes" {
		t.Fatalf("get through another member: %q, %v", out, err)
	}

	// A fourth provision into the full group creates nothing.
	if resp, err := d.Provision(context.Background(), storeRequest("etcd1", "etcd", "3.4", map[string]int{"members": 3}, "members", 1)); err != nil || resp.Count != 0 {
		t.Fatalf("fourth provision = %+v, %v; want count 0", resp, err)
	}

	// Deprovision one member: it leaves the etcd cluster first.
	if err := d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "etcd1", NodeID: members[0].NodeID}); err != nil {
		t.Fatal(err)
	}
	rest := endpoint(members[1]) + "," + endpoint(members[2])
	eventually(t, 20*time.Second, func() error {
		out, err := run("etcdctl", "--endpoints="+rest, "member", "list")
		if err == nil && (strings.Count(strings.TrimSpace(out), "\n") != 1 || strings.Contains(out, members[0].NodeID)) {
			err = fmt.Errorf("member list after removal:\n%s", out)
		}
		return err
	})
	eventually(t, 20*time.Second, func() error {
		out, err := run("etcdctl", "--endpoints="+endpoint(members[1]), "endpoint", "health", "--cluster")
		if err == nil && strings.Count(out, "is healthy") != 2 {
			err = fmt.Errorf("endpoint health --cluster after removal: %s", out)
		}
		return err
	})

	// A new member joins the running cluster.
	joined := provisionOK(t, d, req)
	if len(joined) != 1 {
		t.Fatalf("provision after a removal created %d members, want 1", len(joined))
	}
	eventually(t, 30*time.Second, func() error {
		out, err := run("etcdctl", "--endpoints="+endpoint(joined[0]), "endpoint", "health", "--cluster")
		if err == nil && strings.Count(out, "is healthy") != 3 {
			err = fmt.Errorf("endpoint health --cluster after a join: %s", out)
		}
		return err
	})
}

// chmodTempDirs lets other accounts (postgres) pass through the test's
// temporary directories, as they must through a real data directory.
func chmodTempDirs(t *testing.T, dir string) {
	t.Helper()
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPostgresPrimaryAndReplica(t *testing.T) {
	testenv.RequireBinary(t, "/usr/lib/postgresql/15/bin/postgres", "apt-get install -y postgresql")
	psql := testenv.RequireBinary(t, "psql", "apt-get install -y postgresql-client")
	if os.Geteuid() != 0 {
		t.Skip("PostgreSQL nodes run as the postgres account, which needs berth to run as root")
	}
	dataDir := t.TempDir()
	chmodTempDirs(t, dataDir)
	d := newTestDriver(t, dataDir)
	cleanupNodes(t, d)
	groups := map[string]int{"primary": 1, "replica": 1}
	primary := provisionOK(t, d, storeRequest("pg", "postgresql", "15", groups, "primary", 1))[0]
	replica := provisionOK(t, d, storeRequest("pg", "postgresql", "15", groups, "replica", 1))[0]

	sql := func(rec *nodeRecord, query string) (string, error) {
		return run(psql, "-h", "127.0.0.1", "-p", fmt.Sprint(rec.Ports["store"]), "-U", "postgres", "-At", "-c", query)
	}
	eventually(t, 30*time.Second, func() error { _, err := sql(primary, "SELECT 1"); return err })
	if _, err := sql(primary, "CREATE TABLE berth (v text); INSERT INTO berth VALUES ('replicated')"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		out, err := sql(replica, "SELECT v FROM berth")
		if err == nil && strings.TrimSpace(out) != "replicated" {
			err = fmt.Errorf("replica answers %q", out)
		}
		return err
	})
	if out, err := sql(replica, "SELECT pg_is_in_recovery()"); err != nil || strings.TrimSpace(out) != "t" {
		t.Fatalf("replica is not in recovery: %q, %v", out, err)
	}
	// The processes run as postgres and the node's files belong to it.
	account, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []*nodeRecord{primary, replica} {
		info, err := os.Stat(filepath.Join(dataDir, "nodes", "pg", rec.NodeID, "data", "pgdata"))
		if err != nil {
			t.Fatal(err)
		}
		if owner := fmt.Sprint(info.Sys().(*syscall.Stat_t).Uid); owner != account.Uid {
			t.Errorf("pgdata of %s belongs to uid %s, want postgres (%s)", rec.NodeID, owner, account.Uid)
		}
		now := nodeRecordOf(t, d, "pg", rec.NodeID)
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", now.Processes[0].PID))
		if !strings.Contains(string(status), "\nUid:\t"+account.Uid+"\t") {
			t.Errorf("postgres of %s (%+v) does not run as postgres:\n%s", rec.NodeID, now.Processes, status)
		}
	}
	for _, rec := range []*nodeRecord{replica, primary} {
		if err := d.Deprovision(context.Background(), platform.DeprovisionRequest{ClusterID: "pg", NodeID: rec.NodeID}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRedisPrimaryAndReplica(t *testing.T) {
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	d := newTestDriver(t, t.TempDir())
	cleanupNodes(t, d)
	groups := map[string]int{"primary": 1, "replica": 2}
	primary := provisionOK(t, d, storeRequest("rr", "redis", "7.0", groups, "primary", 1))[0]
	replicas := provisionOK(t, d, storeRequest("rr", "redis", "7.0", groups, "replica", 2))
	ping(t, primary.Ports["store"])
	if reply := redisCommand(t, primary.Ports["store"], "SET", "berth", "replicated"); reply != "+OK" {
		t.Fatalf("SET on the primary: %q", reply)
	}
	for _, r := range replicas {
		eventually(t, 20*time.Second, func() error {
			if reply := redisCommand(t, r.Ports["store"], "GET", "berth"); reply != "replicated" {
				return fmt.Errorf("replica %s answers %q", r.NodeID, reply)
			}
			return nil
		})
	}
	// A replica without a primary is refused with a clear message.
	_, err := d.Provision(context.Background(), storeRequest("orphan", "redis", "7.0", groups, "replica", 1))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), `no node in group "primary"`) {
		t.Fatalf("replica without a primary: %v", err)
	}
}

// redisCommand sends one command and returns the reply: a simple string or
// error as sent ("+OK"), a bulk string's content.
func redisCommand(t *testing.T, port int, args ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return err.Error()
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return err.Error()
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return line
	}
	if line == "$-1" {
		return "(nil)"
	}
	value, err := r.ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return strings.TrimRight(value, "\r\n")
}
