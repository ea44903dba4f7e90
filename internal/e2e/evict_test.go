package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestMasterEvictionsReplicate: a master at maxmemory with volatile-lru evicts
// thousands of the keys written through the proxy (with EX); once the load
// stops, every slave (without maxmemory) equals the master, with no full resync.
func TestMasterEvictionsReplicate(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, "--maxmemory", "3mb", "--maxmemory-policy", "volatile-lru")
	slaves := redistest.StartN(t, 2)
	addr, srv := startProxyWith(t, func(c *proxy.Config) {
		c.BacklogLen = 100 // the backlog has no TTL: volatile-lru never evicts it
		c.BackendTimeout = 10 * time.Second
	}, master, slaves...)
	repl := srv.Replicator()
	resyncs := func() (n int64) {
		for _, a := range repl.Appliers() {
			n += a.Resyncs()
		}
		return n
	}
	before := resyncs()
	c := redistest.DialRaw(t, addr)
	c.SetTimeout(30 * time.Second)
	v := strings.Repeat("v", 200)
	const total, chunk = 20000, 20
	for i := 0; i < total; i += chunk {
		for j := i; j < i+chunk; j++ {
			c.Send("SET", "key:"+strconv.Itoa(j), v, "EX", "3600")
		}
		c.Flush()
		for j := i; j < i+chunk; j++ {
			if got := string(c.Read()); got != "+OK\r\n" {
				t.Fatalf("SET key:%d: %q", j, got)
			}
		}
		waitCaughtUp(t, srv)
	}
	evicted, _ := strconv.Atoi(master.Info(t, "stats", "evicted_keys"))
	t.Logf("master evicted %d keys; %d replicated", evicted, repl.EvictionsReplicated())
	if evicted <= 1000 {
		t.Fatalf("the master evicted only %d keys", evicted)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if n := resyncs() - before; n != 0 {
		t.Fatalf("%d full resyncs", n)
	}
	if v, ok := infoField(redistest.DialRaw(t, addr), "master_evictions_replicated"); !ok || v == "0" {
		t.Errorf("INFO master_evictions_replicated: %q %v", v, ok)
	}
}

// waitCaughtUp waits until every slave of srv applied the latest message seen,
// so that none falls behind a short backlog.
func waitCaughtUp(t *testing.T, srv *proxy.Server) {
	t.Helper()
	redistest.CheckFor(t, convergeTimeout, time.Millisecond, func() error {
		latest := srv.Replicator().Latest()
		for _, a := range srv.Replicator().Appliers() {
			if a.Applied() < latest {
				return fmt.Errorf("slave %s at %d of %d", a.Name(), a.Applied(), latest)
			}
		}
		return nil
	})
}
