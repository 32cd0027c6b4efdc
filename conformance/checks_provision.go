package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Parallel discoveries while the kit's provision is in flight.
const (
	concurrentLoops = 4
	concurrentPause = 10 * time.Millisecond
)

// concurrentResult is one parallel discovery: an error, or the node IDs it
// listed in the kit's cluster.
type concurrentResult struct {
	err error
	ids map[string]bool
}

// runProvisionAndDeprovision provisions the kit's nodes, watches them,
// deprovisions one and watches its cluster.
func (k *kit) runProvisionAndDeprovision(ctx context.Context) {
	dependents := []string{
		checkProvisionDiscovered, checkProvisionNodeGroup, checkProvisionNodeClass, checkNodeIDsStable,
		checkDiscoverStable, checkDeprovisionStatus, checkDeprovisionGone, checkDeprovisionNotReplaced,
	}
	body, err := json.Marshal(k.provisionRequest(k.clusterID, provisionCount, provisionCount))
	if err != nil {
		panic(err) // the request is built from JSON-safe values only
	}
	k.logf("provisioning %d %s %s node(s) into cluster %s (group %s, class %s)",
		provisionCount, k.cfg.Store, k.cfg.StoreVersion, k.clusterID, k.cfg.NodeGroup, k.cfg.NodeClass)
	a, parallel, err := k.provisionDuringDiscoveries(ctx, body)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		k.fail(checkProvisionStatus, "no answer: %v", err)
		k.skipAll("the provision got no answer", append(dependents, checkProvisionCount, checkProvisionNodeIDs, checkConcurrent)...)
		return
	}
	if !a.ok() {
		k.fail(checkProvisionStatus, "answered %s; want 200", a.describe())
		k.skipAll("the provision was refused", append(dependents, checkProvisionCount, checkProvisionNodeIDs)...)
		k.judgeConcurrent(parallel, nil, -1)
		return
	}
	v, err := decodeJSON(a.body)
	obj, isObject := v.(map[string]any)
	if err != nil || !isObject {
		why := "not a JSON object"
		if err != nil {
			why = err.Error()
		}
		k.fail(checkProvisionStatus, "answered %d with %s: %s", a.status, quoteBody(a.body), why)
		k.skipAll("the provision answer is not a JSON object", append(dependents, checkProvisionCount, checkProvisionNodeIDs)...)
		k.judgeConcurrent(parallel, nil, -1)
		return
	}
	if a.status != http.StatusOK {
		k.fail(checkProvisionStatus, "answered %d %s; want 200", a.status, http.StatusText(a.status))
	} else {
		k.pass(checkProvisionStatus, "answered 200 with a JSON object")
	}

	count, countOK := k.judgeCount(obj)
	returned := k.judgeNodeIDs(obj, count, countOK)
	k.returned[k.clusterID] = append(k.returned[k.clusterID], sortedKeys(returned)...)
	want := count
	if !countOK {
		if len(returned) == 0 {
			k.skipAll("the provision answer has no usable count or node_ids", dependents...)
			k.judgeConcurrent(parallel, nil, -1)
			return
		}
		want = len(returned)
	}

	d, ok := k.waitProvisioned(ctx, want, returned)
	if ctx.Err() != nil {
		return
	}
	if !ok {
		k.skipAll("discovery did not list the provisioned nodes", dependents...)
		allowed := returned
		if len(allowed) == 0 {
			allowed = nil
		}
		k.judgeConcurrent(parallel, allowed, want)
		return
	}
	listed := d.nodeIDs(k.clusterID)
	k.judgeConcurrent(parallel, listed, want)
	if want == 0 {
		k.skipAll("the platform provisioned no nodes (count 0)", dependents...)
		return
	}
	k.judgeLabels(d)

	k.watching = map[string]bool{}
	for id := range listed {
		k.watching[id] = true
	}
	last := k.watchStability(ctx, d)
	if ctx.Err() != nil {
		return
	}
	if k.wants(checksOf(phaseDeprovision)...) {
		k.deprovisionOne(ctx, sortedKeys(listed)[0], last.nodeIDs(k.clusterID))
		if ctx.Err() != nil {
			return
		}
	} else {
		k.skipAll("not selected", checksOf(phaseDeprovision)...)
	}
	switch {
	case k.stableSeen == 0:
		k.skip(checkNodeIDsStable, "no later discovery could be compared")
	case k.stableObs.bad > 0:
		k.fail(checkNodeIDsStable, "%d of %d later discoveries: %s", k.stableObs.bad, k.stableSeen, k.stableObs.first)
	default:
		k.pass(checkNodeIDsStable, "%d later discoveries listed every provisioned node under its ID", k.stableSeen)
	}
	k.watching = nil
}

