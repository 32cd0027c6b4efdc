package platform

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// remove marks a field to delete in a request built by provisionBody.
var remove = &struct{}{}

// validProvision is a request that decodes; tests change one field at a time.
func validProvision() map[string]any {
	return map[string]any{
		"cluster": map[string]any{
			"cluster_id":    "c1",
			"store":         "redis",
			"store_version": "7.0.1",
			"attributes":    map[string]any{"maxmemory": "100mb"},
			"nodes": map[string]any{
				"default": map[string]any{
					"desired_count": 3,
					"node_class":    "small",
					"attributes":    map[string]any{"appendonly": "yes"},
				},
			},
		},
		"provision": map[string]any{"node_group_id": "default", "count": 2},
	}
}

// withField returns body with the dotted path set to value (remove deletes
// it). Path segments are map keys; node group IDs containing dots are not
// needed here.
func withField(t *testing.T, body map[string]any, path string, value any) map[string]any {
	t.Helper()
	keys := strings.Split(path, ".")
	m := body
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			t.Fatalf("withField %s: %s is not an object", path, k)
		}
		m = next
	}
	last := keys[len(keys)-1]
	if value == remove {
		delete(m, last)
	} else {
		m[last] = value
	}
	return body
}

func encode(t *testing.T, value any) []byte {
	t.Helper()
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// invalid asserts err is a single-problem EINVALID *Error about path whose
// message contains want.
func invalid(t *testing.T, err error, path, want string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *Error", err, err)
	}
	if e.Code != EINVALID {
		t.Errorf("code = %q, want %q (%v)", e.Code, EINVALID, err)
	}
	if path != "" {
		if !strings.HasPrefix(e.Message, path+": ") || strings.Contains(e.Message, "; ") {
			t.Errorf("message = %q, want one problem about %s", e.Message, path)
		}
	}
	if !strings.Contains(e.Message, want) {
		t.Errorf("message = %q, want it to contain %q", e.Message, want)
	}
	return e
}

func TestDecodeProvisionRequestValid(t *testing.T) {
	req, err := DecodeProvisionRequest(encode(t, validProvision()))
	if err != nil {
		t.Fatal(err)
	}
	want := ProvisionRequest{
		Cluster: ClusterSpec{
			Attributes:   map[string]any{"maxmemory": "100mb"},
			ClusterID:    "c1",
			Store:        "redis",
			StoreVersion: "7.0.1",
			Nodes: map[string]NodeGroup{
				"default": {Attributes: map[string]any{"appendonly": "yes"}, DesiredCount: 3, NodeClass: "small"},
			},
		},
		Provision: ProvisionSpec{NodeGroupID: "default", Count: 2},
	}
	if !reflect.DeepEqual(req, want) {
		t.Errorf("decoded\n%#v\nwant\n%#v", req, want)
	}
}

func TestDecodeProvisionRequestSeedExample(t *testing.T) {
	// The seed specification's shape: no count, group "version", no attributes.
	body := `{
	  "cluster": {
	    "cluster_id": "mongo-rs",
	    "store": "mongodb",
	    "store_version": "4.4.0",
	    "nodes": {
	      "data": {"desired_count": 3, "node_class": "t3.medium", "version": "5.0.0"},
	      "arbiter": {"desired_count": 1, "node_class": "t3.micro"}
	    }
	  },
	  "provision": {"node_group_id": "data"}
	}`
	req, err := DecodeProvisionRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Provision.Count != 1 {
		t.Errorf("count = %d, want 1 when missing", req.Provision.Count)
	}
	if got := req.StoreVersion(); got != "5.0.0" {
		t.Errorf("StoreVersion() = %q, want the group's 5.0.0", got)
	}
	if req.Cluster.Nodes["arbiter"].Version != "" {
		t.Errorf("arbiter version = %q, want none", req.Cluster.Nodes["arbiter"].Version)
	}
	if req.Cluster.Attributes == nil || len(req.Cluster.Attributes) != 0 {
		t.Errorf("cluster attributes = %#v, want {}", req.Cluster.Attributes)
	}
	for id, g := range req.Cluster.Nodes {
		if g.Attributes == nil || len(g.Attributes) != 0 {
			t.Errorf("group %s attributes = %#v, want {}", id, g.Attributes)
		}
	}
}

