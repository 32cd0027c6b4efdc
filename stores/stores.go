// Package stores is Berth's built-in template catalogue, embedded in the
// binary. It has one folder per driver; see package catalog for the layout.
package stores

import (
	"embed"
	"io/fs"
)

//go:embed local docker kube
var files embed.FS

// FS returns the built-in catalogue.
func FS() fs.FS { return files }
