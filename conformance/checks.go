package conformance

// phase is the part of a run that decides a check.
type phase int

const (
	phaseDiscovery   phase = iota // judged on every discovery the kit makes
	phaseReject                   // invalid provision requests
	phaseProvision                // a valid provision and the discoveries after it
	phaseDeprovision              // deprovisioning one of the provisioned nodes
	phaseMissing                  // deprovisioning a node that does not exist
)

// Clauses quoted by the checks. platform-api.md is the Platform API
// reference; behaviours.md the required behaviours and the facts about
// Replicante Core's client.
const (
	clauseDiscoverPayload  = `platform-api.md, GET /discover: "A successful response payload MUST be a JSON encoded ClusterDiscoveryResponse"`
	clauseDiscoverCluster  = `platform-api.md, struct ClusterDiscover: cluster_id: String, nodes: List<ClusterDiscoveryNode>`
	clauseDiscoverNode     = `platform-api.md, struct ClusterDiscoveryNode: agent_address: String, node_id: String; behaviours.md, cluster discovery: "Per node: the node ID and the network address of the node's agent"`
	clauseNodeIDsUnique    = `behaviours.md: "Node IDs MUST be unique within a cluster"`
	clauseGroupedByCluster = `behaviours.md, cluster discovery: "list every existing node it manages, grouped by cluster"`
	clauseNodeClass        = `behaviours.md, facts about the real clients: node_class (string, required by the SDK's model: a node without it fails to parse)`
	clauseNodeGroup        = `behaviours.md, facts about the real clients: node_group (string or null: the node group ID from the cluster declaration)`
	clauseJSONEncoded      = `platform-api.md: "In the API this is encoded as a JSON object"`
	clausePolled           = `behaviours.md: Core "polls its discovery at an interval"`
	clauseProvisionBody    = `platform-api.md, POST /provision: "The body of this request MUST be a JSON encoded NodeProvisionRequest"; "A Platform can reject invalid requests with a 4xx status code"`
	clauseRequiredMissing  = `platform-api.md, POST /provision: "A Platform can reject invalid requests with a 4xx status code: If a required attribute is missing"`
	clauseWrongValue       = `platform-api.md, POST /provision: "A Platform can reject invalid requests with a 4xx status code: If the value provided for any attribute is not valid for that attribute"`
	clauseCountType        = `behaviours.md, facts about the real clients: provision.count (a u16)`
	clauseErrorBody        = `behaviours.md, facts about the real clients: "Error responses from SDK-based servers are JSON objects: {\"error\": true, \"error_msg\": ...}"`
	clauseUnknownGroupBody = `behaviours.md, facts about the real clients: "An unknown node group in a provision request is answered 400-class with a body naming node_group_id, defined_node_groups and error_msg"`
	clauseRejectedNothing  = `platform-api.md, POST /provision: "A Platform can reject invalid requests with a 4xx status code" (a rejected request provisions nothing)`
	clauseProvisionReply   = `platform-api.md, POST /provision: "A successful response payload MUST be a JSON encoded NodeProvisionResponse"`
	clauseProvisionCount   = `platform-api.md, struct NodeProvisionResponse: count: u32 ("Number of nodes being provisioned by this request")`
	clauseProvisionIDs     = `behaviours.md: "If provisioning returns node_ids, it returns one per node being provisioned or none at all"`
	clauseProvisionListed  = `behaviours.md: node provisioning and cluster discovery ("list every existing node it manages"); node_ids "should be the IDs that discovery will show"`
	clauseIDsNeverChange   = `behaviours.md: "Node IDs ... MUST never change for the same underlying node"`
	clauseConcurrent       = `behaviours.md: "Provisioning may complete asynchronously"; Core polls discovery at an interval, whatever else is in flight`
	clauseDeprovisionReply = `platform-api.md, POST /deprovision: "A successful response MUST have a status code of 200 or 204"`
	clauseDeprovisionGone  = `behaviours.md, node deprovisioning: a deprovisioned node "MUST NOT appear in discovery once deprovisioning is complete"`
	clauseNotReplaced      = `behaviours.md, node deprovisioning: "A deprovisioned node MUST NOT be replaced automatically"`
	clauseMissingNode      = `behaviours.md, node deprovisioning: "terminate a node it provisioned" (good practice: a node it does not have is 404)`
)

