package catalog

import (
	"strings"
	"testing"
)

// FuzzRenderAttributes renders a template with attacker-chosen attribute
// values: the result always has the template's structure, and each value
// comes out as the literal text it went in as.
func FuzzRenderAttributes(f *testing.F) {
	for _, v := range injectionValues() {
		if len(v) < 4096 {
			f.Add(v, "k")
		}
	}
	f.Add("x\n- injected", "maxmemory")
	f.Add("{{ .NodeID }}", "v")
	f.Fuzz(func(t *testing.T, value, key string) {
		tmpl := loadOne(t, injectionTemplate)
		ctx := testContext()
		ctx.Attributes = map[string]any{"v": value, key: value}
		var spec nodeSpec
		if err := tmpl.Render(ctx, &spec); err != nil {
			// Only values YAML cannot carry may fail, and then cleanly.
			if !strings.Contains(err.Error(), "template") {
				t.Fatalf("render error does not name the template: %v", err)
			}
			return
		}
		if len(spec.Processes) != 2 {
			t.Fatalf("%d processes, want 2", len(spec.Processes))
		}
		main, second := spec.Processes[0], spec.Processes[1]
		if len(main.Argv) != 7 || len(second.Argv) != 2 || len(main.Env) != 2 || len(second.Env) != 1 {
			t.Fatalf("structure changed: %+v", spec)
		}
		if main.Argv[1] != value || main.Env["A"] != value || second.Argv[1] != value {
			t.Fatalf("value changed: %q became %q / %q / %q", value, main.Argv[1], main.Env["A"], second.Argv[1])
		}
	})
}
