package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Redis 7.0's replies around a busy script.
const (
	busyReply   = "-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
	killedReply = "-ERR Script killed by user with SCRIPT KILL... script: 694a5fe1ddb97a4c6a1bf299d9537c7d3d0f84e7, on @user_script:1.\r\n"
)

// startBusyMaster starts a master that answers BUSY 100 ms into a script, and
// two slaves.
func startBusyMaster(t *testing.T) (*redistest.Server, []*redistest.Server) {
	t.Helper()
	master := redistest.Start(t, "--busy-reply-threshold", "100")
	return master, redistest.StartN(t, 2)
}

// runaway sends a script that never ends through c, without reading its reply.
func runaway(c *redistest.RawConn) {
	c.Send("EVAL", "while true do end", "0")
	c.Flush()
}

// waitBusy polls with c until the master answers BUSY to a SET.
func waitBusy(t *testing.T, c *redistest.RawConn) {
	t.Helper()
	redistest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if got := string(c.Do("SET", "probe", "1")); got != busyReply {
			return fmt.Errorf("SET during the script: %q", got)
		}
		return nil
	})
}

// TestBusyScriptKill: a runaway script through the proxy; other clients get
// Redis' BUSY error, SCRIPT KILL reaches the master, the killed script's client
// gets Redis' reply, and service returns within a second.
func TestBusyScriptKill(t *testing.T) {
	t.Parallel()
	master, slaves := startBusyMaster(t)
	addr, _ := startProxy(t, master, slaves...)
	a, b, k := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, b, "+OK\r\n", "SET", "before", "1")
	runaway(a)
	waitBusy(t, b)
	mustReply(t, k, "+OK\r\n", "SCRIPT", "KILL")
	killed := time.Now()
	if got := string(a.Read()); got != killedReply {
		t.Fatalf("the killed script's client got %q, want %q", got, killedReply)
	}
	for _, c := range []*redistest.RawConn{a, b, k} {
		mustReply(t, c, "+OK\r\n", "SET", "after", "1")
	}
	if d := time.Since(killed); d > time.Second {
		t.Errorf("service returned %v after the kill, want within a second", d)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	_ = strings.TrimSpace
}
