package main

import (
	"os"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestExampleConfigIsComplete keeps examples/berth.yaml true: it has a key
// for every flag of every command, and every command accepts it.
func TestExampleConfigIsComplete(t *testing.T) {
	const path = "../../examples/berth.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]any
	if err := yaml.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	root := newRootCommand()
	var missing []string
	for name := range allFlagNames(root) {
		if _, ok := keys[name]; !ok && name != "help" && name != "config" {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s has no key for flags %s", path, strings.Join(missing, ", "))
	}
	for _, cmd := range root.Commands() {
		cmd.Flags().AddFlagSet(root.PersistentFlags())
		if err := cmd.Flags().Set("config", path); err != nil {
			t.Fatal(err)
		}
		if err := applyConfigFile(cmd); err != nil {
			t.Errorf("%s: %v", cmd.Name(), err)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	for name, content := range map[string]string{
		"unknown key":       "listne: 127.0.0.1:1\n",
		"list for a scalar": "listen: [a, b]\n",
		"bad value":         "grace-period: soon\n",
		"not yaml":          "listen: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := t.TempDir() + "/berth.yaml"
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := newServeCommand()
			cmd.Flags().String("config", path, "")
			newRootCommand().AddCommand(cmd)
			if err := applyConfigFile(cmd); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("error = %v, want one naming %s", err, path)
			}
		})
	}
	// A flag on the command line wins over the file.
	path := t.TempDir() + "/berth.yaml"
	if err := os.WriteFile(path, []byte("listen: 127.0.0.1:1\nlog-level: debug\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := newServeCommand()
	cmd.Flags().String("config", path, "")
	newRootCommand().AddCommand(cmd)
	if err := cmd.Flags().Parse([]string{"--listen", "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(cmd); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"listen": "127.0.0.1:2", "log-level": "debug"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", flag, got, want)
		}
	}
}
