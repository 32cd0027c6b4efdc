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
)

// processRecord identifies a running process across Berth restarts: a PID
// alone could be reused by a stranger, the PID with its start time cannot.
type processRecord struct {
	Name      string `json:"name"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks after boot, from /proc/PID/stat
}

// startProcess starts one process of a node in its own session, so that it
// outlives Berth, writing its stdout and stderr straight to its log file (no
// pipe through Berth, so a Berth restart never blocks or kills it).
func startProcess(spec ProcessSpec, dirs nodeDirs, onExit func(processRecord, error)) (processRecord, error) {
	logPath := filepath.Join(dirs.Logs, spec.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return processRecord{}, fmt.Errorf("opening log file: %w", err)
	}
	defer logFile.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = dirs.Data
	}
	cmd.Env = processEnv(spec.Env, dirs)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return processRecord{}, fmt.Errorf("starting %s: %w", spec.Argv[0], err)
	}
	rec := processRecord{Name: spec.Name, PID: cmd.Process.Pid}
	rec.StartTime, err = processStartTime(rec.PID)
	// While Berth is the parent it reaps the child, or it would linger as a
	// zombie that looks alive.
	go func() {
		waitErr := cmd.Wait()
		if onExit != nil {
			onExit(rec, waitErr)
		}
	}()
	if err != nil {
		// The process exited before its start time could be read.
		return rec, fmt.Errorf("%s exited at once; see %s", spec.Argv[0], logPath)
	}
	return rec, nil
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

// processStartTime reads a process's start time from /proc/PID/stat.
func processStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold anything;
	// the fields after the last ')' start with field 3, the state.
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	if state := string(fields[0]); state == "Z" || state == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
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

// stopProcesses sends SIGTERM to every process, waits up to grace for them to
// exit, then sends SIGKILL to what remains and waits for it to go.
func stopProcesses(ctx context.Context, procs []processRecord, grace time.Duration) error {
	var errs []error
	for _, p := range procs {
		errs = append(errs, p.signalGroup(syscall.SIGTERM))
	}
	if waitGone(ctx, procs, grace) {
		return errors.Join(errs...)
	}
	for _, p := range procs {
		errs = append(errs, p.signalGroup(syscall.SIGKILL))
	}
	if !waitGone(context.WithoutCancel(ctx), procs, 10*time.Second) {
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
