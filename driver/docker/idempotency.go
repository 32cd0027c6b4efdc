package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"time"

	"github.com/moby/moby/client"

	"github.com/berthio/berth/platform"
)

// The engine keeps Idempotency-Keys: every container and volume a provision
// with a key creates carries LabelIdempotencyKey (the key's SHA-256) and
// LabelRequestDigest. A retry lists the containers with its key's label and,
// when complete nodes made within platform.IdempotencyWindow carry it and the
// digest matches, answers with those nodes instead of provisioning. Nothing
// is kept in Berth, so keys survive restarts of Berth and are shared by every
// Berth serving the engine. Two consequences:
//   - a provision that made no node (count 0) leaves nothing to carry its
//     key: a retry of it is evaluated anew, and may make nodes;
//   - a retry's answer is the key's nodes that still exist: once they are
//     all deprovisioned, the key is forgotten.

// HonoursIdempotencyKeys tells the server that this driver keeps keys.
func (d *Driver) HonoursIdempotencyKeys() bool { return true }

// keyHash is the label value that stands for an Idempotency-Key.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// replay returns the answer for a retry, nil when the key is new (or
// forgotten), EUNPROCESSABLE when the key came with another request, and
// ECONFLICT while nodes of the key are incomplete: another Berth is making
// them, or one that crashed made them in part and the sweep will remove
// them (see markers.go).
func (d *Driver) replay(ctx context.Context, idem *platform.Idempotency) (*platform.ProvisionResponse, error) {
	filters := client.Filters{}.Add("label", LabelIdempotencyKey+"="+keyHash(idem.Key))
	res, err := d.engine.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filters})
	if err != nil {
		return nil, d.engineError(err, "listing the containers of Idempotency-Key %q", idem.Key)
	}
	nodes := groupNodes(res.Items, d.opts.HostIP)
	d.noteIncomplete(nodes)
	return answerFor(nodes, idem, d.opts.StaleAfter, time.Now())
}

// answerFor decides a retry from the nodes that carry its key.
func answerFor(nodes []*node, idem *platform.Idempotency, staleAfter time.Duration, now time.Time) (*platform.ProvisionResponse, error) {
	var first, other *node
	var answer []*node
	incomplete := false
	for _, n := range nodes {
		if now.Sub(n.Created) > platform.IdempotencyWindow {
			continue // forgotten
		}
		if n.Digest != idem.Digest {
			if other == nil || n.Created.Before(other.Created) {
				other = n
			}
			continue
		}
		if first == nil || n.Created.Before(first.Created) {
			first = n
		}
		if !n.Complete {
			incomplete = true
			continue
		}
		answer = append(answer, n)
	}
	// The key belongs to the request that made its oldest node. (Nodes of
	// two requests carry one key only when Berths on one engine race.)
	if other != nil && (first == nil || !first.Created.Before(other.Created)) {
		return nil, platform.Errorf(platform.EUNPROCESSABLE,
			"Idempotency-Key %q was used at %s for another provision request; use a new key for a new request",
			idem.Key, other.Created.Format(time.RFC3339))
	}
	if incomplete {
		return nil, platform.Errorf(platform.ECONFLICT,
			"a provision with Idempotency-Key %q is still making its nodes (in another Berth, or in one that stopped and whose half-made nodes are removed within %s); retry later",
			idem.Key, staleAfter)
	}
	if len(answer) == 0 {
		return nil, nil
	}
	// The first answer listed its nodes in the order it made them.
	sort.Slice(answer, func(i, j int) bool {
		if !answer[i].Created.Equal(answer[j].Created) {
			return answer[i].Created.Before(answer[j].Created)
		}
		return answer[i].NodeID < answer[j].NodeID
	})
	resp := &platform.ProvisionResponse{Count: len(answer), NodeIDs: make([]string, len(answer))}
	for i, n := range answer {
		resp.NodeIDs[i] = n.NodeID
	}
	return resp, nil
}
