package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestBlockingDifferential runs blocking pops against Redis directly and through
// the proxy: the replies are the same whether the pop happens at once, after
// another client's push, or not at all (timeout); then the slaves converge.
func TestBlockingDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	targets := map[string]string{"redis": ref.Addr, "proxy": addr}

	immediate := [][]string{
		{"RPUSH", "l1", "a", "b", "c"},
		{"RPUSH", "l2", "x"},
		{"ZADD", "z1", "1", "m1", "2", "m2", "3", "m3"},
		{"BLPOP", "empty", "l1", "l2", "1"},
		{"BRPOP", "l1", "1"},
		{"BLMOVE", "l1", "l3", "LEFT", "RIGHT", "1"},
		{"BRPOPLPUSH", "l2", "l3", "1"},
		{"BLMPOP", "1", "2", "empty", "l3", "LEFT", "COUNT", "5"},
		{"BZPOPMIN", "empty", "z1", "1"},
		{"BZPOPMAX", "z1", "1"},
		{"BZMPOP", "1", "1", "z1", "MIN", "COUNT", "3"},
		{"SET", "str", "v"},
		{"BLPOP", "str", "1"},
		{"BZPOPMIN", "str", "1"},
		{"BLPOP", "l1", "-1"},
		{"BLPOP", "l1", "abc"},
		{"BLPOP", "l1"},
		{"BLMPOP", "0.1", "0", "l1", "LEFT"},
		{"BLMOVE", "l1", "l3", "UP", "LEFT", "1"},
		// Nothing to pop: the timeout's null reply.
		{"BLPOP", "none", "0.05"},
		{"BRPOPLPUSH", "none", "l3", "0.05"},
		{"BZPOPMAX", "none", "0.05"},
		{"BLMPOP", "0.05", "1", "none", "RIGHT"},
		{"LRANGE", "l3", "0", "-1"},
		{"PING"},
	}
	got := map[string][]string{}
	for name, a := range targets {
		c := redistest.DialRaw(t, a)
		for _, cmd := range immediate {
			got[name] = append(got[name], string(c.Do(cmd...)))
		}
	}
	for i, cmd := range immediate {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("%q: redis %q, proxy %q", cmd, got["redis"][i], got["proxy"][i])
		}
	}

	// Woken by another client's push: the blocked client gets what was pushed,
	// and clients that do not block are not held up meanwhile.
	woken := []struct{ block, push []string }{
		{[]string{"BLPOP", "wl", "5"}, []string{"RPUSH", "wl", "v1", "v2"}},
		{[]string{"BRPOP", "wl2", "wl3", "5"}, []string{"LPUSH", "wl3", "v3"}},
		{[]string{"BLMOVE", "wl4", "wdst", "RIGHT", "LEFT", "0"}, []string{"RPUSH", "wl4", "v4"}},
		{[]string{"BZPOPMIN", "wz", "5"}, []string{"ZADD", "wz", "5", "zm"}},
		{[]string{"BLMPOP", "5", "1", "wl5", "LEFT", "COUNT", "2"}, []string{"RPUSH", "wl5", "a", "b", "c"}},
	}
	for _, w := range woken {
		replies := map[string]string{}
		for name, a := range targets {
			blocked := redistest.DialRaw(t, a)
			other := redistest.DialRaw(t, a)
			blocked.Send(w.block...)
			blocked.Flush()
			waitBlocked(t, name, ref, other)
			start := time.Now()
			if r := string(other.Do("SET", "unrelated", "1")); r != "+OK\r\n" {
				t.Fatalf("%s: SET while another client blocks: %q", name, r)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("%s: a client was held up %v by a blocked one", name, d)
			}
			other.Do(w.push...)
			replies[name] = string(blocked.Read())
		}
		if replies["redis"] != replies["proxy"] {
			t.Errorf("%q woken by %q: redis %q, proxy %q", w.block, w.push, replies["redis"], replies["proxy"])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if diffs, err := redistest.Diff(ref.Addr, master.Addr); err != nil || len(diffs) > 0 {
		t.Errorf("the master differs from the reference: %v %s", err, strings.Join(diffs, "\n"))
	}
}

// waitBlocked waits until the server (Redis, or the proxy: its INFO's first
// blocked_clients line is the proxy's own) has a client blocked.
func waitBlocked(t *testing.T, name string, ref *redistest.Server, c *redistest.RawConn) {
	t.Helper()
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if name == "redis" {
			if ref.Info(t, "clients", "blocked_clients") != "1" {
				return errString("not blocked yet")
			}
			return nil
		}
		if v, _ := infoField(c, "blocked_clients"); v != "1" {
			return errString("blocked_clients: " + v)
		}
		return nil
	})
}

type errString string

func (e errString) Error() string { return string(e) }

// TestBlockedClientLeaves: a client that disconnects while blocked forever is
// noticed, and its session ends.
func TestBlockedClientLeaves(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := redistest.DialRaw(t, addr)
	c.Send("BLPOP", "nothing", "0")
	c.Flush()
	info := redistest.DialRaw(t, addr)
	clients := func() string {
		v, _ := infoField(info, "connected_clients")
		return v
	}
	redistest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := clients(); n != "2" {
			return errString("connected_clients " + n)
		}
		return nil
	})
	c.Close()
	redistest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := clients(); n != "1" {
			return errString("connected_clients " + n + " after the blocked client left")
		}
		return nil
	})
}

// TestStreamBlocking: XREAD and XREADGROUP with BLOCK, woken by another client's
// XADD, timing out, and with "$"; the consumer group state reaches the slaves.
func TestStreamBlocking(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	setup := [][]string{
		{"XADD", "s", "1-0", "f", "v"},
		{"XGROUP", "CREATE", "s", "g", "$"},
		{"XGROUP", "CREATE", "s", "g2", "3-0"},
		{"XREAD", "BLOCK", "50", "STREAMS", "s", "$"},
		{"XREAD", "BLOCK", "50", "STREAMS", "s", "0"},
		{"XREAD", "COUNT", "1", "BLOCK", "50", "STREAMS", "s", "nostream", "0", "0"},
		{"XREADGROUP", "GROUP", "g", "c1", "BLOCK", "50", "STREAMS", "s", ">"},
		{"XREAD", "BLOCK", "-1", "STREAMS", "s", "$"},
		{"XREAD", "BLOCK", "x", "STREAMS", "s", "$"},
	}
	woken := []struct{ block, push []string }{
		{[]string{"XREAD", "BLOCK", "5000", "STREAMS", "s", "$"}, []string{"XADD", "s", "2-0", "f", "v2"}},
		{[]string{"XREAD", "BLOCK", "0", "STREAMS", "new", "$"}, []string{"XADD", "new", "5-0", "f", "v"}},
		{[]string{"XREADGROUP", "GROUP", "g2", "c2", "BLOCK", "5000", "STREAMS", "s", ">"}, []string{"XADD", "s", "4-0", "f", "v4"}},
	}
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, cmd := range setup {
			got[name] = append(got[name], string(c.Do(cmd...)))
		}
		for _, w := range woken {
			blocked, other := redistest.DialRaw(t, a), redistest.DialRaw(t, a)
			blocked.Send(w.block...)
			blocked.Flush()
			waitBlocked(t, name, ref, other)
			other.Do(w.push...)
			got[name] = append(got[name], string(blocked.Read()))
		}
	}
	for i := range got["redis"] {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("step %d: redis %q, proxy %q", i, got["redis"][i], got["proxy"][i])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
