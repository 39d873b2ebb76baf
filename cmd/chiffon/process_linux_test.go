//go:build linux

package main

import (
	"os/exec"
	"syscall"
)

// dieWithTest has the kernel SIGKILL the child when the test binary dies
// without its cleanups (killed, or timed out by go test), so that no agent
// outlives the run. (Linux only, like the project: the NVML probe does
// not build elsewhere either.)
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
