package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// holdBack pauses the writes of s intermittently (pauseWrites) until stop is
// closed; wg waits for it.
func holdBack(s *redistest.Server, stop chan struct{}, wg *sync.WaitGroup) {
	ctx, cancel := context.WithCancel(context.Background())
	wg.Add(2)
	go func() {
		defer wg.Done()
		pauseWrites(ctx, s.Addr)
	}()
	go func() {
		defer wg.Done()
		<-stop
		cancel()
	}()
}

// monotonicRun runs writers that INCR keys through two proxies at level and
// read-only connections on each proxy that GET those keys in pipelined batches,
// with one slave held back intermittently. It returns the reads that returned
// a value older than an earlier read of the same key on the same connection.
func monotonicRun(t *testing.T, level string, d time.Duration) (violations, reads int64) {
	const keys, writers, readers = 10, 2, 3
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	set := func(c *proxy.Config) { c.ReadConsistency = level }
	addrs := []string{}
	for i := 0; i < 2; i++ {
		addr, _ := startProxyWith(t, set, master, slaves...)
		addrs = append(addrs, addr)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var nviol, nreads atomic.Int64
	errs := make(chan error, 4*(writers+readers))
	deadline := time.Now().Add(d)
	holdBack(slaves[0], stop, &wg)
	for p, addr := range addrs {
		for i := 0; i < writers+readers; i++ {
			c, err := redis.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			rnd := rand.New(rand.NewSource(int64(p*100 + i)))
			writer := i < writers
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var err error
				if writer {
					err = incrLoop(c, rnd, keys, deadline)
				} else {
					err = readLoop(c, rnd, keys, deadline, &nviol, &nreads)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	time.Sleep(d) // the clients run for d
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	return nviol.Load(), nreads.Load()
}

func incrLoop(c redis.Conn, rnd *rand.Rand, keys int, deadline time.Time) error {
	for time.Now().Before(deadline) {
		if _, err := c.Do("INCR", "m"+strconv.Itoa(rnd.Intn(keys))); err != nil {
			return err
		}
	}
	return nil
}

// readLoop GETs keys, four per pipelined batch, and counts the values lower
// than the highest one the connection read before.
func readLoop(c redis.Conn, rnd *rand.Rand, keys int, deadline time.Time, viol, reads *atomic.Int64) error {
	seen := make([]int64, keys)
	var batch [4]int
	for time.Now().Before(deadline) {
		for j := range batch {
			batch[j] = rnd.Intn(keys)
			c.Send("GET", "m"+strconv.Itoa(batch[j]))
		}
		if err := c.Flush(); err != nil {
			return err
		}
		for _, k := range batch {
			v, err := redis.Int64(c.Receive())
			if err == redis.ErrNil {
				v, err = 0, nil
			}
			if err != nil {
				return err
			}
			reads.Add(1)
			if v < seen[k] {
				viol.Add(1)
			}
			seen[k] = max(seen[k], v)
		}
	}
	return nil
}

// TestMonotonicReadsTwoProxies: at session level, a read-only connection never
// reads an older value than it read before, with two proxies applying to the
// same slaves and one of them held back now and then; at eventual it does
// (proof that the test can fail).
func TestMonotonicReadsTwoProxies(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"session", "eventual"} {
		viol, reads := monotonicRun(t, level, 3*time.Second)
		t.Logf("%s: %d reads older than an earlier read, of %d", level, viol, reads)
		if level == "session" && viol != 0 {
			t.Errorf("session: %d monotonic read violations, want 0", viol)
		}
		if level == "eventual" && viol == 0 {
			t.Errorf("eventual: no monotonic read violation: the test cannot tell")
		}
	}
}

// pooledStale writes on one connection and reads on another, n times, with one
// slave held back intermittently, and returns the reads that missed the write.
func pooledStale(t *testing.T, level string, n int) int {
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ReadConsistency = level }, master, slaves...)
	w, r := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	holdBack(slaves[0], stop, &wg)
	defer wg.Wait()
	defer close(stop)
	stale := 0
	for i := 0; i < n; i++ {
		v := strconv.Itoa(i)
		if i%2 == 0 {
			w.Do("SET", "pool", v)
			if got := string(r.Do("GET", "pool")); got != string(bulk(v)) {
				stale++
			}
		} else {
			w.Do("DEL", "pool")
			if got := string(r.Do("EXISTS", "pool")); got != ":0\r\n" {
				stale++
			}
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	return stale
}

// TestPooledClientGlobal: at global level a write on one connection is seen by
// a read on another (a connection pool); at session level it is not always.
func TestPooledClientGlobal(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"global", "session"} {
		stale := pooledStale(t, level, 2000)
		t.Logf("%s: %d stale reads of 2000", level, stale)
		if level == "global" && stale != 0 {
			t.Errorf("global: %d stale reads on another connection, want 0", stale)
		}
		if level == "session" && stale == 0 {
			t.Errorf("session: no stale read on another connection: the test cannot tell")
		}
	}
}

// TestClientConsistency: CLIENT CONSISTENCY sets the connection's level, shown
// by CLIENT INFO and reset by RESET; bad arguments get Redis' errors.
func TestClientConsistency(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, srv := startProxyWith(t, func(c *proxy.Config) { c.ReadConsistency = "eventual" }, servers[0], servers[1])
	c := redistest.DialRaw(t, addr)
	arity := "-ERR wrong number of arguments for 'client|consistency' command\r\n"
	mustReply(t, c, arity, "CLIENT", "CONSISTENCY")
	mustReply(t, c, arity, "CLIENT", "CONSISTENCY", "session", "global")
	mustReply(t, c, "-ERR syntax error\r\n", "CLIENT", "CONSISTENCY", "strong")
	mustReply(t, c, "-ERR syntax error\r\n", "CLIENT", "CONSISTENCY", "")
	info := func() string { return string(c.Do("CLIENT", "INFO")) }
	if s := info(); !strings.Contains(s, " consistency=eventual") {
		t.Errorf("CLIENT INFO at the proxy's level: %q", s)
	}
	for _, l := range []string{"session", "GLOBAL", "eventual"} {
		mustReply(t, c, "+OK\r\n", "CLIENT", "CONSISTENCY", l)
		if s := info(); !strings.Contains(s, " consistency="+strings.ToLower(l)) {
			t.Errorf("CLIENT INFO after CLIENT CONSISTENCY %s: %q", l, s)
		}
	}
	mustReply(t, c, "+OK\r\n", "CLIENT", "CONSISTENCY", "global")
	if s := string(c.Do("CLIENT", "LIST")); !strings.Contains(s, " consistency=global") {
		t.Errorf("CLIENT LIST: %q", s)
	}
	mustReply(t, c, "+RESET\r\n", "RESET")
	if s := info(); !strings.Contains(s, " consistency=eventual") {
		t.Errorf("CLIENT INFO after RESET: %q", s)
	}
	// The proxy's level reloads; connections that did not choose follow it.
	cfg := srv.Config()
	cfg.ReadConsistency = "global"
	if err := srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if s := info(); !strings.Contains(s, " consistency=global") {
		t.Errorf("CLIENT INFO after a reload to global: %q", s)
	}
	if s := string(c.Do("INFO")); !strings.Contains(s, "read_consistency:global") {
		t.Errorf("INFO after a reload to global: no read_consistency:global")
	}
}

// TestSyncTokenAfterRead: CLIENT SYNCTOKEN on a connection that only read
// carries the position of what it read, so that a connection given the token
// sees at least that, even from a slave held back.
func TestSyncTokenAfterRead(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	w, r, after := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	token := func(c *redistest.RawConn) (string, int64) {
		b := string(c.Do("CLIENT", "SYNCTOKEN"))
		tok := b[strings.Index(b, "\r\n")+2 : len(b)-2]
		seq, _ := strconv.ParseInt(tok[strings.LastIndexByte(tok, ':')+1:], 10, 64)
		return tok, seq
	}
	mustReply(t, r, "$0\r\n\r\n", "CLIENT", "SYNCTOKEN")
	for i := 0; i < 200; i++ {
		v := strconv.Itoa(i)
		w.Do("SET", "tok", v)
		_, wseq := token(w)
		// Wait until the reading connection reads the write (from a slave).
		redistest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
			if got := string(r.Do("GET", "tok")); got != string(bulk(v)) {
				return fmt.Errorf("GET tok: %q", got)
			}
			return nil
		})
		tok, rseq := token(r)
		if rseq < wseq {
			t.Fatalf("token %q after reading the write of position %d", tok, wseq)
		}
		// Pipelined behind the read, too.
		r.Send("GET", "tok")
		r.Send("CLIENT", "SYNCTOKEN")
		r.Flush()
		r.Read()
		if b := string(r.Read()); !strings.Contains(b, ":") {
			t.Fatalf("pipelined CLIENT SYNCTOKEN after a read: %q", b)
		}
		if i == 100 {
			for _, s := range slaves {
				s.Do(t, "CLIENT", "PAUSE", "2000", "WRITE")
			}
		}
		mustReply(t, after, "+OK\r\n", "CLIENT", "SYNCAFTER", tok)
		mustReply(t, after, string(bulk(v)), "GET", "tok")
	}
	for _, s := range slaves {
		s.Do(t, "CLIENT", "UNPAUSE")
	}
	if srv.Router().Slaves()[0].Reads.Load()+srv.Router().Slaves()[1].Reads.Load() == 0 {
		t.Error("the slaves served no reads")
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestGlobalPositionShared: concurrent global reads share the fetches of the
// master's position (one round trip for the reads that arrived before it was
// sent), and are served by slaves that have it.
func TestGlobalPositionShared(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxyWith(t, func(c *proxy.Config) { c.ReadConsistency = "global" }, master, slaves...)
	w := redistest.DialRaw(t, addr)
	w.Do("SET", "g", "1")
	const clients, reads = 40, 200
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		c, err := redis.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for j := 0; j < reads; j++ {
				if v, err := redis.String(c.Do("GET", "g")); err != nil || v != "1" {
					errs <- fmt.Errorf("GET g: %q %v", v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	info := string(w.Do("INFO"))
	i := strings.Index(info, "global_reads:batches=")
	if i < 0 {
		t.Fatalf("no global_reads in INFO: %q", info)
	}
	var batches, fetches int64
	fmt.Sscanf(info[i:], "global_reads:batches=%d,position_fetches=%d", &batches, &fetches)
	t.Logf("%d global read batches, %d fetches of the master's position", batches, fetches)
	// Typically about one fetch for ten batches; fewer fetches than batches
	// whatever the machine's load.
	if batches < clients*reads || fetches >= batches {
		t.Errorf("%d fetches for %d batches of global reads: not shared", fetches, batches)
	}
	var onSlaves int64
	for _, sl := range srv.Router().Slaves() {
		onSlaves += sl.Reads.Load()
	}
	if onSlaves*2 < batches {
		t.Errorf("slaves served %d of %d global reads with no write going on", onSlaves, batches)
	}
}
