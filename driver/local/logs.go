package local

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// capLogs keeps every process log under LogMaxBytes until the driver closes.
// Processes write their logs themselves, with O_APPEND, so a log is capped by
// copying it to <name>.log.1 and truncating it: the process's next write
// lands at the start of the emptied file.
func (d *Driver) capLogs() {
	defer d.bg.Done()
	ticker := time.NewTicker(d.opts.LogCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-ticker.C:
		}
		logs, _ := filepath.Glob(filepath.Join(d.opts.DataDir, "nodes", "*", "*", "logs", "*.log"))
		for _, path := range logs {
			if err := capLog(path, d.opts.LogMaxBytes); err != nil {
				d.logger.Warn("capping log file", "path", path, "error", err)
			}
		}
	}
}

func capLog(path string, max int64) error {
	info, err := os.Stat(path)
	if err != nil || info.Size() <= max || !strings.HasSuffix(path, ".log") {
		return nil // a node removed meanwhile is not an error
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return src.Truncate(0)
}
