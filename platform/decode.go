package platform

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on request values.
const (
	MaxCount        = 65535
	MaxDesiredCount = 10000
	MaxIDLength     = 63
)

// DecodeProvisionRequest parses a POST /provision body and validates it. Every
// failure is an EINVALID *Error whose message names the offending field by its
// path, such as cluster.nodes.default.desired_count.
func DecodeProvisionRequest(body []byte) (ProvisionRequest, error) {
	root, err := parseObject(body)
	if err != nil {
		return ProvisionRequest{}, err
	}
	var req ProvisionRequest
	v := &validator{}

	cluster := v.object(root, "", "cluster", true)
	if cluster != nil {
		req.Cluster.ClusterID = v.id(cluster, "cluster.", "cluster_id", true)
		req.Cluster.Store = v.store(cluster, "cluster.", "store")
		req.Cluster.StoreVersion = v.version(cluster, "cluster.", "store_version", true)
		req.Cluster.Attributes = v.attributes(cluster, "cluster.")
		req.Cluster.Nodes = v.groups(cluster)
	}
	provision := v.object(root, "", "provision", true)
	if provision != nil {
		req.Provision.NodeGroupID = v.id(provision, "provision.", "node_group_id", true)
		req.Provision.Count = v.integer(provision, "provision.", "count", false, 1, MaxCount, 1)
	}
	if err := v.err(); err != nil {
		return ProvisionRequest{}, err
	}
	if _, ok := req.Cluster.Nodes[req.Provision.NodeGroupID]; !ok {
		defined := make([]string, 0, len(req.Cluster.Nodes))
		for id := range req.Cluster.Nodes {
			defined = append(defined, id)
		}
		sort.Strings(defined)
		return ProvisionRequest{}, &Error{
			Code: EINVALID,
			Message: fmt.Sprintf("provision.node_group_id: node group %q is not defined in cluster.nodes (defined: %s)",
				req.Provision.NodeGroupID, strings.Join(defined, ", ")),
			Details: map[string]any{"node_group_id": req.Provision.NodeGroupID, "defined_node_groups": defined},
		}
	}
	return req, nil
}

// DecodeDeprovisionRequest parses a POST /deprovision body and validates it.
func DecodeDeprovisionRequest(body []byte) (DeprovisionRequest, error) {
	root, err := parseObject(body)
	if err != nil {
		return DeprovisionRequest{}, err
	}
	v := &validator{}
	req := DeprovisionRequest{
		ClusterID: v.id(root, "", "cluster_id", true),
		NodeID:    v.id(root, "", "node_id", true),
	}
	return req, v.err()
}

// MaxDepth bounds how deeply a request's JSON may nest.
const MaxDepth = 32

// parseObject decodes exactly one JSON object and nothing after it. It is
// stricter than encoding/json: a duplicate key (which a reader might take
// either way) and nesting deeper than MaxDepth are errors.
func parseObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	value, err := parseValue(dec, 0, "")
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errorf(EINVALID, "request body is empty: expected a JSON object")
		}
		var perr *Error
		if errors.As(err, &perr) {
			return nil, perr
		}
		return nil, Errorf(EINVALID, "request body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, Errorf(EINVALID, "request body has data after the JSON value")
	}
	obj, ok := value.(map[string]any)
	if !ok {
		return nil, Errorf(EINVALID, "request body must be a JSON object, not %s", jsonType(value))
	}
	return obj, nil
}

// parseValue reads one JSON value from dec's tokens; path names it in errors.
func parseValue(dec *json.Decoder, depth int, path string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) && depth > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	where := path
	if where == "" {
		where = "the request body"
	}
	switch t := tok.(type) {
	case json.Delim:
		if t != '{' && t != '[' {
			return nil, fmt.Errorf("unexpected %q", rune(t))
		}
		if depth >= MaxDepth {
			return nil, Errorf(EINVALID, "%s: JSON nests deeper than %d levels", where, MaxDepth)
		}
		if t == '[' {
			list := []any{}
			for i := 0; dec.More(); i++ {
				item, err := parseValue(dec, depth+1, fmt.Sprintf("%s[%d]", path, i))
				if err != nil {
					return nil, err
				}
				list = append(list, item)
			}
			return list, closing(dec)
		}
		obj := map[string]any{}
		for dec.More() {
			keyTok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := keyTok.(string)
			child := key
			if path != "" {
				child = path + "." + key
			}
			if _, dup := obj[key]; dup {
				return nil, Errorf(EINVALID, "%s: duplicate key %q", where, key)
			}
			if obj[key], err = parseValue(dec, depth+1, child); err != nil {
				return nil, err
			}
		}
		return obj, closing(dec)
	}
	return tok, nil
}

