package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// writers runs n clients that write through the proxy on their own connections
// until stop is called; stop returns the error replies they saw and checks that
// each client's counter on the master holds the number of its INCRs answered.
type writers struct {
	t      *testing.T
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []string
	counts []atomic.Int64
	keys   []string
}

func startWriters(t *testing.T, addr string, n int) *writers {
	t.Helper()
	w := &writers{t: t, done: make(chan struct{}), counts: make([]atomic.Int64, n)}
	for i := 0; i < n; i++ {
		c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(30*time.Second), redis.DialWriteTimeout(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		key := "writer:" + strconv.Itoa(i)
		w.keys = append(w.keys, key)
		w.wg.Add(1)
		go w.run(c, i, key)
	}
	return w
}

func (w *writers) run(c redis.Conn, i int, key string) {
	defer w.wg.Done()
	for j := 0; ; j++ {
		select {
		case <-w.done:
			return
		default:
		}
		c.Send("INCR", key)
		c.Send("SET", key+":s", strconv.Itoa(j))
		c.Flush()
		for k := 0; k < 2; k++ {
			r, err := c.Receive()
			if err == nil {
				if e, ok := r.(redis.Error); ok {
					err = e
				}
			}
			if err != nil {
				w.mu.Lock()
				w.errs = append(w.errs, err.Error())
				w.mu.Unlock()
				if _, ok := err.(redis.Error); !ok {
					return // the connection is broken
				}
				continue
			}
			if k == 0 {
				w.counts[i].Add(1)
			}
		}
	}
}

// stop ends the writers and fails the test if any saw an error or a counter on
// master does not match the INCRs answered.
func (w *writers) stop(master *redistest.Server) {
	w.t.Helper()
	close(w.done)
	w.wg.Wait()
	for i, e := range w.errs {
		if i == 5 {
			w.t.Errorf("... %d errors in all", len(w.errs))
			break
		}
		w.t.Errorf("a concurrent writer got %q", e)
	}
	for i, key := range w.keys {
		got, _ := redis.Int64(master.Do(w.t, "GET", key), nil)
		if want := w.counts[i].Load(); got != want {
			w.t.Errorf("%s = %d on the master, but %d INCRs were answered", key, got, want)
		}
	}
}

// TestScriptOddRepliesDifferential: scripts whose replies are unusual for the
// master script (RESP3 inside the script, nil, Lua tables of RESP3 types, long
// status lines) reply as on a direct RESP2 connection to Redis, and never
// disturb the writes of other clients sharing the master connection.
func TestScriptOddRepliesDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	long := strings.Repeat("x", 40000)
	cmds := [][]string{
		{"HSET", "h", "f", "v"},
		{"ZADD", "z", "1.5", "m"},
		{"SADD", "s", "a"},
		{"EVAL", "redis.setresp(3); return redis.call('GET', KEYS[1])", "1", "missing"},
		{"EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", "h"},
		{"EVAL", "redis.setresp(3); return redis.call('ZSCORE', KEYS[1], 'm')", "1", "z"},
		{"EVAL", "redis.setresp(3); return redis.call('SMEMBERS', KEYS[1])", "1", "s"},
		{"EVAL", "redis.setresp(3); return redis.call('EXISTS', KEYS[1]) == 1", "1", "missing"},
		{"EVAL", "redis.setresp(3); return {redis.call('GET', KEYS[1]), 1}", "1", "missing"},
		{"EVAL", "redis.setresp(3); redis.call('SET', KEYS[1], 'w'); return redis.call('GET', KEYS[2])", "2", "w", "missing"},
		{"EVAL", "redis.setresp(3); redis.call('SET', KEYS[1], 'w2'); return redis.call('GET', KEYS[1])", "1", "w"},
		{"EVAL", "redis.setresp(3); return redis.call('HGETALL', KEYS[1])", "1", "missing"},
		{"EVAL", "return {double=1.5}", "0"},
		{"EVAL", "return {big_number='123456789012345678901234567890'}", "0"},
		{"EVAL", "return {map={a=1}}", "0"},
		{"EVAL", "return {set={a=true}}", "0"},
		{"EVAL", "return true", "0"},
		{"EVAL", "return false", "0"},
		{"EVAL", "return nil", "0"},
		{"EVAL", "return {1, nil, 3}", "0"},
		{"EVAL", "return {}", "0"},
		{"EVAL", "redis.setresp(3); return {true, {false, {map={a=true}}}, {set={b=true}}}", "0"},
		{"EVAL", "local t = {} local c = t for i = 1, 500 do c[1] = {i} c = c[1] end return t", "0"},
		{"EVAL", "redis.setresp(3); local t = {} local c = t for i = 1, 500 do c[1] = {false} c = c[1] end redis.call('SET', KEYS[1], 'c'); return t", "1", "cyclic"},
		{"EVAL", "return {ok='" + long + "'}", "0"},
		{"EVAL", "return {err='" + long + "'}", "0"},
		{"EVAL", "redis.call('SET', KEYS[1], ARGV[1]); return {ok='" + long + "'}", "1", "long", "v"},
		{"GET", "w"},
		{"GET", "long"},
		{"GET", "cyclic"},
	}
	wr := startWriters(t, addr, 4)
	var rounds [][]string
	for round := 0; round < 3; round++ {
		rounds = append(rounds, cmds...)
	}
	sameReplies(t, ref.Addr, addr, rounds)
	wr.stop(master)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	for _, k := range []string{"w", "long", "cyclic"} {
		if a, b := fmt.Sprint(ref.Do(t, "GET", k)), fmt.Sprint(master.Do(t, "GET", k)); a != b {
			t.Errorf("%s: %s on redis, %s on the master", k, a, b)
		}
	}
}

