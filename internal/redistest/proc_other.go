//go:build !linux

package redistest

import (
	"syscall"
	"time"
)

// sysProcAttr returns nil: only Linux can tie the child's life to its parent's.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// waitStopped returns at once: without /proc the state cannot be observed, and the
// signal is almost always delivered before the test's next command.
func waitStopped(pid int, stopped bool, timeout time.Duration) error { return nil }
