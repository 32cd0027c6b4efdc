// Package conformance is the Replicante Platform specification as
// executable checks: it drives any Platform server through its HTTP API
// (GET {base}discover, POST {base}provision, POST {base}deprovision) and
// reports, check by check, which rules the server follows.
//
// Every check names the clause it comes from and its level: MUST (the API
// reference and the required behaviours), COMPAT (what Replicante Core's
// real client needs) or SHOULD (good practice; a failure is a warning).
//
// The kit talks HTTP only and knows nothing of Berth's server or drivers,
// so it judges Berth and any other implementation alike. It provisions
// nodes into clusters whose IDs are unique to the run and deprovisions them
// again at the end, whatever happened in between.
package conformance

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/berthio/berth/client"
)

// Level says how binding the rule behind a check is.
type Level string

// Levels.
const (
	// MUST rules come from the Platform API reference and the required
	// behaviours of the specification.
	MUST Level = "MUST"
	// COMPAT rules are what Replicante Core's real client needs beyond the
	// reference (spec/behaviours.md).
	COMPAT Level = "COMPAT"
	// SHOULD rules are good practice; breaking one is a warning.
	SHOULD Level = "SHOULD"
)

// Status is the outcome of one check.
type Status string

// Statuses.
const (
	Pass Status = "PASS"
	Fail Status = "FAIL" // a MUST or COMPAT check failed
	Warn Status = "WARN" // a SHOULD check failed; the run does not fail
	Skip Status = "SKIP" // not selected, or could not run (the reason says why)
)

// Defaults of Config.
const (
	DefaultStore        = "redis"
	DefaultStoreVersion = "7.0"
	DefaultNodeGroup    = "default"
	DefaultNodeClass    = "default"
	DefaultWaitTimeout  = 60 * time.Second
	DefaultQuietPeriod  = 5 * time.Second
	DefaultPollInterval = 500 * time.Millisecond
	DefaultStablePolls  = 3
	// DefaultCleanupTimeout bounds the cleanup when Config.CleanupTimeout
	// is zero and WaitTimeout is shorter.
	DefaultCleanupTimeout = 60 * time.Second
)

// provisionCount is how many nodes the kit asks for: two, so that one can
// be deprovisioned while the other shows that its ID survives.
const provisionCount = 2

// Config says which platform to check and how.
type Config struct {
	// BaseURL is the platform's base URL; the API paths are appended to it
	// the way Replicante Core does ({base}discover).
	BaseURL string
	// HTTPClient sends every request; nil means a client with Go's default
	// transport. TLS settings belong to its transport.
	HTTPClient *http.Client
	// Token, when set, is sent as "Authorization: Bearer <token>".
	Token string
	// RequestTimeout bounds each request; zero means no bound beyond the
	// waits below.
	RequestTimeout time.Duration

	// The store, version, node group, node class and cluster attributes
	// of the nodes the kit provisions. Empty strings mean the defaults.
	Store        string
	StoreVersion string
	NodeGroup    string
	NodeClass    string
	Attributes   map[string]any

	// WaitTimeout is how long the kit waits for discovery to agree with a
	// provision or a deprovision.
	WaitTimeout time.Duration
	// QuietPeriod is how long the kit watches a deprovisioned node's
	// cluster for a replacement. Zero means one look.
	QuietPeriod time.Duration
	// PollInterval is the pause between discoveries while waiting.
	PollInterval time.Duration
	// StablePolls is how many discoveries the kit compares once the
	// provisioned nodes are listed, for node-ids-stable and discover-stable.
	StablePolls int
	// CleanupTimeout bounds the cleanup at the end of the run, which runs
	// even when ctx is cancelled. Zero means the larger of WaitTimeout and
	// DefaultCleanupTimeout.
	CleanupTimeout time.Duration

	// Only, when not empty, runs just these checks; Skip leaves these out.
	// Unknown names are an error.
	Only []string
	Skip []string

	// ClusterID is the cluster the kit provisions into; rejected requests
	// name ClusterID + "-rejects". Empty means "conformance-" and eight
	// random characters, so that a run never touches a cluster it did not
	// create.
	ClusterID string

	// Log, when set, receives a line about each stage of the run.
	Log func(msg string)
}

// Check describes one rule.
type Check struct {
	Name   string `json:"name"`
	Level  Level  `json:"level"`
	Clause string `json:"clause"`
	// Description says what the kit does to check the rule.
	Description string `json:"description"`
	phase       phase
}

