package e2e

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// spin250 keeps a server busy for 250ms: a slow-log entry named after ARGV[1].
const spin250 = "local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end\n" +
	"local s = now()\nrepeat until now() - s > 250000\nreturn ARGV[1]"

// TestSlowlogMerged: SLOWLOG GET through the proxy gives the master's and the
// slaves' entries, newest first, renumbered (id × backends + backend index), at
// most count; LEN is the sum; RESET empties every backend's log.
func TestSlowlogMerged(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	direct := make([]*redistest.RawConn, len(servers))
	for i, s := range servers {
		direct[i] = redistest.DialRaw(t, s.Addr)
		mustReply(t, direct[i], "+OK\r\n", "CONFIG", "SET", "slowlog-log-slower-than", "200000")
		mustReply(t, direct[i], "+OK\r\n", "SLOWLOG", "RESET")
	}
	// One entry per backend, each in a second of its own: slave 1, master, slave 2.
	for _, i := range []int{1, 0, 2} {
		nextSecond(t, direct[0])
		name := "spin-" + strconv.Itoa(i)
		mustReply(t, direct[i], string(bulk(name)), "EVAL", spin250, "0", name)
	}
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, ":3\r\n", "SLOWLOG", "LEN")
	got := slowlogNames(t, c.Do("SLOWLOG", "GET"))
	if want := "2:spin-2 0:spin-0 1:spin-1"; got != want {
		t.Fatalf("SLOWLOG GET: %q, want %q", got, want)
	}
	if got := slowlogNames(t, c.Do("SLOWLOG", "GET", "2")); got != "2:spin-2 0:spin-0" {
		t.Fatalf("SLOWLOG GET 2: %q", got)
	}
	if got := slowlogNames(t, c.Do("SLOWLOG", "GET", "-1")); got != "2:spin-2 0:spin-0 1:spin-1" {
		t.Fatalf("SLOWLOG GET -1: %q", got)
	}
	mustReply(t, c, "-ERR count should be greater than or equal to -1\r\n", "SLOWLOG", "GET", "-2")
	mustReply(t, c, "+OK\r\n", "SLOWLOG", "RESET")
	for i := range servers {
		mustReply(t, direct[i], ":0\r\n", "SLOWLOG", "LEN")
	}
	mustReply(t, c, ":0\r\n", "SLOWLOG", "LEN")
	mustReply(t, c, "*0\r\n", "SLOWLOG", "GET")
}

var errSameSecond = errors.New("the same second")

// nextSecond waits for the server's clock (TIME) to enter a new second.
func nextSecond(t *testing.T, c *redistest.RawConn) {
	t.Helper()
	sec := func() string { return strings.SplitN(string(c.Do("TIME")), "\r\n", 4)[2] }
	start := sec()
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		if sec() == start {
			return errSameSecond
		}
		return nil
	})
}

// slowlogNames renders a SLOWLOG GET reply of spin250 entries as "id:name ...".
func slowlogNames(t *testing.T, reply []byte) string {
	t.Helper()
	var out []string
	for _, e := range strings.Split(string(reply), "*6\r\n")[1:] {
		lines := strings.Split(e, "\r\n")
		// :id, :ts, :duration, *4, $len, EVAL, $len, script..., then the name.
		name := ""
		for j, l := range lines {
			if strings.HasPrefix(l, "spin-") && j > 0 {
				name = l
			}
		}
		out = append(out, strings.TrimPrefix(lines[0], ":")+":"+name)
	}
	return strings.Join(out, " ")
}
