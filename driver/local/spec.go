package local

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/berthio/berth/platform"
)

// Restart policies: what the supervisor does when a node's process exits.
const (
	RestartAlways    = "always"     // restart whatever the exit (the default)
	RestartOnFailure = "on-failure" // restart unless it exited with status 0
	RestartNever     = "never"      // leave it down; the node is listed as exited
)

// NodeSpec is what a local template renders to.
type NodeSpec struct {
	// Ports are the names of the ports to allocate on 127.0.0.1; templates
	// read them as {{ .Ports.NAME }}. They are read before rendering, so
	// they are plain names, not templates.
	Ports []string `yaml:"ports" json:"ports"`
	// AgentAddress is the node's agent address as discovery shows it.
	AgentAddress string `yaml:"agent_address" json:"agent_address"`
	// RestartPolicy applies to every process of the node.
	RestartPolicy string `yaml:"restart_policy" json:"restart_policy,omitempty"`
	// Init steps run once, in order, before the node's processes first
	// start; a failing step fails the provision with its output.
	Init      []Step        `yaml:"init" json:"init,omitempty"`
	Processes []ProcessSpec `yaml:"processes" json:"processes"`
}

// Hooks are steps run at points of a node's life. They are rendered when
// they run, so they see the cluster's peers of that moment and the values
// earlier steps captured. They live under the template's "hooks" key.
type Hooks struct {
	// PostStart steps run once the node's processes have first started,
	// before the provision is answered; a failure fails the provision.
	PostStart []Step `yaml:"post_start" json:"post_start,omitempty"`
	// PreStop steps run when the node is deprovisioned, while its processes
	// still run; a failure fails the deprovision unless the step ignores it.
	PreStop []Step `yaml:"pre_stop" json:"pre_stop,omitempty"`
}

// Command is what a step and a process have in common: a program run as
// an argv list, never through a shell.
type Command struct {
	Name string `yaml:"name" json:"name,omitempty"`
	// When, if set, must render to "true" for the command to be part of the
	// node: a template can say "only when the cluster already has nodes",
	// or choose between alternatives by group.
	When string            `yaml:"when" json:"when,omitempty"`
	Argv []string          `yaml:"argv" json:"argv"`
	Env  map[string]string `yaml:"env" json:"env,omitempty"`
	// Dir is the working directory (default: the node's data directory).
	Dir string `yaml:"dir" json:"dir,omitempty"`
	// User and Group run the command as another account; Berth must then
	// run as root. The node's directories are given to that account. Group
	// overrides the user's primary group.
	User  string `yaml:"user" json:"user,omitempty"`
	Group string `yaml:"group" json:"group,omitempty"`
}

// Step is a command run to completion: an init step or a hook.
type Step struct {
	Command `yaml:",inline"`
	// Timeout bounds one run of the step (default 60s).
	Timeout duration `yaml:"timeout" json:"timeout,omitempty"`
	// Retry keeps running a failing step for up to this long, one second
	// apart: for steps that wait for a store to become ready.
	Retry duration `yaml:"retry" json:"retry,omitempty"`
	// Capture names the value that Match extracts from the step's standard
	// output (its first group), for later steps as {{ .Captured.NAME }}.
	Capture string `yaml:"capture" json:"capture,omitempty"`
	Match   string `yaml:"match" json:"match,omitempty"`
	// IgnoreFailure lets a hook fail without failing what it is part of.
	IgnoreFailure bool `yaml:"ignore_failure" json:"ignore_failure,omitempty"`
}

// ProcessSpec is one long-running process of a node.
type ProcessSpec struct {
	Command `yaml:",inline"`
	// StopSignal is sent on deprovision (default TERM); KILL follows after
	// the grace period.
	StopSignal string `yaml:"stop_signal" json:"stop_signal,omitempty"`
	Limits     Limits `yaml:"limits" json:"limits,omitempty"`
}

// Limits are resource limits applied to a process (setrlimit, soft and hard
// alike) right after it starts; they are inherited by what it forks.
type Limits struct {
	// OpenFiles is RLIMIT_NOFILE: the most file descriptors it may hold.
	OpenFiles number `yaml:"open_files" json:"open_files,omitempty"`
	// AddressSpace is RLIMIT_AS in bytes: allocations past it fail.
	AddressSpace number `yaml:"address_space" json:"address_space,omitempty"`
	// CPUSeconds is RLIMIT_CPU: past it the process gets SIGXCPU, then SIGKILL.
	CPUSeconds number `yaml:"cpu_seconds" json:"cpu_seconds,omitempty"`
}

// number is a non-negative integer written as a YAML number or, where a
// template renders it, as a string.
type number uint64

func (n *number) UnmarshalYAML(value *yaml.Node) error {
	v, err := strconv.ParseUint(strings.TrimSpace(value.Value), 10, 64)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a non-negative integer", value.Line, value.Value)
	}
	*n = number(v)
	return nil
}

// duration is a Go duration string such as "30s".
type duration time.Duration

func (d *duration) UnmarshalYAML(value *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(value.Value))
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration such as 30s", value.Line, value.Value)
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

