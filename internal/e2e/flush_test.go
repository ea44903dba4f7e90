package e2e

import (
	"strconv"
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestFlushNoFullResync holds a slave back (CLIENT PAUSE WRITE, with an applier
// queue of one message, so that it must catch up from the backlog) while writes
// and a FLUSHALL or FLUSHDB of DB 0 go through, or the backlog is evicted: the
// flush also empties the master's DB 0, where the backlog lives, and the slave
// must still catch up without a full resync.
func TestFlushNoFullResync(t *testing.T) {
	t.Parallel()
	for _, flush := range []string{"FLUSHALL", "FLUSHDB", "evicted backlog"} {
		t.Run(flush, func(t *testing.T) {
			t.Parallel()
			servers := redistest.StartN(t, 3)
			master, slaves := servers[0], servers[1:]
			addr, srv := startProxyWith(t, func(c *proxy.Config) { c.ApplierQueue = 1 }, master, slaves...)
			c, err := redis.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			write := func(prefix string, n int) {
				t.Helper()
				for db := 0; db < 2; db++ {
					c.Send("SELECT", db)
					for i := 0; i < n; i++ {
						c.Send("SET", prefix+strconv.Itoa(i), i)
					}
				}
				c.Send("SELECT", 0)
				if _, err := c.Do("PING"); err != nil {
					t.Fatal(err)
				}
			}
			write("before:", 50)
			redistest.WaitConverged(t, convergeTimeout, master, slaves...)
			resyncs := func() (n int64) {
				for _, a := range srv.Replicator().Appliers() {
					n += a.Resyncs()
				}
				return n
			}
			before := resyncs()

			slaves[0].Do(t, "CLIENT", "PAUSE", "300", "WRITE")
			write("held:", 50)
			// A pipeline may go as one or two group-committed messages: a few
			// writes one at a time make sure the held slave's queue overflows.
			for i := 0; i < 3; i++ {
				if _, err := c.Do("SET", "held-alone:"+strconv.Itoa(i), i); err != nil {
					t.Fatal(err)
				}
			}
			if flush == "evicted backlog" {
				// As a maxmemory policy evicts it: the slaves behind must
				// catch up from what the proxy read of it.
				master.Do(t, "DEL", "syncproxy:backlog")
			} else if _, err := c.Do(flush); err != nil {
				t.Fatal(err)
			}
			write("after:", 50)
			redistest.WaitConverged(t, convergeTimeout, master, slaves...)
			if n := resyncs() - before; n != 0 {
				var why []string
				for _, a := range srv.Replicator().Appliers() {
					for _, r := range replicate.ResyncReasons {
						if a.ResyncsFor(r) > 0 {
							why = append(why, a.Name()+": "+r.String())
						}
					}
				}
				t.Errorf("%s caused %d full resyncs (%v), want 0", flush, n, why)
			}
			var catchUps int64
			for _, a := range srv.Replicator().Appliers() {
				catchUps += a.CatchUps()
			}
			if catchUps == 0 {
				t.Error("no slave caught up from the backlog: the test did not hold a slave back")
			}
		})
	}
}
