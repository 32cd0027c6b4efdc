package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// maxBody bounds what the kit reads from one answer.
const maxBody = 64 << 20

// answer is one HTTP answer as the platform sent it.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request to {base}path. An error means no answer arrived.
func (k *kit) do(ctx context.Context, method, path string, body []byte) (*answer, error) {
	if k.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, k.cfg.RequestTimeout)
		defer cancel()
	}
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, reader)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if k.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+k.cfg.Token)
	}
	resp, err := k.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(data) > maxBody {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxBody)
	}
	return &answer{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

func (a *answer) ok() bool { return a.status >= 200 && a.status <= 299 }

// describe says what the platform answered, for a reason: the status and
// the error_msg or the start of the body.
func (a *answer) describe() string {
	s := fmt.Sprintf("%d %s", a.status, http.StatusText(a.status))
	if msg := errorMessage(a.body); msg != "" {
		return s + ": " + msg
	}
	if b := bytes.TrimSpace(a.body); len(b) > 0 {
		return s + " with " + quoteBody(b)
	}
	return s
}

// errorMessage returns the error_msg of a JSON error body, if any.
func errorMessage(body []byte) string {
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		if msg, ok := obj["error_msg"].(string); ok {
			return msg
		}
	}
	return ""
}

func quoteBody(b []byte) string {
	const limit = 120
	if len(b) > limit {
		return fmt.Sprintf("body %q...", b[:limit])
	}
	return fmt.Sprintf("body %q", b)
}

// decodeJSON decodes exactly one JSON value, keeping numbers as written.
func decodeJSON(body []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the body is empty")
		}
		return nil, fmt.Errorf("the body is not JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("the body has data after its JSON value")
	}
	return v, nil
}

// node is one listed node, as far as the kit could read it.
type node struct {
	id    string
	agent any
	class any
	group any
	// hasClass and hasGroup tell a missing field from a null one.
	hasClass, hasGroup bool
}

// fields is what discover-stable compares between discoveries.
func (n node) fields() string {
	b, _ := json.Marshal([]any{n.agent, n.class, n.group, n.hasClass, n.hasGroup})
	return string(b)
}

// discovery is one discovery answer read leniently: what could be read is
// kept, and every rule it breaks is noted against its check, so that one
// broken rule does not hide the others.
type discovery struct {
	// clusters maps a cluster ID to its nodes by ID; a cluster listed twice
	// has its nodes merged.
	clusters map[string]map[string]node
	problems map[string]string // check name -> first problem
}

func (d *discovery) problem(check, format string, args ...any) {
	if _, ok := d.problems[check]; !ok {
		d.problems[check] = fmt.Sprintf(format, args...)
	}
}

// nodes returns the nodes of a cluster (nil when it is not listed).
func (d *discovery) nodes(clusterID string) map[string]node {
	return d.clusters[clusterID]
}

// nodeIDs returns the IDs listed in a cluster.
func (d *discovery) nodeIDs(clusterID string) map[string]bool {
	ids := map[string]bool{}
	for id := range d.clusters[clusterID] {
		ids[id] = true
	}
	return ids
}

// parseDiscovery reads a discovery answer. It returns an error only when
// nothing can be read from it: a non-2xx status, a body that is not one
// JSON object, or clusters that is neither an array nor null.
func parseDiscovery(a *answer) (*discovery, error) {
	d := &discovery{clusters: map[string]map[string]node{}, problems: map[string]string{}}
	if a.status != http.StatusOK {
		d.problem(checkDiscoverStatus, "answered %s, not 200", a.describe())
	}
	if !a.ok() {
		return d, fmt.Errorf("discovery answered %s", a.describe())
	}
	if !isJSONContentType(a.header.Get("Content-Type")) {
		d.problem(checkDiscoverContentType, "Content-Type is %q, not JSON", a.header.Get("Content-Type"))
	}
	v, err := decodeJSON(a.body)
	if err != nil {
		d.problem(checkDiscoverJSON, "%v", err)
		return d, err
	}
	root, ok := v.(map[string]any)
	if !ok {
		err := fmt.Errorf("the body is %s, not a JSON object", jsonType(v))
		d.problem(checkDiscoverJSON, "%v", err)
		return d, err
	}
	raw, present := root["clusters"]
	var list []any
	switch c := raw.(type) {
	case []any:
		list = c
	case nil:
		if present {
			d.problem(checkDiscoverJSON, "clusters is null, not an array")
		} else {
			d.problem(checkDiscoverJSON, "the body has no clusters field")
		}
	default:
		err := fmt.Errorf("clusters is %s, not an array", jsonType(raw))
		d.problem(checkDiscoverJSON, "%v", err)
		return d, err
	}
	for i, item := range list {
		cluster, ok := item.(map[string]any)
		if !ok {
			d.problem(checkDiscoverClusterFields, "clusters[%d] is %s, not an object", i, jsonType(item))
			continue
		}
		id, ok := cluster["cluster_id"].(string)
		if !ok || id == "" {
			d.problem(checkDiscoverClusterFields, "clusters[%d].cluster_id is %s, not a non-empty string", i, describeValue(cluster, "cluster_id"))
			continue
		}
		nodes, merged := d.clusters[id]
		if merged {
			d.problem(checkDiscoverClustersUnique, "cluster %s is listed more than once", id)
		} else {
			nodes = map[string]node{}
			d.clusters[id] = nodes
		}
		var nodeList []any
		switch n := cluster["nodes"].(type) {
		case []any:
			nodeList = n
		default:
			d.problem(checkDiscoverClusterFields, "cluster %s: nodes is %s, not an array", id, describeValue(cluster, "nodes"))
		}
		seen := map[string]bool{}
		for j, item := range nodeList {
			obj, ok := item.(map[string]any)
			if !ok {
				d.problem(checkDiscoverNodeFields, "cluster %s: nodes[%d] is %s, not an object", id, j, jsonType(item))
				continue
			}
			nodeID, ok := obj["node_id"].(string)
			if !ok || nodeID == "" {
				d.problem(checkDiscoverNodeFields, "cluster %s: nodes[%d].node_id is %s, not a non-empty string", id, j, describeValue(obj, "node_id"))
				continue
			}
			if agent, ok := obj["agent_address"].(string); !ok || agent == "" {
				d.problem(checkDiscoverNodeFields, "cluster %s: node %s: agent_address is %s, not a non-empty string", id, nodeID, describeValue(obj, "agent_address"))
			}
			if seen[nodeID] {
				d.problem(checkDiscoverNodeIDsUnique, "cluster %s lists node %s more than once", id, nodeID)
			}
			seen[nodeID] = true
			n := node{id: nodeID, agent: obj["agent_address"]}
			n.class, n.hasClass = obj["node_class"]
			n.group, n.hasGroup = obj["node_group"]
			if _, ok := n.class.(string); !ok {
				d.problem(checkDiscoverNodeClass, "cluster %s: node %s: node_class is %s, not a string", id, nodeID, describeValue(obj, "node_class"))
			}
			if _, ok := n.group.(string); n.group != nil && !ok {
				d.problem(checkDiscoverNodeGroup, "cluster %s: node %s: node_group is %s, not a string or null", id, nodeID, describeValue(obj, "node_group"))
			}
			nodes[nodeID] = n
		}
	}
	return d, nil
}

