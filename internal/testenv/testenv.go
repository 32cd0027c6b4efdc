// Package testenv lets integration tests find the real engines they drive.
// Locally a missing engine skips the test with the command that installs it;
// under CI (CI=true) it fails the test, so a green CI run never hides a
// missing engine.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// RequireBinary returns the path of a program the test needs.
func RequireBinary(t testing.TB, name, install string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if InCI() {
		t.Fatalf("%s is not installed and CI=true (install it with: %s)", name, install)
	}
	t.Skipf("%s is not installed; install it with: %s", name, install)
	return ""
}

// InCI reports whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") == "true" }
