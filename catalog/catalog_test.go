package catalog

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/berthio/berth/platform"
	"github.com/berthio/berth/stores"
)

// layerFS builds a catalogue from file names and contents. A template file
// whose content is empty gets a small valid template naming itself.
func layerFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range files {
		if data == "" {
			data = "name: " + name + "\n"
		}
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

func mustNew(t *testing.T, layers ...Layer) *Catalog {
	t.Helper()
	c, err := New(layers...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lookupName returns the name of the template a lookup finds, or the error.
func lookupName(t *testing.T, c *Catalog, req Request) (string, error) {
	t.Helper()
	tmpl, err := c.Lookup(req)
	if err != nil {
		return "", err
	}
	return tmpl.Name, nil
}

// unprocessable asserts err is an EUNPROCESSABLE *Error mentioning each want.
func unprocessable(t *testing.T, err error, wants ...string) {
	t.Helper()
	var e *platform.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *platform.Error", err, err)
	}
	if e.Code != platform.EUNPROCESSABLE {
		t.Errorf("code = %q, want %q", e.Code, platform.EUNPROCESSABLE)
	}
	for _, want := range wants {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message = %q, want it to contain %q", e.Message, want)
		}
	}
}

func TestLookupFirstMatchingStoreRuleWins(t *testing.T) {
	c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
		"local/stores.yaml": `
- store: redis
  attributes: {flavour: keydb}
  versions: keydb/versions.yaml
- store: redis
  versions: redis/a.yaml
- store: redis
  versions: redis/b.yaml
- store: mongodb
  versions: mongodb/versions.yaml
`,
		"local/keydb/versions.yaml":   "- version: '>=1.0'\n  template: keydb/t.yaml\n",
		"local/keydb/t.yaml":          "",
		"local/redis/a.yaml":          "- version: '>=7.0'\n  template: redis/a7.yaml\n",
		"local/redis/a7.yaml":         "",
		"local/redis/b.yaml":          "- version: '>=1.0'\n  template: redis/b.yaml.tmpl\n",
		"local/redis/b.yaml.tmpl":     "",
		"local/mongodb/versions.yaml": "- version: '>=1.0'\n  template: mongodb/t.yaml\n",
		"local/mongodb/t.yaml":        "",
	})})
	tests := []struct {
		name  string
		req   Request
		want  string
		wants []string // error message parts when want is ""
	}{
		{"attribute rule", Request{Driver: "local", Store: "redis", Version: "7.0", Attributes: map[string]any{"flavour": "keydb"}}, "local/keydb/t.yaml", nil},
		{"attribute rule, old version", Request{Driver: "local", Store: "redis", Version: "1.0", Attributes: map[string]any{"flavour": "keydb"}}, "local/keydb/t.yaml", nil},
		{"second rule", Request{Driver: "local", Store: "redis", Version: "7.2.4"}, "local/redis/a7.yaml", nil},
		{"other attribute value", Request{Driver: "local", Store: "redis", Version: "7.0", Attributes: map[string]any{"flavour": "valkey"}}, "local/redis/a7.yaml", nil},
		// The first matching store rule wins even when it lacks the
		// version: the third rule is never consulted.
		{"no fallback to a later rule", Request{Driver: "local", Store: "redis", Version: "6.2"}, "", []string{"redis 6.2 has no template", ">=7.0"}},
		{"another store", Request{Driver: "local", Store: "mongodb", Version: "6.0"}, "local/mongodb/t.yaml", nil},
		{"another driver", Request{Driver: "docker", Store: "redis", Version: "7.0"}, "", []string{`store "redis" has no template for the docker driver`, "the catalogue has: none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookupName(t, c, tt.req)
			if tt.want == "" {
				unprocessable(t, err, tt.wants...)
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Lookup = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestLookupFirstMatchingVersionRuleWins(t *testing.T) {
	c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
		"local/stores.yaml": "- store: redis\n  versions: versions.yaml\n",
		"local/versions.yaml": `
- version: ">=7.0"
  attributes: {tls: true}
  template: tls.yaml
- version: "7.0.1"
  template: exact.yaml
- version: "~7.0"
  template: tilde.yaml
- version: ">=6.0"
  template: six-up.yaml
- version: "7.0.1"
  template: never.yaml
`,
		"local/tls.yaml":    "",
		"local/exact.yaml":  "",
		"local/tilde.yaml":  "",
		"local/six-up.yaml": "",
		"local/never.yaml":  "",
	})})
	tests := []struct {
		version string
		attrs   map[string]any
		want    string
	}{
		{"7.0.1", nil, "local/exact.yaml"},
		{"7.0.2", nil, "local/tilde.yaml"},
		{"7.0", nil, "local/tilde.yaml"},
		{"7.1", nil, "local/six-up.yaml"},
		{"6.0", nil, "local/six-up.yaml"},
		{"7.0.1", map[string]any{"tls": true}, "local/tls.yaml"},
		{"6.2", map[string]any{"tls": true}, "local/six-up.yaml"},
		{"7.0.1", map[string]any{"tls": "true"}, "local/exact.yaml"},
	}
	for _, tt := range tests {
		got, err := lookupName(t, c, Request{Driver: "local", Store: "redis", Version: tt.version, Attributes: tt.attrs})
		if err != nil || got != tt.want {
			t.Errorf("Lookup(%s, %v) = %q, %v; want %q", tt.version, tt.attrs, got, err, tt.want)
		}
	}
}

