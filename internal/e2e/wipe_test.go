package e2e

import (
	"math/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestTwoProxiesNoWipe runs two proxies on the same master and slaves under write
// load, with every applier comparing the slave with the master as often as the
// settings allow. An applier of one proxy must never take the other proxy's
// progress for a slave ahead of the master: no full resync of an up-to-date
// slave, and no read, through either proxy, of a key that exists.
func TestTwoProxiesNoWipe(t *testing.T) {
	t.Parallel()
	const keys, writers, readers = 200, 3, 2
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	fast := func(c *proxy.Config) {
		c.HealthInterval = 10 * time.Millisecond
		c.ReadYourWrites = false // reads go to the slaves whatever their position
	}
	addrA, srvA := startProxyWith(t, fast, master, slaves...)
	addrB, srvB := startProxyWith(t, fast, master, slaves...)

	c, err := redis.Dial("tcp", addrA)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < keys; i++ {
		c.Send("SET", "k"+strconv.Itoa(i), "0")
	}
	if _, err := c.Do("PING"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	waitOnline(t, srvA)
	waitOnline(t, srvB)
	resyncs := func() (n int64) {
		for _, srv := range []*proxy.Server{srvA, srvB} {
			for _, a := range srv.Replicator().Appliers() {
				n += a.Resyncs()
			}
		}
		return n
	}
	before := resyncs()

	var wg sync.WaitGroup
	var missing, reads, writes atomic.Int64
	errs := make(chan error, 2*(writers+readers))
	deadline := time.Now().Add(3 * time.Second)
	for p, addr := range []string{addrA, addrB} {
		for i := 0; i < writers+readers; i++ {
			reader := i >= writers
			rnd := rand.New(rand.NewSource(int64(p*100 + i)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := redis.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				for time.Now().Before(deadline) {
					key := "k" + strconv.Itoa(rnd.Intn(keys))
					if !reader {
						if _, err := c.Do("INCR", key); err != nil {
							errs <- err
							return
						}
						writes.Add(1)
						continue
					}
					v, err := c.Do("GET", key)
					if err != nil {
						errs <- err
						return
					}
					reads.Add(1)
					if v == nil {
						missing.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d writes, %d reads through two proxies", writes.Load(), reads.Load())
	if n := resyncs() - before; n != 0 {
		t.Errorf("%d full resyncs of up-to-date slaves under load, want 0", n)
	}
	if n := missing.Load(); n != 0 {
		t.Errorf("%d reads of a key that exists answered nil, want 0", n)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