// Result is the outcome of one check in a run.
type Result struct {
	Name   string `json:"name"`
	Level  Level  `json:"level"`
	Clause string `json:"clause"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
}

// NodeRef names one node.
type NodeRef struct {
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
}

// NodeFailure is a node the cleanup could not deprovision.
type NodeFailure struct {
	NodeRef
	Error string `json:"error"`
}

// CleanupReport says what the cleanup at the end of a run did.
type CleanupReport struct {
	// Deprovisioned lists the nodes the cleanup asked the platform to
	// deprovision (and those it found already gone).
	Deprovisioned []NodeRef `json:"deprovisioned"`
	// Failed lists the nodes it could not deprovision.
	Failed []NodeFailure `json:"failed"`
	// Error is set when the cleanup could not finish, for example because
	// discovery failed.
	Error string `json:"error,omitempty"`
}

// Clean reports whether the cleanup left nothing behind that it knew of.
func (c CleanupReport) Clean() bool { return len(c.Failed) == 0 && c.Error == "" }

// Report is the outcome of a run.
type Report struct {
	URL       string   `json:"url"`
	ClusterID string   `json:"cluster_id"`
	Results   []Result `json:"results"`
	Passed    int      `json:"passed"`
	// Failed counts the MUST and COMPAT checks that failed; failed SHOULD
	// checks are Warned and counted in neither Passed nor Failed.
	Failed      int           `json:"failed"`
	Warned      int           `json:"warned"`
	Skipped     int           `json:"skipped"`
	Interrupted bool          `json:"interrupted"`
	Cleanup     CleanupReport `json:"cleanup"`
}

// OK reports whether no MUST or COMPAT check failed.
func (r *Report) OK() bool { return r.Failed == 0 }

// Summary is the report's last text line: "N passed, N failed", followed by
// ", N skipped" when checks were skipped. Tools read this exact form.
func (r *Report) Summary() string {
	s := fmt.Sprintf("%d passed, %d failed", r.Passed, r.Failed)
	if r.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", r.Skipped)
	}
	return s
}

// WriteText writes one line per check, "STATUS  LEVEL  name  reason", then
// the summary line.
func (r *Report) WriteText(w io.Writer) error {
	width := 0
	for _, res := range r.Results {
		width = max(width, len(res.Name))
	}
	var b strings.Builder
	for _, res := range r.Results {
		fmt.Fprintf(&b, "%-4s  %-6s  %-*s  %s\n", res.Status, res.Level, width, res.Name, oneLine(res.Reason))
	}
	b.WriteString(r.Summary())
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Checks returns every check in the order a run reports them.
func Checks() []Check {
	out := make([]Check, len(catalogue))
	copy(out, catalogue)
	return out
}

// Lookup returns the check with the given name.
func Lookup(name string) (Check, bool) {
	for _, c := range catalogue {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// Run checks the platform at cfg.BaseURL. It returns an error without a
// report when cfg is invalid or the platform cannot be reached at all.
// When ctx is cancelled the run stops, cleans up with a context of its own
// and returns the report so far (Interrupted set) with ctx's error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	k, err := newKit(cfg)
	if err != nil {
		return nil, err
	}
	if err := k.connect(ctx); err != nil {
		return nil, err
	}
	defer func() {
		// Nothing after the checks may be skipped: nodes are left running
		// otherwise.
		k.report.Cleanup = k.cleanup(ctx)
	}()
	k.run(ctx)
	k.finish(ctx)
	if ctx.Err() != nil {
		k.report.Interrupted = true
		return k.report, fmt.Errorf("conformance run interrupted: %w", ctx.Err())
	}
	return k.report, nil
}

// kit is the state of one run.
type kit struct {
	cfg             Config
	base            string
	http            *http.Client
	clusterID       string
	rejectClusterID string
	selected        map[string]bool
	results         map[string]*Result
	report          *Report

	obs      map[string]*observation // discovery checks, fed by every sequential discovery
	disCount int                     // sequential discoveries made

	baseline *discovery // the first discovery, before anything was provisioned

	// Node IDs the kit learnt from 2xx provision answers, by cluster, and
	// the nodes it has deprovisioned successfully (cluster/node).
	returned      map[string][]string
	deprovisioned map[NodeRef]bool

	// Set once the provisioned nodes are listed: the IDs that must stay
	// listed (node-ids-stable) until the kit deprovisions them.
	watching   map[string]bool
	stableObs  observation
	stableSeen int
}

func newKit(cfg Config) (*kit, error) {
	if cfg.Store == "" {
		cfg.Store = DefaultStore
	}
	if cfg.StoreVersion == "" {
		cfg.StoreVersion = DefaultStoreVersion
	}
	if cfg.NodeGroup == "" {
		cfg.NodeGroup = DefaultNodeGroup
	}
	if cfg.NodeClass == "" {
		cfg.NodeClass = DefaultNodeClass
	}
	if cfg.Attributes == nil {
		cfg.Attributes = map[string]any{}
	}
	if cfg.WaitTimeout == 0 {
		cfg.WaitTimeout = DefaultWaitTimeout
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.StablePolls == 0 {
		cfg.StablePolls = DefaultStablePolls
	}
	if cfg.CleanupTimeout == 0 {
		cfg.CleanupTimeout = max(cfg.WaitTimeout, DefaultCleanupTimeout)
	}
	switch {
	case cfg.WaitTimeout < 0:
		return nil, fmt.Errorf("the wait timeout must be positive, got %s", cfg.WaitTimeout)
	case cfg.QuietPeriod < 0:
		return nil, fmt.Errorf("the quiet period must not be negative, got %s", cfg.QuietPeriod)
	case cfg.PollInterval < 0 || cfg.StablePolls < 0 || cfg.CleanupTimeout < 0 || cfg.RequestTimeout < 0:
		return nil, errors.New("poll interval, stable polls, cleanup and request timeouts must not be negative")
	}
	// The client package normalises a base URL exactly as Core does.
	c, err := client.New(cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	selected, err := selectChecks(cfg.Only, cfg.Skip)
	if err != nil {
		return nil, err
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "conformance-" + randomID(8)
	}
	httpClient := cfg.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	k := &kit{
		cfg:             cfg,
		base:            c.BaseURL(),
		http:            httpClient,
		clusterID:       cfg.ClusterID,
		rejectClusterID: cfg.ClusterID + "-rejects",
		selected:        selected,
		results:         map[string]*Result{},
		obs:             map[string]*observation{},
		returned:        map[string][]string{},
		deprovisioned:   map[NodeRef]bool{},
		report:          &Report{URL: c.BaseURL(), ClusterID: cfg.ClusterID},
	}
	for _, name := range discoveryChecks {
		k.obs[name] = &observation{}
	}
	return k, nil
}

// selectChecks returns the names a run reports on.
func selectChecks(only, skip []string) (map[string]bool, error) {
	var unknown []string
	for _, name := range append(append([]string{}, only...), skip...) {
		if _, ok := Lookup(name); !ok {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown check name(s): %s", strings.Join(unknown, ", "))
	}
	selected := map[string]bool{}
	for _, c := range catalogue {
		selected[c.Name] = len(only) == 0
	}
	for _, name := range only {
		selected[name] = true
	}
	for _, name := range skip {
		selected[name] = false
	}
	return selected, nil
}

func randomID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (k *kit) logf(format string, args ...any) {
	if k.cfg.Log != nil {
		k.cfg.Log(fmt.Sprintf(format, args...))
	}
}

// wants reports whether any of the named checks is selected.
func (k *kit) wants(names ...string) bool {
	for _, n := range names {
		if k.selected[n] {
			return true
		}
	}
	return false
}

// conclude records a check's outcome; the first outcome stands.
func (k *kit) conclude(name string, ok bool, format string, args ...any) {
	if _, done := k.results[name]; done {
		return
	}
	c, found := Lookup(name)
	if !found {
		panic("conformance: no check " + name)
	}
	status := Pass
	if !ok {
		status = Fail
		if c.Level == SHOULD {
			status = Warn
		}
	}
	k.results[name] = &Result{Name: c.Name, Level: c.Level, Clause: c.Clause, Status: status, Reason: fmt.Sprintf(format, args...)}
}

func (k *kit) pass(name, format string, args ...any) { k.conclude(name, true, format, args...) }
func (k *kit) fail(name, format string, args ...any) { k.conclude(name, false, format, args...) }

func (k *kit) skip(name, format string, args ...any) {
	if _, done := k.results[name]; done {
		return
	}
	c, _ := Lookup(name)
	k.results[name] = &Result{Name: c.Name, Level: c.Level, Clause: c.Clause, Status: Skip, Reason: fmt.Sprintf(format, args...)}
}

// skipAll skips every named check that has no outcome yet.
func (k *kit) skipAll(reason string, names ...string) {
	for _, n := range names {
		k.skip(n, "%s", reason)
	}
}

// finish turns the observations into results and fills in the report.
func (k *kit) finish(ctx context.Context) {
	k.concludeDiscoveryChecks()
	for _, c := range catalogue {
		var res Result
		switch r, ok := k.results[c.Name]; {
		case !k.selected[c.Name]:
			res = Result{Name: c.Name, Level: c.Level, Clause: c.Clause, Status: Skip, Reason: "not selected"}
		case ok:
			res = *r
		case ctx.Err() != nil:
			res = Result{Name: c.Name, Level: c.Level, Clause: c.Clause, Status: Skip, Reason: "interrupted before this check ran"}
		default:
			res = Result{Name: c.Name, Level: c.Level, Clause: c.Clause, Status: Skip, Reason: "not run"}
		}
		k.report.Results = append(k.report.Results, res)
		switch res.Status {
		case Pass:
			k.report.Passed++
		case Fail:
			k.report.Failed++
		case Warn:
			k.report.Warned++
		case Skip:
			k.report.Skipped++
		}
	}
}

// run executes the phases the selected checks need, in order.
func (k *kit) run(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if k.wants(checksOf(phaseReject)...) {
		k.runRejections(ctx)
	}
	if ctx.Err() != nil {
		return
	}
	if k.wants(checksOf(phaseProvision)...) || k.wants(checksOf(phaseDeprovision)...) {
		k.runProvisionAndDeprovision(ctx)
	}
	if ctx.Err() != nil {
		return
	}
	if k.wants(checksOf(phaseMissing)...) {
		k.runDeprovisionMissing(ctx)
	}
}

func checksOf(p phase) []string {
	var names []string
	for _, c := range catalogue {
		if c.phase == p {
			names = append(names, c.Name)
		}
	}
	return names
}

// sortedKeys returns the keys of a set in order.
func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
