package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// Redis 7.0's replies around a busy script.
const (
	busyText    = "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
	busyReply   = "-" + busyText + "\r\n"
	killedReply = "-ERR Script killed by user with SCRIPT KILL... script: 694a5fe1ddb97a4c6a1bf299d9537c7d3d0f84e7, on @user_script:1.\r\n"
	unkillable  = "-UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.\r\n"
	spin        = "while true do end" // SHA1 694a5fe1...
)

// startBusyMaster starts a master that answers BUSY 100 ms into a script, and
// two slaves.
func startBusyMaster(t *testing.T) (*redistest.Server, []*redistest.Server) {
	t.Helper()
	master := redistest.Start(t, "--busy-reply-threshold", "100")
	return master, redistest.StartN(t, 2)
}

// sendOnly sends a command through c without reading its reply.
func sendOnly(c *redistest.RawConn, args ...string) {
	c.Send(args...)
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

// serviceBack checks that every client writes again within a second of killed.
func serviceBack(t *testing.T, killed time.Time, conns ...*redistest.RawConn) {
	t.Helper()
	for _, c := range conns {
		mustReply(t, c, "+OK\r\n", "SET", "after", "1")
	}
	if d := time.Since(killed); d > time.Second {
		t.Errorf("service returned %v after the kill, want within a second", d)
	}
}

// TestBusyScriptKill: a runaway script through the proxy; other clients get
// Redis' BUSY error (scripts and transactions too), SCRIPT KILL reaches the
// master, the killed script's client gets Redis' reply, and service returns
// within a second.
func TestBusyScriptKill(t *testing.T) {
	t.Parallel()
	master, slaves := startBusyMaster(t)
	addr, _ := startProxy(t, master, slaves...)
	a, b, k := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, b, "+OK\r\n", "SET", "before", "1")
	sendOnly(a, "EVAL", spin, "0")
	waitBusy(t, b)
	mustReply(t, b, busyReply, "EVAL", "return redis.call('SET', KEYS[1], 'x')", "1", "k")
	mustReply(t, b, busyReply, "EVAL_RO", "return 1", "0")
	mustReply(t, b, "+OK\r\n", "MULTI")
	mustReply(t, b, "+QUEUED\r\n", "SET", "tx", "1")
	mustReply(t, b, "-EXECABORT Transaction discarded because of: "+busyText+"\r\n", "EXEC")
	mustReply(t, b, "+OK\r\n", "WATCH", "tx")
	mustReply(t, b, "+OK\r\n", "MULTI")
	mustReply(t, b, "+QUEUED\r\n", "SET", "tx", "1")
	mustReply(t, b, "-EXECABORT Transaction discarded because of: "+busyText+"\r\n", "EXEC")
	mustReply(t, b, "+OK\r\n", "WATCH", "tx") // once killed, a watched transaction runs
	mustReply(t, k, "+OK\r\n", "SCRIPT", "KILL")
	killed := time.Now()
	if got := string(a.Read()); got != killedReply {
		t.Fatalf("the killed script's client got %q, want %q", got, killedReply)
	}
	serviceBack(t, killed, a, b, k)
	mustReply(t, k, "-NOTBUSY No scripts in execution right now.\r\n", "SCRIPT", "KILL")
	mustReply(t, b, "+OK\r\n", "MULTI")
	mustReply(t, b, "+QUEUED\r\n", "SET", "tx2", "1")
	mustReply(t, b, "*1\r\n+OK\r\n", "EXEC")
	mustReply(t, b, "$-1\r\n", "GET", "tx")
	// Killed on its third line: Redis names the line.
	const spin3 = "local x = 1\nlocal y = 2\nwhile true do end"
	sendOnly(a, "EVAL", spin3, "0")
	waitBusy(t, b)
	mustReply(t, k, "+OK\r\n", "SCRIPT", "KILL")
	want := "-ERR Script killed by user with SCRIPT KILL... script: " + sha1Hex(spin3) + ", on @user_script:3.\r\n"
	if got := string(a.Read()); got != want {
		t.Fatalf("the killed script's client got %q, want %q", got, want)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestBusyReadOnlyScript: a runaway EVAL_RO through the proxy holds no other
// client behind it, on the master (read policy master: writes get Redis' BUSY
// error) and on the slave that serves it (default policy: writes go on); SCRIPT
// KILL ends it there, its client gets Redis' reply, and service returns within
// a second.
func TestBusyReadOnlyScript(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"master", "prefer-slave"} {
		t.Run(policy, func(t *testing.T) {
			master := redistest.Start(t, "--busy-reply-threshold", "100")
			slaves := redistest.StartN(t, 2, "--busy-reply-threshold", "100")
			addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ReadPolicy = policy }, master, slaves...)
			a, b := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
			sendOnly(a, "EVAL_RO", spin, "0")
			if policy == "master" {
				waitBusy(t, b)
			} else {
				waitSlaveBusy(t, slaves)
				mustReply(t, b, "+OK\r\n", "SET", "probe", "1")
			}
			mustReply(t, b, "+OK\r\n", "SCRIPT", "KILL")
			killed := time.Now()
			if got := string(a.Read()); got != killedReply {
				t.Fatalf("the killed script's client got %q, want %q", got, killedReply)
			}
			serviceBack(t, killed, a, b)
			redistest.WaitConverged(t, convergeTimeout, master, slaves...)
		})
	}
}

