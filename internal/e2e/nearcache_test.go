package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/history"
	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

const nearWait = 10 * time.Second // for a cached value to be served, or dropped

// nearSetup is a master, two slaves, proxy A with the near cache and proxy B
// without.
type nearSetup struct {
	master *redistest.Server
	slaves []*redistest.Server
	a, b   redis.Conn
	srvA   *proxy.Server
}

// startNear starts the servers and the proxies; adjust changes A's config
// (after --near-cache 1mb).
func startNear(t *testing.T, adjust func(*proxy.Config)) *nearSetup {
	t.Helper()
	servers := redistest.StartN(t, 3)
	ns := &nearSetup{master: servers[0], slaves: servers[1:]}
	addrA, srvA := startProxyWith(t, func(c *proxy.Config) {
		c.NearCache = 1 << 20
		c.HealthInterval = time.Minute // no position checks moving the slaves' commandstats
		if adjust != nil {
			adjust(c)
		}
	}, ns.master, ns.slaves...)
	addrB, _ := startProxy(t, ns.master, ns.slaves...)
	ns.srvA = srvA
	ns.a, ns.b = dialProxy(t, addrA), dialProxy(t, addrB)
	return ns
}

func dialProxy(t *testing.T, addr string) redis.Conn {
	t.Helper()
	c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(5*time.Second), redis.DialWriteTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// nearStat returns a near_cache_ field of c's INFO.
func nearStat(t *testing.T, c redis.Conn, field string) int64 {
	t.Helper()
	info, err := redis.String(c.Do("INFO"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "near_cache_"+field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("INFO has no near_cache_%s", field)
	return 0
}

// slaveGets sums the GET calls of the slaves' commandstats.
func slaveGets(t *testing.T, slaves []*redistest.Server) (n int64) {
	t.Helper()
	for _, s := range slaves {
		info, err := redis.String(s.Dial(t).Do("INFO", "commandstats"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "cmdstat_get:calls="); ok {
				calls, _ := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
				n += calls
			}
		}
	}
	return n
}

// get is GET key on c, "(nil)" for a missing key.
func get(t *testing.T, c redis.Conn, key string) string {
	t.Helper()
	v, err := redis.String(c.Do("GET", key))
	if err == redis.ErrNil {
		return "(nil)"
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

// waitHit GETs key on A until it answers want from the near cache.
func (ns *nearSetup) waitHit(t *testing.T, key, want string) {
	t.Helper()
	redistest.CheckFor(t, nearWait, poll, func() error {
		before := nearStat(t, ns.a, "hits")
		if v := get(t, ns.a, key); v != want {
			return fmt.Errorf("GET %s = %s, want %s", key, v, want)
		}
		if nearStat(t, ns.a, "hits") == before {
			return fmt.Errorf("GET %s was not a hit", key)
		}
		return nil
	})
}

// waitValue GETs key on A until it answers want, then checks that it never
// answers old again.
func (ns *nearSetup) waitValue(t *testing.T, key, want, old string) {
	t.Helper()
	redistest.CheckFor(t, nearWait, poll, func() error {
		if v := get(t, ns.a, key); v != want {
			return fmt.Errorf("GET %s = %s, want %s", key, v, want)
		}
		return nil
	})
	for i := 0; i < 50; i++ {
		if v := get(t, ns.a, key); v == old {
			t.Fatalf("GET %s = %s again after %s", key, old, want)
		}
	}
}

// TestNearCacheHits: repeated GETs are served from the proxy's memory, the
// slaves see none of them.
func TestNearCacheHits(t *testing.T) {
	t.Parallel()
	ns := startNear(t, nil)
	if _, err := ns.a.Do("SET", "k", "v1"); err != nil {
		t.Fatal(err)
	}
	ns.waitHit(t, "k", "v1")
	gets, hits := slaveGets(t, ns.slaves), nearStat(t, ns.a, "hits")
	for i := 0; i < 200; i++ {
		ns.a.Send("GET", "k")
	}
	ns.a.Flush()
	for i := 0; i < 200; i++ {
		if v, err := redis.String(ns.a.Receive()); err != nil || v != "v1" {
			t.Fatalf("GET k = %q, %v", v, err)
		}
	}
	if d := slaveGets(t, ns.slaves) - gets; d != 0 {
		t.Errorf("the slaves served %d GETs, want 0", d)
	}
	if d := nearStat(t, ns.a, "hits") - hits; d != 200 {
		t.Errorf("%d hits, want 200", d)
	}
	if n := nearStat(t, ns.a, "entries"); n != 1 {
		t.Errorf("%d entries, want 1", n)
	}
	if b := nearStat(t, ns.a, "bytes"); b <= 0 {
		t.Errorf("near_cache_bytes %d", b)
	}
	fams := scrape(t, startAdmin(t, ns.srvA))
	if v, ok := metric(fams, "syncproxy_near_cache_hits_total"); !ok || int64(v) != nearStat(t, ns.a, "hits") {
		t.Errorf("/metrics syncproxy_near_cache_hits_total = %v (%v), want INFO's", v, ok)
	}
	for _, name := range []string{"syncproxy_near_cache_misses_total", "syncproxy_near_cache_invalidations_total",
		"syncproxy_near_cache_evictions_total", "syncproxy_near_cache_bytes", "syncproxy_near_cache_entries"} {
		if _, ok := metric(fams, name); !ok {
			t.Errorf("%s missing from /metrics", name)
		}
	}
	redistest.WaitConverged(t, convergeTimeout, ns.master, ns.slaves...)
}

// TestNearCacheInvalidation: a write through another proxy, a Lua script, an
// expiry, FLUSHALL and the client's own write each replace the cached value.
func TestNearCacheInvalidation(t *testing.T) {
	t.Parallel()
	ns := startNear(t, nil)
	for i, v := range []struct {
		name  string
		write func() error
		want  string
	}{
		{"other-proxy", func() error { _, err := ns.b.Do("SET", "k", "w0"); return err }, "w0"},
		{"script", func() error {
			_, err := ns.b.Do("EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", 1, "k", "w1")
			return err
		}, "w1"},
		{"expire", func() error { _, err := ns.b.Do("PEXPIRE", "k", 300); return err }, "(nil)"},
		{"flushall", func() error { _, err := ns.b.Do("FLUSHALL"); return err }, "(nil)"},
		{"own-write", func() error { _, err := ns.a.Do("SET", "k", "w4"); return err }, "w4"},
	} {
		t.Run(v.name, func(t *testing.T) {
			old := "v" + strconv.Itoa(i)
			if _, err := ns.b.Do("SET", "k", old); err != nil {
				t.Fatal(err)
			}
			ns.waitHit(t, "k", old)
			if err := v.write(); err != nil {
				t.Fatal(err)
			}
			if v.name == "own-write" {
				if got := get(t, ns.a, "k"); got != v.want { // read-your-writes, at once
					t.Fatalf("GET k after SET = %s, want %s", got, v.want)
				}
			}
			ns.waitValue(t, "k", v.want, old)
		})
	}
	if n := nearStat(t, ns.a, "invalidations"); n < 4 {
		t.Errorf("%d invalidations, want at least 4", n)
	}
	redistest.WaitConverged(t, convergeTimeout, ns.master, ns.slaves...)
}

// TestNearCacheExpiringKey: a key with an expiry is not cached (it changes on
// the slaves without a message), so it is never served after it expired.
func TestNearCacheExpiringKey(t *testing.T) {
	t.Parallel()
	ns := startNear(t, nil)
	if _, err := ns.a.Do("SET", "t", "x", "PX", 400); err != nil {
		t.Fatal(err)
	}
	redistest.CheckFor(t, nearWait, poll, func() error {
		if v := get(t, ns.a, "t"); v != "(nil)" {
			var onSlaves []string
			for _, s := range ns.slaves {
				ttl, _ := redis.Int64(s.Dial(t).Do("PTTL", "t"))
				onSlaves = append(onSlaves, strconv.FormatInt(ttl, 10))
			}
			return fmt.Errorf("GET t = %s (%d hits; PTTL on the slaves %v)", v, nearStat(t, ns.a, "hits"), onSlaves)
		}
		return nil
	})
	if n := nearStat(t, ns.a, "hits"); n != 0 {
		t.Errorf("%d hits of a key with an expiry, want 0", n)
	}
	for i := 0; i < 50; i++ {
		if v := get(t, ns.a, "t"); v != "(nil)" {
			t.Fatalf("GET t = %s after it expired", v)
		}
	}
}

// TestNearCacheLRU: the cache stays within its size, dropping the least
// recently used entries.
func TestNearCacheLRU(t *testing.T) {
	t.Parallel()
	const size = 16 << 10
	ns := startNear(t, func(c *proxy.Config) { c.NearCache = size })
	val := strings.Repeat("x", 200)
	for i := 0; i < 100; i++ {
		if _, err := ns.a.Do("SET", "key"+strconv.Itoa(i), val); err != nil {
			t.Fatal(err)
		}
	}
	ns.waitHit(t, "key0", val)
	for i := 1; i < 100; i++ {
		ns.waitHit(t, "key"+strconv.Itoa(i), val)
	}
	if b := nearStat(t, ns.a, "bytes"); b > size || b < size/2 {
		t.Errorf("near_cache_bytes %d, want at most %d and about as much", b, size)
	}
	if e := nearStat(t, ns.a, "evictions"); e == 0 {
		t.Error("no evictions")
	}
	hits := nearStat(t, ns.a, "hits")
	get(t, ns.a, "key99") // the most recently used
	if d := nearStat(t, ns.a, "hits") - hits; d != 1 {
		t.Errorf("GET key99: %d hits, want 1", d)
	}
	get(t, ns.a, "key0") // the least recently used: evicted
	if d := nearStat(t, ns.a, "hits") - hits; d != 1 {
		t.Errorf("GET key0 was a hit, want evicted")
	}
}

// TestNearCacheLargeValue: values over --near-cache-max-value are not cached.
func TestNearCacheLargeValue(t *testing.T) {
	t.Parallel()
	ns := startNear(t, func(c *proxy.Config) { c.NearCacheMaxValue = 1024 })
	big := strings.Repeat("b", 1025)
	if _, err := ns.a.Do("SET", "big", big); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if v := get(t, ns.a, "big"); v != big {
			t.Fatalf("GET big: %d bytes", len(v))
		}
	}
	if n := nearStat(t, ns.a, "hits"); n != 0 || nearStat(t, ns.a, "entries") != 0 {
		t.Errorf("a value over the limit was cached (%d hits)", n)
	}
	if _, err := ns.a.Do("SET", "small", big[:1024]); err != nil {
		t.Fatal(err)
	}
	ns.waitHit(t, "small", big[:1024])
}

// TestNearCacheNeverStale: a writer INCRs keys through proxy B while readers
// GET them through proxy A, which caches: no reader sees a key's value go
// back, and after its own INCR a reader reads at least what it wrote.
func TestNearCacheNeverStale(t *testing.T) {
	t.Parallel()
	ns := startNear(t, nil)
	const keys, readers = 8, 4
	for k := 0; k < keys; k++ {
		if _, err := ns.b.Do("SET", "n"+strconv.Itoa(k), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The readers' connections are new and on the other proxy: at the
	// session level they may read a slave that has not applied the SETs yet
	// (nil), so start them once every slave has.
	redistest.WaitConverged(t, convergeTimeout, ns.master, ns.slaves...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, readers+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := ns.b.Do("INCR", "n"+strconv.Itoa(rand.Intn(keys))); err != nil {
				errs <- err
				return
			}
		}
	}()
	addrA := ns.srvA.Addr().String()
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			errs <- neverStaleReader(ctx, addrA, keys, rand.New(rand.NewSource(int64(r))))
		}(r)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("near cache: %d hits, %d misses, %d invalidations", nearStat(t, ns.a, "hits"),
		nearStat(t, ns.a, "misses"), nearStat(t, ns.a, "invalidations"))
	if nearStat(t, ns.a, "hits") == 0 {
		t.Error("no hits")
	}
	redistest.WaitConverged(t, convergeTimeout, ns.master, ns.slaves...)
	for k := 0; k < keys; k++ {
		key := "n" + strconv.Itoa(k)
		want, _ := redis.String(ns.master.Dial(t).Do("GET", key))
		ns.waitValue(t, key, want, "")
	}
}

// neverStaleReader GETs keys through addr until ctx ends, INCRing now and then.
func neverStaleReader(ctx context.Context, addr string, keys int, rnd *rand.Rand) error {
	c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	seen := make([]int64, keys)
	for ctx.Err() == nil {
		k := rnd.Intn(keys)
		key := "n" + strconv.Itoa(k)
		if rnd.Intn(10) == 0 {
			n, err := redis.Int64(c.Do("INCR", key))
			if err != nil {
				return err
			}
			seen[k] = n
		}
		n, err := redis.Int64(c.Do("GET", key))
		if err == redis.ErrNil {
			return fmt.Errorf("GET %s = nil after %d was seen", key, seen[k])
		}
		if err != nil {
			return err
		}
		if n < seen[k] {
			return fmt.Errorf("GET %s = %d after %d was seen", key, n, seen[k])
		}
		seen[k] = n
	}
	return nil
}

// TestNearCacheHistory is TestHistory with the near cache on both proxies: 0
// violations at the default level and, with pooled clients, at global.
func TestNearCacheHistory(t *testing.T) {
	t.Parallel()
	hs := startHistory(t, func(c *proxy.Config) { c.NearCache = 1 << 20 })
	for _, v := range []struct {
		name, level string
		pooled      bool
		checks      history.Checks
	}{
		{"default", "", false, history.Session},
		{"global", "global", true, history.GlobalLevel},
	} {
		t.Run(v.name, func(t *testing.T) {
			hs.requireLevel(t, v.level)
			hs.begin(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			st := hs.run(ctx, v.level, v.pooled)
			for _, e := range st.errs.list() {
				t.Errorf("client error: %s", e)
			}
			hs.check(t, v.checks)
			var hits int64
			for _, addr := range hs.addrs {
				hits += nearStat(t, dialProxy(t, addr), "hits")
			}
			t.Logf("near cache hits: %d", hits)
			redistest.WaitConverged(t, convergeTimeout, hs.master, hs.slaves...)
		})
	}
}

// TestNearCacheColdStart: a proxy started in front of data written before it,
// with no write since, caches from its start (the stream is followed from the
// master's position when the proxy subscribes, not from the first write it sees).
func TestNearCacheColdStart(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addrB, _ := startProxy(t, master, slaves...)
	b := dialProxy(t, addrB)
	if _, err := b.Do("SET", "cold", "v"); err != nil {
		t.Fatal(err)
	}
	redistest.WaitConverged(t, nearWait, master, slaves...)
	addrA, _ := startProxyWith(t, func(c *proxy.Config) { c.NearCache = 1 << 20 }, master, slaves...)
	ns := &nearSetup{master: master, slaves: slaves, a: dialProxy(t, addrA), b: b}
	ns.waitHit(t, "cold", "v")
}
