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
			// Redis must have the client blocked before the push; through the
			// proxy, a push that comes first is simply popped at once.
			redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
				if name == "redis" && ref.Info(t, "clients", "blocked_clients") != "1" {
					return errString("client not blocked yet")
				}
				return nil
			})
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
		for _, l := range strings.Split(string(info.Do("INFO")), "\r\n") {
			if strings.HasPrefix(l, "connected_clients:") {
				return strings.TrimPrefix(l, "connected_clients:")
			}
		}
		return "?"
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
