package catalog

import (
	"reflect"
	"strings"
	"testing"
)

// A multi-document template: each document renders on its own, empty
// documents are dropped, and everything else still sees the first one.
func TestDocuments(t *testing.T) {
	tmpl := loadOne(t, `---
# a leading separator and a comment-only document
---
kind: Pod
metadata:
  name: "{{ .NodeID }}"
  namespace: "{{ .Namespace }}"
---
---
kind: Service
metadata:
  name: "{{ .NodeID }}-svc"
  labels: {peer: '{{ range .Peers }}{{ .NodeID }}.{{ .Namespace }}{{ end }}'}
---
`)
	docs := tmpl.Documents()
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	ctx := testContext()
	ctx.Namespace = "ns1"
	ctx.Peers = []Peer{{NodeID: "p1", Namespace: "ns2"}}
	var got []map[string]any
	for _, doc := range docs {
		var obj map[string]any
		if err := doc.Render(ctx, &obj); err != nil {
			t.Fatal(err)
		}
		got = append(got, obj)
	}
	want := []map[string]any{
		{"kind": "Pod", "metadata": map[string]any{"name": "play-node-abcd1234", "namespace": "ns1"}},
		{"kind": "Service", "metadata": map[string]any{"name": "play-node-abcd1234-svc", "labels": map[string]any{"peer": "p1.ns2"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rendered %v, want %v", got, want)
	}
	if !strings.HasSuffix(docs[1].Name, "#2") {
		t.Errorf("second document is named %q", docs[1].Name)
	}
	// The first document is the template for everything else.
	var first map[string]any
	if err := tmpl.Render(ctx, &first); err != nil || first["kind"] != "Pod" {
		t.Errorf("Render of the whole template: %v, %v", first, err)
	}
}

func TestDocumentsOfOneDocument(t *testing.T) {
	tmpl := loadOne(t, "kind: Pod\n")
	if docs := tmpl.Documents(); len(docs) != 1 || docs[0] != tmpl {
		t.Errorf("Documents of a single document: %v", docs)
	}
}

// Every document is checked when the catalogue loads, not only the first.
func TestDocumentsCheckedAtLoad(t *testing.T) {
	for name, text := range map[string]string{
		"unquoted action": "kind: Pod\n---\nkind: Service\nname: {{ .NodeID }}\n",
		"bad action":      "kind: Pod\n---\nkind: Service\nname: '{{ .NodeID '\n",
		"bad yaml":        "kind: Pod\n---\nkind: [\n",
		"only separators": "---\n---\n",
	} {
		if _, err := Parse("t.yaml", []byte(text)); err == nil {
			t.Errorf("%s: Parse accepted %q", name, text)
		}
	}
}
