package docker

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthio/berth/platform"
)

// TestAnswerFor: how a retry is answered from the nodes that carry its key.
func TestAnswerFor(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	idem := &platform.Idempotency{Key: "k", Digest: "mine"}
	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	n := func(id, digest string, ago time.Duration, complete bool) *node {
		return &node{NodeID: id, Digest: digest, Created: at(ago), Complete: complete}
	}
	for _, tc := range []struct {
		name  string
		nodes []*node
		want  []string // nil: no answer, provision anew
		code  string
	}{
		{name: "new key"},
		{name: "in creation order", nodes: []*node{n("node-b", "mine", time.Minute, true), n("node-a", "mine", time.Minute-time.Nanosecond, true),
			n("node-c", "mine", 2*time.Minute, true)}, want: []string{"node-c", "node-b", "node-a"}},
		{name: "forgotten after the window", nodes: []*node{n("node-a", "mine", 25*time.Hour, true)}},
		{name: "forgotten nodes do not count", nodes: []*node{n("node-a", "other", 25*time.Hour, true), n("node-b", "mine", time.Hour, true)},
			want: []string{"node-b"}},
		{name: "another request", nodes: []*node{n("node-a", "other", time.Hour, true)}, code: platform.EUNPROCESSABLE},
		{name: "another request first", nodes: []*node{n("node-a", "other", time.Hour, true), n("node-b", "mine", time.Minute, true)},
			code: platform.EUNPROCESSABLE},
		{name: "this request first", nodes: []*node{n("node-a", "other", time.Minute, true), n("node-b", "mine", time.Hour, true)},
			want: []string{"node-b"}},
		{name: "still being made", nodes: []*node{n("node-a", "mine", time.Second, true), n("node-b", "mine", time.Second, false)},
			code: platform.ECONFLICT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := answerFor(tc.nodes, idem, time.Minute, now)
			if platform.ErrorCode(err) != tc.code && !(tc.code == "" && err == nil) {
				t.Fatalf("error %v, want code %q", err, tc.code)
			}
			if tc.code != "" {
				t.Logf("%s", platform.ErrorMessage(err))
				return
			}
			if tc.want == nil {
				if resp != nil {
					t.Fatalf("answer %+v, want none", resp)
				}
				return
			}
			if resp == nil || resp.Count != len(tc.want) || !reflect.DeepEqual(resp.NodeIDs, tc.want) {
				t.Fatalf("answer %+v, want %v", resp, tc.want)
			}
		})
	}
}

func withKey(req platform.ProvisionRequest, key, digest string) platform.ProvisionRequest {
	req.Idempotency = &platform.Idempotency{Key: key, Digest: digest}
	return req
}

// TestIdempotencyKey: concurrent provisions with one key make the nodes
// once and all get the first answer; every object they make carries the
// key's hash and the digest, never the key; a driver opened anew (a
// restarted Berth) answers the same; the key with another request is 422; a
// provision that made no node leaves no key, so its retry is evaluated anew.
func TestIdempotencyKey(t *testing.T) {
	f := newFixture(t, Options{})
	ctx := context.Background()
	cluster := uniqueCluster("idem")
	key := strings.Repeat("k", 250) + "-key1"
	req := withKey(provisionRequest(cluster, "sleeper", "1.0", "default", 5, 2, nil), key, "digest-1")

	const retries = 4
	answers := make([]platform.ProvisionResponse, retries)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.driver.Provision(ctx, req)
			if err != nil {
				t.Errorf("provision %d: %v", i, err)
			}
			answers[i] = resp
		}()
	}
	wg.Wait()
	first := answers[0]
	if first.Count != 2 || len(first.NodeIDs) != 2 {
		t.Fatalf("first answer %+v, want 2 nodes", first)
	}
	for i, a := range answers {
		if !reflect.DeepEqual(a, first) {
			t.Errorf("answer %d is %+v, the first %+v", i, a, first)
		}
	}
	if nodes := f.discover(t, cluster); len(nodes) != 2 {
		t.Fatalf("%d retries made %d nodes, want 2: %+v", retries, len(nodes), nodes)
	}

	// The key's hash and the digest are on every container and volume;
	// the key itself is nowhere.
	hash := keyHash(key)
	containers, err := f.api.ContainerList(ctx, client.ContainerListOptions{All: true,
		Filters: client.Filters{}.Add("label", LabelCluster+"="+cluster)})
	if err != nil {
		t.Fatal(err)
	}
	volumes, err := f.api.VolumeList(ctx, client.VolumeListOptions{Filters: client.Filters{}.Add("label", LabelCluster+"="+cluster)})
	if err != nil {
		t.Fatal(err)
	}
	var labelled []map[string]string
	for _, c := range containers.Items {
		labelled = append(labelled, c.Labels)
	}
	for _, v := range volumes.Items {
		labelled = append(labelled, v.Labels)
	}
	if len(labelled) != 4 {
		t.Fatalf("%d containers and volumes, want 2 of each", len(labelled))
	}
	for _, labels := range labelled {
		if labels[LabelIdempotencyKey] != hash || labels[LabelRequestDigest] != "digest-1" {
			t.Errorf("labels %v lack the key's hash %s or the digest", labels, hash)
		}
		for k, v := range labels {
			if strings.Contains(v, "kkkk") {
				t.Errorf("label %s holds the key: %q", k, v)
			}
		}
	}

	// Another Berth, or this one restarted, answers the same.
	other := openDriver(t, f.engine, Options{})
	again, err := other.Provision(ctx, req)
	if err != nil || !reflect.DeepEqual(again, first) {
		t.Fatalf("retry through another driver: %+v, %v; want %+v", again, err, first)
	}
	_, err = other.Provision(ctx, withKey(req, key, "digest-2"))
	if platform.ErrorCode(err) != platform.EUNPROCESSABLE || !strings.Contains(err.Error(), "another provision request") {
		t.Fatalf("the key with another request: %v; want 422", err)
	}
	if nodes := f.discover(t, cluster); len(nodes) != 2 {
		t.Fatalf("after the retries: %d nodes, want 2", len(nodes))
	}

	// A full group: the answer is no node, and nothing keeps the key.
	full := withKey(provisionRequest(cluster, "sleeper", "1.0", "default", 2, 1, nil), "key-2", "digest-3")
	resp, err := f.driver.Provision(ctx, full)
	if err != nil || resp.Count != 0 {
		t.Fatalf("provision into a full group: %+v, %v", resp, err)
	}
	if err := f.driver.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: first.NodeIDs[0]}); err != nil {
		t.Fatal(err)
	}
	// The first key answers with the node it still has.
	if resp, err := f.driver.Provision(ctx, req); err != nil || !reflect.DeepEqual(resp.NodeIDs, first.NodeIDs[1:]) {
		t.Fatalf("retry after one of its nodes was deprovisioned: %+v, %v; want %v", resp, err, first.NodeIDs[1:])
	}
	resp, err = f.driver.Provision(ctx, full)
	if err != nil || resp.Count != 1 {
		t.Fatalf("retry of a provision that made no node: %+v, %v; want it evaluated anew (1 node)", resp, err)
	}
	if again, err := other.Provision(ctx, full); err != nil || !reflect.DeepEqual(again, resp) {
		t.Fatalf("retry of it: %+v, %v; want %+v", again, err, resp)
	}

	for _, n := range f.discover(t, cluster) {
		if err := f.driver.Deprovision(ctx, platform.DeprovisionRequest{ClusterID: cluster, NodeID: n.NodeID}); err != nil {
			t.Fatal(err)
		}
	}
	if left := f.leftovers(t, cluster); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
