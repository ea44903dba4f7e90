package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// SentinelOptions are the settings of StartSentinel.
type SentinelOptions struct {
	// Name is the name the master is monitored under ("mymaster" when empty).
	Name string
	// Quorum is the number of sentinels that must agree the master is down (1
	// when 0).
	Quorum int
	// DownAfterMs and FailoverTimeoutMs are Sentinel's down-after-milliseconds
	// and failover-timeout (1000 and 5000 when 0: quick failovers for tests).
	DownAfterMs, FailoverTimeoutMs int
	// Conf holds more sentinel.conf lines ("sentinel auth-pass mymaster pw", ...).
	Conf []string
}

// StartSentinel runs a Redis Sentinel that monitors master, on a free loopback
// port, and stops it at t.Cleanup. It runs redis-sentinel if installed, else
// redis-server in sentinel mode (redis-server sentinel.conf --sentinel), with a
// writable sentinel.conf in its directory (Sentinel rewrites it). The returned
// Server is stopped, killed and queried like any other; a Restart keeps the
// rewritten configuration, as a real sentinel's restart does.
func StartSentinel(t testing.TB, master *Server, opts SentinelOptions) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		if bin, err = exec.LookPath("redis-server"); err != nil {
			t.Fatal(notFoundMsg)
		}
	}
	if opts.Name == "" {
		opts.Name = "mymaster"
	}
	if opts.Quorum == 0 {
		opts.Quorum = 1
	}
	if opts.DownAfterMs == 0 {
		opts.DownAfterMs = 1000
	}
	if opts.FailoverTimeoutMs == 0 {
		opts.FailoverTimeoutMs = 5000
	}
	host, port, err := net.SplitHostPort(master.Addr)
	if err != nil {
		t.Fatalf("redistest: master address %q: %v", master.Addr, err)
	}
	conf := []string{
		fmt.Sprintf("sentinel monitor %s %s %s %d", opts.Name, host, port, opts.Quorum),
		fmt.Sprintf("sentinel down-after-milliseconds %s %d", opts.Name, opts.DownAfterMs),
		fmt.Sprintf("sentinel failover-timeout %s %d", opts.Name, opts.FailoverTimeoutMs),
		fmt.Sprintf("sentinel parallel-syncs %s 1", opts.Name),
	}
	if master.password != "" {
		conf = append(conf, fmt.Sprintf("sentinel auth-pass %s %s", opts.Name, master.password))
	}
	conf = append(conf, opts.Conf...)
	s := &Server{
		Dir:      t.TempDir(),
		bin:      bin,
		sentinel: strings.Join(conf, "\n") + "\n",
		password: sentinelPassword(opts.Conf),
	}
	t.Cleanup(func() { s.cleanup(t) })
	s.startOnFreePort(t, "sentinel")
	return s
}

// sentinelArgs writes the sentinel's configuration file if it has none yet (a
// restarted sentinel keeps what it rewrote) and returns the command line.
func (s *Server) sentinelArgs() ([]string, error) {
	path := filepath.Join(s.Dir, "sentinel.conf")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(path, []byte(s.sentinel), 0o600); err != nil {
			return nil, err
		}
	}
	return []string{path, "--sentinel", "--port", strconv.Itoa(s.Port)}, nil
}

// sentinelPassword returns the password of a "requirepass" line, or "".
func sentinelPassword(conf []string) string {
	for _, line := range conf {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "requirepass" {
			return f[1]
		}
	}
	return ""
}