func (d *duration) UnmarshalJSON(data []byte) error {
	s, err := strconv.Unquote(string(data))
	if err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

// portNames is the part of a template read before rendering.
type portNames struct {
	Ports []string `yaml:"ports"`
}

func validatePortNames(names []string) error {
	seen := map[string]bool{}
	for _, name := range names {
		if err := platform.ValidateID(name); err != nil {
			return fmt.Errorf("port name: %w", err)
		}
		if seen[name] {
			return fmt.Errorf("port %q is declared twice", name)
		}
		seen[name] = true
	}
	return nil
}

// enabled reports whether a rendered "when" lets a step or process be.
func enabled(when string) (bool, error) {
	switch strings.TrimSpace(when) {
	case "", "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("when renders to %q; want true or false", when)
}

// resolve drops the processes and init steps whose "when" is false and
// checks what remains: names, argv, environment, signals, policy.
func (s *NodeSpec) resolve() error {
	if strings.TrimSpace(s.AgentAddress) == "" {
		return fmt.Errorf("agent_address is empty")
	}
	switch s.RestartPolicy {
	case "":
		s.RestartPolicy = RestartAlways
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return fmt.Errorf("restart_policy %q: want always, on-failure or never", s.RestartPolicy)
	}
	var procs []ProcessSpec
	seen := map[string]bool{}
	for i, p := range s.Processes {
		on, err := enabled(p.When)
		if err != nil {
			return fmt.Errorf("processes[%d]: %w", i, err)
		} else if !on {
			continue
		}
		p.When = ""
		if err := platform.ValidateID(p.Name); err != nil {
			return fmt.Errorf("processes[%d].name: %w", i, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("process %q is declared twice", p.Name)
		}
		seen[p.Name] = true
		if err := checkCommand("process "+p.Name, p.Argv, p.Env); err != nil {
			return err
		}
		if _, err := parseSignal(p.StopSignal); err != nil {
			return fmt.Errorf("process %q: %w", p.Name, err)
		}
		procs = append(procs, p)
	}
	if len(procs) == 0 {
		return fmt.Errorf("it declares no processes")
	}
	s.Processes = procs
	steps, err := resolveSteps("init", s.Init)
	s.Init = steps
	return err
}

// resolveSteps drops disabled steps and checks the others.
func resolveSteps(kind string, steps []Step) ([]Step, error) {
	var out []Step
	for i, st := range steps {
		on, err := enabled(st.When)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", kind, i, err)
		} else if !on {
			continue
		}
		st.When = ""
		if err := checkCommand(fmt.Sprintf("%s[%d]", kind, i), st.Argv, st.Env); err != nil {
			return nil, err
		}
		if (st.Capture == "") != (st.Match == "") {
			return nil, fmt.Errorf("%s[%d]: capture and match go together", kind, i)
		}
		out = append(out, st)
	}
	return out, nil
}

func checkCommand(what string, argv []string, env map[string]string) error {
	if len(argv) == 0 || argv[0] == "" {
		return fmt.Errorf("%s has an empty argv", what)
	}
	for key := range env {
		if key == "" || strings.ContainsAny(key, "=\x00") {
			return fmt.Errorf("%s: invalid environment variable name %q", what, key)
		}
	}
	return nil
}

// checkHost reports what this machine cannot run: a program that is not
// installed, an account that does not exist or that Berth cannot switch to.
func (s *NodeSpec) checkHost() error {
	for _, p := range s.Processes {
		if err := checkProgram("process "+p.Name, p.Argv[0]); err != nil {
			return err
		}
		if _, err := lookupCredential(p.User, p.Group); err != nil {
			return fmt.Errorf("process %q: %w", p.Name, err)
		}
	}
	for i, st := range s.Init {
		if err := checkProgram(fmt.Sprintf("init step %d", i+1), st.Argv[0]); err != nil {
			return err
		}
		if _, err := lookupCredential(st.User, st.Group); err != nil {
			return fmt.Errorf("init step %d: %w", i+1, err)
		}
	}
	return nil
}

func checkProgram(what, program string) error {
	if _, err := exec.LookPath(program); err != nil {
		return fmt.Errorf("%s runs %s, which is not installed on this machine (%w)", what, program, err)
	}
	return nil
}

// owner returns the account the node's directories belong to: the first
// user a process or init step runs as, or nil for Berth's own.
func (s *NodeSpec) owner() (*credential, error) {
	for _, p := range s.Processes {
		if p.User != "" {
			return lookupCredential(p.User, p.Group)
		}
	}
	for _, st := range s.Init {
		if st.User != "" {
			return lookupCredential(st.User, st.Group)
		}
	}
	return nil, nil
}

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "KILL": syscall.SIGKILL,
}

func parseSignal(name string) (syscall.Signal, error) {
	if name == "" {
		return syscall.SIGTERM, nil
	}
	if sig, ok := signals[strings.TrimPrefix(strings.ToUpper(name), "SIG")]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("stop_signal %q: want TERM, INT, QUIT, HUP, USR1, USR2 or KILL", name)
}

// isRoot reports whether Berth may run processes as other accounts.
func isRoot() bool { return geteuid() == 0 }

// geteuid is os.Geteuid; tests replace it to see what a Berth that is not
// root does.
var geteuid = os.Geteuid
