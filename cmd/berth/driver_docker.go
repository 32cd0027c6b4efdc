package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/berthio/berth/driver/docker"
	"github.com/berthio/berth/platform"
)

// dockerDriver runs nodes as containers on a Docker Engine API (Docker, or
// Podman's compatible service).
func dockerDriver() *driverFactory {
	var (
		host        string
		hostIP      string
		gracePeriod time.Duration
		keepData    bool
	)
	return &driverFactory{
		name: docker.DriverName,
		addFlags: func(f *pflag.FlagSet) {
			f.StringVar(&host, "docker-host", "", "docker driver: engine address, unix:///PATH or tcp://HOST:PORT (default $DOCKER_HOST, else unix:///var/run/docker.sock)")
			f.StringVar(&hostIP, "docker-host-ip", docker.DefaultHostIP, "docker driver: host IP that node ports are published on")
			f.DurationVar(&gracePeriod, "docker-grace-period", docker.DefaultGracePeriod, "docker driver: time a deprovisioned node's containers have to stop before they are killed")
			f.BoolVar(&keepData, "docker-keep-data", false, "docker driver: keep a deprovisioned node's volume")
		},
		open: func(ctx context.Context, env driverEnv) (platform.Driver, func() error, error) {
			d, err := docker.Open(docker.Options{
				Host:        host,
				Catalog:     env.catalog,
				HostIP:      hostIP,
				GracePeriod: gracePeriod,
				KeepData:    keepData,
				Logger:      env.logger,
			})
			if err != nil {
				return nil, nil, usageErrorf("%v", err)
			}
			if err := d.Ready(ctx); err != nil {
				// Berth serves anyway: /readyz says the engine is
				// missing, and it is used as soon as it answers.
				env.logger.Warn("container engine not ready", "error", platform.ErrorMessage(err))
			} else {
				env.logger.Info("container engine ready", "host", d.Host())
			}
			return d, d.Close, nil
		},
	}
}
