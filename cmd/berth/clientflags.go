package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/berthio/berth/client"
	"github.com/berthio/berth/platform"
)

// defaultURL is where berth serve listens unless told otherwise.
const defaultURL = "http://127.0.0.1:9876/"

// pollInterval is how often --wait asks the platform's discovery again.
const pollInterval = 500 * time.Millisecond

// clientFlags are the connection settings every client command shares.
type clientFlags struct {
	url      string
	token    string
	ca       string
	cert     string
	key      string
	insecure bool
	timeout  time.Duration
}

// addClientFlags registers the connection flags on cmd. The environment is
// read here, when the command is built, so that a flag or config file value
// still wins over it.
func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	url := os.Getenv("BERTH_URL")
	if url == "" {
		url = defaultURL
	}
	flags := cmd.Flags()
	flags.StringVar(&f.url, "url", url, "base URL of the Platform server ($BERTH_URL sets the default)")
	flags.StringVar(&f.token, "token", os.Getenv("BERTH_TOKEN"), "bearer token to authenticate with ($BERTH_TOKEN sets the default)")
	flags.StringVar(&f.ca, "ca", "", "PEM file of the CA certificates to trust for an https URL")
	flags.StringVar(&f.cert, "cert", "", "PEM client certificate for mutual TLS (with --key)")
	flags.StringVar(&f.key, "key", "", "PEM private key of --cert")
	flags.BoolVar(&f.insecure, "insecure", false, "accept any server certificate (for testing only)")
	flags.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "time limit for each request to the platform")
	// Never print a secret from the environment in --help.
	flags.Lookup("token").DefValue = ""
	return f
}

// newClient builds the client the flags describe.
func (f *clientFlags) newClient() (*client.Client, error) {
	if f.timeout < 0 {
		return nil, usageErrorf("--timeout must not be negative, got %s", f.timeout)
	}
	if (f.cert == "") != (f.key == "") {
		return nil, usageErrorf("--cert and --key go together: give both or neither")
	}
	if f.insecure && f.ca != "" {
		return nil, usageErrorf("--insecure and --ca contradict each other: give one of them")
	}
	opts := []client.Option{client.WithTimeout(f.timeout), client.WithToken(f.token)}
	if f.ca != "" {
		opts = append(opts, client.WithCABundle(f.ca))
	}
	if f.cert != "" {
		opts = append(opts, client.WithClientCertificate(f.cert, f.key))
	}
	if f.insecure {
		opts = append(opts, client.WithInsecureSkipVerify())
	}
	if strings.TrimSpace(f.url) == "" {
		return nil, usageErrorf("--url must not be empty")
	}
	// A URL the client cannot use is a mistake in the command line; the
	// files behind --ca, --cert and --key are checked by the same call, so
	// tell the two apart by parsing the URL on its own first.
	if _, err := client.New(f.url); err != nil {
		return nil, usageErrorf("--url: %w", err)
	}
	c, err := client.New(f.url, opts...)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// explainRequestError adds a hint to errors whose fix is usually a setting.
func explainRequestError(c *client.Client, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w (is a platform serving at %s? set --url or $BERTH_URL)", err, c.BaseURL())
	}
	var apiErr *client.Error
	if errors.As(err, &apiErr) && apiErr.StatusCode == 401 {
		return fmt.Errorf("%w (set --token or $BERTH_TOKEN)", err)
	}
	return err
}

// flagGiven reports whether a flag has a value other than its default,
// whether it came from the command line or from the --config file (which
// sets values without marking flags as changed).
func flagGiven(flags *pflag.FlagSet, name string) bool {
	f := flags.Lookup(name)
	return f != nil && (f.Changed || f.Value.String() != f.DefValue)
}

// isTerminal reports whether w is a character device, where progress lines
// rewritten with \r make sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// waitFor polls discovery every pollInterval until done says the state is
// reached or timeout passes. done returns whether to stop and a progress
// line for a terminal; on timeout, describe explains what is missing.
// Discovery failures are retried, since a platform that restarts while
// nodes start is no reason to give up, and the last one is reported on
// timeout.
func waitFor(ctx context.Context, c *client.Client, timeout time.Duration, progress io.Writer,
	done func(platform.DiscoveryResponse) (bool, string), describe func() string) error {
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tty := progress != nil && isTerminal(progress)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		resp, err := c.Discover(waitCtx)
		if err == nil {
			lastErr = nil
			ok, line := done(resp)
			if tty {
				fmt.Fprintf(progress, "\r%s\033[K", line)
			}
			if ok {
				if tty {
					fmt.Fprintln(progress)
				}
				return nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-waitCtx.Done():
			if tty {
				fmt.Fprintln(progress)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("stopped waiting: %w", ctx.Err())
			}
			msg := fmt.Sprintf("gave up after %s (--wait-timeout): %s", timeout, describe())
			if lastErr != nil && !errors.Is(lastErr, context.DeadlineExceeded) {
				return fmt.Errorf("%s; last discovery failed: %w", msg, explainRequestError(c, lastErr))
			}
			return errors.New(msg)
		case <-ticker.C:
		}
	}
}

// findCluster returns the nodes discovery lists for a cluster.
func findCluster(resp platform.DiscoveryResponse, clusterID string) []platform.DiscoveredNode {
	for _, cluster := range resp.Clusters {
		if cluster.ClusterID == clusterID {
			return cluster.Nodes
		}
	}
	return nil
}
