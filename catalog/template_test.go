package catalog

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/berthio/berth/stores"
)

// nodeSpec mirrors the shape of a local driver template.
type nodeSpec struct {
	Ports        []string      `yaml:"ports"`
	AgentAddress string        `yaml:"agent_address"`
	Processes    []processSpec `yaml:"processes"`
}

type processSpec struct {
	Name string            `yaml:"name"`
	Argv []string          `yaml:"argv"`
	Env  map[string]string `yaml:"env"`
	Dir  string            `yaml:"dir"`
}

// loadOne builds a catalogue holding one template and looks it up.
func loadOne(t *testing.T, template string) *Template {
	t.Helper()
	c := mustNew(t, Layer{Name: "test", FS: layerFS(map[string]string{
		"local/stores.yaml":   "- store: redis\n  versions: versions.yaml\n",
		"local/versions.yaml": "- version: '*'\n  template: node.yaml\n",
		"local/node.yaml":     template,
	})})
	tmpl, err := c.Lookup(Request{Driver: "local", Store: "redis", Version: "7.0"})
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

func testContext() Context {
	return Context{
		ClusterID:  "c1",
		NodeID:     "play-node-abcd1234",
		NodeGroup:  "default",
		NodeClass:  "small",
		Store:      "redis",
		Version:    "7.0.1",
		Attributes: map[string]any{},
		Ports:      map[string]int{"store": 6379, "agent": 10000},
		Dirs:       map[string]string{"node": "/n", "data": "/n/data", "logs": "/n/logs"},
	}
}

func TestRenderContext(t *testing.T) {
	tmpl := loadOne(t, `
ports: [store, agent]
agent_address: "http://127.0.0.1:{{ .Ports.agent }}"
processes:
  - name: "{{ .Store }}-{{ .NodeID }}"
    dir: "{{ .Dirs.data }}"
    argv:
      - redis-server
      - --port
      - "{{ .Ports.store }}"
      - '{{ .ClusterID }}/{{ .NodeGroup }}/{{ .NodeClass }}/{{ .Version }}'
      - '{{ .Attr "maxmemory" }}'
      - '{{ .Attr "appendonly" "no" }}'
      - '{{ .Attr "missing" "fallback" }}'
      - '{{ .Attr "null" "was-null" }}'
      - '{{ .Attr "n" }}|{{ .Attr "f" }}|{{ .Attr "b" }}|{{ .Attr "o" }}|{{ .Attr "l" }}'
      - '{{ .Attr "empty" "unused" }}'
      - 6379
    env:
      LOGS: "{{ .Dirs.logs }}"
      PLAIN: plain
`)
	ctx := testContext()
	ctx.Attributes = map[string]any{
		"maxmemory":  "100mb",
		"appendonly": "yes",
		"null":       nil,
		"n":          json.Number("5"),
		"f":          1.5,
		"b":          true,
		"o":          map[string]any{"k": "v"},
		"l":          []any{1, "a"},
		"empty":      "",
	}
	var got nodeSpec
	if err := tmpl.Render(ctx, &got); err != nil {
		t.Fatal(err)
	}
	want := nodeSpec{
		Ports:        []string{"store", "agent"},
		AgentAddress: "http://127.0.0.1:10000",
		Processes: []processSpec{{
			Name: "redis-play-node-abcd1234",
			Dir:  "/n/data",
			Argv: []string{
				"redis-server", "--port", "6379",
				"c1/default/small/7.0.1",
				"100mb", "yes", "fallback", "was-null",
				`5|1.5|true|{"k":"v"}|[1,"a"]`,
				"",
				"6379",
			},
			Env: map[string]string{"LOGS": "/n/logs", "PLAIN": "plain"},
		}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rendered\n%#v\nwant\n%#v", got, want)
	}
}

func TestRenderDoesNotChangeTheTemplate(t *testing.T) {
	tmpl := loadOne(t, "agent_address: \"{{ .NodeID }}\"\nprocesses: [{name: '{{ .Attr \"n\" }}', argv: [a]}]\n")
	for _, id := range []string{"first", "second", "first"} {
		ctx := testContext()
		ctx.NodeID = id
		ctx.Attributes = map[string]any{"n": id + "-name"}
		var got nodeSpec
		if err := tmpl.Render(ctx, &got); err != nil {
			t.Fatal(err)
		}
		if got.AgentAddress != id || got.Processes[0].Name != id+"-name" {
			t.Errorf("render with %s = %+v", id, got)
		}
	}
	var raw nodeSpec
	if err := tmpl.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if raw.AgentAddress != "{{ .NodeID }}" {
		t.Errorf("Decode after Render = %q, want the template text", raw.AgentAddress)
	}
}

func TestRenderConcurrently(t *testing.T) {
	tmpl := loadOne(t, "agent_address: \"{{ .NodeID }}\"\nprocesses:\n  - name: '{{ .Attr \"n\" }}'\n    argv: [x]\n")
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := testContext()
			ctx.NodeID = fmt.Sprintf("node-%d", i)
			ctx.Attributes = map[string]any{"n": fmt.Sprint(i)}
			var got nodeSpec
			if err := tmpl.Render(ctx, &got); err != nil {
				errs <- err
				return
			}
			if got.AgentAddress != ctx.NodeID || got.Processes[0].Name != fmt.Sprint(i) {
				errs <- fmt.Errorf("render %d = %+v", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name     string
		template string
		out      any
		wants    []string
	}{
		{"missing attribute without default", "agent_address: '{{ .Attr \"maxmemory\" }}'\n", &nodeSpec{},
			[]string{"template local/node.yaml failed to render", `attribute "maxmemory" is not set and the template gives no default`}},
		{"missing port", "agent_address: '{{ .Ports.metrics }}'\n", &nodeSpec{},
			[]string{"template local/node.yaml failed to render", "metrics"}},
		{"missing dir", "agent_address: '{{ .Dirs.cache }}'\n", &nodeSpec{},
			[]string{"template local/node.yaml failed to render", "cache"}},
		{"unknown field", "agent_address: '{{ .Nope }}'\n", &nodeSpec{},
			[]string{"template local/node.yaml failed to render", "Nope"}},
		{"unknown key", "agent_address: x\nprocess: []\n", &nodeSpec{},
			[]string{"template local/node.yaml does not describe a node", "field process not found"}},
		{"unknown nested key", "processes:\n  - name: x\n    args: ['{{ .NodeID }}']\n", &nodeSpec{},
			[]string{"template local/node.yaml does not describe a node", "field args not found"}},
		{"wrong type", "processes: {name: x}\n", &nodeSpec{},
			[]string{"template local/node.yaml does not describe a node"}},
		// A rendered scalar is always a string, even when it reads as a number.
		{"rendered scalar into int", "port: '{{ .Ports.store }}'\n", &struct {
			Port int `yaml:"port"`
		}{}, []string{"template local/node.yaml does not describe a node"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := loadOne(t, tt.template).Render(testContext(), tt.out)
			unprocessable(t, err, tt.wants...)
		})
	}
}

func TestRenderedScalarsAreStrings(t *testing.T) {
	// Whatever the template's tag and whatever the value reads as, a
	// rendered scalar decodes as a string.
	tmpl := loadOne(t, `
tagged_int: !!int '{{ .Attr "v" }}'
tagged_bool: !!bool "{{ .Attr \"v\" }}"
plain: x{{ .Attr "v" }}
untouched: 5
`)
	for _, v := range []string{"5", "true", "null", "~", "[1]", "{a: 1}"} {
		ctx := testContext()
		ctx.Attributes = map[string]any{"v": v}
		var got map[string]any
		if err := tmpl.Render(ctx, &got); err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		want := map[string]any{"tagged_int": v, "tagged_bool": v, "plain": "x" + v, "untouched": 5}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: rendered %#v, want %#v", v, got, want)
		}
	}
}

func TestDecodeUnrendered(t *testing.T) {
	tmpl := loadOne(t, "ports: [store, agent]\nextra: ignored\nagent_address: '{{ .Ports.agent }}'\n")
	var names struct {
		Ports []string `yaml:"ports"`
	}
	if err := tmpl.Decode(&names); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names.Ports, []string{"store", "agent"}) {
		t.Errorf("ports = %q", names.Ports)
	}
	var wrong struct {
		Ports int `yaml:"ports"`
	}
	unprocessable(t, tmpl.Decode(&wrong), "template local/node.yaml")
}

// injectionTemplate puts the attribute "v" in every kind of scalar a
// template can hold.
const injectionTemplate = `
processes:
  - name: main
    argv:
      - prog
      - "{{ .Attr \"v\" }}"
      - '--flag={{ .Attr "v" }}'
      - --plain={{ .Attr "v" }}
      - |
        {{ .Attr "v" }}
      - >
        {{ .Attr "v" }}
      - plain
    env:
      A: "{{ .Attr \"v\" }}"
      B: '{{ .Attr "v" }}'
  - {name: second, argv: [x, '{{ .Attr "v" }}'], env: {C: '{{ .Attr "v" }}'}}
`

func injectionValues() map[string]string {
	var big strings.Builder
	for big.Len() < 100<<10 {
		big.WriteString("x\n- injected: [1, {a: b}]\n  newkey: v\n\"'\\ {{ .NodeID }} #c &a *a !!int ---\n...\t")
	}
	return map[string]string{
		"list item":          "x\n- injected",
		"new key":            "x\nnewkey: v",
		"flow break":         "]}, {name: evil",
		"flow break 2":       "x'], env: {EVIL: 1}}, {name: evil, argv: ['rm",
		"template action":    "{{ .NodeID }}",
		"template call":      `{{ .Attr "v" }}`,
		"quotes":             `'"`,
		"backslash":          `\`,
		"backslash quote":    `\"`,
		"empty":              "",
		"spaces":             "  leading and trailing  ",
		"leading spaces":     "  leading",
		"leading tab":        "\tleading",
		"indented block":     "    a\n  b\n c",
		"only newlines":      "\n\n\n",
		"trailing newline":   "x\n",
		"indented lines":     "x\n  indented: y\n    more: z",
		"document markers":   "---\n...\n--- !!map",
		"comment":            "# comment",
		"anchor":             "&anchor x",
		"alias":              "*alias",
		"tag":                "!!int 5",
		"block indicators":   "|\n>\n|-",
		"mapping":            "a: b",
		"sequence":           "- a",
		"flow mapping":       "{a: b}",
		"flow sequence":      "[a, b]",
		"bool":               "true",
		"null":               "null",
		"tilde":              "~",
		"number":             "3",
		"hex":                "0x1F",
		"float":              "1e3",
		"control":            "a\x00b\x01c\x1fd\x7f",
		"tab":                "\tx\t",
		"CRLF":               "a\r\nb: c\r\n- d",
		"CR":                 "a\rb: c",
		"unicode separators": "a\u2028b\u2029c\u0085d",
		"BOM":                "\ufeffkey: v",
		"non-ASCII":          "ünïcødé 日本 🚀",
		"100 KB":             big.String(),
	}
}

func TestRenderInjection(t *testing.T) {
	tmpl := loadOne(t, injectionTemplate)
	for name, v := range injectionValues() {
		t.Run(name, func(t *testing.T) {
			ctx := testContext()
			ctx.Attributes = map[string]any{"v": v}

			// Loosely: the structure is exactly the template's.
			var loose any
			if err := tmpl.Render(ctx, &loose); err != nil {
				t.Fatal(err)
			}
			root, ok := loose.(map[string]any)
			if !ok || !sameKeys(root, "processes") {
				t.Fatalf("top level = %#v, want only processes", loose)
			}
			procs, ok := root["processes"].([]any)
			if !ok || len(procs) != 2 {
				t.Fatalf("processes = %#v, want 2", root["processes"])
			}
			main, _ := procs[0].(map[string]any)
			second, _ := procs[1].(map[string]any)
			if !sameKeys(main, "name", "argv", "env") || !sameKeys(second, "name", "argv", "env") {
				t.Fatalf("process keys: %v, %v", keys(main), keys(second))
			}
			argv, _ := main["argv"].([]any)
			if len(argv) != 7 {
				t.Fatalf("main argv has %d items, want 7", len(argv))
			}
			env, _ := main["env"].(map[string]any)
			if !sameKeys(env, "A", "B") {
				t.Fatalf("main env keys = %q", keys(env))
			}
			if argv2, _ := second["argv"].([]any); len(argv2) != 2 {
				t.Fatalf("second argv = %#v", second["argv"])
			}
			if env2, _ := second["env"].(map[string]any); !sameKeys(env2, "C") {
				t.Fatalf("second env keys = %q", keys(env2))
			}
			// Every rendered value is a string, never a bool, number or null.
			for i, item := range append(append([]any{}, argv...), env["A"], env["B"], second["argv"].([]any)[1]) {
				if _, ok := item.(string); !ok {
					t.Errorf("value %d = %#v (%T), want a string", i, item, item)
				}
			}

			// Strictly: every value is the literal attribute.
			var spec nodeSpec
			if err := tmpl.Render(ctx, &spec); err != nil {
				t.Fatal(err)
			}
			m, s := spec.Processes[0], spec.Processes[1]
			checks := []struct {
				where     string
				got, want string
			}{
				{"argv[0]", m.Argv[0], "prog"},
				{"double-quoted", m.Argv[1], v},
				{"single-quoted", m.Argv[2], "--flag=" + v},
				{"plain", m.Argv[3], "--plain=" + v},
				{"literal block", m.Argv[4], v + "\n"},
				{"folded block", m.Argv[5], v + "\n"},
				{"argv[6]", m.Argv[6], "plain"},
				{"env A", m.Env["A"], v},
				{"env B", m.Env["B"], v},
				{"flow argv", s.Argv[1], v},
				{"flow env", s.Env["C"], v},
				{"name", m.Name, "main"},
				{"flow name", s.Name, "second"},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %s, want %s", c.where, short(c.got), short(c.want))
				}
			}
		})
	}
}

