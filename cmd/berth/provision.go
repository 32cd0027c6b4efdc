package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/platform"
)

type provisionOptions struct {
	file        string
	cluster     string
	store       string
	version     string
	group       string
	class       string
	desired     int
	count       int
	attrs       []string
	groupAttrs  []string
	output      string
	wait        bool
	waitTimeout time.Duration
}

func newProvisionCommand() *cobra.Command {
	var o provisionOptions
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Ask a platform to provision nodes",
		Long: `Provision sends a node provision request (POST {url}provision) built from
flags, or read unchanged from a file with -f (-f - reads standard input).

  berth provision --cluster demo --store redis --version 7.0 --count 3 \
      --attr maxmemory=100mb --attr persistence=true --wait

An --attr or --group-attr value is JSON when it parses as JSON (numbers,
true, false, null, quoted strings, arrays, objects) and a plain string
otherwise. --desired (the group's desired_count) defaults to --count.`,
		Args: noArgs,
	}
	flags := cmd.Flags()
	flags.StringVarP(&o.file, "file", "f", "", "send the JSON request in this file unchanged ('-' reads standard input)")
	flags.StringVar(&o.cluster, "cluster", "", "cluster ID (cluster.cluster_id; required without -f)")
	flags.StringVar(&o.store, "store", "", "store software, such as redis (cluster.store; required without -f)")
	flags.StringVar(&o.version, "version", "", "store version (cluster.store_version; required without -f)")
	flags.StringVar(&o.group, "group", "default", "node group to provision (provision.node_group_id)")
	flags.StringVar(&o.class, "class", "default", "node class of the group (node_class)")
	// 0 stands for "not given": the default follows --count, which a fixed
	// default could not express.
	flags.IntVar(&o.desired, "desired", 0, "desired node count of the group (desired_count; default: --count)")
	flags.IntVar(&o.count, "count", 1, "number of nodes to provision (provision.count)")
	flags.StringArrayVar(&o.attrs, "attr", nil, "cluster attribute as key=value (repeatable)")
	flags.StringArrayVar(&o.groupAttrs, "group-attr", nil, "node group attribute as key=value (repeatable)")
	flags.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	flags.BoolVar(&o.wait, "wait", false, "wait until discovery lists the new nodes")
	flags.DurationVar(&o.waitTimeout, "wait-timeout", 2*time.Minute, "how long --wait waits")
	conn := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		body, clusterID, err := o.requestBody(cmd)
		if err != nil {
			return err
		}
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		ctx := cmd.Context()

		// Without node IDs in the answer, the new nodes can only be told
		// apart from the ones listed before the request.
		var before map[string]bool
		if o.wait {
			resp, err := c.Discover(ctx)
			if err != nil {
				return fmt.Errorf("discovering nodes before provisioning (for --wait): %w", explainRequestError(c, err))
			}
			before = map[string]bool{}
			for _, node := range findCluster(resp, clusterID) {
				before[node.NodeID] = true
			}
		}

		resp, err := c.ProvisionRaw(ctx, body)
		if err != nil {
			return fmt.Errorf("provisioning nodes: %w", explainRequestError(c, err))
		}
		if err := o.print(cmd.OutOrStdout(), resp, clusterID); err != nil {
			return err
		}
		if !o.wait {
			return nil
		}
		return waitForProvisioned(cmd, c, o.waitTimeout, clusterID, resp, before)
	}
	return cmd
}

// requestBody returns the body to send and the cluster ID it is for.
func (o *provisionOptions) requestBody(cmd *cobra.Command) ([]byte, string, error) {
	if o.output != "text" && o.output != "json" {
		return nil, "", usageErrorf("--output must be text or json, got %q", o.output)
	}
	if o.waitTimeout <= 0 {
		return nil, "", usageErrorf("--wait-timeout must be positive, got %s", o.waitTimeout)
	}
	flags := cmd.Flags()
	if o.file != "" {
		// Only flags typed on this command line conflict: a --config file
		// holding request defaults must not make every -f invocation fail.
		var given []string
		for _, name := range []string{"cluster", "store", "version", "group", "class", "desired", "count", "attr", "group-attr"} {
			if flags.Changed(name) {
				given = append(given, "--"+name)
			}
		}
		if len(given) > 0 {
			return nil, "", usageErrorf("-f sends a complete request; it cannot be combined with %s", strings.Join(given, ", "))
		}
		return o.readFile(cmd)
	}

	var missing []string
	for _, f := range []struct{ name, value string }{{"cluster", o.cluster}, {"store", o.store}, {"version", o.version}} {
		if f.value == "" {
			missing = append(missing, "--"+f.name)
		}
	}
	if len(missing) > 0 {
		return nil, "", usageErrorf("%s required (or give a complete request with -f)", joinRequired(missing))
	}
	if o.group == "" || o.class == "" {
		return nil, "", usageErrorf("--group and --class must not be empty")
	}
	if o.count < 1 {
		return nil, "", usageErrorf("--count must be at least 1, got %d", o.count)
	}
	desired := o.desired
	if !flagGiven(flags, "desired") {
		desired = max(1, o.count)
	}
	if desired < 0 {
		return nil, "", usageErrorf("--desired must not be negative, got %d", desired)
	}
	attrs, err := parseAttributes("--attr", o.attrs)
	if err != nil {
		return nil, "", err
	}
	groupAttrs, err := parseAttributes("--group-attr", o.groupAttrs)
	if err != nil {
		return nil, "", err
	}
	req := platform.ProvisionRequest{
		Cluster: platform.ClusterSpec{
			Attributes:   attrs,
			ClusterID:    o.cluster,
			Store:        o.store,
			StoreVersion: o.version,
			Nodes: map[string]platform.NodeGroup{o.group: {
				Attributes:   groupAttrs,
				DesiredCount: desired,
				NodeClass:    o.class,
			}},
		},
		Provision: platform.ProvisionSpec{NodeGroupID: o.group, Count: o.count},
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, "", fmt.Errorf("encoding the provision request: %w", err)
	}
	return body, o.cluster, nil
}

