package e2e

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestOneApplierPerSlave runs three proxies on the same master and slaves: for
// each slave one proxy holds the lease and applies, the others follow its
// position and still serve reads that see their clients' writes; when the holder
// stops, another proxy takes over at once; when it dies holding the lease,
// within the lease's TTL; and the slaves converge.
func TestOneApplierPerSlave(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	fast := func(c *proxy.Config) { c.HealthInterval = 100 * time.Millisecond }
	var addrs []string
	var srvs []*proxy.Server
	for i := 0; i < 3; i++ {
		addr, srv := startProxyWith(t, fast, master, slaves...)
		addrs, srvs = append(addrs, addr), append(srvs, srv)
	}
	applierOf := func(srv *proxy.Server, slave int) *replicate.Applier {
		return srv.Replicator().Appliers()[slave]
	}
	// holder returns the proxy holding slave i's lease, once exactly one does.
	holder := func(slave int) int {
		t.Helper()
		h := -1
		redistest.CheckFor(t, 10*time.Second, poll, func() error {
			h = -1
			for p, srv := range srvs {
				if srv == nil || !applierOf(srv, slave).Leader() {
					continue
				}
				if h >= 0 {
					return fmt.Errorf("proxies %d and %d both hold slave %d's lease", h, p, slave)
				}
				h = p
			}
			if h < 0 {
				return fmt.Errorf("no proxy holds slave %d's lease", slave)
			}
			return nil
		})
		return h
	}
	holders := []int{holder(0), holder(1)}
	before := make([][]int64, len(srvs))
	for p, srv := range srvs {
		for i := range slaves {
			before[p] = append(before[p], applierOf(srv, i).Applies())
		}
	}

	load(t, addrs, 300)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	for i := range slaves {
		for p, srv := range srvs {
			n := applierOf(srv, i).Applies() - before[p][i]
			switch {
			case p == holders[i] && n == 0:
				t.Errorf("proxy %d holds slave %d's lease but applied nothing", p, i)
			case p != holders[i] && n != 0:
				t.Errorf("proxy %d follows slave %d but made %d apply calls, want 0", p, i, n)
			}
		}
	}

	// The holder of slave 0's lease stops: another proxy takes over.
	gone := holders[0]
	closeBounded(t, srvs[gone])
	srvs[gone] = nil
	var rest []string
	for p, addr := range addrs {
		if p != gone {
			rest = append(rest, addr)
		}
	}
	start := time.Now()
	next := holder(0)
	t.Logf("proxy %d took over slave 0's lease %v after proxy %d stopped", next, time.Since(start).Round(time.Millisecond), gone)
	load(t, rest, 100)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	// A proxy that died holding slave 1's lease (one that never released it):
	// nobody applies until it lapses, then a live proxy takes over.
	slaves[1].Do(t, "SET", "syncproxy:lease", "a-proxy-that-died", "PX", "1500")
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		for p, srv := range srvs {
			if srv != nil && applierOf(srv, 1).Leader() {
				return fmt.Errorf("proxy %d still holds slave 1's lease", p)
			}
		}
		return nil
	})
	start = time.Now()
	next = holder(1)
	t.Logf("proxy %d took over slave 1's lease %v after it was left to lapse", next, time.Since(start).Round(time.Millisecond))
	load(t, rest, 100)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// load INCRs counters through each address from two clients, n times each, and
// checks that every client then reads its own last value.
func load(t *testing.T, addrs []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(addrs))
	for p, addr := range addrs {
		for c := 0; c < 2; c++ {
			key := "counter:" + strconv.Itoa(p) + ":" + strconv.Itoa(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := redis.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer conn.Close()
				var last int64
				for j := 0; j < n; j++ {
					if last, err = redis.Int64(conn.Do("INCR", key)); err != nil {
						errs <- err
						return
					}
				}
				if got, err := redis.Int64(conn.Do("GET", key)); err != nil || got < last {
					errs <- fmt.Errorf("%s: GET after INCR answered %d, %v; want %d (read-your-writes)", key, got, err, last)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
