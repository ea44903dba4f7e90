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
)

// TestTwoProxiesUnderLoad runs two full proxies in front of the same master and
// slaves, as two instances behind a TCP load balancer: clients of both write the
// same keys at once (random workload, shared counters, WATCH transactions), and
// afterwards the slaves hold exactly the master's data, every acknowledged
// increment counted once, and no WATCH transaction lost an update.
func TestTwoProxiesUnderLoad(t *testing.T) {
	t.Parallel()
	const clientsPerProxy, ops = 4, 1500
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addrA, _ := startProxy(t, master, slaves...)
	addrB, _ := startProxy(t, master, slaves...)
	addrs := []string{addrA, addrB}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4*clientsPerProxy)
	var incrs, txOK atomic.Int64
	for p, addr := range addrs {
		for i := 0; i < clientsPerProxy; i++ {
			id := p*clientsPerProxy + i
			w := &workload{id: id, rnd: rand.New(rand.NewSource(int64(id) + 100)), base: start.UnixMilli()}
			wg.Add(3)
			go func() {
				defer wg.Done()
				if err := w.run(addr, ops); err != nil {
					errs <- err
				}
			}()
			go func() { // shared counters through both proxies
				defer wg.Done()
				c, err := redis.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				for j := 0; j < 300; j++ {
					if _, err := redis.Int64(c.Do("INCR", "shared:counter")); err != nil {
						errs <- err
						return
					}
					incrs.Add(1)
				}
			}()
			go func() { // optimistic transactions on one key, across proxies
				defer wg.Done()
				c, err := redis.Dial("tcp", addr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				for done := 0; done < 30; {
					c.Send("WATCH", "shared:tx")
					c.Send("GET", "shared:tx")
					c.Flush()
					c.Receive()
					v, _ := redis.Int(c.Receive())
					c.Send("MULTI")
					c.Send("SET", "shared:tx", strconv.Itoa(v+1))
					r, err := c.Do("EXEC")
					if err != nil {
						errs <- err
						return
					}
					if r != nil {
						done++
						txOK.Add(1)
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
	t.Logf("two proxies, %d clients: done in %v", 2*clientsPerProxy*3, time.Since(start).Round(time.Millisecond))

	c := master.Dial(t)
	if n, err := redis.Int64(c.Do("GET", "shared:counter")); err != nil || n != incrs.Load() {
		t.Errorf("shared counter %d (%v), %d increments acknowledged", n, err, incrs.Load())
	}
	if n, err := redis.Int64(c.Do("GET", "shared:tx")); err != nil || n != txOK.Load() {
		t.Errorf("WATCH counter %d (%v), %d transactions committed: an update was lost", n, err, txOK.Load())
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	t.Logf("converged %v after the start", time.Since(start).Round(time.Millisecond))
}
