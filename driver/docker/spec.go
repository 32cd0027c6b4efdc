package docker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/berthio/berth/platform"
)

// Pull policies: when an image is pulled before a node's containers are
// created.
const (
	PullNever   = "never"   // the image must be on the engine
	PullMissing = "missing" // pulled when the engine lacks it (the default)
	PullAlways  = "always"  // pulled for every provision
)

// Restart policies are the engine's own.
var restartPolicies = map[string]bool{"no": true, "always": true, "on-failure": true, "unless-stopped": true}

// nodeSpec is a rendered template: one node as one or more containers.
type nodeSpec struct {
	// AgentPort names the port whose published address is the agent's;
	// AgentAddress gives the address literally instead.
	AgentPort    string `yaml:"agent_port"`
	AgentScheme  string `yaml:"agent_scheme"`
	AgentAddress string `yaml:"agent_address"`
	// RestartPolicy is the engine's restart policy for every container.
	RestartPolicy string          `yaml:"restart_policy"`
	Pull          string          `yaml:"pull"`
	Containers    []containerSpec `yaml:"containers"`
}

// containerSpec is one container of a node.
type containerSpec struct {
	Name       string            `yaml:"name"`
	Image      string            `yaml:"image"`
	Entrypoint []string          `yaml:"entrypoint"`
	Command    []string          `yaml:"command"`
	Env        map[string]string `yaml:"env"`
	// Ports are the container's TCP ports by name; each is published on
	// the driver's host IP at a port the engine chooses.
	Ports      map[string]int `yaml:"ports"`
	Mounts     []mountSpec    `yaml:"mounts"`
	User       string         `yaml:"user"`
	WorkingDir string         `yaml:"working_dir"`
	StopSignal string         `yaml:"stop_signal"`
}

// mountSpec mounts the node's volume (the default) or a fresh tmpfs at
// Target. Host paths cannot be mounted: a template's values may come from
// a request's attributes.
type mountSpec struct {
	Target   string `yaml:"target"`
	Tmpfs    bool   `yaml:"tmpfs"`
	ReadOnly bool   `yaml:"read_only"`
}

// portLayout is what a driver reads from a template before rendering it:
// the containers' names and ports, which templates may refer to. Ports are
// plain numbers, never rendered.
type portLayout struct {
	Containers []struct {
		Name  string         `yaml:"name"`
		Ports map[string]int `yaml:"ports"`
	} `yaml:"containers"`
}

// ports returns every port of the node by name.
func (l portLayout) ports() (map[string]int, error) {
	ports := map[string]int{}
	for _, c := range l.Containers {
		for name, port := range c.Ports {
			if _, dup := ports[name]; dup {
				return nil, fmt.Errorf("port %q is declared by two containers", name)
			}
			if err := checkPort(name, port); err != nil {
				return nil, err
			}
			ports[name] = port
		}
	}
	return ports, nil
}

func checkPort(name string, port int) error {
	if err := platform.ValidateID(name); err != nil {
		return fmt.Errorf("port name %q: %w", name, err)
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %q: %d is not a port number (1-65535)", name, port)
	}
	return nil
}

// check validates a rendered spec and fills in the defaults.
func (s *nodeSpec) check() error {
	if len(s.Containers) == 0 {
		return fmt.Errorf("containers: a node needs at least one container")
	}
	if s.Pull == "" {
		s.Pull = PullMissing
	}
	switch s.Pull {
	case PullNever, PullMissing, PullAlways:
	default:
		return fmt.Errorf("pull: %q is not a pull policy (never, missing or always)", s.Pull)
	}
	if s.RestartPolicy == "" {
		s.RestartPolicy = "unless-stopped"
	}
	if !restartPolicies[s.RestartPolicy] {
		return fmt.Errorf("restart_policy: %q is not a restart policy (no, always, on-failure or unless-stopped)", s.RestartPolicy)
	}
	names := map[string]bool{}
	ports := map[string]bool{}
	for i, c := range s.Containers {
		where := fmt.Sprintf("containers[%d]", i)
		if err := platform.ValidateID(c.Name); err != nil {
			return fmt.Errorf("%s: name %q: %w", where, c.Name, err)
		}
		if names[c.Name] {
			return fmt.Errorf("%s: container %q is declared twice", where, c.Name)
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			return fmt.Errorf("%s (%s): image is required", where, c.Name)
		}
		for key := range c.Env {
			if key == "" || strings.ContainsAny(key, "=\x00") {
				return fmt.Errorf("%s (%s): env: %q is not a variable name", where, c.Name, key)
			}
		}
		for name, port := range c.Ports {
			if err := checkPort(name, port); err != nil {
				return fmt.Errorf("%s (%s): %w", where, c.Name, err)
			}
			if ports[name] {
				return fmt.Errorf("%s (%s): port %q is declared by two containers", where, c.Name, name)
			}
			ports[name] = true
		}
		for j, m := range c.Mounts {
			if !strings.HasPrefix(m.Target, "/") {
				return fmt.Errorf("%s (%s): mounts[%d]: target %q is not an absolute path", where, c.Name, j, m.Target)
			}
		}
	}
	switch {
	case s.AgentAddress != "" && s.AgentPort != "":
		return fmt.Errorf("agent_address and agent_port: give one or the other")
	case s.AgentPort != "" && !ports[s.AgentPort]:
		return fmt.Errorf("agent_port: no container has a port %q", s.AgentPort)
	case s.AgentAddress == "" && s.AgentPort == "":
		return fmt.Errorf("agent_port or agent_address is required: discovery must show an agent address")
	}
	if s.AgentScheme == "" {
		s.AgentScheme = "http"
	}
	return nil
}

// images returns the distinct images of the node, in order.
func (s *nodeSpec) images() []string {
	var images []string
	seen := map[string]bool{}
	for _, c := range s.Containers {
		if !seen[c.Image] {
			seen[c.Image] = true
			images = append(images, c.Image)
		}
	}
	return images
}

// envList returns env as the engine takes it, sorted so that the same
// template always makes the same container.
func envList(env map[string]string) []string {
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}
