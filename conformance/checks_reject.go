package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// rejectKind is how an invalid provision request differs from a valid one.
type rejectKind int

const (
	malformedJSON rejectKind = iota // the body is cut in half
	missingField                    // the field at path is removed
	wrongType                       // the field at path has value, of the wrong JSON type
	unknownGroup                    // provision.node_group_id names no declared group
)

// groupToken in a path stands for the node group's key in cluster.nodes.
const groupToken = "{group}"

type rejectCase struct {
	name        string
	level       Level
	clause      string
	description string
	kind        rejectKind
	path        []string
	value       any
}

func missing(name, field string, path ...string) rejectCase {
	return rejectCase{name: name, level: MUST, clause: clauseRequiredMissing, kind: missingField, path: path,
		description: fmt.Sprintf("A provision request without %s is answered 4xx.", field)}
}

func typed(name, field string, value any, path ...string) rejectCase {
	b, _ := json.Marshal(value)
	return rejectCase{name: name, level: MUST, clause: clauseWrongValue, kind: wrongType, path: path, value: value,
		description: fmt.Sprintf("A provision request whose %s is %s (%s) is answered 4xx.", field, jsonType(value), b)}
}

// rejectCaseSpecs are the invalid provision requests, in the order they are
// sent. Each is the valid request for the rejection cluster with one defect.
var rejectCaseSpecs = []rejectCase{
	{name: "reject-malformed-json", level: MUST, clause: clauseProvisionBody, kind: malformedJSON,
		description: "A provision request whose body is truncated JSON (the first half of a valid request) is answered 4xx."},
	missing("reject-missing-cluster", "cluster", "cluster"),
	missing("reject-missing-cluster-id", "cluster.cluster_id", "cluster", "cluster_id"),
	missing("reject-missing-store", "cluster.store", "cluster", "store"),
	missing("reject-missing-store-version", "cluster.store_version", "cluster", "store_version"),
	missing("reject-missing-nodes", "cluster.nodes", "cluster", "nodes"),
	missing("reject-missing-desired-count", "the group's desired_count", "cluster", "nodes", groupToken, "desired_count"),
	missing("reject-missing-node-class", "the group's node_class", "cluster", "nodes", groupToken, "node_class"),
	missing("reject-missing-provision", "provision", "provision"),
	missing("reject-missing-node-group-id", "provision.node_group_id", "provision", "node_group_id"),
	typed("reject-type-cluster", "cluster", "cluster", "cluster"),
	typed("reject-type-cluster-id", "cluster.cluster_id", json.Number("42"), "cluster", "cluster_id"),
	typed("reject-type-store", "cluster.store", true, "cluster", "store"),
	typed("reject-type-store-version", "cluster.store_version", json.Number("7.0"), "cluster", "store_version"),
	typed("reject-type-attributes", "cluster.attributes", "maxmemory=100mb", "cluster", "attributes"),
	typed("reject-type-nodes", "cluster.nodes", []any{"default"}, "cluster", "nodes"),
	typed("reject-type-node-group", "node group (the value of cluster.nodes.<group>)", "default", "cluster", "nodes", groupToken),
	typed("reject-type-desired-count", "desired_count", "1", "cluster", "nodes", groupToken, "desired_count"),
	typed("reject-type-node-class", "node_class", json.Number("1"), "cluster", "nodes", groupToken, "node_class"),
	typed("reject-type-group-attributes", "node group's attributes", []any{"a"}, "cluster", "nodes", groupToken, "attributes"),
	typed("reject-type-group-version", "node group's version", json.Number("7"), "cluster", "nodes", groupToken, "version"),
	typed("reject-type-provision", "provision", "default", "provision"),
	typed("reject-type-node-group-id", "provision.node_group_id", json.Number("1"), "provision", "node_group_id"),
	func() rejectCase {
		c := typed("reject-type-count", "provision.count", "1", "provision", "count")
		c.level, c.clause = COMPAT, clauseCountType
		return c
	}(),
	{name: "reject-unknown-group", level: MUST, clause: clauseWrongValue, kind: unknownGroup,
		description: "A provision request whose provision.node_group_id is not a key of cluster.nodes is answered 4xx."},
}

