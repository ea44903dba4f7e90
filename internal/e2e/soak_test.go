package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
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

// TestSoak runs only when asked: go test ./internal/e2e -run TestSoak -soak 10m
// (make soak). It is not part of make test.
var (
	soakFor  = flag.Duration("soak", 0, "run TestSoak for this long (0 skips it)")
	soakRate = flag.Int("soakrate", 2000, "TestSoak: client round trips per second at most, all clients together")
	soakKill = flag.Duration("soakkill", time.Minute, "TestSoak: time between two slave restarts")
)

// Parameters of TestSoak.
const (
	soakClients  = 50
	soakReport   = 10 * time.Second // between two progress lines
	soakKeys     = 200              // keys of each client
	soakPipeline = 20               // commands of a pipelined round trip
	soakTimeout  = 5 * time.Second  // each client's read and write
	soakSettle   = 2 * time.Minute  // from the end of the load to slaves equal to the master
	soakShowErrs = 10               // errors shown in full
)

// TestSoak puts a mixed load (SET, GET, INCR, LPUSH, pipelines, MULTI) on a
// proxy in front of a master and two slaves from 50 clients, for -soak; every
// minute (-soakkill) it stops one slave (a crash or a shutdown, alternately) and starts it
// again, empty. Every 10s it prints a line of figures. At the end the slaves must
// equal the master, every acknowledged INCR must be counted once on the master,
// and goroutines and heap must not have grown without bound.
func TestSoak(t *testing.T) {
	if *soakFor <= 0 {
		t.Skip("a soak run: go test ./internal/e2e -run TestSoak -soak 10m, or make soak")
	}
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	start := time.Now()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var st soakStats
	clients := make([]*soakClient, soakClients)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = &soakClient{id: i, addr: addr, stats: &st, values: map[string]string{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i].run(ctx, time.Duration(soakClients)*time.Second/time.Duration(*soakRate))
		}()
	}
	defer func() {
		stop()
		wg.Wait()
	}()

	checker := redistest.DialRaw(t, addr)
	var first, last soakSample
	report := time.NewTicker(soakReport)
	defer report.Stop()
	kill := time.NewTicker(*soakKill)
	defer kill.Stop()
	end := time.NewTimer(*soakFor)
	defer end.Stop()
	var prevOps int64
	kills := 0
	for running := true; running; {
		select {
		case <-report.C:
			s := sample(checker)
			if first.at.IsZero() {
				first = s
			}
			last = s
			ops := st.ops.Load()
			t.Logf("elapsed=%v ops=%d (%d/s) errors=%d goroutines=%d heap=%.1fMiB rss=%s clients=%d %s",
				time.Since(start).Round(time.Second), ops, (ops-prevOps)/int64(soakReport/time.Second),
				st.errs.Load(), s.goroutines, float64(s.heap)/(1<<20), s.rss, s.clients, s.slaves)
			prevOps = ops
		case <-kill.C:
			restartSlave(t, srv, slaves[kills%2], kills)
			kills++
		case <-end.C:
			running = false
		}
	}
	stop()
	wg.Wait()
	ran := time.Since(start)
	t.Logf("load stopped after %v: %d operations, %d errors, %d slave restarts", ran.Round(time.Second),
		st.ops.Load(), st.errs.Load(), kills)
	for _, e := range st.shown() {
		t.Logf("error: %s", e)
	}

	// The slaves converge to the master exactly.
	convStart := time.Now()
	redistest.WaitConverged(t, soakSettle, master, slaves...)
	t.Logf("slaves equal to the master %v after the load stopped", time.Since(convStart).Round(time.Millisecond))

	// Every acknowledged INCR counted once.
	mc := master.Dial(t)
	var sure, unsure int
	for _, c := range clients {
		got, err := redis.Int64(mc.Do("GET", c.counterKey()))
		if err != nil && !errors.Is(err, redis.ErrNil) {
			t.Fatalf("GET %s on the master: %v", c.counterKey(), err)
		}
		switch {
		case c.uncertain > 0 && got >= c.incrs && got <= c.incrs+c.uncertain:
			unsure++
		case got != c.incrs:
			t.Errorf("%s: the master counts %d, client %d had %d INCRs acknowledged (and %d unanswered)",
				c.counterKey(), got, c.id, c.incrs, c.uncertain)
		default:
			sure++
		}
	}
	t.Logf("counters: %d exact, %d within the INCRs left unanswered by an error", sure, unsure)

	// Goroutines and heap did not grow without bound: compare the first line with
	// the last, under the same load, and with the proxy idle now.
	idle := sample(checker)
	t.Logf("first (%v): goroutines=%d heap=%.1fMiB rss=%s", first.elapsed(start), first.goroutines, float64(first.heap)/(1<<20), first.rss)
	t.Logf("last  (%v): goroutines=%d heap=%.1fMiB rss=%s", last.elapsed(start), last.goroutines, float64(last.heap)/(1<<20), last.rss)
	t.Logf("idle  (%v): goroutines=%d heap=%.1fMiB rss=%s clients=%d", idle.elapsed(start), idle.goroutines, float64(idle.heap)/(1<<20), idle.rss, idle.clients)
	if last.goroutines > first.goroutines+soakClients {
		t.Errorf("goroutines grew from %d to %d under the same load", first.goroutines, last.goroutines)
	}
	if last.heap > 2*first.heap+16<<20 {
		t.Errorf("heap grew from %.1f MiB to %.1f MiB under the same load", float64(first.heap)/(1<<20), float64(last.heap)/(1<<20))
	}
}

