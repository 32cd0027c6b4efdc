package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"

	"github.com/berthio/berth/platform"
)

// Template is a parsed template file. Its YAML structure is fixed when it is
// loaded: rendering only replaces the text of scalar values that contain
// template actions, and each stays one string scalar whatever the values put
// in it. Request attributes therefore cannot add keys, list items or
// processes, nor change a value's type.
type Template struct {
	// Name is the template's path in its catalogue, for messages.
	Name string
	root *yaml.Node
	// more are the documents after the first of a multi-document file;
	// only Documents sees them.
	more    []*yaml.Node
	scalars map[string]*template.Template // by the scalar's source text
}

// Context is what a template renders with.
type Context struct {
	ClusterID string
	NodeID    string
	NodeGroup string
	NodeClass string
	Store     string
	// Version is the effective store version (the group's override applied).
	Version string
	// Attributes are the cluster attributes merged with the group's.
	Attributes map[string]any
	// Ports are ports the driver allocated for the node, by name.
	Ports map[string]int
	// Dirs are the node's directories, by name (for the local driver:
	// "node", "data" and "logs").
	Dirs map[string]string
	// Peers are the cluster's other nodes, oldest first: for a provision,
	// the nodes that exist before this one (including those provisioned
	// earlier in the same request); for a hook, the other nodes now.
	Peers []Peer
	// Captured holds the values earlier hook steps captured, by name.
	Captured map[string]string
	// Namespace is the Kubernetes namespace the node's objects go into
	// (Kubernetes driver only).
	Namespace string
}

// Peer is another node of the same cluster, as templates see it.
type Peer struct {
	NodeID    string
	NodeGroup string
	NodeClass string
	Ports     map[string]int
	// Namespace is the peer's Kubernetes namespace (Kubernetes driver only).
	Namespace string
}

// PeersIn returns the peers of one node group, for example to render the
// address of a primary: {{ range .PeersIn "primary" }}...{{ end }}.
func (c Context) PeersIn(group string) []Peer {
	var peers []Peer
	for _, p := range c.Peers {
		if p.NodeGroup == group {
			peers = append(peers, p)
		}
	}
	return peers
}

// FirstPeer returns the oldest peer of a node group, and an error (which
// fails the render) when the group has none: a replica cannot be rendered
// before its primary exists.
func (c Context) FirstPeer(group string) (Peer, error) {
	if peers := c.PeersIn(group); len(peers) > 0 {
		return peers[0], nil
	}
	return Peer{}, fmt.Errorf("cluster %s has no node in group %q yet", c.ClusterID, group)
}

// Attr returns the attribute key as text (strings as they are, other JSON
// values JSON-encoded), or def when the attribute is missing; missing with no
// default is an error. In a template: {{ .Attr "maxmemory" "100mb" }}.
func (c Context) Attr(key string, def ...string) (string, error) {
	value, ok := c.Attributes[key]
	if !ok || value == nil {
		if len(def) > 0 {
			return def[0], nil
		}
		return "", fmt.Errorf("attribute %q is not set and the template gives no default", key)
	}
	if s, ok := value.(string); ok {
		return s, nil
	}
	data, err := json.Marshal(value)
	if err != nil {
		return "", fmt.Errorf("attribute %q: %w", key, err)
	}
	return string(data), nil
}

func loadTemplate(fsys fs.FS, driver, name string) (*Template, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, err
	}
	return Parse(path.Join(driver, name), data)
}

// Parse parses a template from its YAML text; name is for messages. Drivers
// use it to reload a section they stored (see Split).
//
// The text may hold several YAML documents separated by "---" lines; empty
// documents are dropped. Render, Decode, Split, Items and Source see the
// first document only; Documents returns each.
func Parse(name string, data []byte) (*Template, error) {
	t := &Template{Name: name, scalars: map[string]*template.Template{}}
	docs, err := parseDocuments(data)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", t.Name, err)
	}
	if len(docs) == 0 {
		return nil, fmt.Errorf("template %s is empty", t.Name)
	}
	t.root, t.more = docs[0], docs[1:]
	for _, doc := range docs {
		if err := checkKeys(doc); err != nil {
			return nil, fmt.Errorf("template %s: %w", t.Name, err)
		}
	}
	var parseErr error
	walkScalars(&yaml.Node{Kind: yaml.SequenceNode, Content: docs}, func(n *yaml.Node) {
		if parseErr != nil || !strings.Contains(n.Value, "{{") {
			return
		}
		if _, ok := t.scalars[n.Value]; ok {
			return
		}
		tmpl, err := template.New(fmt.Sprintf("%s:%d", t.Name, n.Line)).Option("missingkey=error").Parse(n.Value)
		if err != nil {
			parseErr = fmt.Errorf("template %s: %w", t.Name, err)
			return
		}
		t.scalars[n.Value] = tmpl
	})
	if parseErr != nil {
		return nil, parseErr
	}
	return t, nil
}

// parseDocuments decodes every YAML document of data, leaving out empty
// ones (a leading or trailing "---", or a document of comments only).
func parseDocuments(data []byte) ([]*yaml.Node, error) {
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		doc := &yaml.Node{}
		err := dec.Decode(doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		} else if err != nil {
			return nil, err
		}
		if doc.Kind == 0 || len(doc.Content) == 1 && doc.Content[0].Tag == "!!null" {
			continue
		}
		docs = append(docs, doc)
	}
}

