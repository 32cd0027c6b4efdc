// Package catalog finds and renders the template that describes a node for a
// store, a version and a driver.
//
// A catalogue is a directory tree (an fs.FS) with one folder per driver. In
// each, stores.yaml is a list of store rules; the first rule whose store name
// and attribute matchers match the request names a versions manifest, a list
// of version rules; the first whose semantic-version range and matchers match
// names the template file. Catalogues layer: the first layer that has a
// template for a request wins, so a user directory consulted before the
// built-in catalogue can add stores, add versions or replace templates.
package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/berthio/berth/platform"
)

// StoresManifest is the name of a driver folder's stores manifest.
const StoresManifest = "stores.yaml"

// Layer is one catalogue, such as the built-in one or an operator's directory.
type Layer struct {
	Name string // for messages: "built-in", or the directory
	FS   fs.FS
}

// Catalog is a parsed, checked stack of layers, first consulted first.
type Catalog struct {
	layers []*layer
}

type layer struct {
	name    string
	drivers map[string][]*storeRule
}

// StoreRule is one entry of a stores manifest.
type storeRule struct {
	Store      string         `yaml:"store"`
	Attributes map[string]any `yaml:"attributes"`
	Versions   string         `yaml:"versions"`
	Requires   Requirements   `yaml:"requires"`
	versions   []*versionRule
}

// Requirements say what a store's templates need on the host, so that
// operators learn before the first provision what to install.
type Requirements struct {
	Binaries []string `yaml:"binaries"`
	Package  string   `yaml:"package"`
}

type versionRule struct {
	Version    string         `yaml:"version"`
	Attributes map[string]any `yaml:"attributes"`
	Template   string         `yaml:"template"`
	constraint *semver.Constraints
	template   *Template
}

// New parses and checks every layer: manifests, version ranges, referenced
// files and templates. A broken catalogue is an error at start, not at the
// first provision.
func New(layers ...Layer) (*Catalog, error) {
	c := &Catalog{}
	for _, l := range layers {
		parsed, err := parseLayer(l)
		if err != nil {
			return nil, fmt.Errorf("catalogue %s: %w", l.Name, err)
		}
		c.layers = append(c.layers, parsed)
	}
	return c, nil
}

func parseLayer(l Layer) (*layer, error) {
	parsed := &layer{name: l.Name, drivers: map[string][]*storeRule{}}
	entries, err := fs.ReadDir(l.FS, ".")
	if err != nil {
		return nil, err
	}
	for _, entry := range entries {
		if !entry.IsDir() {
			continue
		}
		driver := entry.Name()
		manifest := path.Join(driver, StoresManifest)
		if _, err := fs.Stat(l.FS, manifest); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		dfs, err := fs.Sub(l.FS, driver)
		if err != nil {
			return nil, err
		}
		var rules []*storeRule
		if err := readYAML(dfs, StoresManifest, &rules); err != nil {
			return nil, fmt.Errorf("%s: %w", manifest, err)
		}
		for i, rule := range rules {
			where := fmt.Sprintf("%s: rule %d", manifest, i+1)
			if rule == nil {
				// A bare "-" decodes to a nil rule.
				return nil, fmt.Errorf("%s: the rule is empty", where)
			}
			if err := platform.ValidateStore(rule.Store); err != nil {
				return nil, fmt.Errorf("%s: store: %w", where, err)
			}
			if rule.Versions == "" {
				return nil, fmt.Errorf("%s (%s): versions: a versions manifest is required", where, rule.Store)
			}
			if err := readYAML(dfs, rule.Versions, &rule.versions); err != nil {
				return nil, fmt.Errorf("%s (%s): %s: %w", where, rule.Store, rule.Versions, err)
			}
			for j, vr := range rule.versions {
				vwhere := fmt.Sprintf("%s/%s: rule %d", driver, rule.Versions, j+1)
				if vr == nil {
					return nil, fmt.Errorf("%s: the rule is empty", vwhere)
				}
				if vr.constraint, err = semver.NewConstraint(vr.Version); err != nil {
					return nil, fmt.Errorf("%s: version %q is not a semantic-version range: %w", vwhere, vr.Version, err)
				}
				if vr.Template == "" {
					return nil, fmt.Errorf("%s: template: a template file is required", vwhere)
				}
				if vr.template, err = loadTemplate(dfs, driver, vr.Template); err != nil {
					return nil, fmt.Errorf("%s: %w", vwhere, err)
				}
			}
		}
		parsed.drivers[driver] = rules
	}
	return parsed, nil
}

