//go:build unix && !linux

package main

import (
	"syscall"
	"time"
)

// sysProcAttr puts a child in its own process group, so that a Ctrl-C in the
// terminal reaches only the bench, which then stops its children in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// procCPU is not measured outside Linux.
func procCPU(pid int) (time.Duration, bool) { return 0, false }