func (o *provisionOptions) readFile(cmd *cobra.Command) ([]byte, string, error) {
	var body []byte
	var err error
	name := o.file
	if o.file == "-" {
		name = "standard input"
		body, err = io.ReadAll(cmd.InOrStdin())
	} else {
		body, err = os.ReadFile(o.file)
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the provision request: %w", err)
	}
	// The body goes out unchanged and the platform judges it; the cluster
	// ID is read only to report on and wait for the new nodes.
	var peek struct {
		Cluster struct {
			ClusterID string `json:"cluster_id"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal(body, &peek); err != nil || peek.Cluster.ClusterID == "" {
		if o.wait {
			if err == nil {
				err = errors.New("cluster.cluster_id is missing")
			}
			return nil, "", fmt.Errorf("--wait needs the cluster ID of the request in %s: %w", name, err)
		}
		return body, "", nil
	}
	return body, peek.Cluster.ClusterID, nil
}

func joinRequired(names []string) string {
	switch len(names) {
	case 1:
		return names[0] + " is"
	case 2:
		return names[0] + " and " + names[1] + " are"
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " are"
}

// parseAttributes reads key=value flags. A value that parses as JSON is
// taken as that JSON value so that numbers, booleans and objects reach the
// platform typed; anything else is a string, which spares quoting in the
// common case.
func parseAttributes(flag string, values []string) (map[string]any, error) {
	attrs := make(map[string]any, len(values))
	for _, kv := range values {
		key, value, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, usageErrorf("%s %q: want key=value", flag, kv)
		}
		if key == "" {
			return nil, usageErrorf("%s %q: the key must not be empty", flag, kv)
		}
		attrs[key] = parseAttributeValue(value)
	}
	return attrs, nil
}

func parseAttributeValue(value string) any {
	dec := json.NewDecoder(strings.NewReader(value))
	// Numbers stay as written: 1.0 must not become 1, nor a large integer a float.
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return value
	}
	if _, err := dec.Token(); err != io.EOF {
		return value // "1 2" or "true x" are strings, not a JSON value plus junk
	}
	return v
}

func (o *provisionOptions) print(w io.Writer, resp platform.ProvisionResponse, clusterID string) error {
	if o.output == "json" {
		if resp.NodeIDs == nil {
			resp.NodeIDs = []string{}
		}
		return writeJSON(w, resp)
	}
	var line bytes.Buffer
	fmt.Fprintf(&line, "provisioned %d node(s)", resp.Count)
	if clusterID != "" {
		fmt.Fprintf(&line, " in cluster %s", clusterID)
	}
	if len(resp.NodeIDs) > 0 {
		fmt.Fprintf(&line, ": %s", strings.Join(resp.NodeIDs, " "))
	}
	line.WriteByte('\n')
	if _, err := w.Write(line.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// waitForProvisioned waits until discovery lists every node the platform
// named or, when it named none, resp.Count nodes that were not listed
// before the request. Counting new IDs rather than the cluster's size keeps
// a node deprovisioned meanwhile from hiding a missing one.
func waitForProvisioned(cmd *cobra.Command, c *client.Client, timeout time.Duration, clusterID string,
	resp platform.ProvisionResponse, before map[string]bool) error {
	want := resp.Count
	if len(resp.NodeIDs) > 0 {
		want = len(resp.NodeIDs)
	}
	if want == 0 {
		return nil
	}
	missing := resp.NodeIDs
	var listed int
	done := func(disc platform.DiscoveryResponse) (bool, string) {
		nodes := findCluster(disc, clusterID)
		present := make(map[string]bool, len(nodes))
		for _, node := range nodes {
			present[node.NodeID] = true
		}
		missing, listed = nil, 0
		if len(resp.NodeIDs) > 0 {
			for _, id := range resp.NodeIDs {
				if present[id] {
					listed++
				} else {
					missing = append(missing, id)
				}
			}
		} else {
			for id := range present {
				if !before[id] {
					listed++
				}
			}
			listed = min(listed, want)
		}
		return listed >= want, fmt.Sprintf("waiting for nodes: %d/%d listed", listed, want)
	}
	describe := func() string {
		if len(resp.NodeIDs) > 0 {
			return fmt.Sprintf("cluster %s does not list node(s) %s", clusterID, strings.Join(missing, ", "))
		}
		return fmt.Sprintf("cluster %s lists %d of the %d new node(s)", clusterID, listed, want)
	}
	return waitFor(cmd.Context(), c, timeout, cmd.ErrOrStderr(), done, describe)
}
