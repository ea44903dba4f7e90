package main

import "syscall"

// sysProcAttr puts a child in its own process group, so that a Ctrl-C in the
// terminal reaches only the bench, which then stops its children in order; and it
// makes the kernel kill the child if the bench dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