func TestLookupRanges(t *testing.T) {
	tests := []struct {
		rng     string
		version string
		match   bool
	}{
		{">=6.0", "6.0", true},
		{">=6.0", "6.0.0", true},
		{">=6.0", "7.2.5", true},
		{">=6.0", "5.9.9", false},
		{">=6.0", "7", true},
		{">=6.0", "v6.2", true},
		{"~7.0", "7.0.0", true},
		{"~7.0", "7.0.15", true},
		{"~7.0", "7.1.0", false},
		{"~7.0", "6.9", false},
		{"<7", "6.9.9", true},
		{"<7", "7.0.0", false},
		{"<7", "7.0.1", false},
		{"6.x", "6.0", true},
		{"6.x", "6.2.14", true},
		{"6.x", "7.0", false},
		{"6.x", "5.0", false},
		{"7.0.1", "7.0.1", true},
		{"7.0.1", "7.0.2", false},
		{"7.0.1", "7.0.0", false},
		{">=6.0, <7.2", "7.1.9", true},
		{">=6.0, <7.2", "7.2.0", false},
		{"^6.2", "6.9", true},
		{"^6.2", "7.0", false},
		{"6.0 || 7.x", "7.4", true},
		{"6.0 || 7.x", "6.1", false},
		// Pre-releases do not match a plain range.
		{">=6.0", "7.2.0-rc1", false},
	}
	for _, tt := range tests {
		c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
			"local/stores.yaml":   "- store: redis\n  versions: versions.yaml\n",
			"local/versions.yaml": "- version: '" + tt.rng + "'\n  template: t.yaml\n",
			"local/t.yaml":        "",
		})})
		_, err := c.Lookup(Request{Driver: "local", Store: "redis", Version: tt.version})
		if tt.match && err != nil {
			t.Errorf("range %q, version %q: %v, want a match", tt.rng, tt.version, err)
		}
		if !tt.match {
			if err == nil {
				t.Errorf("range %q, version %q matched", tt.rng, tt.version)
			} else {
				unprocessable(t, err, "redis "+tt.version+" has no template", tt.rng)
			}
		}
	}
}