// restartSlave stops slave (a crash when n is even, a shutdown when odd), waits
// until the proxy took it out of the read set, and starts it again, empty.
func restartSlave(t *testing.T, srv *proxy.Server, slave *redistest.Server, n int) {
	t.Helper()
	how := "shut down"
	if n%2 == 0 {
		how = "killed"
		slave.Kill(t)
	} else {
		slave.Stop(t)
	}
	start := time.Now()
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		for _, a := range srv.Replicator().Appliers() {
			if a.Addr() == slave.Addr && a.Online() {
				return fmt.Errorf("the proxy still has slave %s online", slave.Addr)
			}
		}
		return nil
	})
	noticed := time.Since(start)
	slave.Restart(t)
	t.Logf("slave %s %s: out of the read set after %v, restarted empty", slave.Addr, how, noticed.Round(time.Millisecond))
}

// soakSample is one progress line's figures, from the proxy's INFO after a
// collection (the proxy runs in the test binary: its heap is the binary's).
type soakSample struct {
	at         time.Time
	goroutines int
	heap       int64
	rss        string
	clients    int
	slaves     string // name=state,lag=N,resyncs=N ...
}

func (s soakSample) elapsed(start time.Time) time.Duration {
	return s.at.Sub(start).Round(time.Second)
}

func sample(checker *redistest.RawConn) soakSample {
	runtime.GC()
	info := string(checker.Do("INFO", "clients"))
	s := soakSample{at: time.Now(), rss: processRSS()}
	s.goroutines, _ = strconv.Atoi(infoValue(info, "goroutines"))
	s.heap, _ = strconv.ParseInt(infoValue(info, "heap_alloc_bytes"), 10, 64)
	s.clients, _ = strconv.Atoi(infoValue(info, "connected_clients"))
	var states []string
	for i := 0; ; i++ {
		line := infoValue(info, "slave"+strconv.Itoa(i))
		if line == "" {
			break
		}
		var name, state, lag, resyncs string
		for _, kv := range strings.Split(line, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "name":
				name = v
			case "state":
				state = v
			case "lag_messages":
				lag = v
			case "resyncs":
				resyncs = v
			}
		}
		states = append(states, name+"="+state+",lag="+lag+",resyncs="+resyncs)
	}
	s.slaves = strings.Join(states, " ")
	return s
}

// processRSS is the test binary's resident set size, from /proc (Linux).
func processRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "n/a"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1fMiB", float64(kb)/1024)
			}
		}
	}
	return "n/a"
}

// soakStats are the load's counters, shared by the clients.
type soakStats struct {
	ops, errs atomic.Int64
	mu        sync.Mutex
	first     []string // the first errors, in full
}

func (st *soakStats) failed(c int, what string, err error) {
	if st.errs.Add(1) <= soakShowErrs {
		st.mu.Lock()
		st.first = append(st.first, fmt.Sprintf("client %d, %s: %v", c, what, err))
		st.mu.Unlock()
	}
}

func (st *soakStats) shown() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.first...)
}

// soakClient is one client of the load. Its keys are its own, so that it knows
// what each GET must return (read-your-writes) and how many INCRs its counter
// must hold.
type soakClient struct {
	id        int
	addr      string
	stats     *soakStats
	conn      redis.Conn
	rng       *rand.Rand
	values    map[string]string // key -> the value last written and acknowledged
	incrs     int64             // INCRs on counterKey acknowledged
	uncertain int64             // INCRs on counterKey that got no reply
	pushes    int
}

func (c *soakClient) counterKey() string { return "soak:" + strconv.Itoa(c.id) + ":counter" }
func (c *soakClient) key(n int) string   { return "soak:" + strconv.Itoa(c.id) + ":k" + strconv.Itoa(n) }

