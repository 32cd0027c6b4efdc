// Command berth is Berth's one binary: it serves the Platform API (berth
// serve) and is a command-line client for any Platform server (berth
// discover, provision, deprovision).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "berth:", err)
	var usage usageError
	if errors.As(err, &usage) || strings.HasPrefix(err.Error(), "unknown command") {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", usageCommandPath(root, args))
		return exitUsage
	}
	return exitFailure
}

// usageError marks a mistake in the command line itself (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "A Platform server for Replicante: data store nodes as local processes, containers or Kubernetes objects",
		Long: `Berth serves the Replicante Platform API (GET /discover, POST /provision,
POST /deprovision) on top of a driver that runs data store nodes, and is a
command-line client for any Platform server.

Start a platform on this machine with local processes:
  berth serve
Then, from another terminal:
  berth provision --cluster demo --store redis --version 7.0 --wait
  berth discover`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := applyConfigFile(cmd); err != nil {
				return usageError{err}
			}
			return nil
		},
	}
	root.PersistentFlags().String("config", os.Getenv("BERTH_CONFIG"),
		"YAML file with a key for any flag (flags given on the command line win; default $BERTH_CONFIG)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newServeCommand(),
		newDiscoverCommand(),
		newProvisionCommand(),
		newDeprovisionCommand(),
		newNodesCommand(),
		newLogsCommand(),
		newConformanceCommand(),
		newVersionCommand(),
	)
	return root
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func usageCommandPath(root *cobra.Command, args []string) string {
	if cmd, _, err := root.Find(args); err == nil {
		return cmd.CommandPath()
	}
	return root.CommandPath()
}