func isJSONContentType(ct string) bool {
	mediaType, _, err := mime.ParseMediaType(ct)
	return err == nil && (mediaType == "application/json" || strings.HasSuffix(mediaType, "+json"))
}

// describeValue names obj[key] for a message: missing, null, or its type
// and value.
func describeValue(obj map[string]any, key string) string {
	v, ok := obj[key]
	if !ok {
		return "missing"
	}
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("%q", v)
	}
	b, _ := json.Marshal(v)
	return fmt.Sprintf("%s %s", jsonType(v), b)
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// observation accumulates what the discoveries showed about one check.
type observation struct {
	bad   int    // discoveries that broke the rule
	first string // the first problem
}

func (o *observation) note(problem string) {
	if o.bad == 0 {
		o.first = problem
	}
	o.bad++
}

// discover makes one discovery and judges it for the discovery checks. An
// error means the answer cannot be used; it has been noted already unless
// ctx was cancelled.
func (k *kit) discover(ctx context.Context) (*discovery, error) {
	a, err := k.do(ctx, http.MethodGet, "discover", nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		k.disCount++
		k.obs[checkDiscoverStatus].note(fmt.Sprintf("GET %sdiscover failed: %v", k.base, err))
		return nil, err
	}
	return k.judgeDiscovery(a)
}

func (k *kit) judgeDiscovery(a *answer) (*discovery, error) {
	k.disCount++
	d, err := parseDiscovery(a)
	for check, problem := range d.problems {
		k.obs[check].note(problem)
	}
	if err != nil {
		return nil, err
	}
	k.watchIDs(d)
	return d, nil
}

// connect makes the first discovery. Only a platform that cannot be reached
// or refuses the kit's credentials stops the run; any other answer is the
// checks' business.
func (k *kit) connect(ctx context.Context) error {
	k.logf("checking %s with cluster %s", k.base, k.clusterID)
	a, err := k.do(ctx, http.MethodGet, "discover", nil)
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("conformance run interrupted: %w", ctx.Err())
	case err != nil:
		return fmt.Errorf("cannot reach the platform: %w", err)
	case a.status == http.StatusUnauthorized || a.status == http.StatusForbidden:
		return fmt.Errorf("the platform refused the kit's first discovery with %s (check the token and the client certificate)", a.describe())
	}
	k.baseline, _ = k.judgeDiscovery(a)
	return nil
}

// poll discovers every PollInterval until done accepts a discovery or
// timeout passes; it returns the last usable discovery (nil if none) and
// whether done accepted it.
func (k *kit) poll(ctx context.Context, timeout time.Duration, done func(*discovery) bool) (*discovery, bool) {
	deadline := time.Now().Add(timeout)
	var last *discovery
	for {
		d, err := k.discover(ctx)
		if err == nil {
			last = d
			if done(d) {
				return d, true
			}
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return last, false
		}
		wait := min(k.cfg.PollInterval, time.Until(deadline))
		select {
		case <-ctx.Done():
			return last, false
		case <-time.After(wait):
		}
	}
}

// concludeDiscoveryChecks turns the observations into results.
func (k *kit) concludeDiscoveryChecks() {
	for _, name := range discoveryChecks {
		o := k.obs[name]
		switch {
		case k.disCount == 0:
			k.skip(name, "no discovery was made")
		case o.bad > 0:
			k.fail(name, "%d of %d discoveries: %s", o.bad, k.disCount, o.first)
		default:
			k.pass(name, "all %d discoveries", k.disCount)
		}
	}
}
