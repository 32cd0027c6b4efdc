package local

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/berthio/berth/platform"
)

// NodeSpec is what a local template renders to: the processes of one node,
// the ports Berth allocates for it and the address of its agent.
type NodeSpec struct {
	// Ports are the names of the ports to allocate on 127.0.0.1; templates
	// read them as {{ .Ports.NAME }}. They are read before rendering, so
	// they are plain names, not templates.
	Ports []string `yaml:"ports" json:"ports"`
	// AgentAddress is the node's agent address as discovery shows it.
	AgentAddress string        `yaml:"agent_address" json:"agent_address"`
	Processes    []ProcessSpec `yaml:"processes" json:"processes"`
}

// ProcessSpec is one long-running process of a node. Argv is run as it is,
// never through a shell.
type ProcessSpec struct {
	Name string            `yaml:"name" json:"name"`
	Argv []string          `yaml:"argv" json:"argv"`
	Env  map[string]string `yaml:"env" json:"env,omitempty"`
	// Dir is the working directory (default: the node's data directory).
	Dir string `yaml:"dir" json:"dir,omitempty"`
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

// check validates a rendered spec and that every program it runs exists.
func (s *NodeSpec) check() error {
	if strings.TrimSpace(s.AgentAddress) == "" {
		return fmt.Errorf("agent_address is empty")
	}
	if len(s.Processes) == 0 {
		return fmt.Errorf("it declares no processes")
	}
	seen := map[string]bool{}
	for i, p := range s.Processes {
		if err := platform.ValidateID(p.Name); err != nil {
			return fmt.Errorf("processes[%d].name: %w", i, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("process %q is declared twice", p.Name)
		}
		seen[p.Name] = true
		if len(p.Argv) == 0 || p.Argv[0] == "" {
			return fmt.Errorf("process %q has an empty argv", p.Name)
		}
		for key := range p.Env {
			if key == "" || strings.ContainsAny(key, "=\x00") {
				return fmt.Errorf("process %q: invalid environment variable name %q", p.Name, key)
			}
		}
	}
	return nil
}

// checkPrograms reports the first program that is not installed.
func (s *NodeSpec) checkPrograms() error {
	for _, p := range s.Processes {
		if _, err := exec.LookPath(p.Argv[0]); err != nil {
			return fmt.Errorf("process %q runs %s, which is not installed on this machine (%w)", p.Name, p.Argv[0], err)
		}
	}
	return nil
}