func TestLookupAttributeMatchers(t *testing.T) {
	tests := []struct {
		name    string
		matcher string // YAML of the matchers
		attrs   map[string]any
		match   bool
	}{
		{"string equals", `{tls: "1"}`, map[string]any{"tls": "1"}, true},
		{"string vs number", `{tls: "1"}`, map[string]any{"tls": json.Number("1")}, false},
		{"number equals JSON number", `{tls: 1}`, map[string]any{"tls": json.Number("1")}, true},
		{"number equals float", `{tls: 1}`, map[string]any{"tls": 1.0}, true},
		{"number vs string", `{tls: 1}`, map[string]any{"tls": "1"}, false},
		{"different number", `{tls: 1}`, map[string]any{"tls": json.Number("2")}, false},
		{"bool equals", `{tls: true}`, map[string]any{"tls": true}, true},
		{"bool vs string", `{tls: true}`, map[string]any{"tls": "true"}, false},
		{"bool vs yes", `{tls: "yes"}`, map[string]any{"tls": true}, false},
		{"missing attribute", `{tls: true}`, map[string]any{"other": true}, false},
		{"nil attributes", `{tls: true}`, nil, false},
		{"null matcher, missing attribute", `{tls: null}`, map[string]any{}, false},
		{"null matcher, null attribute", `{tls: null}`, map[string]any{"tls": nil}, true},
		{"case matters", `{mode: Cluster}`, map[string]any{"mode": "cluster"}, false},
		{"all must match", `{a: x, b: y}`, map[string]any{"a": "x"}, false},
		{"all match", `{a: x, b: y}`, map[string]any{"a": "x", "b": "y", "c": "z"}, true},
		{"object equals", `{o: {k: 1, j: [a]}}`, map[string]any{"o": map[string]any{"j": []any{"a"}, "k": json.Number("1")}}, true},
		{"object differs", `{o: {k: 1}}`, map[string]any{"o": map[string]any{"k": json.Number("1"), "extra": true}}, false},
		{"no matchers", `{}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The same matcher on a store rule and on a version rule.
			for _, where := range []string{"store", "version"} {
				storeAttrs, versionAttrs := "", ""
				if where == "store" {
					storeAttrs = "  attributes: " + tt.matcher + "\n"
				} else {
					versionAttrs = "  attributes: " + tt.matcher + "\n"
				}
				c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
					"local/stores.yaml":    "- store: redis\n" + storeAttrs + "  versions: versions.yaml\n- store: redis\n  versions: fallback.yaml\n",
					"local/versions.yaml":  "- version: '*'\n" + versionAttrs + "  template: matched.yaml\n- version: '*'\n  template: unmatched.yaml\n",
					"local/fallback.yaml":  "- version: '*'\n  template: unmatched.yaml\n",
					"local/matched.yaml":   "",
					"local/unmatched.yaml": "",
				})})
				got, err := lookupName(t, c, Request{Driver: "local", Store: "redis", Version: "7.0", Attributes: tt.attrs})
				if err != nil {
					t.Fatal(err)
				}
				if matched := got == "local/matched.yaml"; matched != tt.match {
					t.Errorf("%s matcher %s with %v: got %s, want match=%v", where, tt.matcher, tt.attrs, got, tt.match)
				}
			}
		})
	}
}

func TestLookupErrors(t *testing.T) {
	c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
		"local/stores.yaml": `
- store: zookeeper
  versions: zk.yaml
- store: redis
  versions: redis.yaml
`,
		"local/zk.yaml":    "- version: '3.x'\n  template: t.yaml\n",
		"local/redis.yaml": "- version: '>=7.0'\n  template: t.yaml\n- version: '~6.2'\n  template: t.yaml\n",
		"local/t.yaml":     "",
	})})
	tests := []struct {
		name  string
		req   Request
		wants []string
	}{
		{"no store", Request{Driver: "local", Store: "mongodb", Version: "6.0"},
			[]string{`store "mongodb" has no template for the local driver`, "the catalogue has: redis, zookeeper"}},
		{"no version", Request{Driver: "local", Store: "redis", Version: "6.0.3"},
			[]string{"redis 6.0.3 has no template for the local driver", "the catalogue has redis >=7.0, ~6.2"}},
		{"not semver", Request{Driver: "local", Store: "redis", Version: "latest"},
			[]string{`redis version "latest" is not a semantic version`}},
		{"not semver, unknown store", Request{Driver: "local", Store: "mongodb", Version: "7.x"},
			[]string{`mongodb version "7.x" is not a semantic version`}},
		{"empty version", Request{Driver: "local", Store: "redis", Version: ""},
			[]string{`redis version "" is not a semantic version`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Lookup(tt.req)
			unprocessable(t, err, tt.wants...)
		})
	}
}

func TestLookupLayers(t *testing.T) {
	user := Layer{Name: "/etc/berth/catalog", FS: layerFS(map[string]string{
		"local/stores.yaml": `
- store: redis
  versions: redis/versions.yaml
- store: keydb
  versions: keydb/versions.yaml
`,
		"local/redis/versions.yaml": "- version: '>=7.2'\n  template: redis/user.yaml\n",
		"local/redis/user.yaml":     "",
		"local/keydb/versions.yaml": "- version: '*'\n  template: keydb/t.yaml\n",
		"local/keydb/t.yaml":        "",
	})}
	builtin := Layer{Name: "built-in", FS: layerFS(map[string]string{
		"local/stores.yaml":         "- store: redis\n  versions: redis/versions.yaml\n",
		"local/redis/versions.yaml": "- version: '>=6.0'\n  template: redis/builtin.yaml\n",
		"local/redis/builtin.yaml":  "name: builtin\n",
		"docker/stores.yaml":        "- store: redis\n  versions: v.yaml\n",
		"docker/v.yaml":             "- version: '>=6.0'\n  template: t.yaml\n",
		"docker/t.yaml":             "",
	})}
	c := mustNew(t, user, builtin)
	tests := []struct {
		driver, store, version string
		want                   string
	}{
		{"local", "redis", "7.2.0", "local/redis/user.yaml"},
		{"local", "redis", "8.0", "local/redis/user.yaml"},
		{"local", "redis", "7.0", "local/redis/builtin.yaml"},
		{"local", "redis", "6.2", "local/redis/builtin.yaml"},
		{"local", "keydb", "6.2", "local/keydb/t.yaml"},
		{"docker", "redis", "7.2", "docker/t.yaml"},
	}
	for _, tt := range tests {
		got, err := lookupName(t, c, Request{Driver: tt.driver, Store: tt.store, Version: tt.version})
		if err != nil || got != tt.want {
			t.Errorf("Lookup(%s %s %s) = %q, %v; want %q", tt.driver, tt.store, tt.version, got, err, tt.want)
		}
	}
	// Two files with the same name in two layers are two templates.
	tmpl, err := c.Lookup(Request{Driver: "local", Store: "redis", Version: "6.2"})
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ Name string }
	if err := tmpl.Decode(&out); err != nil || out.Name != "builtin" {
		t.Errorf("built-in template decodes to %+v, %v", out, err)
	}

	_, err = c.Lookup(Request{Driver: "local", Store: "redis", Version: "5.0"})
	unprocessable(t, err, "redis 5.0 has no template", "the catalogue has redis >=7.2, >=6.0")
	_, err = c.Lookup(Request{Driver: "local", Store: "etcd", Version: "3.5"})
	unprocessable(t, err, "the catalogue has: keydb, redis")

	// In the other order the built-in layer wins for every version it has.
	c = mustNew(t, builtin, user)
	if got, err := lookupName(t, c, Request{Driver: "local", Store: "redis", Version: "7.2.0"}); err != nil || got != "local/redis/builtin.yaml" {
		t.Errorf("built-in first: Lookup = %q, %v", got, err)
	}
}

func TestStores(t *testing.T) {
	user := Layer{Name: "user", FS: layerFS(map[string]string{
		"local/stores.yaml": `
- store: redis
  versions: v1.yaml
  requires: {binaries: [keydb-server], package: keydb}
- store: etcd
  versions: v2.yaml
`,
		"local/v1.yaml": "- version: '>=7.2'\n  template: t.yaml\n",
		"local/v2.yaml": "- version: '3.x'\n  template: t.yaml\n",
		"local/t.yaml":  "",
	})}
	builtin := Layer{Name: "built-in", FS: layerFS(map[string]string{
		"local/stores.yaml": "- store: redis\n  versions: v.yaml\n  requires: {binaries: [redis-server, keydb-server], package: redis-server}\n",
		"local/v.yaml":      "- version: '>=6.0'\n  template: t.yaml\n- version: '>=7.2'\n  template: t.yaml\n",
		"local/t.yaml":      "",
	})}
	c := mustNew(t, user, builtin)
	want := []StoreInfo{
		{Store: "redis", Ranges: []string{">=7.2", ">=6.0"}, Requires: Requirements{Binaries: []string{"keydb-server", "redis-server"}, Package: "keydb"}},
		{Store: "etcd", Ranges: []string{"3.x"}},
	}
	if got := c.Stores("local"); !reflect.DeepEqual(got, want) {
		t.Errorf("Stores = %#v\nwant %#v", got, want)
	}
	if got := c.Stores("docker"); len(got) != 0 {
		t.Errorf("Stores(docker) = %#v, want none", got)
	}
}

func TestNewAcceptsSparseCatalogues(t *testing.T) {
	tests := map[string]fstest.MapFS{
		"empty":                   {},
		"files at the root":       layerFS(map[string]string{"README.md": "# hi", "stores.yaml": "not: [a list"}),
		"folder without manifest": layerFS(map[string]string{"notes/x.txt": "x"}),
		"empty manifest":          {"local/stores.yaml": &fstest.MapFile{}},
		"comment-only manifest":   layerFS(map[string]string{"local/stores.yaml": "# nothing yet\n"}),
		"store without versions":  layerFS(map[string]string{"local/stores.yaml": "- store: redis\n  versions: v.yaml\n", "local/v.yaml": "# none\n"}),
	}
	for name, fsys := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := New(Layer{Name: "test", FS: fsys}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewRejectsBrokenCatalogues(t *testing.T) {
	const stores = "- store: redis\n  versions: redis/versions.yaml\n"
	const versions = "- version: '>=6.0'\n  template: redis/t.yaml\n"
	const tmpl = "processes:\n  - argv: [redis-server, \"{{ .Ports.store }}\"]\n"
	tests := []struct {
		name  string
		files map[string]string
		wants []string
	}{
		{"bad stores YAML", map[string]string{"local/stores.yaml": "- store: [redis\n"},
			[]string{"catalogue user: local/stores.yaml: yaml:"}},
		{"stores not a list", map[string]string{"local/stores.yaml": "store: redis\n"},
			[]string{"local/stores.yaml:", "cannot unmarshal"}},
		{"unknown stores key", map[string]string{"local/stores.yaml": "- store: redis\n  version: redis/versions.yaml\n"},
			[]string{"local/stores.yaml:", "field version not found"}},
		{"unknown requires key", map[string]string{"local/stores.yaml": stores + "  requires: {binary: redis-server}\n", "local/redis/versions.yaml": versions, "local/redis/t.yaml": tmpl},
			[]string{"local/stores.yaml:", "field binary not found"}},
		{"empty store rule", map[string]string{"local/stores.yaml": "-\n" + stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": tmpl},
			[]string{"local/stores.yaml: rule 1: the rule is empty"}},
		{"bad store name", map[string]string{"local/stores.yaml": "- store: Redis\n  versions: v.yaml\n"},
			[]string{"local/stores.yaml: rule 1: store:", `"Redis"`}},
		{"missing store name", map[string]string{"local/stores.yaml": "- versions: v.yaml\n"},
			[]string{"local/stores.yaml: rule 1: store: must not be empty"}},
		{"missing versions key", map[string]string{"local/stores.yaml": "- store: redis\n"},
			[]string{"local/stores.yaml: rule 1 (redis): versions: a versions manifest is required"}},
		{"missing versions file", map[string]string{"local/stores.yaml": stores},
			[]string{"local/stores.yaml: rule 1 (redis): redis/versions.yaml:", "not exist"}},
		{"bad versions YAML", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": "- version: '>=6.0\n"},
			[]string{"redis/versions.yaml: yaml:"}},
		{"unknown versions key", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions + "  templates: x\n", "local/redis/t.yaml": tmpl},
			[]string{"redis/versions.yaml:", "field templates not found"}},
		{"empty version rule", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions + "- \n", "local/redis/t.yaml": tmpl},
			[]string{"local/redis/versions.yaml: rule 2: the rule is empty"}},
		{"bad range", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": "- version: 'seven'\n  template: redis/t.yaml\n", "local/redis/t.yaml": tmpl},
			[]string{"local/redis/versions.yaml: rule 1:", `version "seven" is not a semantic-version range`}},
		{"missing range", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": "- template: redis/t.yaml\n", "local/redis/t.yaml": tmpl},
			[]string{"local/redis/versions.yaml: rule 1:", `version "" is not a semantic-version range`}},
		{"missing template key", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": "- version: '>=6.0'\n"},
			[]string{"local/redis/versions.yaml: rule 1: template: a template file is required"}},
		{"missing template file", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions},
			[]string{"local/redis/versions.yaml: rule 1:", "redis/t.yaml", "not exist"}},
		{"template outside the driver folder", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": "- version: '*'\n  template: ../other/t.yaml\n", "other/t.yaml": tmpl},
			[]string{"local/redis/versions.yaml: rule 1:", "../other/t.yaml"}},
		{"template parse error", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "argv: ['{{ .Ports.store ']\n"},
			[]string{"local/redis/versions.yaml: rule 1: template local/redis/t.yaml:"}},
		{"template unknown function", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "argv: ['{{ exec \"ls\" }}']\n"},
			[]string{"template local/redis/t.yaml:", `function "exec" not defined`}},
		{"template bad YAML", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "argv: [a\n"},
			[]string{"template local/redis/t.yaml: yaml:"}},
		{"template unquoted action", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "argv: [redis-server]\ndir: {{ .Dirs.data }}\n"},
			[]string{"template local/redis/t.yaml: line 2: template actions must be inside quoted values"}},
		{"template templated key", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "env:\n  \"{{ .NodeID }}\": x\n"},
			[]string{"template local/redis/t.yaml: line 2:", "keys cannot be templated"}},
		{"template empty", map[string]string{"local/stores.yaml": stores, "local/redis/versions.yaml": versions, "local/redis/t.yaml": "# nothing\n"},
			[]string{"template local/redis/t.yaml is empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := layerFS(tt.files)
			_, err := New(Layer{Name: "ok", FS: layerFS(map[string]string{})}, Layer{Name: "user", FS: fsys})
			if err == nil {
				t.Fatal("New accepted a broken catalogue")
			}
			for _, want := range append([]string{"catalogue user: "}, tt.wants...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error = %q, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestBuiltInCatalogue(t *testing.T) {
	c, err := New(Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"7.0", "6.2", "6.0.0", "7.2.4"} {
		tmpl, err := c.Lookup(Request{Driver: "local", Store: "redis", Version: v, Attributes: map[string]any{}})
		if err != nil {
			t.Errorf("redis %s: %v", v, err)
			continue
		}
		if tmpl.Name != "local/redis/redis.yaml" {
			t.Errorf("redis %s: template %s", v, tmpl.Name)
		}
	}
	_, err = c.Lookup(Request{Driver: "local", Store: "redis", Version: "5.0"})
	unprocessable(t, err, "redis 5.0 has no template", ">=6.0")

	info := c.Stores("local")
	var names []string
	for _, i := range info {
		names = append(names, i.Store)
	}
	if !reflect.DeepEqual(names, []string{"redis", "etcd", "postgresql"}) || !reflect.DeepEqual(info[0].Requires.Binaries, []string{"redis-server"}) {
		t.Errorf("Stores(local) = %#v", info)
	}
	for _, r := range []Request{
		{Driver: "local", Store: "etcd", Version: "3.4.23"},
		{Driver: "local", Store: "postgresql", Version: "15"},
	} {
		if _, err := c.Lookup(r); err != nil {
			t.Errorf("%s %s: %v", r.Store, r.Version, err)
		}
	}
}
