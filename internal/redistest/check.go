package redistest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// convergePoll is the interval between two Diff rounds of WaitConverged.
const convergePoll = 20 * time.Millisecond

// CheckFor calls cond until it returns nil, waiting interval between calls; after
// timeout it fails the test with cond's last error. cond runs first without waiting.
func CheckFor(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("redistest: condition not met after %v: %v", timeout, err)
		case <-tick.C:
		}
	}
}

// WaitConverged waits until every slave holds the same data as master (see
// DiffServers), and otherwise fails the test listing the remaining differences.
func WaitConverged(t testing.TB, timeout time.Duration, master *Server, slaves ...*Server) {
	t.Helper()
	CheckFor(t, timeout, convergePoll, func() error {
		for _, slave := range slaves {
			diffs, err := DiffServers(master, slave)
			if err != nil {
				return err
			}
			if len(diffs) > 0 {
				return fmt.Errorf("slave %s differs from master %s:\n\t%s",
					slave.Addr, master.Addr, strings.Join(diffs, "\n\t"))
			}
		}
		return nil
	})
}
