package redistest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysProcAttr makes the kernel kill redis-server when the test binary dies without
// running its cleanups (a panic, a timeout, a SIGKILL), so no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// waitStopped polls /proc until process pid is stopped (stopped true) or running again
// (stopped false): a signal is delivered asynchronously, and a test that pauses a server
// must not have its next command answered by it.
func waitStopped(pid int, stopped bool, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		state, err := procState(pid)
		if err != nil {
			return err
		}
		if (state == 'T') == stopped {
			return nil
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("pid %d still in state %c after %v", pid, state, timeout)
		case <-tick.C:
		}
	}
}

// procState returns the state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...).
func procState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ...": comm may hold spaces and parentheses, so cut at the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	if b[i+2] == 'Z' || b[i+2] == 'X' {
		return 0, fmt.Errorf("pid %d has exited", pid)
	}
	return b[i+2], nil
}