// run does one round trip per period until ctx ends.
func (c *soakClient) run(ctx context.Context, period time.Duration) {
	c.rng = rand.New(rand.NewPCG(uint64(c.id), 1))
	tick := time.NewTicker(period)
	defer tick.Stop()
	defer func() {
		if c.conn != nil {
			c.conn.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if c.conn == nil {
			conn, err := redis.Dial("tcp", c.addr, redis.DialConnectTimeout(soakTimeout),
				redis.DialReadTimeout(soakTimeout), redis.DialWriteTimeout(soakTimeout))
			if err != nil {
				c.stats.failed(c.id, "connect", err)
				continue
			}
			c.conn = conn
			// Read-your-writes holds within a connection: a new one may read
			// from a slave that has not applied the old one's last writes yet.
			clear(c.values)
		}
		what, n, err := c.step()
		c.stats.ops.Add(int64(n))
		if err != nil {
			c.stats.failed(c.id, what, err)
			if c.conn.Err() != nil {
				c.conn.Close()
				c.conn = nil
			}
		}
	}
}

// step does one operation of the mix; it returns its name, the number of
// commands it sent and the first error (an error reply, or a reply that is not
// what the client's own writes imply).
func (c *soakClient) step() (string, int, error) {
	k := c.key(c.rng.IntN(soakKeys))
	v := strconv.FormatUint(c.rng.Uint64(), 36)
	switch p := c.rng.IntN(100); {
	case p < 25: // SET then GET: read-your-writes
		if err := c.set(k, v); err != nil {
			return "SET", 1, err
		}
		return "GET", 2, c.get(k)
	case p < 45:
		return "GET", 1, c.get(k)
	case p < 60:
		n, err := redis.Int64(c.conn.Do("INCR", c.counterKey()))
		if err != nil {
			c.uncertain++ // it may have been applied (a timeout, a lost connection)
			return "INCR", 1, err
		}
		c.incrs++
		if n != c.incrs {
			return "INCR", 1, fmt.Errorf("INCR %s: %d, want %d", c.counterKey(), n, c.incrs)
		}
		return "INCR", 1, nil
	case p < 70:
		c.pushes++
		list := "soak:" + strconv.Itoa(c.id) + ":list"
		if c.pushes%100 == 0 {
			_, err := c.conn.Do("LTRIM", list, 0, 99)
			return "LTRIM", 1, err
		}
		_, err := redis.Int64(c.conn.Do("LPUSH", list, v))
		return "LPUSH", 1, err
	case p < 90: // a pipeline of SET and GET pairs
		var keys []string
		for j := 0; j < soakPipeline/2; j++ {
			kj := c.key(c.rng.IntN(soakKeys))
			vj := v + "." + strconv.Itoa(j)
			keys = append(keys, kj, vj)
			c.conn.Send("SET", kj, vj)
			c.conn.Send("GET", kj)
		}
		if err := c.conn.Flush(); err != nil {
			return "pipeline", soakPipeline, err
		}
		var first error
		for j := 0; j < len(keys); j += 2 {
			ok, err := redis.String(c.conn.Receive())
			if err == nil && ok != "OK" {
				err = fmt.Errorf("SET: %q", ok)
			}
			if err != nil {
				delete(c.values, keys[j])
			} else {
				c.values[keys[j]] = keys[j+1]
			}
			got, gerr := redis.String(c.conn.Receive())
			if err == nil && gerr == nil && got != keys[j+1] {
				gerr = fmt.Errorf("GET %s after SET in the pipeline: %q, want %q", keys[j], got, keys[j+1])
			}
			if first == nil {
				first = errors.Join(err, gerr)
			}
		}
		return "pipeline", soakPipeline, first
	default: // a transaction
		c.conn.Send("MULTI")
		c.conn.Send("SET", k, v)
		c.conn.Send("INCR", c.counterKey())
		c.conn.Send("GET", k)
		reply, err := redis.Values(c.conn.Do("EXEC"))
		if err != nil || len(reply) != 3 {
			delete(c.values, k)
			c.uncertain++
			return "MULTI", 5, fmt.Errorf("EXEC: %v, %v", reply, err)
		}
		c.values[k] = v
		c.incrs++
		if got, _ := redis.String(reply[2], nil); got != v {
			return "MULTI", 5, fmt.Errorf("GET %s in the transaction: %q, want %q", k, got, v)
		}
		return "MULTI", 5, nil
	}
}

func (c *soakClient) set(k, v string) error {
	ok, err := redis.String(c.conn.Do("SET", k, v))
	if err == nil && ok != "OK" {
		err = fmt.Errorf("SET: %q", ok)
	}
	if err != nil {
		delete(c.values, k) // its value is not known any more
		return err
	}
	c.values[k] = v
	return nil
}

// get checks that GET returns the client's last acknowledged write of k.
func (c *soakClient) get(k string) error {
	got, err := redis.String(c.conn.Do("GET", k))
	if errors.Is(err, redis.ErrNil) {
		got, err = "", nil
	}
	if err != nil {
		return err
	}
	if want, ok := c.values[k]; ok && got != want {
		return fmt.Errorf("GET %s: %q, want %q (read-your-writes)", k, got, want)
	}
	return nil
}
