package local

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berthio/berth/catalog"
	"github.com/berthio/berth/platform"
)

const (
	defaultStepTimeout = 60 * time.Second
	// stepOutputLimit bounds the output kept of a step, for its error
	// message and for capture.
	stepOutputLimit = 64 << 10
)

// runStep runs a step to completion, as its account, in its own session,
// retrying for st.Retry. It returns the step's standard output.
func (d *Driver) runStep(ctx context.Context, rec *nodeRecord, st Step) (string, error) {
	deadline := time.Now().Add(time.Duration(st.Retry))
	for attempt := 1; ; attempt++ {
		stdout, combined, err := d.runStepOnce(ctx, rec, st)
		if err == nil {
			return stdout, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if attempt > 1 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt)
			}
			return stdout, fmt.Errorf("%s: %w; output:\n%s", strings.Join(st.Argv, " "), err, tail(combined, 2048))
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
	}
}

func (d *Driver) runStepOnce(ctx context.Context, rec *nodeRecord, st Step) (stdout, combined string, err error) {
	cred, err := lookupCredential(st.User, st.Group)
	if err != nil {
		return "", "", err
	}
	timeout := time.Duration(st.Timeout)
	if timeout <= 0 {
		timeout = defaultStepTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	dirs := d.dirs(rec)
	cmd := exec.CommandContext(ctx, st.Argv[0], st.Argv[1:]...)
	cmd.Dir = st.Dir
	if cmd.Dir == "" {
		cmd.Dir = dirs.Data
	}
	cmd.Env = processEnv(st.Env, dirs)
	cmd.SysProcAttr = cred.sysProcAttr()
	// A step that times out goes with everything it started.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, all boundedBuffer
	cmd.Stdout = multiWriter{&out, &all}
	cmd.Stderr = &all
	err = cmd.Run()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	return out.String(), all.String(), err
}

// runHooks runs a node's hooks of one kind ("post_start" or "pre_stop"),
// each step rendered just before it runs.
func (d *Driver) runHooks(ctx context.Context, rec *nodeRecord, kind string) error {
	if rec.Hooks == "" {
		return nil
	}
	tmpl, err := catalog.Parse(rec.Template+"#hooks", []byte(rec.Hooks))
	if err != nil {
		return err
	}
	_, section := tmpl.Split(kind)
	if section == nil {
		return nil
	}
	peers, err := d.currentPeers(rec)
	if err != nil {
		return err
	}
	captured := map[string]string{}
	for i, item := range section.Items() {
		tctx := d.templateContext(rec, peers)
		tctx.Captured = captured
		var st Step
		if err := item.Render(tctx, &st); err != nil {
			return err
		}
		steps, err := resolveSteps(kind, []Step{st})
		if err != nil {
			return platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", rec.Template, err)
		} else if len(steps) == 0 {
			continue
		}
		st = steps[0]
		stdout, err := d.runStep(ctx, rec, st)
		if err == nil && st.Capture != "" {
			err = capture(captured, st, stdout)
		}
		if err != nil {
			if st.IgnoreFailure {
				d.logger.WarnContext(ctx, "hook step failed; ignored", "cluster_id", rec.ClusterID, "node_id", rec.NodeID,
					"hook", kind, "step", i+1, "error", err, "request_id", platform.RequestID(ctx))
				continue
			}
			return fmt.Errorf("%s hook, step %d%s: %w", kind, i+1, stepName(st), err)
		}
	}
	return nil
}

// runInit runs a node's init steps, rendered with the node's spec.
func (d *Driver) runInit(ctx context.Context, rec *nodeRecord) error {
	for i, st := range rec.Spec.Init {
		if _, err := d.runStep(ctx, rec, st); err != nil {
			return fmt.Errorf("init step %d%s: %w", i+1, stepName(st), err)
		}
	}
	return nil
}

func capture(captured map[string]string, st Step, stdout string) error {
	re, err := regexp.Compile(st.Match)
	if err != nil {
		return fmt.Errorf("match %q: %w", st.Match, err)
	}
	m := re.FindStringSubmatch(stdout)
	if len(m) < 2 {
		return fmt.Errorf("match %q found nothing to capture in the output:\n%s", st.Match, tail(stdout, 2048))
	}
	captured[st.Capture] = m[1]
	return nil
}

func stepName(st Step) string {
	if st.Name == "" {
		return ""
	}
	return " (" + st.Name + ")"
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// boundedBuffer keeps the last stepOutputLimit bytes written to it. exec
// copies stdout and stderr in two goroutines, so writes lock.
type boundedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > stepOutputLimit {
		w.b = w.b[len(w.b)-stepOutputLimit:]
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

type multiWriter []*boundedBuffer

func (m multiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		_, _ = w.Write(p)
	}
	return len(p), nil
}