// rejectCases returns the cases with the node group filled into the paths.
func rejectCases(group string) []rejectCase {
	out := make([]rejectCase, len(rejectCaseSpecs))
	for i, c := range rejectCaseSpecs {
		path := make([]string, len(c.path))
		for j, p := range c.path {
			if p == groupToken {
				p = group
			}
			path[j] = p
		}
		c.path = path
		out[i] = c
	}
	return out
}

// provisionRequest is a valid provision request as Replicante Core's SDK
// sends it.
func (k *kit) provisionRequest(clusterID string, desired, count int) map[string]any {
	attrs := make(map[string]any, len(k.cfg.Attributes))
	for key, v := range k.cfg.Attributes {
		attrs[key] = v
	}
	return map[string]any{
		"cluster": map[string]any{
			"cluster_id":    clusterID,
			"store":         k.cfg.Store,
			"store_version": k.cfg.StoreVersion,
			"attributes":    attrs,
			"nodes": map[string]any{
				k.cfg.NodeGroup: map[string]any{
					"desired_count": desired,
					"node_class":    k.cfg.NodeClass,
					"attributes":    map[string]any{},
				},
			},
		},
		"provision": map[string]any{"node_group_id": k.cfg.NodeGroup, "count": count},
	}
}

// undeclaredGroup is the node group reject-unknown-group asks for.
func (k *kit) undeclaredGroup() string {
	if k.cfg.NodeGroup == "undeclared-group" {
		return "undeclared-group-2"
	}
	return "undeclared-group"
}