// TestBusyUnkillable: a script that wrote cannot be killed (Redis' UNKILLABLE);
// it runs past the master's reply timeout while the master answers BUSY, and its
// client gets its reply — neither "failed" nor "unknown" — and its write reaches
// the slaves.
func TestBusyUnkillable(t *testing.T) {
	t.Parallel()
	master, slaves := startBusyMaster(t)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.WriteReplyTimeout = 300 * time.Millisecond
	}, master, slaves...)
	a, b := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	const slow = "redis.call('SET', KEYS[1], 'v')\n" +
		"local t = redis.call('TIME')\nlocal stop = t[1] * 1000000 + t[2] + 1500000\n" +
		"while true do\n  t = redis.call('TIME')\n  if t[1] * 1000000 + t[2] > stop then break end\nend\n" +
		"return redis.call('GET', KEYS[1])"
	sendOnly(a, "EVAL", slow, "1", "w")
	waitBusy(t, b)
	mustReply(t, b, unkillable, "SCRIPT", "KILL")
	if got := string(a.Read()); got != "$1\r\nv\r\n" {
		t.Fatalf("the script's client got %q, want its reply", got)
	}
	mustReply(t, a, "$1\r\nv\r\n", "GET", "w")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestBusyFunctionKill: a runaway function through the proxy is ended by
// FUNCTION KILL, and its client gets Redis' reply.
func TestBusyFunctionKill(t *testing.T) {
	t.Parallel()
	master, slaves := startBusyMaster(t)
	addr, _ := startProxy(t, master, slaves...)
	a, b, k := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, b, "$4\r\nspin\r\n", "FUNCTION", "LOAD",
		"#!lua name=spin\nredis.register_function('spin', function(keys, args)\n  while true do end\nend)")
	sendOnly(a, "FCALL", "spin", "0")
	waitBusy(t, b)
	killFunction(t, "spin", a, b, k)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// killFunction sends FUNCTION KILL on k while a runs the runaway function name:
// a gets Redis' error, service returns for a, b and k (serviceBack), and a
// second kill finds nothing running.
func killFunction(t *testing.T, name string, a, b, k *redistest.RawConn) {
	t.Helper()
	mustReply(t, k, "+OK\r\n", "FUNCTION", "KILL")
	killed := time.Now()
	want := "-ERR Script killed by user with SCRIPT KILL... script: " + name + ", on @user_function:3.\r\n"
	if got := string(a.Read()); got != want {
		t.Fatalf("the killed function's client got %q, want %q", got, want)
	}
	serviceBack(t, killed, a, b, k)
	mustReply(t, k, "-NOTBUSY No scripts in execution right now.\r\n", "FUNCTION", "KILL")
}
