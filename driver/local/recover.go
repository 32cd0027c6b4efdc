package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"
)

// marked is a live process that carries the markers of this data directory.
type marked struct {
	key  string // cluster/node/process
	proc processRecord
}

// findMarked lists the session leaders on this machine that a Berth with
// this data directory started: processes a crash may have left unrecorded.
// A process is known by its standard output or error, which Berth opened on
// <data-dir>/nodes/<cluster>/<node>/logs/<process>.log, or else by the
// BERTH_DATA_DIR and BERTH_PROCESS variables Berth gave it (some stores,
// Redis among them, write over their environment when they retitle
// themselves, which is why the log comes first). Children of store
// processes share these but lead no session, so they are not listed.
func findMarked(dataDir string) []marked {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var found []marked
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.session != pid || st.state == "Z" {
			continue
		}
		key := markerFromLog(pid, dataDir)
		if key == "" {
			key = markerFromEnv(pid, dataDir)
		}
		if key != "" {
			name := key[strings.LastIndexByte(key, '/')+1:]
			found = append(found, marked{key: key, proc: processRecord{Name: name, PID: pid, StartTime: st.startTime}})
		}
	}
	return found
}

// markerFromLog returns cluster/node/process when the process's stdout or
// stderr is a node log of this data directory (also one whose node
// directory was deleted).
func markerFromLog(pid int, dataDir string) string {
	prefix := filepath.Join(dataDir, "nodes") + "/"
	for _, fd := range []string{"1", "2"} {
		target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd)
		if err != nil {
			continue
		}
		rest, ok := strings.CutPrefix(strings.TrimSuffix(target, " (deleted)"), prefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, "/")
		if len(parts) == 4 && parts[2] == "logs" && strings.HasSuffix(parts[3], ".log") {
			return parts[0] + "/" + parts[1] + "/" + strings.TrimSuffix(parts[3], ".log")
		}
	}
	return ""
}

func markerFromEnv(pid int, dataDir string) string {
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	wantDir := []byte(envDataDir + "=" + dataDir)
	var key string
	dirMatches := false
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.Equal(kv, wantDir) {
			dirMatches = true
		} else if v, ok := bytes.CutPrefix(kv, []byte(envProcess+"=")); ok {
			key = string(v)
		}
	}
	if !dirMatches || strings.Count(key, "/") != 2 {
		return ""
	}
	return key
}

// recoverNodes makes the state and the machine agree after Berth starts:
//   - a node recorded as starting was never answered: it is rolled back;
//   - a node recorded as stopping was being deprovisioned: that finishes;
//   - every other node's processes are adopted when they still run (by PID
//     and start time, or by their markers when the crash came before their
//     PIDs were recorded) and started again when they are gone, as their
//     restart policy says;
//   - a marked process that no record claims, or that duplicates one, is
//     stopped.
func (d *Driver) recoverNodes(ctx context.Context) error {
	byKey := map[string][]processRecord{}
	for _, m := range findMarked(d.opts.DataDir) {
		byKey[m.key] = append(byKey[m.key], m.proc)
	}
	var records []*nodeRecord
	err := d.db.View(func(tx *bolt.Tx) error {
		return forEachNode(tx, "", func(rec *nodeRecord) error {
			records = append(records, rec)
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, rec := range records {
		prefix := rec.ClusterID + "/" + rec.NodeID + "/"
		var strays []processRecord
		for key, procs := range byKey {
			if strings.HasPrefix(key, prefix) {
				strays = append(strays, procs...)
				delete(byKey, key)
			}
		}
		switch rec.State {
		case stateStarting, stateStopping:
			rec.Processes = append(rec.Processes, strays...)
			what := "rolled back an unanswered provision"
			if rec.State == stateStopping {
				what = "finished an interrupted deprovision"
			}
			if err := d.remove(ctx, rec); err != nil {
				d.logger.Error("recovering node", "cluster_id", rec.ClusterID, "node_id", rec.NodeID, "error", err)
				continue
			}
			d.logger.Info("recovered node: "+what, "cluster_id", rec.ClusterID, "node_id", rec.NodeID)
		default:
			d.reattach(rec, strays)
		}
	}
	for key, procs := range byKey {
		d.logger.Warn("stopping processes no node record claims", "process", key, "count", len(procs))
		_ = stopProcesses(ctx, procs, nil, d.opts.GracePeriod)
	}
	return nil
}

// reattach adopts or restarts each process of a node.
func (d *Driver) reattach(rec *nodeRecord, strays []processRecord) {
	n := d.supervisor(rec.ClusterID, rec.NodeID)
	recorded := map[string]processRecord{}
	for _, p := range rec.Processes {
		recorded[p.Name] = p
	}
	var extra []processRecord
	adopted := map[string]*running{}
	seen := map[int]bool{}
	for _, p := range append(recordedList(rec), strays...) {
		if seen[p.PID] || !p.alive() {
			continue // the marker scan finds recorded processes too
		}
		seen[p.PID] = true
		if _, done := adopted[p.Name]; done {
			extra = append(extra, p)
			continue
		}
		if r, err := adopt(p); err == nil {
			prev := recorded[p.Name]
			r.rec.Restarts, r.rec.State, r.rec.StartedAt, r.rec.LastExit = prev.Restarts, stateRunning, prev.StartedAt, prev.LastExit
			adopted[p.Name] = r
		}
	}
	if len(extra) > 0 {
		d.logger.Warn("stopping duplicate node processes", "cluster_id", rec.ClusterID, "node_id", rec.NodeID, "count", len(extra))
		_ = stopProcesses(context.Background(), extra, nil, d.opts.GracePeriod)
	}
	for _, spec := range rec.Spec.Processes {
		if r, ok := adopted[spec.Name]; ok {
			d.updateProcess(n, spec.Name, func(p *processRecord) { *p = r.rec })
			d.watch(n, spec, r)
			d.logger.Info("re-attached to node process", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
				"process", spec.Name, "pid", r.rec.PID)
			continue
		}
		prev := recorded[spec.Name]
		if prev.State == stateExited {
			continue // down by its restart policy: it stays down
		}
		if rec.Spec.RestartPolicy == RestartNever {
			d.updateProcess(n, spec.Name, func(p *processRecord) {
				p.State = stateExited
				p.LastExit = "exited while berth was not running"
			})
			continue
		}
		r, err := d.restart(n, spec)
		if err != nil {
			d.logger.Error("starting node process again", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
				"process", spec.Name, "error", err)
			continue
		}
		d.watch(n, spec, r)
	}
}

func recordedList(rec *nodeRecord) []processRecord {
	return append([]processRecord(nil), rec.Processes...)
}
