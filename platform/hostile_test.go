package platform

import (
	"strings"
	"testing"
)

func TestDecodeRejectsHostileJSON(t *testing.T) {
	base := func(attrs string) string {
		return `{"cluster": {"cluster_id": "c", "store": "redis", "store_version": "7.0", "attributes": ` + attrs + `,
			"nodes": {"default": {"desired_count": 1, "node_class": "small"}}},
			"provision": {"node_group_id": "default"}}`
	}
	nested := func(depth int) string {
		return strings.Repeat(`{"a": `, depth) + "1" + strings.Repeat("}", depth)
	}
	for _, tt := range []struct {
		name, body, want string
	}{
		{"duplicate top-level key", `{"cluster": {}, "cluster": {}, "provision": {}}`, `duplicate key "cluster"`},
		{"duplicate nested key", strings.Replace(base(`{}`), `"store": "redis"`, `"store": "redis", "store": "etcd"`, 1), `cluster: duplicate key "store"`},
		{"duplicate attribute", base(`{"x": 1, "x": 2}`), `cluster.attributes: duplicate key "x"`},
		{"deep nesting", base(nested(40)), "nests deeper than 32 levels"},
		{"deep arrays", base(`{"a": ` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`), "nests deeper than 32 levels"},
		{"NUL in an attribute", base(`{"x": "a\u0000b"}`), "cluster.attributes.x: attribute values must not contain NUL"},
		{"NUL in an attribute name", base(`{"a\u0000": "b"}`), "attribute names must not contain NUL"},
		{"template action", base(`{"x": "{{ .NodeID }}"}`), "cluster.attributes.x: attribute values must not contain template delimiters"},
		{"template action nested", base(`{"x": {"y": ["ok", "}}"]}}`), "cluster.attributes.x.y[1]: attribute values must not contain template delimiters"},
		{"unterminated", `{"cluster": {`, "not valid JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeProvisionRequest([]byte(tt.body))
			if ErrorCode(err) != EINVALID || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want invalid with %q", err, tt.want)
			}
		})
	}
	if _, err := DecodeProvisionRequest([]byte(base(nested(30)))); err != nil {
		t.Errorf("30 levels of attributes: %v", err)
	}
}