func TestRenderInjectionBuiltIn(t *testing.T) {
	// The real redis template: attribute values stay single argv items.
	c, err := New(Layer{Name: "built-in", FS: stores.FS()})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := c.Lookup(Request{Driver: "local", Store: "redis", Version: "7.0"})
	if err != nil {
		t.Fatal(err)
	}
	var plain nodeSpec
	if err := tmpl.Render(testContext(), &plain); err != nil {
		t.Fatal(err)
	}
	if len(plain.Processes) != 1 {
		t.Fatalf("processes = %#v", plain.Processes)
	}
	argv := plain.Processes[0].Argv
	if argv[0] != "redis-server" || !contains(argv, "6379") || !contains(argv, "/n/data") {
		t.Errorf("argv = %q", argv)
	}
	if plain.AgentAddress != "http://127.0.0.1:10000" {
		t.Errorf("agent_address = %q", plain.AgentAddress)
	}
	for name, v := range injectionValues() {
		ctx := testContext()
		ctx.Attributes = map[string]any{"maxmemory": v, "appendonly": v}
		var got nodeSpec
		if err := tmpl.Render(ctx, &got); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(got.Processes) != 1 || len(got.Processes[0].Argv) != len(argv) {
			t.Errorf("%s: argv has %d items, want %d", name, len(got.Processes[0].Argv), len(argv))
			continue
		}
		for i, arg := range got.Processes[0].Argv {
			want := argv[i]
			if i > 0 && (argv[i-1] == "--maxmemory" || argv[i-1] == "--appendonly") {
				want = v
			}
			if arg != want {
				t.Errorf("%s: argv[%d] = %s, want %s", name, i, short(arg), short(want))
			}
		}
	}
}

func sameKeys(m map[string]any, want ...string) bool {
	got := keys(m)
	sort.Strings(want)
	return reflect.DeepEqual(got, want)
}

func keys(m map[string]any) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

// short quotes s for a message, cut to a readable length.
func short(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", s[:200], len(s))
	}
	return fmt.Sprintf("%q", s)
}
