package e2e

import (
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// workload is one client's random mix of writes over a keyspace shared with the
// other clients, in several databases, sent in pipelines of random depth. It uses
// only writes whose effect does not depend on where they run: absolute expiry times,
// no SPOP, no INCRBYFLOAT, no XADD * (their effects are replicated by a later issue).
type workload struct {
	id       int
	rnd      *rand.Rand
	base     int64 // absolute ms, the reference of expiry times
	streamID int64
}

// next returns one command.
func (w *workload) next() []interface{} {
	r := w.rnd
	k := func(prefix string) string { return prefix + strconv.Itoa(r.Intn(40)) }
	v := func() string { return strconv.Itoa(r.Intn(1000)) + strings.Repeat("v", r.Intn(20)) }
	future := func() int64 { return w.base + int64(time.Hour/time.Millisecond) + int64(r.Intn(100000)) }
	switch r.Intn(22) {
	case 0:
		return []interface{}{"SET", k("str:"), v()}
	case 1:
		return []interface{}{"SET", k("str:"), v(), "PXAT", future()}
	case 2:
		return []interface{}{"INCR", k("cnt:")}
	case 3:
		return []interface{}{"INCRBY", k("cnt:"), r.Intn(200) - 100}
	case 4:
		return []interface{}{"LPUSH", k("list:"), v(), v()}
	case 5:
		return []interface{}{"RPOP", k("list:")}
	case 6:
		return []interface{}{"HSET", k("hash:"), "f" + strconv.Itoa(r.Intn(10)), v()}
	case 7:
		return []interface{}{"HDEL", k("hash:"), "f" + strconv.Itoa(r.Intn(10))}
	case 8:
		return []interface{}{"SADD", k("set:"), r.Intn(30), "m" + strconv.Itoa(r.Intn(30))}
	case 9:
		return []interface{}{"SREM", k("set:"), r.Intn(30)}
	case 10:
		return []interface{}{"ZADD", k("zset:"), r.Intn(100), "m" + strconv.Itoa(r.Intn(30))}
	case 11:
		return []interface{}{"ZINCRBY", k("zset:"), r.Intn(10), "m" + strconv.Itoa(r.Intn(30))}
	case 12:
		return []interface{}{"DEL", k("str:"), k("list:")}
	case 13:
		return []interface{}{"PEXPIREAT", k("hash:"), future()}
	case 14:
		return []interface{}{"EXPIREAT", k("set:"), future() / 1000}
	case 15:
		// A past time deletes the key, on the master and on the slaves.
		return []interface{}{"PEXPIREAT", k("cnt:"), w.base - 1000}
	case 16:
		return []interface{}{"PERSIST", k("hash:")}
	case 17:
		return []interface{}{"APPEND", k("str:"), v()}
	case 18:
		return []interface{}{"MSET", k("str:"), v(), k("cnt:"), r.Intn(100)}
	case 19:
		w.streamID++
		return []interface{}{"XADD", "stream:" + strconv.Itoa(w.id), "MAXLEN", "50",
			strconv.FormatInt(w.streamID, 10) + "-1", "f", v()}
	case 20:
		return []interface{}{"SETBIT", k("bits:"), r.Intn(200), r.Intn(2)}
	default:
		return []interface{}{"SELECT", r.Intn(4)}
	}
}

// run sends ops commands through the proxy at addr.
func (w *workload) run(addr string, ops int) error {
	c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(5*time.Second), redis.DialWriteTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	sent := 0
	for sent < ops {
		depth := 1 + w.rnd.Intn(16)
		if depth > ops-sent {
			depth = ops - sent
		}
		cmds := make([][]interface{}, depth)
		for i := range cmds {
			cmds[i] = w.next()
			if err := c.Send(cmds[i][0].(string), cmds[i][1:]...); err != nil {
				return err
			}
		}
		if err := c.Flush(); err != nil {
			return err
		}
		for _, cm := range cmds {
			_, err := c.Receive()
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// Type clashes between clients are expected; proxy failures are not.
				if strings.HasPrefix(string(rerr), "WRONGTYPE") {
					continue
				}
				return fmt.Errorf("client %d: %v: %v", w.id, cm, err)
			}
			if err != nil {
				return fmt.Errorf("client %d: %v: %v", w.id, cm, err)
			}
		}
		sent += depth
	}
	return nil
}

// TestConvergenceWorkload runs concurrent clients writing through the proxy, then
// every slave must hold exactly the master's keys, values and expiry times.
func TestConvergenceWorkload(t *testing.T) {
	t.Parallel()
	const clients, ops = 8, 2000
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)

	start := time.Now()
	base := start.UnixMilli()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		w := &workload{id: i, rnd: rand.New(rand.NewSource(int64(i) + 1)), base: base}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(addr, ops); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d writes in %v", clients*ops, time.Since(start).Round(time.Millisecond))

	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	t.Logf("converged %v after the start", time.Since(start).Round(time.Millisecond))

	// The workload did reach several databases, and every slave is still online.
	for db := 0; db < 4; db++ {
		c := master.Dial(t)
		if _, err := c.Do("SELECT", db); err != nil {
			t.Fatal(err)
		}
		n, err := redis.Int(c.Do("DBSIZE"))
		if err != nil || n < 10 {
			t.Errorf("db %d of the master has %d keys (%v): the workload did not reach it", db, n, err)
		}
	}
	for _, a := range srv.Replicator().Appliers() {
		if !a.Online() {
			t.Errorf("slave %s is %v after the workload", a.Name(), a.State())
		}
	}
}