// rejectBody is the body of one invalid request.
func (k *kit) rejectBody(c rejectCase) []byte {
	req := k.provisionRequest(k.rejectClusterID, 1, 1)
	switch c.kind {
	case malformedJSON:
		b, _ := json.Marshal(req)
		return b[:len(b)/2]
	case unknownGroup:
		req["provision"].(map[string]any)["node_group_id"] = k.undeclaredGroup()
	case missingField, wrongType:
		parent := req
		for _, p := range c.path[:len(c.path)-1] {
			parent = parent[p].(map[string]any)
		}
		last := c.path[len(c.path)-1]
		if c.kind == missingField {
			delete(parent, last)
		} else {
			parent[last] = c.value
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		panic(err) // the request is built from JSON-safe values only
	}
	return b
}

// runRejections sends every invalid request and judges the answers.
func (k *kit) runRejections(ctx context.Context) {
	type rejected struct {
		name string
		a    *answer
	}
	var errorAnswers []rejected // the 4xx answers, for reject-error-body
	var unknownGroupAnswer *answer
	accepted := map[string]bool{} // node IDs returned by 2xx answers
	unattributed := 0             // nodes counted by 2xx answers without node_ids
	// The checks on all answers need every request; a case alone only its own.
	all := k.wants(checkRejectErrorBody, checkRejectUnknownGroupBody, checkRejectNothing)
	var cases []rejectCase
	for _, c := range rejectCases(k.cfg.NodeGroup) {
		if all || k.selected[c.name] {
			cases = append(cases, c)
		}
	}
	k.logf("sending %d invalid provision requests (cluster %s)", len(cases), k.rejectClusterID)
	sent := 0
	for _, c := range cases {
		a, err := k.do(ctx, http.MethodPost, "provision", k.rejectBody(c))
		if ctx.Err() != nil {
			return
		}
		sent++
		if err != nil {
			k.fail(c.name, "no answer: %v", err)
			continue
		}
		switch {
		case a.status >= 400 && a.status <= 499:
			k.pass(c.name, "answered %s", a.describe())
			errorAnswers = append(errorAnswers, rejected{c.name, a})
			if c.kind == unknownGroup {
				unknownGroupAnswer = a
			}
		case a.ok():
			k.fail(c.name, "accepted: answered %s; want a 4xx status", a.describe())
			ids, count := provisionedBy(a)
			for _, id := range ids {
				accepted[id] = true
				k.returned[k.rejectClusterID] = append(k.returned[k.rejectClusterID], id)
			}
			if len(ids) == 0 {
				unattributed += count
			}
		default:
			k.fail(c.name, "answered %s; want a 4xx status", a.describe())
		}
	}

	if len(errorAnswers) == 0 {
		k.skip(checkRejectErrorBody, "no invalid request was answered 4xx")
	} else {
		var bad []string
		for _, r := range errorAnswers {
			if problem := errorBodyProblem(r.a); problem != "" {
				bad = append(bad, r.name+": "+problem)
			}
		}
		if len(bad) > 0 {
			k.fail(checkRejectErrorBody, "%d of %d error answers: %s", len(bad), len(errorAnswers), firstFew(bad, 3))
		} else {
			k.pass(checkRejectErrorBody, "all %d error answers are JSON objects with error_msg", len(errorAnswers))
		}
	}

	if unknownGroupAnswer == nil {
		k.skip(checkRejectUnknownGroupBody, "reject-unknown-group was not answered 4xx")
	} else if errorBodyProblem(unknownGroupAnswer) != "" {
		k.skip(checkRejectUnknownGroupBody, "the answer is no JSON error object (see reject-error-body)")
	} else if problem := k.unknownGroupProblem(unknownGroupAnswer); problem != "" {
		k.fail(checkRejectUnknownGroupBody, "%s", problem)
	} else {
		k.pass(checkRejectUnknownGroupBody, "the answer names node_group_id %q and defined_node_groups", k.undeclaredGroup())
	}

	d, err := k.discover(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		k.skip(checkRejectNothing, "discovery after the invalid requests failed: %v", err)
		return
	}
	var extra []string
	for clusterID, nodes := range d.clusters {
		fresh := clusterID == k.rejectClusterID
		if k.baseline != nil {
			_, existed := k.baseline.clusters[clusterID]
			fresh = fresh || !existed
		}
		if !fresh {
			continue
		}
		for id := range nodes {
			if !accepted[id] {
				extra = append(extra, clusterID+"/"+id)
			}
		}
	}
	sort.Strings(extra)
	if len(extra) > unattributed {
		k.fail(checkRejectNothing, "after %d invalid requests discovery lists node(s) that no accepted request returned: %s", sent, firstFew(extra, 5))
		return
	}
	where := "cluster " + k.rejectClusterID
	if k.baseline != nil {
		where += " or any new cluster"
	}
	k.pass(checkRejectNothing, "after %d invalid requests no node appeared in %s", sent, where)
}

// provisionedBy reads the node IDs and count of a 2xx provision answer,
// as far as they can be read.
func provisionedBy(a *answer) (ids []string, count int) {
	v, _ := decodeJSON(a.body)
	obj, _ := v.(map[string]any)
	list, _ := obj["node_ids"].([]any)
	for _, item := range list {
		if s, ok := item.(string); ok && s != "" {
			ids = append(ids, s)
		}
	}
	num, _ := obj["count"].(json.Number)
	n, err := strconv.Atoi(string(num))
	if err != nil || n < 0 {
		n = len(ids)
	}
	return ids, n
}

// errorBodyProblem says what is wrong with an error answer's body, if
// anything.
func errorBodyProblem(a *answer) string {
	v, err := decodeJSON(a.body)
	if err != nil {
		return fmt.Sprintf("%d with %s: %v", a.status, quoteBody(a.body), err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("%d with %s, not a JSON object", a.status, jsonType(v))
	}
	if msg, ok := obj["error_msg"].(string); !ok || msg == "" {
		return fmt.Sprintf("%d whose error_msg is %s, not a non-empty string", a.status, describeValue(obj, "error_msg"))
	}
	return ""
}

func (k *kit) unknownGroupProblem(a *answer) string {
	var obj map[string]any
	_ = json.Unmarshal(a.body, &obj) // errorBodyProblem has vouched for it
	var problems []string
	if id, _ := obj["node_group_id"].(string); id != k.undeclaredGroup() {
		problems = append(problems, fmt.Sprintf("node_group_id is %s, want %q", describeValue(obj, "node_group_id"), k.undeclaredGroup()))
	}
	defined, ok := obj["defined_node_groups"].([]any)
	found := false
	for _, g := range defined {
		found = found || g == k.cfg.NodeGroup
	}
	if !ok || !found {
		problems = append(problems, fmt.Sprintf("defined_node_groups is %s, want an array holding %q", describeValue(obj, "defined_node_groups"), k.cfg.NodeGroup))
	}
	return strings.Join(problems, "; ")
}

// firstFew joins at most n items and says how many more there are.
func firstFew(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(items[:n], "; "), len(items)-n)
}