// TestScriptRESP3Effects runs writes whose effect is derived from their reply
// (SPOP, GETEX, XREADGROUP, LMPOP, INCRBYFLOAT) inside scripts that switched to
// RESP3, where those replies have other shapes (sets, maps, nulls): the slaves
// must still end equal to the master.
func TestScriptRESP3Effects(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, ":10\r\n", "SADD", "s", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j")
	mustReply(t, c, "+OK\r\n", "SET", "g", "v")
	mustReply(t, c, "+OK\r\n", "XGROUP", "CREATE", "x", "grp", "$", "MKSTREAM")
	mustReply(t, c, ":1\r\n", "RPUSH", "l", "only")
	for _, cmd := range [][]string{
		{"EVAL", "redis.setresp(3); local r = redis.call('SPOP', KEYS[1], 3); local n = 0; for _ in pairs(r.set) do n = n + 1 end; return n", "1", "s"},
		{"EVAL", "redis.setresp(3); return redis.call('SPOP', KEYS[1])", "1", "s"},
		{"EVAL", "redis.setresp(3); return redis.call('GETEX', KEYS[1], 'EX', '100')", "1", "g"},
		{"EVAL", "redis.setresp(3); redis.call('XADD', KEYS[1], '*', 'f', 'v'); local r = redis.call('XREADGROUP', 'GROUP', 'grp', 'c1', 'COUNT', '5', 'STREAMS', KEYS[1], '>'); return 1", "1", "x"},
		{"EVAL", "redis.setresp(3); redis.call('LMPOP', 1, KEYS[1], 'LEFT'); return redis.call('LMPOP', 1, KEYS[1], 'LEFT') == nil", "1", "l"},
		{"EVAL", "redis.setresp(3); return redis.call('INCRBYFLOAT', KEYS[1], '0.1')", "1", "f"},
	} {
		if r := c.Do(cmd...); len(r) > 0 && r[0] == '-' {
			t.Errorf("%s: %s", showCmd(cmd), showReply(r))
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
