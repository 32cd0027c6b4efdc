package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment variables that mark a process as one Berth started, so that a
// restarted Berth finds processes it started but never recorded.
const (
	envDataDir = "BERTH_DATA_DIR" // the data directory of the Berth that started it
	envProcess = "BERTH_PROCESS"  // cluster/node/process
)

// processRecord identifies a running process across Berth restarts: a PID
// alone could be reused by a stranger, the PID with its start time cannot.
type processRecord struct {
	Name      string    `json:"name"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_time"` // clock ticks after boot, from /proc/PID/stat
	State     string    `json:"state"`
	Restarts  int       `json:"restarts"`
	LastExit  string    `json:"last_exit,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
}

// running is a process Berth watches: one it started (cmd set, so its exit
// status is known) or one it adopted after a restart (cmd nil).
type running struct {
	rec   processRecord
	cmd   *exec.Cmd
	pidfd *os.File
}

// exitStatus is how a process ended, as far as Berth can know.
type exitStatus struct {
	known  bool // false for adopted processes: only the parent learns the status
	code   int
	signal string
}

func (e exitStatus) String() string {
	switch {
	case !e.known:
		return "exited (status unknown: started by an earlier berth)"
	case e.signal != "":
		return "killed by signal " + e.signal
	}
	return "exit status " + strconv.Itoa(e.code)
}

func (e exitStatus) failed() bool { return !e.known || e.code != 0 || e.signal != "" }

// startProcess starts one process of a node in its own session, so that it
// outlives Berth, writing its stdout and stderr straight to its log file (no
// pipe through Berth, so a Berth restart never blocks or kills it).
func (d *Driver) startProcess(rec *nodeRecord, spec ProcessSpec) (*running, error) {
	dirs := d.dirs(rec)
	cred, err := lookupCredential(spec.User, spec.Group)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dirs.Logs, spec.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("opening log file: %w", err)
	}
	defer logFile.Close() // the child has its own copy of the descriptor
	if err := cred.chownTree(logPath); err != nil {
		return nil, err
	}

	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = dirs.Data
	}
	cmd.Env = append(processEnv(spec.Env, dirs),
		envDataDir+"="+d.opts.DataDir,
		envProcess+"="+rec.ClusterID+"/"+rec.NodeID+"/"+spec.Name)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = cred.sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Argv[0], err)
	}
	r := &running{cmd: cmd, rec: processRecord{Name: spec.Name, PID: cmd.Process.Pid, State: stateRunning, StartedAt: time.Now().UTC()}}
	// A process that already exited is a zombie until it is reaped: its
	// start time can still be read and its pidfd opened, and its exit is
	// then the supervisor's to handle, like any other.
	st, err := readProcStat(r.rec.PID)
	r.rec.StartTime = st.startTime
	if err == nil {
		r.pidfd, err = openPidfd(r.rec.PID)
	}
	if err == nil {
		err = applyLimits(r.rec.PID, spec.Limits)
	}
	if err != nil {
		_ = syscall.Kill(-r.rec.PID, syscall.SIGKILL)
		_ = cmd.Wait()
		if r.pidfd != nil {
			r.pidfd.Close()
		}
		return nil, fmt.Errorf("%s did not stay up (%v); see %s", spec.Argv[0], err, logPath)
	}
	return r, nil
}

// adopt watches a live process an earlier Berth started.
func adopt(rec processRecord) (*running, error) {
	fd, err := openPidfd(rec.PID)
	if err != nil {
		return nil, err
	}
	// The PID could have been reused between the check and the open: check
	// again now that the pidfd pins the process.
	if !rec.alive() {
		fd.Close()
		return nil, fmt.Errorf("process %d is gone", rec.PID)
	}
	return &running{rec: rec, pidfd: fd}, nil
}

// openPidfd opens a non-blocking pidfd, which Go's poller can wait on: a
// watched process costs a file descriptor, not a thread.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid)), nil
}

// wait blocks until the process exits and returns how it ended.
func (r *running) wait() exitStatus {
	waitPidfd(r.pidfd)
	r.pidfd.Close()
	if r.cmd == nil {
		return exitStatus{}
	}
	err := r.cmd.Wait()
	var exitErr *exec.ExitError
	if err == nil {
		return exitStatus{known: true}
	} else if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitStatus{known: true, signal: unix.SignalName(ws.Signal())}
		}
		return exitStatus{known: true, code: exitErr.ExitCode()}
	}
	return exitStatus{}
}

// waitPidfd blocks until the pidfd's process exits: a pidfd polls readable
// then. Go's poller does the waiting where it can; a blocking poll is the
// fallback.
func waitPidfd(f *os.File) {
	exited := func(fd int, timeout int) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		return n > 0 || err != nil && !errors.Is(err, unix.EINTR)
	}
	if rc, err := f.SyscallConn(); err == nil {
		done := false
		err = rc.Read(func(fd uintptr) bool {
			done = exited(int(fd), 0)
			return done
		})
		if err == nil && done {
			return
		}
	}
	for !exited(int(f.Fd()), -1) {
	}
}

func applyLimits(pid int, l Limits) error {
	for resource, value := range map[int]number{
		unix.RLIMIT_NOFILE: l.OpenFiles, unix.RLIMIT_AS: l.AddressSpace, unix.RLIMIT_CPU: l.CPUSeconds,
	} {
		if value == 0 {
			continue
		}
		lim := unix.Rlimit{Cur: uint64(value), Max: uint64(value)}
		if err := unix.Prlimit(pid, resource, &lim, nil); err != nil {
			return fmt.Errorf("setting resource limit %d to %d: %w", resource, value, err)
		}
	}
	return nil
}

func processEnv(extra map[string]string, dirs nodeDirs) []string {
	env := []string{"HOME=" + dirs.Node}
	for _, key := range []string{"PATH", "LANG", "LC_ALL", "TZ"} {
		if v, ok := os.LookupEnv(key); ok {
			env = append(env, key+"="+v)
		}
	}
	for key, value := range extra {
		env = append(env, key+"="+value)
	}
	return env
}

// procStat is what Berth reads of /proc/PID/stat.
type procStat struct {
	state     string
	session   int
	startTime uint64
}

func readProcStat(pid int) (procStat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name, field 2, is in parentheses and may hold anything;
	// the fields after the last ')' start with field 3, the state.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	session, err := strconv.Atoi(string(fields[3]))
	if err != nil {
		return procStat{}, err
	}
	start, err := strconv.ParseUint(string(fields[19]), 10, 64)
	return procStat{state: string(fields[0]), session: session, startTime: start}, err
}

// processStartTime reads a live process's start time.
func processStartTime(pid int) (uint64, error) {
	st, err := readProcStat(pid)
	if err != nil {
		return 0, err
	}
	if st.state == "Z" || st.state == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return st.startTime, nil
}

// alive reports whether the recorded process still runs (and is the same
// process: a reused PID has another start time).
func (p processRecord) alive() bool {
	if p.PID <= 0 {
		return false
	}
	start, err := processStartTime(p.PID)
	return err == nil && start == p.StartTime
}

// signalGroup signals the process's whole session group: the store and any
// children it forked.
func (p processRecord) signalGroup(sig syscall.Signal) error {
	if !p.alive() {
		return nil
	}
	if err := syscall.Kill(-p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// stopProcesses sends each process its stop signal, waits up to grace for
// them to exit, then sends SIGKILL to what remains and waits for it to go.
func stopProcesses(ctx context.Context, procs []processRecord, stopSignals map[string]syscall.Signal, grace time.Duration) error {
	var errs []error
	for _, p := range procs {
		sig, ok := stopSignals[p.Name]
		if !ok {
			sig = syscall.SIGTERM
		}
		errs = append(errs, p.signalGroup(sig))
	}
	if waitGone(ctx, procs, grace) {
		return errors.Join(errs...)
	}
	for _, p := range procs {
		errs = append(errs, p.signalGroup(syscall.SIGKILL))
	}
	if !waitGone(ctx, procs, 10*time.Second) {
		errs = append(errs, fmt.Errorf("processes still running after SIGKILL"))
	}
	return errors.Join(errs...)
}

// waitGone polls until no process is alive or timeout passes.
func waitGone(ctx context.Context, procs []processRecord, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		running := false
		for _, p := range procs {
			running = running || p.alive()
		}
		if !running {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