// provisionDuringDiscoveries sends the provision while concurrentLoops
// loops discover in parallel: each loop has one answer before the request
// goes out and stops once its answer is back.
func (k *kit) provisionDuringDiscoveries(ctx context.Context, body []byte) (*answer, []concurrentResult, error) {
	var (
		mu      sync.Mutex
		results []concurrentResult
		ready   sync.WaitGroup
		done    sync.WaitGroup
	)
	stop := make(chan struct{})
	ready.Add(concurrentLoops)
	for range concurrentLoops {
		done.Add(1)
		go func() {
			defer done.Done()
			for first := true; ; first = false {
				r := k.parallelDiscover(ctx)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if first {
					ready.Done()
				}
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(concurrentPause):
				}
			}
		}()
	}
	ready.Wait()
	a, err := k.do(ctx, http.MethodPost, "provision", body)
	close(stop)
	done.Wait()
	return a, results, err
}

// parallelDiscover is one discovery of the parallel loops. It leaves the
// kit's state alone: the loops run concurrently.
func (k *kit) parallelDiscover(ctx context.Context) concurrentResult {
	a, err := k.do(ctx, http.MethodGet, "discover", nil)
	if err != nil {
		return concurrentResult{err: err}
	}
	d, err := parseDiscovery(a)
	if err != nil {
		return concurrentResult{err: err}
	}
	return concurrentResult{ids: d.nodeIDs(k.clusterID)}
}

// judgeConcurrent concludes concurrent-discovery. allowed, when not nil,
// holds the only node IDs the kit's cluster may list; limit, when not
// negative, how many it may list.
func (k *kit) judgeConcurrent(results []concurrentResult, allowed map[string]bool, limit int) {
	var bad []string
	for _, r := range results {
		if r.err != nil {
			bad = append(bad, r.err.Error())
			continue
		}
		if limit >= 0 && len(r.ids) > limit {
			bad = append(bad, fmt.Sprintf("cluster %s lists %d nodes, more than the %d provisioned", k.clusterID, len(r.ids), limit))
			continue
		}
		for _, id := range sortedKeys(r.ids) {
			if allowed != nil && !allowed[id] {
				bad = append(bad, fmt.Sprintf("cluster %s lists node %s, which the provision did not create", k.clusterID, id))
				break
			}
		}
	}
	if len(bad) > 0 {
		k.fail(checkConcurrent, "%d of %d parallel discoveries: %s", len(bad), len(results), firstFew(bad, 2))
		return
	}
	k.pass(checkConcurrent, "%d parallel discoveries while the provision was in flight all parsed and agreed with it", len(results))
}

