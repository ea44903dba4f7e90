package e2e

import (
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestPubSubDifferential: a subscriber through the proxy sees what a subscriber
// of Redis sees — confirmations, messages, pattern messages, PING replies, the
// errors of other commands — and returns to normal mode when its last
// subscription ends, with its writes still replicated.
func TestPubSubDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	targets := map[string]string{"redis": ref.Addr, "proxy": addr}
	got := map[string][]string{}
	for name, a := range targets {
		sub := redistest.DialRaw(t, a)
		pub := redistest.DialRaw(t, a)
		add := func(b []byte) { got[name] = append(got[name], string(b)) }
		add(sub.Do("UNSUBSCRIBE"))
		add(sub.Do("PUNSUBSCRIBE", "p*"))
		add(sub.Do("SUBSCRIBE", "news", "sport"))
		add(sub.Read())
		add(sub.Do("PSUBSCRIBE", "n*"))
		add(pub.Do("PUBLISH", "news", "hello"))
		add(sub.Read()) // message
		add(sub.Read()) // pmessage
		add(pub.Do("PUBSUB", "NUMSUB", "news", "sport", "none"))
		add(pub.Do("PUBSUB", "NUMPAT"))
		add(sub.Do("PING"))
		add(sub.Do("PING", "x"))
		add(sub.Do("GET", "k"))
		add(sub.Do("SET", "k", "v"))
		add(sub.Do("UNSUBSCRIBE", "news", "sport"))
		add(sub.Read())
		add(sub.Do("PUNSUBSCRIBE"))
		// Back in normal mode.
		add(sub.Do("SET", "k", "after"))
		add(sub.Do("GET", "k"))
		add(sub.Do("PING"))
		add(pub.Do("PUBLISH", "news", "nobody"))
		add(sub.Do("SUBSCRIBE", "again"))
		add(sub.Do("QUIT"))
		if b, err := sub.TryRead(); err == nil {
			t.Errorf("%s: read after QUIT: %q", name, b)
		}
	}
	for i := range got["redis"] {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("step %d: redis %q, proxy %q", i, got["redis"][i], got["proxy"][i])
		}
	}
	c := redistest.DialRaw(t, addr)
	if r := string(c.Do("PUBLISH", "syncproxy:sync", "x")); r[0] != '-' {
		t.Errorf("PUBLISH to the sync channel: %q", r)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestSyncChannelOtherName: with a sync channel outside the reserved prefix,
// PUBLISH and SPUBLISH to it are refused alone, pipelined and inside MULTI (which
// then aborts), as inside scripts; other channels are not.
func TestSyncChannelOtherName(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.SyncChannel = "sync-events" }, master, slaves...)
	c := redistest.DialRaw(t, addr)
	refused := "-ERR syncproxy: the sync channel is reserved for replication\r\n"
	mustReply(t, c, refused, "PUBLISH", "sync-events", "x")
	mustReply(t, c, refused, "SPUBLISH", "sync-events", "x")
	mustReply(t, c, ":0\r\n", "SPUBLISH", "other", "x")
	c.Send("PUBLISH", "other", "x")
	c.Send("SPUBLISH", "sync-events", "x")
	c.Flush()
	for i, want := range []string{":0\r\n", refused} {
		if got := string(c.Read()); got != want {
			t.Errorf("pipelined reply %d: %q, want %q", i, got, want)
		}
	}
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, refused, "SPUBLISH", "sync-events", "x")
	if got := string(c.Do("EXEC")); !strings.HasPrefix(got, "-EXECABORT") {
		t.Errorf("EXEC after a refused SPUBLISH: %q", got)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