func TestDecodeProvisionRequestRequiredFields(t *testing.T) {
	paths := []string{
		"cluster",
		"cluster.cluster_id",
		"cluster.store",
		"cluster.store_version",
		"cluster.nodes",
		"cluster.nodes.default.desired_count",
		"cluster.nodes.default.node_class",
		"provision",
		"provision.node_group_id",
	}
	for _, path := range paths {
		for _, how := range []struct {
			name  string
			value any
		}{{"missing", remove}, {"null", nil}} {
			t.Run(path+"/"+how.name, func(t *testing.T) {
				body := withField(t, validProvision(), path, how.value)
				_, err := DecodeProvisionRequest(encode(t, body))
				invalid(t, err, path, "is required")
			})
		}
	}
}

func TestDecodeProvisionRequestOptionalFields(t *testing.T) {
	// Optional fields may be missing or null; the request still decodes.
	paths := []string{
		"cluster.attributes",
		"cluster.nodes.default.attributes",
		"cluster.nodes.default.version",
		"cluster.nodes.default.store_version",
		"provision.count",
	}
	for _, path := range paths {
		for _, how := range []struct {
			name  string
			value any
		}{{"missing", remove}, {"null", nil}} {
			t.Run(path+"/"+how.name, func(t *testing.T) {
				body := withField(t, validProvision(), path, how.value)
				if _, err := DecodeProvisionRequest(encode(t, body)); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestDecodeProvisionRequestWrongTypes(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		path  string
		value any
		want  string
	}{
		{"cluster", "c1", "must be a JSON object, not a string"},
		{"cluster", []any{}, "must be a JSON object, not an array"},
		{"cluster", 1, "must be a JSON object, not a number"},
		{"cluster", true, "must be a JSON object, not a boolean"},
		{"provision", []any{"default"}, "must be a JSON object, not an array"},
		{"cluster.cluster_id", 1, "must be a string, not a number"},
		{"cluster.cluster_id", []any{"c1"}, "must be a string, not an array"},
		{"cluster.cluster_id", map[string]any{}, "must be a string, not an object"},
		{"cluster.cluster_id", false, "must be a string, not a boolean"},
		{"cluster.store", 7, "must be a string, not a number"},
		{"cluster.store_version", 7.0, "must be a string, not a number"},
		{"cluster.store_version", raw("7.0"), "must be a string, not a number"},
		{"cluster.nodes", []any{map[string]any{"desired_count": 1, "node_class": "a"}}, "must be a JSON object, not an array"},
		{"cluster.nodes", "default", "must be a JSON object, not a string"},
		{"cluster.nodes.default", []any{}, "must be a JSON object, not an array"},
		{"cluster.nodes.default", 3, "must be a JSON object, not a number"},
		{"cluster.nodes.default.node_class", 1, "must be a string, not a number"},
		{"cluster.nodes.default.version", 7, "must be a string, not a number"},
		{"cluster.nodes.default.store_version", true, "must be a string, not a boolean"},
		{"cluster.attributes", []any{}, "must be a JSON object, not an array"},
		{"cluster.attributes", "a=b", "must be a JSON object, not a string"},
		{"cluster.nodes.default.attributes", []any{1}, "must be a JSON object, not an array"},
		{"cluster.nodes.default.attributes", 0, "must be a JSON object, not a number"},
		{"provision.node_group_id", 1, "must be a string, not a number"},
		{"provision.node_group_id", []any{"default"}, "must be a string, not an array"},
		// Integers.
		{"cluster.nodes.default.desired_count", 1.5, "must be an integer, not 1.5"},
		{"cluster.nodes.default.desired_count", "3", "must be an integer, not a string"},
		{"cluster.nodes.default.desired_count", true, "must be an integer, not a boolean"},
		{"cluster.nodes.default.desired_count", []any{3}, "must be an integer, not an array"},
		{"cluster.nodes.default.desired_count", map[string]any{}, "must be an integer, not an object"},
		{"cluster.nodes.default.desired_count", raw("1e2"), "must be an integer, not 1e2"},
		{"cluster.nodes.default.desired_count", raw("3.0"), "must be an integer, not 3.0"},
		{"provision.count", 1.5, "must be an integer, not 1.5"},
		{"provision.count", "3", "must be an integer, not a string"},
		{"provision.count", true, "must be an integer, not a boolean"},
		{"provision.count", raw("2E1"), "must be an integer, not 2E1"},
	}
	for _, tt := range tests {
		t.Run(tt.path+"="+string(encode(t, tt.value)), func(t *testing.T) {
			body := withField(t, validProvision(), tt.path, tt.value)
			_, err := DecodeProvisionRequest(encode(t, body))
			invalid(t, err, tt.path, tt.want)
		})
	}
}

func TestDecodeProvisionRequestIDFields(t *testing.T) {
	fields := []string{"cluster.cluster_id", "cluster.nodes.default.node_class"}
	for _, path := range fields {
		for _, tt := range idCases {
			t.Run(path+"="+tt.id, func(t *testing.T) {
				body := withField(t, validProvision(), path, tt.id)
				_, err := DecodeProvisionRequest(encode(t, body))
				if tt.ok {
					if err != nil {
						t.Fatalf("ID %q rejected: %v", tt.id, err)
					}
					return
				}
				invalid(t, err, path, tt.want)
			})
		}
	}
}

func TestDecodeProvisionRequestNodeGroupID(t *testing.T) {
	for _, tt := range idCases {
		t.Run(tt.id, func(t *testing.T) {
			body := validProvision()
			nodes := body["cluster"].(map[string]any)["nodes"].(map[string]any)
			nodes[tt.id] = nodes["default"]
			delete(nodes, "default")
			body["provision"].(map[string]any)["node_group_id"] = tt.id
			req, err := DecodeProvisionRequest(encode(t, body))
			if tt.ok {
				if err != nil {
					t.Fatalf("group ID %q rejected: %v", tt.id, err)
				}
				if req.Group().NodeClass != "small" {
					t.Errorf("Group() = %#v, want the group %q", req.Group(), tt.id)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != EINVALID {
				t.Fatalf("error = %v, want EINVALID", err)
			}
			// Both the group key and provision.node_group_id are wrong.
			keyPath := fmt.Sprintf("cluster.nodes[%q]: node group ID ", tt.id)
			for _, want := range []string{keyPath, "provision.node_group_id: ", tt.want} {
				if !strings.Contains(e.Message, want) {
					t.Errorf("message = %q, want it to contain %q", e.Message, want)
				}
			}
		})
	}
}

// idCases are shared by every field that holds an ID.
var idCases = []struct {
	id   string
	ok   bool
	want string // part of the message when !ok
}{
	{"a", true, ""},
	{"A", true, ""},
	{"0", true, ""},
	{"node-1", true, ""},
	{"t3.micro", true, ""},
	{"Standard_D2s_v3", true, ""},
	{"a.b_c-d", true, ""},
	{"a..b", true, ""},
	{strings.Repeat("a", 63), true, ""},
	{"", false, "must not be empty"},
	{strings.Repeat("a", 64), false, "must be at most 63 characters, not 64"},
	{"../../etc", false, "must begin and end with a letter or digit"},
	{"a/b", false, `has character '/'`},
	{"..", false, "must begin and end with a letter or digit"},
	{".a", false, "must begin and end with a letter or digit"},
	{"a.", false, "must begin and end with a letter or digit"},
	{"-a", false, "must begin and end with a letter or digit"},
	{"a-", false, "must begin and end with a letter or digit"},
	{"_a", false, "must begin and end with a letter or digit"},
	{"a_", false, "must begin and end with a letter or digit"},
	{"-", false, "must begin and end with a letter or digit"},
	{"a b", false, `has character ' '`},
	{"a\x00b", false, `has character '\x00'`},
	{"a\nb", false, `has character '\n'`},
	{"a:b", false, `has character ':'`},
	{"a\\b", false, `has character '\\'`},
	{"ñode", false, `has character 'ñ'`},
	{"nodé", false, `has character 'é'`},
	{"日本", false, `has character '日'`},
}

func TestValidateID(t *testing.T) {
	for _, tt := range idCases {
		t.Run(tt.id, func(t *testing.T) {
			err := ValidateID(tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateID(%q) = nil, want an error", tt.id)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateID(%q) = %q, want it to contain %q", tt.id, err, tt.want)
			}
		})
	}
}

func TestValidateStore(t *testing.T) {
	tests := []struct {
		store string
		ok    bool
		want  string
	}{
		{"redis", true, ""},
		{"mongodb", true, ""},
		{"zookeeper-3", true, ""},
		{"my_store.v2", true, ""},
		{"vendor/redis", true, ""},
		{"a/b/c", true, ""},
		{"0", true, ""},
		{strings.Repeat("r", 63), true, ""},
		{"", false, "must not be empty"},
		{strings.Repeat("r", 64), false, "must be at most 63 characters"},
		{"Redis", false, `has character 'R'`},
		{"REDIS", false, `has character 'R'`},
		{"re dis", false, `has character ' '`},
		{"redis\x00", false, `has character '\x00'`},
		{"rédis", false, `has character 'é'`},
		{"a\\b", false, `has character '\\'`},
		{"..", false, `must not contain ".."`},
		{"../etc", false, `must not contain ".."`},
		{"a/../b", false, `must not contain ".."`},
		{"a..b", false, `must not contain ".."`},
		{"/redis", false, "must not begin or end with '/'"},
		{"redis/", false, "must not begin or end with '/'"},
		{"/", false, "must not begin or end with '/'"},
	}
	for _, tt := range tests {
		t.Run(tt.store, func(t *testing.T) {
			err := ValidateStore(tt.store)
			if tt.ok != (err == nil) {
				t.Fatalf("ValidateStore(%q) = %v, want ok=%v", tt.store, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateStore(%q) = %q, want it to contain %q", tt.store, err, tt.want)
			}
			// The same rule applies in a request, naming the field.
			body := withField(t, validProvision(), "cluster.store", tt.store)
			_, derr := DecodeProvisionRequest(encode(t, body))
			if tt.ok {
				if derr != nil {
					t.Errorf("request with store %q rejected: %v", tt.store, derr)
				}
			} else {
				invalid(t, derr, "cluster.store", tt.want)
			}
		})
	}
}

func TestDecodeProvisionRequestVersions(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		version string
		ok      bool
		want    string
	}{
		{"semver", "cluster.store_version", "7.0.1", true, ""},
		{"free-form", "cluster.store_version", "latest", true, ""},
		{"prerelease", "cluster.store_version", "7.2.0-rc1+build.5", true, ""},
		{"63 chars", "cluster.store_version", strings.Repeat("7", 63), true, ""},
		{"empty", "cluster.store_version", "", false, "must not be empty"},
		{"64 chars", "cluster.store_version", strings.Repeat("7", 64), false, "must be at most 63 characters"},
		{"space", "cluster.store_version", "7 0", false, `has character ' '`},
		{"newline", "cluster.store_version", "7\n0", false, `has character '\n'`},
		{"NUL", "cluster.store_version", "7\x00", false, `has character '\x00'`},
		{"unicode", "cluster.store_version", "7.0€", false, `has character '€'`},
		{"group version empty", "cluster.nodes.default.version", "", false, "must not be empty"},
		{"group version space", "cluster.nodes.default.version", "6 2", false, `has character ' '`},
		{"group store_version empty", "cluster.nodes.default.store_version", "", false, "must not be empty"},
		{"group store_version tab", "cluster.nodes.default.store_version", "6\t2", false, `has character '\t'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := withField(t, validProvision(), tt.path, tt.version)
			_, err := DecodeProvisionRequest(encode(t, body))
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			invalid(t, err, tt.path, tt.want)
		})
	}
}

func TestDecodeProvisionRequestGroupVersion(t *testing.T) {
	tests := []struct {
		name         string
		version      any
		storeVersion any
		want         string // the group's Version; "" with err set means an error
		err          bool
	}{
		{"neither", remove, remove, "", false},
		{"version only", "6.2", remove, "6.2", false},
		{"store_version only", remove, "6.2", "6.2", false},
		{"both equal", "6.2", "6.2", "6.2", false},
		{"both different", "6.2", "7.0", "", true},
		{"version null", nil, "6.2", "6.2", false},
		{"store_version null", "6.2", nil, "6.2", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := validProvision()
			withField(t, body, "cluster.nodes.default.version", tt.version)
			withField(t, body, "cluster.nodes.default.store_version", tt.storeVersion)
			req, err := DecodeProvisionRequest(encode(t, body))
			if tt.err {
				e := invalid(t, err, "cluster.nodes.default.version", "differs from cluster.nodes.default.store_version")
				if !strings.Contains(e.Message, `"6.2"`) || !strings.Contains(e.Message, `"7.0"`) {
					t.Errorf("message = %q, want both versions", e.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := req.Group().Version; got != tt.want {
				t.Errorf("group version = %q, want %q", got, tt.want)
			}
			wantEffective := tt.want
			if wantEffective == "" {
				wantEffective = "7.0.1"
			}
			if got := req.StoreVersion(); got != wantEffective {
				t.Errorf("StoreVersion() = %q, want %q", got, wantEffective)
			}
		})
	}
}

func TestDecodeProvisionRequestCount(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	tests := []struct {
		value any
		want  int    // when ok
		err   string // when not ok
	}{
		{remove, 1, ""},
		{nil, 1, ""},
		{1, 1, ""},
		{2, 2, ""},
		{65535, 65535, ""},
		{0, 0, "must be between 1 and 65535, not 0"},
		{-1, 0, "must be between 1 and 65535, not -1"},
		{65536, 0, "must be between 1 and 65535, not 65536"},
		{raw("99999999999999999999"), 0, "must be between 1 and 65535, not 99999999999999999999"},
		{raw("-99999999999999999999"), 0, "must be between 1 and 65535"},
	}
	for _, tt := range tests {
		name := "missing"
		if tt.value != remove {
			name = string(encode(t, tt.value))
		}
		t.Run(name, func(t *testing.T) {
			body := withField(t, validProvision(), "provision.count", tt.value)
			req, err := DecodeProvisionRequest(encode(t, body))
			if tt.err != "" {
				invalid(t, err, "provision.count", tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Provision.Count != tt.want {
				t.Errorf("count = %d, want %d", req.Provision.Count, tt.want)
			}
		})
	}
}

func TestDecodeProvisionRequestDesiredCount(t *testing.T) {
	tests := []struct {
		value int
		ok    bool
	}{
		{0, true},
		{1, true},
		{10000, true},
		{-1, false},
		{10001, false},
		{65535, false},
	}
	for _, tt := range tests {
		t.Run(string(encode(t, tt.value)), func(t *testing.T) {
			body := withField(t, validProvision(), "cluster.nodes.default.desired_count", tt.value)
			req, err := DecodeProvisionRequest(encode(t, body))
			if !tt.ok {
				invalid(t, err, "cluster.nodes.default.desired_count", "must be between 0 and 10000, not "+string(encode(t, tt.value)))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := req.Group().DesiredCount; got != tt.value {
				t.Errorf("desired_count = %d, want %d", got, tt.value)
			}
		})
	}
}

func TestDecodeProvisionRequestAttributes(t *testing.T) {
	body := validProvision()
	withField(t, body, "cluster.attributes", map[string]any{
		"s": "x", "n": 1, "f": 1.5, "b": true, "null": nil,
		"list": []any{1, "a"}, "obj": map[string]any{"k": "v"},
	})
	withField(t, body, "cluster.nodes.default.attributes", map[string]any{})
	req, err := DecodeProvisionRequest(encode(t, body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"s": "x", "n": json.Number("1"), "f": json.Number("1.5"), "b": true, "null": nil,
		"list": []any{json.Number("1"), "a"}, "obj": map[string]any{"k": "v"},
	}
	if !reflect.DeepEqual(req.Cluster.Attributes, want) {
		t.Errorf("attributes = %#v, want %#v", req.Cluster.Attributes, want)
	}
	// Numbers keep their exact text (no float rounding of big integers).
	body = withField(t, validProvision(), "cluster.attributes", map[string]any{"big": json.RawMessage("12345678901234567890")})
	req, err = DecodeProvisionRequest(encode(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if got := req.Cluster.Attributes["big"]; got != json.Number("12345678901234567890") {
		t.Errorf("big = %#v, want the exact number", got)
	}
}

func TestDecodeProvisionRequestUnknownNodeGroup(t *testing.T) {
	body := validProvision()
	nodes := body["cluster"].(map[string]any)["nodes"].(map[string]any)
	nodes["zeta"] = map[string]any{"desired_count": 1, "node_class": "a"}
	nodes["alpha"] = map[string]any{"desired_count": 1, "node_class": "a"}
	for _, id := range []string{"m", "b", "x", "c"} {
		nodes[id] = map[string]any{"desired_count": 1, "node_class": "a"}
	}
	withField(t, body, "provision.node_group_id", "missing")
	data := encode(t, body)
	// Map order is random: decode often enough that unsorted output shows.
	for i := 0; i < 20; i++ {
		_, err := DecodeProvisionRequest(data)
		e := invalid(t, err, "provision.node_group_id", `node group "missing" is not defined`)
		if !strings.Contains(e.Message, "alpha, b, c, default, m, x, zeta") {
			t.Fatalf("message = %q, want the defined groups, sorted", e.Message)
		}
		wantDetails := map[string]any{
			"node_group_id":       "missing",
			"defined_node_groups": []string{"alpha", "b", "c", "default", "m", "x", "zeta"},
		}
		if !reflect.DeepEqual(e.Details, wantDetails) {
			t.Fatalf("details = %#v, want %#v", e.Details, wantDetails)
		}
	}
}

func TestDecodeProvisionRequestEmptyNodes(t *testing.T) {
	body := withField(t, validProvision(), "cluster.nodes", map[string]any{})
	_, err := DecodeProvisionRequest(encode(t, body))
	invalid(t, err, "cluster.nodes", "must declare at least one node group")
}

func TestDecodeProvisionRequestCollectsProblems(t *testing.T) {
	body := validProvision()
	withField(t, body, "cluster.cluster_id", remove)
	withField(t, body, "cluster.store", "Redis")
	withField(t, body, "cluster.nodes.default.desired_count", "3")
	withField(t, body, "provision.count", 0)
	_, err := DecodeProvisionRequest(encode(t, body))
	e := invalid(t, err, "", "")
	for _, want := range []string{
		"cluster.cluster_id: is required",
		"cluster.store: ",
		"cluster.nodes.default.desired_count: must be an integer",
		"provision.count: must be between",
	} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message = %q, want it to contain %q", e.Message, want)
		}
	}
	if n := strings.Count(e.Message, "; ") + 1; n != 4 {
		t.Errorf("message has %d problems, want 4: %q", n, e.Message)
	}
	if e.Details != nil {
		t.Errorf("details = %#v, want none", e.Details)
	}
}

func TestDecodeProvisionRequestUnknownFieldsIgnored(t *testing.T) {
	body := validProvision()
	body["extra"] = map[string]any{"anything": []any{1}}
	withField(t, body, "cluster.future", true)
	withField(t, body, "cluster.nodes.default.labels", map[string]any{"a": "b"})
	withField(t, body, "provision.priority", "high")
	req, err := DecodeProvisionRequest(encode(t, body))
	if err != nil {
		t.Fatal(err)
	}
	if req.Cluster.ClusterID != "c1" || req.Provision.Count != 2 {
		t.Errorf("decoded %#v", req)
	}
}

// bodyCases are problems with the body as a whole, shared by both decoders.
var bodyCases = []struct {
	name string
	body string
	want string
}{
	{"empty", "", "request body is empty"},
	{"whitespace", " \n\t", "request body is empty"},
	{"truncated", `{"cluster":`, "request body is not valid JSON"},
	{"open brace", `{`, "request body is not valid JSON"},
	{"bad token", `{cluster: 1}`, "request body is not valid JSON"},
	{"single quotes", `{'a': 1}`, "request body is not valid JSON"},
	{"trailing comma", `{"a": 1,}`, "request body is not valid JSON"},
	{"two objects", `{} {}`, "request body has data after the JSON value"},
	{"garbage", `{}x`, "request body has data after the JSON value"},
	{"closing brace", `{}}`, "request body has data after the JSON value"},
	{"array after", `{}[]`, "request body has data after the JSON value"},
	{"number after", "{}\n1", "request body has data after the JSON value"},
	{"string after", `{}"a"`, "request body has data after the JSON value"},
	{"null", `null`, "request body must be a JSON object, not null"},
	{"array", `[]`, "request body must be a JSON object, not an array"},
	{"string", `"cluster"`, "request body must be a JSON object, not a string"},
	{"number", `42`, "request body must be a JSON object, not a number"},
	{"boolean", `true`, "request body must be a JSON object, not a boolean"},
}

func TestDecodeBody(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"provision": func(b []byte) error { _, err := DecodeProvisionRequest(b); return err },
		"deprovision": func(b []byte) error {
			_, err := DecodeDeprovisionRequest(b)
			return err
		},
	}
	for name, decode := range decoders {
		for _, tt := range bodyCases {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				invalid(t, decode([]byte(tt.body)), "", tt.want)
			})
		}
	}
}

func TestDecodeTrailingWhitespace(t *testing.T) {
	body := append(encode(t, validProvision()), " \n\t\r\n"...)
	if _, err := DecodeProvisionRequest(body); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeDeprovisionRequest([]byte("\n{\"cluster_id\":\"c\",\"node_id\":\"n\"}\n\n")); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeDeprovisionRequest(t *testing.T) {
	req, err := DecodeDeprovisionRequest([]byte(`{"cluster_id": "c1", "node_id": "play-node-abc12345", "extra": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (DeprovisionRequest{ClusterID: "c1", NodeID: "play-node-abc12345"}); req != want {
		t.Errorf("decoded %#v, want %#v", req, want)
	}

	valid := func() map[string]any { return map[string]any{"cluster_id": "c1", "node_id": "n1"} }
	for _, field := range []string{"cluster_id", "node_id"} {
		t.Run(field+"/missing", func(t *testing.T) {
			body := valid()
			delete(body, field)
			_, err := DecodeDeprovisionRequest(encode(t, body))
			invalid(t, err, field, "is required")
		})
		t.Run(field+"/null", func(t *testing.T) {
			body := valid()
			body[field] = nil
			_, err := DecodeDeprovisionRequest(encode(t, body))
			invalid(t, err, field, "is required")
		})
		for _, wrong := range []struct {
			value any
			want  string
		}{
			{1, "must be a string, not a number"},
			{[]any{"n1"}, "must be a string, not an array"},
			{map[string]any{}, "must be a string, not an object"},
			{true, "must be a string, not a boolean"},
		} {
			t.Run(field+"/"+string(encode(t, wrong.value)), func(t *testing.T) {
				body := valid()
				body[field] = wrong.value
				_, err := DecodeDeprovisionRequest(encode(t, body))
				invalid(t, err, field, wrong.want)
			})
		}
		for _, tt := range idCases {
			t.Run(field+"/id="+tt.id, func(t *testing.T) {
				body := valid()
				body[field] = tt.id
				req, err := DecodeDeprovisionRequest(encode(t, body))
				if tt.ok {
					if err != nil {
						t.Fatal(err)
					}
					got := map[string]string{"cluster_id": req.ClusterID, "node_id": req.NodeID}[field]
					if got != tt.id {
						t.Errorf("%s = %q, want %q", field, got, tt.id)
					}
					return
				}
				invalid(t, err, field, tt.want)
			})
		}
	}
	t.Run("both missing", func(t *testing.T) {
		_, err := DecodeDeprovisionRequest([]byte(`{}`))
		invalid(t, err, "", "cluster_id: is required; node_id: is required")
	})
}

// FuzzDecodeProvisionRequest checks that decoding never panics and that a
// request it accepts keeps every promise the drivers rely on.
func FuzzDecodeProvisionRequest(f *testing.F) {
	f.Add([]byte(`{"cluster":{"cluster_id":"c","store":"redis","store_version":"7.0","nodes":{"g":{"desired_count":1,"node_class":"x"}}},"provision":{"node_group_id":"g"}}`))
	f.Add([]byte(`{"cluster":{"cluster_id":"c","store":"redis","store_version":"7.0","attributes":null,"nodes":{"g":{"desired_count":0,"node_class":"x","version":"1","store_version":"1","attributes":{"a":null}}}},"provision":{"node_group_id":"g","count":65535}}`))
	for _, tt := range bodyCases {
		f.Add([]byte(tt.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeProvisionRequest(body)
		if err != nil {
			if ErrorCode(err) != EINVALID {
				t.Fatalf("error %v has code %q, want %q", err, ErrorCode(err), EINVALID)
			}
			return
		}
		group, ok := req.Cluster.Nodes[req.Provision.NodeGroupID]
		if !ok {
			t.Fatalf("accepted a request for undefined group %q", req.Provision.NodeGroupID)
		}
		if req.Provision.Count < 1 || req.Provision.Count > MaxCount {
			t.Fatalf("accepted count %d", req.Provision.Count)
		}
		if group.DesiredCount < 0 || group.DesiredCount > MaxDesiredCount {
			t.Fatalf("accepted desired_count %d", group.DesiredCount)
		}
		for _, id := range []string{req.Cluster.ClusterID, req.Provision.NodeGroupID, group.NodeClass} {
			if ValidateID(id) != nil {
				t.Fatalf("accepted ID %q", id)
			}
		}
		if ValidateStore(req.Cluster.Store) != nil || validateVersion(req.StoreVersion()) != nil {
			t.Fatalf("accepted store %q version %q", req.Cluster.Store, req.StoreVersion())
		}
		if req.Cluster.Attributes == nil || group.Attributes == nil {
			t.Fatal("accepted a request with nil attributes")
		}
	})
}
