package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// applyConfigFile sets every flag of cmd that was not given on the command
// line from the --config file. The file's keys are flag names; a key that is
// a flag of another berth command is ignored here, a key that is no flag of
// any command is an error.
func applyConfigFile(cmd *cobra.Command) error {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config file: %w", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	known := allFlagNames(cmd.Root())
	keys := make([]string, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if !known[key] {
			return fmt.Errorf("config file %s: unknown key %q (keys are the long names of berth's flags)", path, key)
		}
		flag := cmd.Flags().Lookup(key)
		if flag == nil || flag.Changed || key == "config" {
			continue
		}
		if err := setFlag(flag, values[key]); err != nil {
			return fmt.Errorf("config file %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// setFlag sets a flag from a YAML value; a list sets a repeatable flag once per item.
func setFlag(flag *pflag.Flag, value any) error {
	switch v := value.(type) {
	case []any:
		if _, ok := flag.Value.(pflag.SliceValue); !ok {
			return fmt.Errorf("takes a single value, not a list")
		}
		for _, item := range v {
			if err := setFlag(flag, item); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if _, ok := flag.Value.(pflag.SliceValue); !ok {
			return fmt.Errorf("takes a single value, not a mapping")
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := flag.Value.Set(k + "=" + fmt.Sprint(v[k])); err != nil {
				return err
			}
		}
		return nil
	case nil:
		return nil
	}
	return flag.Value.Set(strings.TrimSpace(fmt.Sprint(value)))
}

func allFlagNames(root *cobra.Command) map[string]bool {
	names := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { names[f.Name] = true })
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return names
}
