package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/berthio/berth/driver/local"
	"github.com/berthio/berth/platform"
)

// localDriver runs nodes as processes on this machine.
func localDriver() *driverFactory {
	var (
		portRange   string
		gracePeriod time.Duration
		logMax      int64
	)
	return &driverFactory{
		name: local.DriverName,
		addFlags: func(f *pflag.FlagSet) {
			f.StringVar(&portRange, "port-range", local.DefaultPortRange.String(), "local driver: range node ports are allocated from, MIN-MAX")
			f.DurationVar(&gracePeriod, "grace-period", local.DefaultGracePeriod, "local driver: time a deprovisioned node has to exit after its stop signal before SIGKILL")
			f.Int64Var(&logMax, "node-log-max-bytes", local.DefaultLogMaxBytes, "local driver: size at which a node process's log is rotated (one old file is kept)")
		},
		open: func(ctx context.Context, env driverEnv) (platform.Driver, func() error, error) {
			ports, err := local.ParsePortRange(portRange)
			if err != nil {
				return nil, nil, usageErrorf("--port-range: %v", err)
			}
			d, err := local.Open(local.Options{
				DataDir:     env.dataDir,
				Catalog:     env.catalog,
				Ports:       ports,
				GracePeriod: gracePeriod,
				LogMaxBytes: logMax,
				Logger:      env.logger,
			})
			if err != nil {
				return nil, nil, err
			}
			return d, d.Close, nil
		},
	}
}
