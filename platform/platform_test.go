package platform

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
)

func TestProvisionRequestAttributes(t *testing.T) {
	tests := []struct {
		name    string
		cluster map[string]any
		group   map[string]any
		want    map[string]any
	}{
		{"both empty", map[string]any{}, map[string]any{}, map[string]any{}},
		{"both nil", nil, nil, map[string]any{}},
		{"cluster only", map[string]any{"a": "1"}, nil, map[string]any{"a": "1"}},
		{"group only", nil, map[string]any{"b": true}, map[string]any{"b": true}},
		{"disjoint", map[string]any{"a": 1}, map[string]any{"b": 2}, map[string]any{"a": 1, "b": 2}},
		{"group wins", map[string]any{"a": "cluster", "k": "x"}, map[string]any{"a": "group"}, map[string]any{"a": "group", "k": "x"}},
		{"group wins with another type", map[string]any{"a": "1"}, map[string]any{"a": json.Number("1")}, map[string]any{"a": json.Number("1")}},
		{"null deletes", map[string]any{"a": 1, "b": 2}, map[string]any{"a": nil}, map[string]any{"b": 2}},
		{"null of missing key", map[string]any{"b": 2}, map[string]any{"a": nil}, map[string]any{"b": 2}},
		{
			"nested merge",
			map[string]any{"limits": map[string]any{"cpu": "1", "mem": "1g", "nested": map[string]any{"x": 1, "y": 2}}},
			map[string]any{"limits": map[string]any{"mem": "2g", "disk": "10g", "nested": map[string]any{"y": nil}}},
			map[string]any{"limits": map[string]any{"cpu": "1", "mem": "2g", "disk": "10g", "nested": map[string]any{"x": 1}}},
		},
		{
			"nested null deletes",
			map[string]any{"limits": map[string]any{"cpu": "1", "mem": "1g"}},
			map[string]any{"limits": map[string]any{"cpu": nil}},
			map[string]any{"limits": map[string]any{"mem": "1g"}},
		},
		{
			// RFC 7386: an object replaces a non-object, and its nulls are dropped.
			"object over scalar",
			map[string]any{"a": "scalar"},
			map[string]any{"a": map[string]any{"b": 1, "c": nil}},
			map[string]any{"a": map[string]any{"b": 1}},
		},
		{"scalar over object", map[string]any{"a": map[string]any{"b": 1}}, map[string]any{"a": "s"}, map[string]any{"a": "s"}},
		{"array replaces", map[string]any{"a": []any{1, 2}}, map[string]any{"a": []any{3}}, map[string]any{"a": []any{3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clusterCopy := deepCopy(tt.cluster)
			groupCopy := deepCopy(tt.group)
			req := ProvisionRequest{
				Cluster: ClusterSpec{
					Attributes: tt.cluster,
					Nodes:      map[string]NodeGroup{"g": {Attributes: tt.group}},
				},
				Provision: ProvisionSpec{NodeGroupID: "g"},
			}
			got := req.Attributes()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Attributes() = %#v, want %#v", got, tt.want)
			}
			// Merging must not change the request.
			if !reflect.DeepEqual(tt.cluster, clusterCopy) || !reflect.DeepEqual(tt.group, groupCopy) {
				t.Errorf("Attributes() modified the request: cluster %#v, group %#v", tt.cluster, tt.group)
			}
		})
	}
}

func TestProvisionRequestAttributesOtherGroup(t *testing.T) {
	// Only the provisioned group's attributes apply.
	req := ProvisionRequest{
		Cluster: ClusterSpec{
			Attributes: map[string]any{"a": "cluster"},
			Nodes: map[string]NodeGroup{
				"g1": {Attributes: map[string]any{"a": "g1"}},
				"g2": {Attributes: map[string]any{"a": "g2"}},
			},
		},
		Provision: ProvisionSpec{NodeGroupID: "g2"},
	}
	if got := req.Attributes()["a"]; got != "g2" {
		t.Errorf(`Attributes()["a"] = %v, want g2`, got)
	}
}

func TestProvisionRequestStoreVersion(t *testing.T) {
	tests := []struct {
		cluster, group, want string
	}{
		{"7.0", "", "7.0"},
		{"7.0", "6.2", "6.2"},
		{"", "6.2", "6.2"},
	}
	for _, tt := range tests {
		req := ProvisionRequest{
			Cluster: ClusterSpec{
				StoreVersion: tt.cluster,
				Nodes: map[string]NodeGroup{
					"g":     {Version: tt.group},
					"other": {Version: "1.0"},
				},
			},
			Provision: ProvisionSpec{NodeGroupID: "g"},
		}
		if got := req.StoreVersion(); got != tt.want {
			t.Errorf("cluster %q group %q: StoreVersion() = %q, want %q", tt.cluster, tt.group, got, tt.want)
		}
	}
}

func TestRequestID(t *testing.T) {
	ctx := context.Background()
	if got := RequestID(ctx); got != "" {
		t.Errorf("RequestID(empty) = %q", got)
	}
	ctx = WithRequestID(ctx, "abc")
	if got := RequestID(ctx); got != "abc" {
		t.Errorf("RequestID = %q, want abc", got)
	}
	if got := RequestID(WithRequestID(ctx, "def")); got != "def" {
		t.Errorf("RequestID(inner) = %q, want def", got)
	}
}

func TestDiscoveredNodeJSON(t *testing.T) {
	// node_class and node_group are always sent (Core's client requires them).
	data, err := json.Marshal(DiscoveredNode{AgentAddress: "http://a:1", NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"agent_address":"http://a:1","node_id":"n","node_class":"","node_group":null}`
	if string(data) != want {
		t.Errorf("got %s, want %s", data, want)
	}
}

func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			out[k] = deepCopy(v)
		case []any:
			out[k] = append([]any(nil), v...)
		default:
			out[k] = v
		}
	}
	return out
}
