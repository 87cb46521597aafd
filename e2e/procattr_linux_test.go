//go:build linux

package e2e

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel SIGKILL the child if the test process dies
// without its cleanups (a panic, go test's -timeout), so no pod or Redis
// outlives the run.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
