package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berthio/berth/conformance"
)

type conformanceOptions struct {
	store, version, group, class string
	attrs                        []string
	waitTimeout, quietPeriod     time.Duration
	only, skip                   []string
	output                       string
	list                         bool
}

func newConformanceCommand() *cobra.Command {
	var o conformanceOptions
	cmd := &cobra.Command{
		Use:   "conformance",
		Short: "Check a Platform server against the specification",
		Long: `Conformance runs the Platform specification as checks against the server at
--url (Berth with any driver, or any other implementation): discovery, invalid
provision requests, a provision of two nodes, a deprovision, and discovery
throughout. Each check has a level: MUST (the specification), COMPAT (what
Replicante Core's client needs) or SHOULD (good practice; a failure is a
WARN and does not fail the run).

It provisions into a cluster named conformance-<random> (and rejects requests
for <that>-rejects), touches no other cluster, and deprovisions what it
created at the end, also when a check fails or it is interrupted.

  berth conformance --url http://127.0.0.1:9876/
  berth conformance --list
  berth conformance --only discover-json,discover-status -o json

It prints one line per check (STATUS LEVEL NAME REASON) and the summary
"N passed, N failed[, N skipped]". Exit status 1 when a MUST or COMPAT
check fails, 2 for a wrong command line.`,
		Args: noArgs,
	}
	flags := cmd.Flags()
	flags.StringVar(&o.store, "store", conformance.DefaultStore, "store software of the nodes to provision (cluster.store)")
	flags.StringVar(&o.version, "version", conformance.DefaultStoreVersion, "store version of the nodes to provision (cluster.store_version)")
	flags.StringVar(&o.group, "group", conformance.DefaultNodeGroup, "node group to provision (provision.node_group_id)")
	flags.StringVar(&o.class, "class", conformance.DefaultNodeClass, "node class of the group (node_class)")
	flags.StringArrayVar(&o.attrs, "attr", nil, "cluster attribute as key=value (repeatable; JSON values are sent typed)")
	flags.DurationVar(&o.waitTimeout, "wait-timeout", conformance.DefaultWaitTimeout, "how long to wait for discovery to agree with a provision or a deprovision")
	flags.DurationVar(&o.quietPeriod, "quiet-period", conformance.DefaultQuietPeriod, "how long to watch a deprovisioned node's cluster for a replacement")
	flags.StringSliceVar(&o.only, "only", nil, "run only these checks (comma-separated names, repeatable)")
	flags.StringSliceVar(&o.skip, "skip", nil, "leave out these checks (comma-separated names, repeatable)")
	flags.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	flags.BoolVar(&o.list, "list", false, "list the checks (name, level, clause) and exit")
	conn := addClientFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if o.output != "text" && o.output != "json" {
			return usageErrorf("--output must be text or json, got %q", o.output)
		}
		if o.list {
			return writeCheckList(cmd, o.output)
		}
		cfg, err := o.config()
		if err != nil {
			return err
		}
		// The client validates the connection flags exactly as the other
		// commands do; the kit then needs the raw HTTP client, since it
		// must see statuses and bodies the typed client hides.
		c, err := conn.newClient()
		if err != nil {
			return err
		}
		httpClient, err := conn.conformanceHTTPClient()
		if err != nil {
			return err
		}
		cfg.BaseURL = c.BaseURL()
		cfg.HTTPClient = httpClient
		cfg.Token = conn.token
		cfg.RequestTimeout = conn.timeout
		stderr := cmd.ErrOrStderr()
		cfg.Log = func(msg string) { fmt.Fprintln(stderr, "conformance:", msg) }

		rep, runErr := conformance.Run(cmd.Context(), cfg)
		if rep == nil {
			return fmt.Errorf("conformance: %w", explainRequestError(c, runErr))
		}
		if o.output == "json" {
			err = rep.WriteJSON(cmd.OutOrStdout())
		} else {
			err = rep.WriteText(cmd.OutOrStdout())
		}
		if err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		var problems []string
		if runErr != nil {
			problems = append(problems, "interrupted: the remaining checks did not run")
		}
		if !rep.Cleanup.Clean() {
			problems = append(problems, describeCleanup(rep.Cleanup))
		}
		if !rep.OK() {
			problems = append(problems, fmt.Sprintf("%d MUST or COMPAT check(s) failed", rep.Failed))
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	}
	return cmd
}

// config turns the flags into the kit's configuration.
func (o *conformanceOptions) config() (conformance.Config, error) {
	var cfg conformance.Config
	for _, f := range []struct{ name, value string }{{"store", o.store}, {"version", o.version}, {"group", o.group}, {"class", o.class}} {
		if strings.TrimSpace(f.value) == "" {
			return cfg, usageErrorf("--%s must not be empty", f.name)
		}
	}
	if o.waitTimeout <= 0 {
		return cfg, usageErrorf("--wait-timeout must be positive, got %s", o.waitTimeout)
	}
	if o.quietPeriod < 0 {
		return cfg, usageErrorf("--quiet-period must not be negative, got %s", o.quietPeriod)
	}
	for _, list := range []struct {
		flag  string
		names []string
	}{{"--only", o.only}, {"--skip", o.skip}} {
		var unknown []string
		for _, name := range list.names {
			if _, ok := conformance.Lookup(name); !ok {
				unknown = append(unknown, name)
			}
		}
		if len(unknown) > 0 {
			return cfg, usageErrorf("%s: no check named %s (berth conformance --list shows them)", list.flag, strings.Join(unknown, ", "))
		}
	}
	attrs, err := parseAttributes("--attr", o.attrs)
	if err != nil {
		return cfg, err
	}
	return conformance.Config{
		Store:        o.store,
		StoreVersion: o.version,
		NodeGroup:    o.group,
		NodeClass:    o.class,
		Attributes:   attrs,
		WaitTimeout:  o.waitTimeout,
		QuietPeriod:  o.quietPeriod,
		Only:         o.only,
		Skip:         o.skip,
	}, nil
}

func writeCheckList(cmd *cobra.Command, output string) error {
	checks := conformance.Checks()
	if output == "json" {
		return writeJSON(cmd.OutOrStdout(), checks)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLEVEL\tCHECKS")
	for _, c := range checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Level, c.Description)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

func describeCleanup(c conformance.CleanupReport) string {
	var parts []string
	for _, f := range c.Failed {
		parts = append(parts, fmt.Sprintf("node %s of cluster %s: %s", f.NodeID, f.ClusterID, f.Error))
	}
	if c.Error != "" {
		parts = append(parts, c.Error)
	}
	return "the cleanup may have left nodes behind (" + strings.Join(parts, "; ") + ")"
}

// conformanceHTTPClient builds the HTTP client the connection flags
// describe, with the same TLS settings as the typed client. Call it after
// newClient, which has validated the flags.
func (f *clientFlags) conformanceHTTPClient() (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: f.insecure}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("reading CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s has no PEM certificates", f.ca)
		}
		cfg.RootCAs = pool
	}
	if f.cert != "" {
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate %s with key %s: %w", f.cert, f.key, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = cfg
	return &http.Client{Transport: transport}, nil
}