// readYAML decodes a manifest strictly (unknown keys are errors, so typos
// surface); an empty file is an empty list.
func readYAML(fsys fs.FS, name string, out any) error {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Request is what a lookup matches on.
type Request struct {
	Driver     string
	Store      string
	Version    string
	Attributes map[string]any
}

// Lookup returns the template for a store and version. No template is an
// EUNPROCESSABLE error that names the ranges the catalogue does have.
func (c *Catalog) Lookup(req Request) (*Template, error) {
	version, err := semver.NewVersion(req.Version)
	if err != nil {
		return nil, platform.Errorf(platform.EUNPROCESSABLE, "%s version %q is not a semantic version, so no template range can match it", req.Store, req.Version)
	}
	storeKnown := false
	for _, l := range c.layers {
		for _, rule := range l.drivers[req.Driver] {
			if rule.Store != req.Store || !matches(rule.Attributes, req.Attributes) {
				continue
			}
			storeKnown = true
			for _, vr := range rule.versions {
				if vr.constraint.Check(version) && matches(vr.Attributes, req.Attributes) {
					return vr.template, nil
				}
			}
			// First matching store rule wins within a layer; a later
			// layer may still have the version.
			break
		}
	}
	if !storeKnown && c.hasStore(req.Driver, req.Store) {
		return nil, platform.Errorf(platform.EUNPROCESSABLE, "store %q has templates for the %s driver, but none whose attribute matchers match the request's attributes",
			req.Store, req.Driver)
	}
	if !storeKnown {
		return nil, platform.Errorf(platform.EUNPROCESSABLE, "store %q has no template for the %s driver; the catalogue has: %s",
			req.Store, req.Driver, orNone(c.storeNames(req.Driver)))
	}
	return nil, platform.Errorf(platform.EUNPROCESSABLE, "%s %s has no template for the %s driver; the catalogue has %s %s",
		req.Store, req.Version, req.Driver, req.Store, orNone(c.ranges(req.Driver, req.Store)))
}

// StoreInfo describes one store of a driver's catalogue.
type StoreInfo struct {
	Store    string
	Ranges   []string
	Requires Requirements
}

// Stores lists the stores a driver's catalogue knows, in order of first
// appearance, with their version ranges and host requirements.
func (c *Catalog) Stores(driver string) []StoreInfo {
	var infos []StoreInfo
	index := map[string]int{}
	for _, l := range c.layers {
		for _, rule := range l.drivers[driver] {
			i, ok := index[rule.Store]
			if !ok {
				i = len(infos)
				index[rule.Store] = i
				infos = append(infos, StoreInfo{Store: rule.Store})
			}
			info := &infos[i]
			info.Requires.Binaries = appendNew(info.Requires.Binaries, rule.Requires.Binaries...)
			if info.Requires.Package == "" {
				info.Requires.Package = rule.Requires.Package
			}
			for _, vr := range rule.versions {
				info.Ranges = appendNew(info.Ranges, vr.Version)
			}
		}
	}
	return infos
}

func (c *Catalog) hasStore(driver, store string) bool {
	for _, info := range c.Stores(driver) {
		if info.Store == store {
			return true
		}
	}
	return false
}

func (c *Catalog) storeNames(driver string) []string {
	var names []string
	for _, info := range c.Stores(driver) {
		names = append(names, info.Store)
	}
	sort.Strings(names)
	return names
}

func (c *Catalog) ranges(driver, store string) []string {
	for _, info := range c.Stores(driver) {
		if info.Store == store {
			return info.Ranges
		}
	}
	return nil
}

// matches reports whether every matcher equals the attribute of the same
// name exactly, comparing JSON encodings so that 1 from YAML equals 1 from
// JSON but never "1".
func matches(matchers, attrs map[string]any) bool {
	for key, want := range matchers {
		got, ok := attrs[key]
		if !ok || !jsonEqual(want, got) {
			return false
		}
	}
	return true
}

func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func appendNew(list []string, items ...string) []string {
	for _, item := range items {
		found := false
		for _, have := range list {
			found = found || have == item
		}
		if !found {
			list = append(list, item)
		}
	}
	return list
}

func orNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}