// judgeCount concludes provision-count and returns the count.
func (k *kit) judgeCount(obj map[string]any) (int, bool) {
	num, ok := obj["count"].(json.Number)
	if !ok {
		k.fail(checkProvisionCount, "count is %s, not a non-negative integer", describeValue(obj, "count"))
		return 0, false
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || n < 0 || n > 1<<32-1 {
		k.fail(checkProvisionCount, "count is %s, not a non-negative integer (u32)", num)
		return 0, false
	}
	k.pass(checkProvisionCount, "count is %d", n)
	return int(n), true
}

// judgeNodeIDs concludes provision-node-ids and returns the usable IDs.
func (k *kit) judgeNodeIDs(obj map[string]any, count int, countOK bool) map[string]bool {
	ids := map[string]bool{}
	raw, present := obj["node_ids"]
	if raw == nil {
		if present {
			k.pass(checkProvisionNodeIDs, "node_ids is null (they are optional)")
		} else {
			k.pass(checkProvisionNodeIDs, "no node_ids (they are optional)")
		}
		return ids
	}
	list, ok := raw.([]any)
	if !ok {
		k.fail(checkProvisionNodeIDs, "node_ids is %s, not an array", describeValue(obj, "node_ids"))
		return ids
	}
	var problems []string
	for i, v := range list {
		s, ok := v.(string)
		switch {
		case !ok || s == "":
			problems = append(problems, fmt.Sprintf("node_ids[%d] is %s, not a non-empty string", i, describeValue(map[string]any{"v": v}, "v")))
		case ids[s]:
			problems = append(problems, fmt.Sprintf("node_ids lists %s more than once", s))
		default:
			ids[s] = true
		}
	}
	if countOK && len(list) != count {
		problems = append(problems, fmt.Sprintf("node_ids has %d entries for count %d", len(list), count))
	}
	if len(problems) > 0 {
		k.fail(checkProvisionNodeIDs, "%s", strings.Join(problems, "; "))
	} else {
		k.pass(checkProvisionNodeIDs, "%d unique node IDs: %s", len(ids), strings.Join(sortedKeys(ids), " "))
	}
	return ids
}

// waitProvisioned concludes provision-discovered: the kit's cluster, new in
// this run, must come to list exactly want nodes, among them every
// returned ID.
func (k *kit) waitProvisioned(ctx context.Context, want int, returned map[string]bool) (*discovery, bool) {
	k.logf("waiting up to %s for discovery to list %d node(s) in cluster %s", k.cfg.WaitTimeout, want, k.clusterID)
	start := time.Now()
	agrees := func(d *discovery) bool {
		ids := d.nodeIDs(k.clusterID)
		if len(ids) != want {
			return false
		}
		for id := range returned {
			if !ids[id] {
				return false
			}
		}
		return true
	}
	d, ok := k.poll(ctx, k.cfg.WaitTimeout, agrees)
	if ctx.Err() != nil {
		return nil, false
	}
	if ok {
		k.pass(checkProvisionDiscovered, "cluster %s lists the %d provisioned node(s) after %s", k.clusterID, want, time.Since(start).Round(time.Millisecond))
		return d, true
	}
	if d == nil {
		k.fail(checkProvisionDiscovered, "no usable discovery within %s", k.cfg.WaitTimeout)
		return nil, false
	}
	ids := d.nodeIDs(k.clusterID)
	var missing []string
	for _, id := range sortedKeys(returned) {
		if !ids[id] {
			missing = append(missing, id)
		}
	}
	msg := fmt.Sprintf("after %s cluster %s lists %d node(s) [%s], want %d", k.cfg.WaitTimeout, k.clusterID, len(ids), strings.Join(sortedKeys(ids), " "), want)
	if len(missing) > 0 {
		msg += fmt.Sprintf("; returned node(s) not listed: %s", strings.Join(missing, " "))
	}
	k.fail(checkProvisionDiscovered, "%s", msg)
	return nil, false
}

// judgeLabels concludes provision-node-group and provision-node-class.
func (k *kit) judgeLabels(d *discovery) {
	nodes := d.nodes(k.clusterID)
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var groupBad, classBad []string
	groupJudged, classJudged := 0, 0
	for _, id := range ids {
		n := nodes[id]
		switch g := n.group.(type) {
		case string:
			groupJudged++
			if g != k.cfg.NodeGroup {
				groupBad = append(groupBad, fmt.Sprintf("node %s has node_group %q, want %q", id, g, k.cfg.NodeGroup))
			}
		case nil:
			groupJudged++
			state := "null"
			if !n.hasGroup {
				state = "missing"
			}
			groupBad = append(groupBad, fmt.Sprintf("node %s: node_group is %s, want %q", id, state, k.cfg.NodeGroup))
		}
		if c, ok := n.class.(string); ok {
			classJudged++
			if c != k.cfg.NodeClass {
				classBad = append(classBad, fmt.Sprintf("node %s has node_class %q, want %q", id, c, k.cfg.NodeClass))
			}
		}
	}
	switch {
	case len(groupBad) > 0:
		k.fail(checkProvisionNodeGroup, "%s", firstFew(groupBad, 3))
	case groupJudged == 0:
		k.skip(checkProvisionNodeGroup, "no provisioned node has a string or null node_group (see discover-node-group)")
	default:
		k.pass(checkProvisionNodeGroup, "every provisioned node has node_group %q", k.cfg.NodeGroup)
	}
	switch {
	case len(classBad) > 0:
		k.fail(checkProvisionNodeClass, "%s", firstFew(classBad, 3))
	case classJudged == 0:
		k.skip(checkProvisionNodeClass, "no provisioned node has a string node_class (see discover-node-class)")
	default:
		k.pass(checkProvisionNodeClass, "every provisioned node has node_class %q", k.cfg.NodeClass)
	}
}

// watchIDs notes, for node-ids-stable, every watched node a discovery does
// not list.
func (k *kit) watchIDs(d *discovery) {
	if k.watching == nil {
		return
	}
	k.stableSeen++
	ids := d.nodeIDs(k.clusterID)
	var missing []string
	for _, id := range sortedKeys(k.watching) {
		if !ids[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		k.stableObs.note(fmt.Sprintf("discovery no longer lists %s, which it listed before; cluster %s now lists [%s]",
			strings.Join(missing, " "), k.clusterID, strings.Join(sortedKeys(ids), " ")))
	}
}

// watchStability makes StablePolls more discoveries and concludes
// discover-stable: nodes listed in two consecutive discoveries keep their
// fields. Which nodes are listed is node-ids-stable's business. It returns
// the last usable discovery.
func (k *kit) watchStability(ctx context.Context, prev *discovery) *discovery {
	compared := 0
	var bad observation
	for range k.cfg.StablePolls {
		select {
		case <-ctx.Done():
			return prev
		case <-time.After(k.cfg.PollInterval):
		}
		d, err := k.discover(ctx)
		if ctx.Err() != nil {
			return prev
		}
		if err != nil {
			continue
		}
		compared++
		before, after := prev.nodes(k.clusterID), d.nodes(k.clusterID)
		for _, id := range sortedKeys(k.watching) {
			b, inBefore := before[id]
			a, inAfter := after[id]
			if inBefore && inAfter && b.fields() != a.fields() {
				bad.note(fmt.Sprintf("node %s changed between two discoveries: %s", id, diffFields(b, a)))
				break
			}
		}
		prev = d
	}
	switch {
	case compared == 0:
		k.skip(checkDiscoverStable, "no discovery could be compared")
	case bad.bad > 0:
		k.fail(checkDiscoverStable, "%d of %d comparisons: %s", bad.bad, compared, bad.first)
	default:
		k.pass(checkDiscoverStable, "%d repeated discoveries showed the provisioned nodes unchanged", compared)
	}
	return prev
}

func diffFields(before, after node) string {
	var diffs []string
	show := func(name string, b, a any, hb, ha bool) {
		bj, _ := json.Marshal(b)
		aj, _ := json.Marshal(a)
		if string(bj) != string(aj) || hb != ha {
			diffs = append(diffs, fmt.Sprintf("%s %s -> %s", name, bj, aj))
		}
	}
	show("agent_address", before.agent, after.agent, true, true)
	show("node_class", before.class, after.class, before.hasClass, after.hasClass)
	show("node_group", before.group, after.group, before.hasGroup, after.hasGroup)
	return strings.Join(diffs, ", ")
}