// Names of the checks the kit refers to in code.
const (
	checkDiscoverStatus         = "discover-status"
	checkDiscoverJSON           = "discover-json"
	checkDiscoverClusterFields  = "discover-cluster-fields"
	checkDiscoverNodeFields     = "discover-node-fields"
	checkDiscoverNodeIDsUnique  = "discover-node-ids-unique"
	checkDiscoverClustersUnique = "discover-clusters-unique"
	checkDiscoverNodeClass      = "discover-node-class"
	checkDiscoverNodeGroup      = "discover-node-group"
	checkDiscoverContentType    = "discover-content-type"
	checkDiscoverStable         = "discover-stable"

	checkRejectErrorBody        = "reject-error-body"
	checkRejectUnknownGroupBody = "reject-unknown-group-body"
	checkRejectNothing          = "reject-nothing-provisioned"

	checkProvisionStatus     = "provision-status"
	checkProvisionCount      = "provision-count"
	checkProvisionNodeIDs    = "provision-node-ids"
	checkProvisionDiscovered = "provision-discovered"
	checkProvisionNodeGroup  = "provision-node-group"
	checkProvisionNodeClass  = "provision-node-class"
	checkNodeIDsStable       = "node-ids-stable"
	checkConcurrent          = "concurrent-discovery"

	checkDeprovisionStatus      = "deprovision-status"
	checkDeprovisionGone        = "deprovision-gone"
	checkDeprovisionNotReplaced = "deprovision-not-replaced"
	checkDeprovisionMissing     = "deprovision-missing"
)

// discoveryChecks are judged on every discovery the kit makes itself
// (the parallel discoveries of concurrent-discovery are judged apart).
var discoveryChecks = []string{
	checkDiscoverStatus, checkDiscoverJSON, checkDiscoverClusterFields, checkDiscoverNodeFields,
	checkDiscoverNodeIDsUnique, checkDiscoverClustersUnique, checkDiscoverNodeClass,
	checkDiscoverNodeGroup, checkDiscoverContentType,
}

var catalogue = buildCatalogue()

