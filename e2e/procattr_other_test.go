//go:build !linux

package e2e

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; t.Cleanup still
// kills every child.
func dieWithParent(*exec.Cmd) {}