// Documents returns each YAML document of a multi-document template as a
// template of its own, in order; for a single document, the template itself.
func (t *Template) Documents() []*Template {
	if len(t.more) == 0 {
		return []*Template{t}
	}
	docs := []*Template{{Name: t.Name + "#1", root: t.root, scalars: t.scalars}}
	for i, n := range t.more {
		docs = append(docs, &Template{Name: fmt.Sprintf("%s#%d", t.Name, i+2), root: n, scalars: t.scalars})
	}
	return docs
}

// checkKeys rejects template actions outside scalar values. An unquoted
// {{ ... }} is YAML for a flow mapping whose key is a mapping, and keys are
// never rendered, so either would silently not be the template its author meant.
func checkKeys(n *yaml.Node) error {
	if n.Kind == yaml.MappingNode {
		for i := 0; i < len(n.Content); i += 2 {
			key := n.Content[i]
			if key.Kind != yaml.ScalarNode || strings.Contains(key.Value, "{{") {
				return fmt.Errorf("line %d: template actions must be inside quoted values (write \"{{ ... }}\"), and keys cannot be templated", key.Line)
			}
		}
	}
	for _, c := range n.Content {
		if err := checkKeys(c); err != nil {
			return err
		}
	}
	return nil
}

// walkScalars calls fn for every scalar value (mapping keys excluded).
func walkScalars(n *yaml.Node, fn func(*yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			walkScalars(c, fn)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			walkScalars(n.Content[i], fn)
		}
	case yaml.ScalarNode:
		fn(n)
	}
}

// Split returns the template without its top-level key, and that key's
// value as a template of its own (nil when the key is absent). A driver
// renders the rest at provision time and keeps the section, as text from
// Source, to render later with values known only then, such as hooks that
// run at deprovision time with the peers of that moment.
func (t *Template) Split(key string) (rest, section *Template) {
	doc := t.root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return t, nil
	}
	restRoot := &yaml.Node{Kind: yaml.MappingNode, Tag: doc.Tag, Style: doc.Style}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == key {
			section = &Template{Name: t.Name + "#" + key, root: doc.Content[i+1], scalars: t.scalars}
			continue
		}
		restRoot.Content = append(restRoot.Content, doc.Content[i], doc.Content[i+1])
	}
	return &Template{Name: t.Name, root: restRoot, scalars: t.scalars}, section
}

// Items returns the elements of a template whose value is a list, each a
// template of its own, so that a driver can render one list item at a time
// (a step that needs what the step before it captured). Nil for a non-list.
func (t *Template) Items() []*Template {
	root := t.root
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind != yaml.SequenceNode {
		return nil
	}
	items := make([]*Template, len(root.Content))
	for i, n := range root.Content {
		items[i] = &Template{Name: fmt.Sprintf("%s[%d]", t.Name, i), root: n, scalars: t.scalars}
	}
	return items
}

// Source returns the template's YAML text, unrendered.
func (t *Template) Source() (string, error) {
	data, err := yaml.Marshal(t.root)
	return string(data), err
}

// Decode decodes the template as it is, unrendered, into out: for the parts a
// driver needs before it can render, such as the names of ports to allocate.
// Unknown keys are ignored here; Render is strict.
func (t *Template) Decode(out any) error {
	if err := t.root.Decode(out); err != nil {
		return platform.Errorf(platform.EUNPROCESSABLE, "template %s: %v", t.Name, err)
	}
	return nil
}

// Render renders every templated scalar with ctx and decodes the result into
// out strictly (a key out does not have is an error). Failures are
// EUNPROCESSABLE and name the template.
func (t *Template) Render(ctx Context, out any) error {
	root, err := t.render(ctx)
	if err != nil {
		return platform.Errorf(platform.EUNPROCESSABLE, "template %s failed to render: %v", t.Name, err)
	}
	data, err := yaml.Marshal(root)
	if err != nil {
		return platform.Errorf(platform.EUNPROCESSABLE, "template %s failed to render: %v", t.Name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return platform.Errorf(platform.EUNPROCESSABLE, "template %s does not describe a node: %v", t.Name, err)
	}
	return nil
}

func (t *Template) render(ctx Context) (*yaml.Node, error) {
	root := copyNode(t.root)
	var renderErr error
	walkScalars(root, func(n *yaml.Node) {
		tmpl, ok := t.scalars[n.Value]
		if renderErr != nil || !ok {
			return
		}
		var out strings.Builder
		if err := tmpl.Execute(&out, ctx); err != nil {
			renderErr = err
			return
		}
		n.Value = out.String()
		n.Tag = "!!str"
		// Double quotes carry any string exactly. The YAML encoder's block
		// styles do not: it drops leading spaces, adds line breaks to folded
		// text and writes tabs the decoder then rejects.
		n.Style = yaml.DoubleQuotedStyle
	})
	return root, renderErr
}

func copyNode(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, child := range n.Content {
		c.Content[i] = copyNode(child)
	}
	return &c
}