func buildCatalogue() []Check {
	checks := []Check{
		{Name: checkDiscoverStatus, Level: MUST, Clause: clauseDiscoverPayload, phase: phaseDiscovery,
			Description: "Every discovery of the run (bar the parallel ones of concurrent-discovery) is answered 200."},
		{Name: checkDiscoverJSON, Level: MUST, Clause: clauseDiscoverPayload, phase: phaseDiscovery,
			Description: "Every discovery body is one JSON object with a clusters array (null or a missing clusters field fail)."},
		{Name: checkDiscoverClusterFields, Level: MUST, Clause: clauseDiscoverCluster, phase: phaseDiscovery,
			Description: "Every listed cluster is an object with a non-empty string cluster_id and a nodes array."},
		{Name: checkDiscoverNodeFields, Level: MUST, Clause: clauseDiscoverNode, phase: phaseDiscovery,
			Description: "Every listed node is an object with a non-empty string node_id and a non-empty string agent_address."},
		{Name: checkDiscoverNodeIDsUnique, Level: MUST, Clause: clauseNodeIDsUnique, phase: phaseDiscovery,
			Description: "No cluster lists the same node_id twice."},
		{Name: checkDiscoverClustersUnique, Level: MUST, Clause: clauseGroupedByCluster, phase: phaseDiscovery,
			Description: "No cluster_id is listed twice in one discovery."},
		{Name: checkDiscoverNodeClass, Level: COMPAT, Clause: clauseNodeClass, phase: phaseDiscovery,
			Description: "Every listed node has a string node_class."},
		{Name: checkDiscoverNodeGroup, Level: COMPAT, Clause: clauseNodeGroup, phase: phaseDiscovery,
			Description: "Every node_group that is present is a string or null."},
		{Name: checkDiscoverContentType, Level: SHOULD, Clause: clauseJSONEncoded, phase: phaseDiscovery,
			Description: "Discovery answers carry a JSON Content-Type (application/json or */*+json)."},
		{Name: checkDiscoverStable, Level: SHOULD, Clause: clausePolled, phase: phaseProvision,
			Description: "Once the provisioned nodes are listed, repeated discoveries (with nothing changing) show each of them with the same agent_address, node_class and node_group."},
	}
	for _, rc := range rejectCaseSpecs {
		checks = append(checks, Check{Name: rc.name, Level: rc.level, Clause: rc.clause, phase: phaseReject, Description: rc.description})
	}
	checks = append(checks,
		Check{Name: checkRejectErrorBody, Level: COMPAT, Clause: clauseErrorBody, phase: phaseReject,
			Description: "Every 4xx answer to the invalid provision requests above is a JSON object with a non-empty string error_msg."},
		Check{Name: checkRejectUnknownGroupBody, Level: SHOULD, Clause: clauseUnknownGroupBody, phase: phaseReject,
			Description: "The 4xx answer to reject-unknown-group names the node_group_id asked for and the defined_node_groups (an array holding the declared group)."},
		Check{Name: checkRejectNothing, Level: MUST, Clause: clauseRejectedNothing, phase: phaseReject,
			Description: "After the invalid requests, discovery lists no node in the rejection cluster (<cluster>-rejects) or in any cluster that did not exist before, other than nodes of requests the platform accepted."},

		Check{Name: checkProvisionStatus, Level: MUST, Clause: clauseProvisionReply, phase: phaseProvision,
			Description: "A valid provision request for 2 nodes (desired_count 2, the SDK's provision.count 2, --store, --version, --group, --class, --attr) is answered 200 with a JSON object."},
		Check{Name: checkProvisionCount, Level: MUST, Clause: clauseProvisionCount, phase: phaseProvision,
			Description: "The answer's count is a non-negative integer."},
		Check{Name: checkProvisionNodeIDs, Level: MUST, Clause: clauseProvisionIDs, phase: phaseProvision,
			Description: "node_ids, when present and not null, is an array of unique non-empty strings with as many entries as count."},
		Check{Name: checkProvisionDiscovered, Level: MUST, Clause: clauseProvisionListed, phase: phaseProvision,
			Description: "Within --wait-timeout, discovery lists exactly count nodes in the new cluster and, when node_ids were returned, they are those IDs."},
		Check{Name: checkProvisionNodeGroup, Level: COMPAT, Clause: clauseNodeGroup, phase: phaseProvision,
			Description: "Each provisioned node's node_group is the requested group (null fails; a non-string is left to discover-node-group)."},
		Check{Name: checkProvisionNodeClass, Level: COMPAT, Clause: clauseNodeClass, phase: phaseProvision,
			Description: "Each provisioned node's node_class is the requested class (a missing node_class is left to discover-node-class)."},
		Check{Name: checkNodeIDsStable, Level: MUST, Clause: clauseIDsNeverChange, phase: phaseProvision,
			Description: "Every later discovery lists each provisioned node under the same ID until the kit deprovisions it, including after its sibling is deprovisioned."},
		Check{Name: checkConcurrent, Level: MUST, Clause: clauseConcurrent, phase: phaseProvision,
			Description: "Four discovery loops run in parallel while the provision is in flight: every answer is 2xx with a JSON object, and lists in the new cluster only nodes of that provision (at most count)."},

		Check{Name: checkDeprovisionStatus, Level: MUST, Clause: clauseDeprovisionReply, phase: phaseDeprovision,
			Description: "Deprovisioning one of the provisioned nodes is answered 200 or 204."},
		Check{Name: checkDeprovisionGone, Level: MUST, Clause: clauseDeprovisionGone, phase: phaseDeprovision,
			Description: "Within --wait-timeout, discovery no longer lists the deprovisioned node."},
		Check{Name: checkDeprovisionNotReplaced, Level: MUST, Clause: clauseNotReplaced, phase: phaseDeprovision,
			Description: "For --quiet-period after the node is gone, discovery lists neither it again nor any new node in its cluster."},
		Check{Name: checkDeprovisionMissing, Level: SHOULD, Clause: clauseMissingNode, phase: phaseMissing,
			Description: "Deprovisioning a node ID that does not exist (in the kit's cluster) is answered 404; the reason reports what the platform answered."},
	)
	return checks
}