// closing reads the delimiter that ends an object or array.
func closing(dec *json.Decoder) error {
	_, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// validator reads typed fields out of decoded JSON, collecting one problem per
// field so that a client learns everything wrong with a request at once.
type validator struct {
	problems []string
}

func (v *validator) fail(path, format string, args ...any) {
	v.problems = append(v.problems, path+": "+fmt.Sprintf(format, args...))
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return &Error{Code: EINVALID, Message: strings.Join(v.problems, "; ")}
}

// field returns obj[key], reporting a missing required field. A JSON null
// counts as missing.
func (v *validator) field(obj map[string]any, prefix, key string, required bool) (any, bool) {
	value, ok := obj[key]
	if !ok || value == nil {
		if required {
			v.fail(prefix+key, "is required")
		}
		return nil, false
	}
	return value, true
}

func (v *validator) object(obj map[string]any, prefix, key string, required bool) map[string]any {
	value, ok := v.field(obj, prefix, key, required)
	if !ok {
		return nil
	}
	m, ok := value.(map[string]any)
	if !ok {
		v.fail(prefix+key, "must be a JSON object, not %s", jsonType(value))
		return nil
	}
	return m
}

func (v *validator) str(obj map[string]any, prefix, key string, required bool) (string, bool) {
	value, ok := v.field(obj, prefix, key, required)
	if !ok {
		return "", false
	}
	s, ok := value.(string)
	if !ok {
		v.fail(prefix+key, "must be a string, not %s", jsonType(value))
		return "", false
	}
	return s, true
}

func (v *validator) id(obj map[string]any, prefix, key string, required bool) string {
	s, ok := v.str(obj, prefix, key, required)
	if !ok {
		return ""
	}
	if err := ValidateID(s); err != nil {
		v.fail(prefix+key, "%v", err)
		return ""
	}
	return s
}

func (v *validator) store(obj map[string]any, prefix, key string) string {
	s, ok := v.str(obj, prefix, key, true)
	if !ok {
		return ""
	}
	if err := ValidateStore(s); err != nil {
		v.fail(prefix+key, "%v", err)
		return ""
	}
	return s
}

func (v *validator) version(obj map[string]any, prefix, key string, required bool) string {
	s, ok := v.str(obj, prefix, key, required)
	if !ok {
		return ""
	}
	if err := validateVersion(s); err != nil {
		v.fail(prefix+key, "%v", err)
		return ""
	}
	return s
}

func (v *validator) integer(obj map[string]any, prefix, key string, required bool, min, max, missing int) int {
	value, ok := v.field(obj, prefix, key, required)
	if !ok {
		return missing
	}
	num, ok := value.(json.Number)
	if !ok {
		v.fail(prefix+key, "must be an integer, not %s", jsonType(value))
		return missing
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		if strings.ContainsAny(string(num), ".eE") {
			v.fail(prefix+key, "must be an integer, not %s", num)
		} else {
			v.fail(prefix+key, "must be between %d and %d, not %s", min, max, num)
		}
		return missing
	}
	if n < int64(min) || n > int64(max) {
		v.fail(prefix+key, "must be between %d and %d, not %d", min, max, n)
		return missing
	}
	return int(n)
}

// attributes reads an optional attributes object; missing or null means {}.
func (v *validator) attributes(obj map[string]any, prefix string) map[string]any {
	m := v.object(obj, prefix, "attributes", false)
	if m == nil {
		return map[string]any{}
	}
	v.noTemplateActions(m, prefix+"attributes")
	return m
}

// noTemplateActions rejects attribute values with template delimiters or
// NUL characters. Templates render attributes as data, so "{{ ... }}" in a
// value could do no harm; it is refused all the same, because no store
// setting needs it and a request carrying it is probing for an injection. A
// NUL cannot pass into a process's arguments or environment at all.
func (v *validator) noTemplateActions(value any, path string) {
	switch t := value.(type) {
	case string:
		if strings.Contains(t, "{{") || strings.Contains(t, "}}") {
			v.fail(path, "attribute values must not contain template delimiters {{ or }}")
		}
		if strings.ContainsRune(t, 0) {
			v.fail(path, "attribute values must not contain NUL characters")
		}
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if strings.ContainsRune(k, 0) || strings.Contains(k, "{{") {
				v.fail(path, "attribute names must not contain NUL characters or {{")
				continue
			}
			v.noTemplateActions(t[k], path+"."+k)
		}
	case []any:
		for i, item := range t {
			v.noTemplateActions(item, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func (v *validator) groups(cluster map[string]any) map[string]NodeGroup {
	nodes := v.object(cluster, "cluster.", "nodes", true)
	if nodes == nil {
		return nil
	}
	if len(nodes) == 0 {
		v.fail("cluster.nodes", "must declare at least one node group")
		return nil
	}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	groups := make(map[string]NodeGroup, len(nodes))
	for _, id := range ids {
		prefix := "cluster.nodes." + id + "."
		if err := ValidateID(id); err != nil {
			v.fail(fmt.Sprintf("cluster.nodes[%q]", id), "node group ID %v", err)
			continue
		}
		raw, ok := nodes[id].(map[string]any)
		if !ok {
			v.fail("cluster.nodes."+id, "must be a JSON object, not %s", jsonType(nodes[id]))
			continue
		}
		group := NodeGroup{
			Attributes:   v.attributes(raw, prefix),
			DesiredCount: v.integer(raw, prefix, "desired_count", true, 0, MaxDesiredCount, 0),
			NodeClass:    v.id(raw, prefix, "node_class", true),
		}
		version := v.version(raw, prefix, "version", false)
		storeVersion := v.version(raw, prefix, "store_version", false)
		if version != "" && storeVersion != "" && version != storeVersion {
			v.fail(prefix+"version", "%q differs from %sstore_version %q: give one of them", version, prefix, storeVersion)
		}
		group.Version = version
		if group.Version == "" {
			group.Version = storeVersion
		}
		groups[id] = group
	}
	return groups
}

// ValidateID checks a cluster, node, node group or node class ID: 1 to 63
// letters, digits, '.', '_' and '-', beginning and ending with a letter or a
// digit. Such an ID is safe as a directory name, a container name and a
// Kubernetes label value.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("must not be empty")
	}
	if len(id) > MaxIDLength {
		return fmt.Errorf("must be at most %d characters, not %d", MaxIDLength, len(id))
	}
	// Ranging over runes names a non-ASCII character as the user wrote it,
	// not as its first byte.
	for i, c := range id {
		if c < utf8.RuneSelf && isAlnum(byte(c)) {
			continue
		}
		if c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%q has character %q: only letters, digits, '.', '_' and '-' are allowed", id, c)
		}
		if i == 0 || i == len(id)-1 {
			return fmt.Errorf("%q must begin and end with a letter or digit", id)
		}
	}
	return nil
}

// ValidateStore checks a store name: 1 to 63 lowercase letters, digits, '.',
// '_', '-' and '/', with no ".." and no leading or trailing '/'.
func ValidateStore(store string) error {
	if store == "" {
		return errors.New("must not be empty")
	}
	if len(store) > MaxIDLength {
		return fmt.Errorf("must be at most %d characters, not %d", MaxIDLength, len(store))
	}
	for _, c := range store {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return fmt.Errorf("%q has character %q: only lowercase letters, digits, '.', '_', '-' and '/' are allowed", store, c)
		}
	}
	if strings.Contains(store, "..") {
		return fmt.Errorf("%q must not contain \"..\"", store)
	}
	if strings.HasPrefix(store, "/") || strings.HasSuffix(store, "/") {
		return fmt.Errorf("%q must not begin or end with '/'", store)
	}
	return nil
}

// validateVersion checks a store version string: non-empty, at most 63
// printable ASCII characters without spaces. Whether it names a version the
// catalogue has is the catalogue's question.
func validateVersion(version string) error {
	if version == "" {
		return errors.New("must not be empty")
	}
	if len(version) > MaxIDLength {
		return fmt.Errorf("must be at most %d characters, not %d", MaxIDLength, len(version))
	}
	for _, c := range version {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("%q has character %q: only printable ASCII without spaces is allowed", version, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func jsonType(value any) string {
	switch value.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", value)
}
