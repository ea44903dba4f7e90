package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// trackConn is a tracking client's connection: it sets the invalidations
// (RESP3 pushes, __redis__:invalidate messages) apart from the replies, in
// the order they came.
type trackConn struct {
	*redistest.RawConn
	t      *testing.T
	invals []string        // invalidations read and not taken: "k1 k2", or "<null>"
	read   map[string]bool // the arguments of the commands sent (keys read among them)
}

func dialTrack(t *testing.T, addr string, resp3 bool) *trackConn {
	t.Helper()
	c := &trackConn{RawConn: redistest.DialRaw(t, addr), t: t, read: map[string]bool{}}
	if resp3 {
		hello3(t, c.RawConn)
	}
	return c
}

// Invalidation frames' heads, as Redis sends them.
var (
	pushHead = []byte(">2\r\n$10\r\ninvalidate\r\n")
	msgHead  = []byte("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n")
)

// invalKeys returns the keys of an invalidation frame ("<null>" for a null
// one), and whether f is one.
func invalKeys(t testing.TB, f []byte) (string, bool) {
	t.Helper()
	var rest []byte
	switch {
	case bytes.HasPrefix(f, pushHead):
		rest = f[len(pushHead):]
	case bytes.HasPrefix(f, msgHead):
		rest = f[len(msgHead):]
	default:
		return "", false
	}
	if string(rest) == "_\r\n" || string(rest) == "$-1\r\n" {
		return "<null>", true
	}
	r := bufio.NewReader(bytes.NewReader(rest))
	var keys []string
	line, _ := r.ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if line[0] != '*' || err != nil {
		t.Fatalf("malformed invalidation %q", f)
	}
	for i := 0; i < n; i++ {
		r.ReadString('\n')
		k, _ := r.ReadString('\n')
		keys = append(keys, strings.TrimSuffix(k, "\r\n"))
	}
	return strings.Join(keys, " "), true
}

// do sends a command and returns its reply; invalidations read before it are
// kept, in order.
func (c *trackConn) do(args ...string) string {
	c.t.Helper()
	for _, a := range args[1:] {
		c.read[a] = true
	}
	c.Send(args...)
	c.Flush()
	return c.reply()
}

func (c *trackConn) reply() string {
	c.t.Helper()
	for {
		f := c.Read()
		if keys, ok := invalKeys(c.t, f); ok {
			c.invals = append(c.invals, keys)
			continue
		}
		return string(f)
	}
}

// next returns the next invalidation, waiting for it (it fails the test after
// the connection's timeout).
func (c *trackConn) next() string {
	c.t.Helper()
	if len(c.invals) == 0 {
		f := c.Read()
		keys, ok := invalKeys(c.t, f)
		if !ok {
			c.t.Fatalf("got %q, want an invalidation", f)
		}
		c.invals = append(c.invals, keys)
	}
	k := c.invals[0]
	c.invals = c.invals[1:]
	return k
}

// expect takes the invalidations up to one of keys, which must come. Those
// before it may only be of keys the client read: the proxy invalidates a key
// read from a slave behind a recent write of it after the reply, whether or
// not the reply showed the write.
func (c *trackConn) expect(keys string) {
	c.t.Helper()
	for {
		got := c.next()
		if got == keys {
			return
		}
		if !c.read[got] {
			c.t.Fatalf("invalidation %q, want %q (then %q)", got, keys, c.invals)
		}
	}
}

// invalidated reports whether an invalidation read and not taken is of key (a
// BCAST one may carry several keys).
func (c *trackConn) invalidated(key string) bool {
	for _, keys := range c.invals {
		if slices.Contains(strings.Fields(keys), key) {
			return true
		}
	}
	return false
}

// noneLeft checks that the invalidations read and not taken are only of keys
// the client read, none of them in not.
func (c *trackConn) noneLeft(not ...string) {
	c.t.Helper()
	for _, k := range c.invals {
		if !c.read[k] || slices.Contains(not, k) {
			c.t.Fatalf("invalidations left: %q", c.invals)
		}
	}
}

// warmTracking makes sure the proxy at addr follows the sync stream for
// tracking clients: until it does, their replies come after a null
// invalidation. c tracks (and is given the null invalidations meanwhile).
func warmTracking(t *testing.T, addr string, c *trackConn) {
	t.Helper()
	w := redistest.DialRaw(t, addr)
	redistest.CheckFor(t, 10*time.Second, poll, func() error {
		w.Do("SET", "tracking:warm", "1")
		c.invals = nil
		c.do("PING")
		c.do("GET", "tracking:warm:unwritten")
		c.do("PING")
		if len(c.invals) > 0 {
			return fmt.Errorf("invalidations %q: the stream is not followed yet, or the slaves are behind where the proxy started following it", c.invals)
		}
		return nil
	})
	c.invals = nil
}

// TestTrackingDefaultRESP3 tracks keys read by a RESP3 client: a write
// through the proxy, through another proxy of the same master, and by a Lua
// script invalidate them once, with a push, as Redis pushes them.
func TestTrackingDefaultRESP3(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	addrB, _ := startProxy(t, master, slaves...)
	c := dialTrack(t, addr, true)
	if got := c.do("CLIENT", "TRACKING", "on"); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING on: %q", got)
	}
	warmTracking(t, addr, c)
	w := redistest.DialRaw(t, addr)
	wB := redistest.DialRaw(t, addrB)

	c.do("GET", "k1")
	mustReply(t, w, "+OK\r\n", "SET", "k1", "v")
	c.expect("k1")
	mustReply(t, w, "+OK\r\n", "SET", "k1", "w") // no longer tracked: no invalidation

	c.do("MGET", "k2", "k3")
	mustReply(t, wB, "+OK\r\n", "SET", "k2", "v") // through the other proxy
	c.expect("k2")
	mustReply(t, w, "+OK\r\n", "EVAL", "return redis.call('set', KEYS[1], 'x')", "1", "k3")
	c.expect("k3")
	c.noneLeft()
	if got := c.do("GET", "k2"); got != "$1\r\nv\r\n" {
		t.Fatalf("GET k2: %q", got)
	}
	mustReply(t, w, ":1\r\n", "DEL", "k2")
	c.expect("k2")
	c.do("EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k4") // a script's declared keys
	mustReply(t, w, "+OK\r\n", "SET", "k4", "v")
	c.expect("k4")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingBcastRESP2Redirect: a RESP2 client tracking in BCAST mode with
// prefixes and NOLOOP, redirected to a client subscribed to __redis__:invalidate, which
// gets the keys written under the prefixes as Redis sends them, and a null
// invalidation on FLUSHALL.
func TestTrackingBcastRESP2Redirect(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	sub := dialTrack(t, addr, false)
	id := strings.TrimSpace(sub.do("CLIENT", "ID")[1:])
	if got := sub.do("SUBSCRIBE", "__redis__:invalidate"); !strings.Contains(got, "__redis__:invalidate") {
		t.Fatalf("SUBSCRIBE: %q", got)
	}
	c := dialTrack(t, addr, false)
	if got := c.do("CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST", "PREFIX", "user:", "PREFIX", "cfg:", "NOLOOP"); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING: %q", got)
	}
	if got := c.do("CLIENT", "GETREDIR"); got != ":"+id+"\r\n" {
		t.Fatalf("CLIENT GETREDIR: %q, want %s", got, id)
	}
	w := redistest.DialRaw(t, addr)
	warmTracking(t, addr, sub) // (sub is given the nulls)
	mustReply(t, w, "+OK\r\n", "SET", "other", "1")
	c.do("SET", "user:mine", "1") // NOLOOP: not redirected
	mustReply(t, w, "+OK\r\n", "SET", "user:1", "1")
	sub.expect("user:1")
	mustReply(t, w, "+OK\r\n", "MSET", "cfg:a", "1", "nope", "2")
	sub.expect("cfg:a")
	mustReply(t, w, "+OK\r\n", "FLUSHALL")
	sub.expect("<null>")
	sub.noneLeft()
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingFlushAllNull: FLUSHALL and FLUSHDB give a RESP3 tracking client
// a null invalidation (>2 invalidate _), as Redis.
func TestTrackingFlushAllNull(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := dialTrack(t, addr, true)
	c.do("CLIENT", "TRACKING", "on")
	warmTracking(t, addr, c)
	w := redistest.DialRaw(t, addr)
	c.do("GET", "a")
	mustReply(t, w, "+OK\r\n", "FLUSHALL")
	c.expect("<null>")
	c.do("GET", "a")
	mustReply(t, w, "+OK\r\n", "SELECT", "3")
	mustReply(t, w, "+OK\r\n", "FLUSHDB")
	c.expect("<null>")
	redistest.WaitConverged(t, convergeTimeout, servers[0], servers[1])
}

// TestTrackingNoloop: a NOLOOP client is not told of its own writes, and is
// of the others'.
func TestTrackingNoloop(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := dialTrack(t, addr, true)
	c.do("CLIENT", "TRACKING", "on", "NOLOOP")
	warmTracking(t, addr, c)
	w := redistest.DialRaw(t, addr)
	c.do("MGET", "mine", "theirs")
	c.do("SET", "mine", "1")                         // its own: no invalidation
	mustReply(t, w, "+OK\r\n", "SET", "theirs", "1") // then another client's
	c.expect("theirs")
	c.noneLeft("mine")
}

// TestTrackingOptin: in OPTIN mode only the command after CLIENT CACHING YES
// tracks its keys.
func TestTrackingOptin(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := dialTrack(t, addr, true)
	c.do("CLIENT", "TRACKING", "on", "OPTIN")
	warmTracking(t, addr, c) // (reads nothing tracked)
	w := redistest.DialRaw(t, addr)
	c.do("GET", "a")
	c.do("CLIENT", "CACHING", "yes")
	c.do("GET", "b")
	c.do("GET", "c")
	mustReply(t, w, "+OK\r\n", "MSET", "a", "1", "c", "1")
	mustReply(t, w, "+OK\r\n", "SET", "b", "1")
	c.expect("b")
	c.noneLeft("a", "c")
}

// TestTrackingTableMaxKeys: beyond tracking-table-max-keys, keys are evicted
// from the table with their invalidation, as Redis does.
func TestTrackingTableMaxKeys(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.TrackingMaxKeys = 2 }, servers[0], servers[1])
	c := dialTrack(t, addr, true)
	c.do("CLIENT", "TRACKING", "on")
	warmTracking(t, addr, c)
	c.do("MGET", "m1", "m2", "m3")
	switch got := c.next(); got {
	case "m1", "m2", "m3", "tracking:warm:unwritten":
	default:
		t.Fatalf("evicted %q, want one of the keys read", got)
	}
}

// TestTrackingOrdering: a tracking client reads k, another client writes k,
// the first reads k again: when that reply shows the write, the write's
// invalidation came before it. Many times, at global consistency (the second
// read always sees the write) and at session consistency (it may not).
func TestTrackingOrdering(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	for _, level := range []string{"global", "session"} {
		c := dialTrack(t, addr, true)
		c.do("CLIENT", "TRACKING", "on")
		c.do("CLIENT", "CONSISTENCY", level)
		warmTracking(t, addr, c)
		w := redistest.DialRaw(t, addr)
		shown := 0
		for i := 0; i < 300; i++ {
			k, v := "ord:"+strconv.Itoa(i), level+strconv.Itoa(i)
			c.do("GET", k)
			mustReply(t, w, "+OK\r\n", "SET", k, v)
			c.invals = nil
			got := c.do("GET", k)
			if got != string(bulk(v)) {
				if level == "global" {
					t.Fatalf("global read %d: %q, want %q", i, got, v)
				}
				continue // its invalidation may come later
			}
			shown++
			// (The invalidation may come twice: the write may have reached
			// the stream while the read was in flight.)
			if !slices.Contains(c.invals, k) {
				t.Fatalf("%s round %d: the reply showing the write came after invalidations %q, want %s", level, i, c.invals, k)
			}
		}
		t.Logf("%s: %d of 300 second reads showed the write", level, shown)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingClientErrors sends the tracking subcommands, right and wrong,
// to Redis and through the proxy, in RESP2 and RESP3: same replies.
func TestTrackingClientErrors(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t)
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	table := [][]string{
		cmd("CLIENT TRACKINGINFO"), cmd("CLIENT GETREDIR"), cmd("CLIENT CACHING yes"),
		cmd("CLIENT TRACKING on PREFIX a"), cmd("CLIENT TRACKING on BCAST OPTIN"),
		cmd("CLIENT TRACKING on OPTIN OPTOUT"), cmd("CLIENT TRACKING on REDIRECT 987654"),
		cmd("CLIENT TRACKING on REDIRECT abc"), cmd("CLIENT TRACKING on foo"), cmd("CLIENT TRACKING maybe"),
		cmd("CLIENT TRACKING on PREFIX"), cmd("CLIENT TRACKING"), cmd("CLIENT CACHING"),
		cmd("CLIENT TRACKING on BCAST PREFIX a PREFIX ab"),
		cmd("CLIENT TRACKING on OPTIN"), cmd("CLIENT CACHING maybe"), cmd("CLIENT CACHING no"),
		cmd("CLIENT CACHING yes"), cmd("CLIENT TRACKINGINFO"), cmd("GET x"), cmd("CLIENT TRACKINGINFO"),
		cmd("CLIENT TRACKING on OPTOUT"), cmd("CLIENT TRACKING on BCAST"), cmd("CLIENT GETREDIR"),
		cmd("CLIENT TRACKING off"), cmd("CLIENT TRACKINGINFO"), cmd("CLIENT TRACKING on BCAST PREFIX a"),
		cmd("CLIENT TRACKING on BCAST PREFIX b NOLOOP"), cmd("CLIENT TRACKING on BCAST PREFIX a"),
		cmd("CLIENT TRACKINGINFO"), cmd("CLIENT TRACKING on"), cmd("CLIENT TRACKING off"),
		cmd("CLIENT TRACKING on OPTOUT NOLOOP"), cmd("CLIENT CACHING yes"), cmd("CLIENT CACHING no"),
		cmd("CLIENT TRACKINGINFO"), cmd("RESET"), cmd("CLIENT TRACKINGINFO"),
	}
	warmTracking(t, addr, trackingOn(t, addr)) // no null invalidation from here on
	for _, resp3 := range []bool{false, true} {
		direct, through := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
		if resp3 {
			hello3(t, direct)
			hello3(t, through)
		}
		for _, args := range table {
			want, got := direct.Do(args...), through.Do(args...)
			if !bytes.Equal(want, got) {
				t.Errorf("resp3=%v %s: proxy %s, Redis %s", resp3, showCmd(args), showReply(got), showReply(want))
			}
		}
	}
	// CLIENT INFO's flags and redir, as Redis shows them.
	c := redistest.DialRaw(t, addr)
	for _, step := range []struct{ mode, flags, redir string }{
		{"on", " flags=t ", " redir=0 "}, {"off", " flags=N ", " redir=-1 "},
	} {
		mustReply(t, c, "+OK\r\n", "CLIENT", "TRACKING", step.mode)
		info := string(c.Do("CLIENT", "INFO"))
		if !strings.Contains(info, step.flags) || !strings.Contains(info, step.redir) {
			t.Errorf("tracking %s: CLIENT INFO %q, want%s and%s", step.mode, info, step.flags, step.redir)
		}
	}
	mustReply(t, c, "+OK\r\n", "CLIENT", "TRACKING", "on", "BCAST")
	if info := string(c.Do("CLIENT", "INFO")); !strings.Contains(info, " flags=tB ") {
		t.Errorf("BCAST: CLIENT INFO %q, want flags=tB", info)
	}
}

// trackingOn returns a RESP3 client of addr tracking keys.
func trackingOn(t *testing.T, addr string) *trackConn {
	t.Helper()
	c := dialTrack(t, addr, true)
	if got := c.do("CLIENT", "TRACKING", "on"); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING on: %q", got)
	}
	return c
}

// nodeCacheScript runs node-redis v5's client-side cache (RESP3, CLIENT
// TRACKING on) through the proxy: a value read twice is served from the
// cache the second time, and a write by another client, through the proxy,
// invalidates it.
const nodeCacheScript = `
import { createClient, BasicClientSideCache } from 'redis';
const url = process.argv[2];
const cache = new BasicClientSideCache({ maxEntries: 100 });
const c = createClient({ url, RESP: 3, clientSideCache: cache });
const w = createClient({ url });
for (const x of [c, w]) x.on('error', e => { console.error('client error', e.message); process.exit(1); });
await c.connect();
await w.connect();
await w.set('csc', 'v1');
const out = [];
let v;
// (A slave may not have the write yet: the invalidation then follows.)
for (let i = 0; i < 500 && (v = await c.get('csc')) !== 'v1'; i++) await new Promise(r => setTimeout(r, 10));
out.push('first=' + v);
// (A read from a slave behind the write is invalidated after its reply even
// when it showed the write: a later one is served from the cache.)
let hit = false;
for (let i = 0; i < 500 && !hit; i++) {
  const hits = cache.stats().hitCount;
  v = await c.get('csc');
  hit = cache.stats().hitCount > hits;
  if (!hit) await new Promise(r => setTimeout(r, 10));
}
out.push('second=' + v);
out.push('hit=' + hit);
await w.set('csc', 'v2');
for (let i = 0; i < 500 && (v = await c.get('csc')) !== 'v2'; i++) await new Promise(r => setTimeout(r, 10));
out.push('after=' + v);
await c.quit();
await w.quit();
console.log(out.join(' '));
`

// TestTrackingNodeRedisCache: node-redis v5's clientSideCache works through
// the proxy. Skipped without node and npm, or when npm cannot install redis@5.
func TestTrackingNodeRedisCache(t *testing.T) {
	t.Parallel()
	out, master, slaves := runNodeScript(t, "redis@5", "cache.mjs", nodeCacheScript)
	if got, want := strings.TrimSpace(string(out)), "first=v1 second=v1 hit=true after=v2"; got != want {
		t.Fatalf("node-redis client-side cache through the proxy:\n got %s\nwant %s", got, want)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingGoRedisCache: go-redis v9's client-side cache (RESP3, CLIENT
// TRACKING on each connection) works through the proxy: a second read is a
// cache hit, and a write through another client invalidates the entry.
func TestTrackingGoRedisCache(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 3,
		ClientSideCacheConfig: &goredis.ClientSideCacheConfig{MaxEntries: 100}})
	defer c.Close()
	w := goredis.NewClient(&goredis.Options{Addr: addr})
	defer w.Close()
	if err := w.Set(ctx, "gcsc", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// (A slave may not have the write yet: the invalidation then follows.)
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if v, err := c.Get(ctx, "gcsc").Result(); err != nil || v != "v1" {
			return fmt.Errorf("GET: %q %v", v, err)
		}
		return nil
	})
	// (A read from a slave behind the write is invalidated after its reply
	// even when it showed the write: a later one is served from the cache.)
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		hits := c.CSCStats().Hits
		if v, err := c.Get(ctx, "gcsc").Result(); err != nil || v != "v1" {
			t.Fatalf("GET again: %q %v", v, err)
		}
		if st := c.CSCStats(); st.Hits <= hits {
			return fmt.Errorf("no cache hit through the proxy: %+v", st)
		}
		return nil
	})
	if err := w.Set(ctx, "gcsc", "v2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if v, err := c.Get(ctx, "gcsc").Result(); err != nil || v != "v2" {
			return fmt.Errorf("GET after the write: %q %v", v, err)
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingNoStaleCache runs a client-side cache as a client library does
// (a value read is kept until its invalidation comes) against a writer that
// keeps writing the key through another client: the writes reach the stream
// while reads of the key are in flight to slaves that do not show them yet.
// Once the writer stopped, the cache must come to hold its last value: no
// invalidation may be lost to a reply that came after it but showed an older
// value.
func TestTrackingNoStaleCache(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := trackingOn(t, addr)
	c.do("CLIENT", "CONSISTENCY", "eventual")
	warmTracking(t, addr, c)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		w := redistest.DialRaw(t, addr)
		for i := 0; ; i++ {
			select {
			case <-stop:
				w.Do("SET", "stale", "final")
				return
			default:
			}
			w.Do("SET", "stale", strconv.Itoa(i))
		}
	}()
	cache := map[string]string{}
	step := func() {
		var reply string
		_, cached := cache["stale"]
		if cached {
			c.do("PING") // picks up the invalidations sent meanwhile
		} else {
			reply = c.do("GET", "stale")
		}
		for _, k := range c.invals {
			if k == "<null>" {
				clear(cache)
			}
			delete(cache, k)
		}
		c.invals = nil
		if !cached {
			cache["stale"] = reply
		}
	}
	for i := 0; i < 3000; i++ {
		step()
	}
	close(stop)
	<-done
	redistest.CheckFor(t, 5*time.Second, time.Millisecond, func() error {
		step()
		if v := cache["stale"]; v != string(bulk("final")) {
			return fmt.Errorf("the cache holds %q, want \"final\"", v)
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestTrackingStreamLostNull: when the proxy loses the sync stream (here the
// master restarts empty: a new epoch), nothing a client cached can be trusted
// and it gets a null invalidation.
func TestTrackingStreamLostNull(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, _ := startProxy(t, master, slave)
	c := trackingOn(t, addr)
	warmTracking(t, addr, c)
	c.do("GET", "lost")
	master.Restart(t)
	w := redistest.DialRaw(t, addr)
	redistest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if got := w.Do("SET", "after", "1"); string(got) != "+OK\r\n" {
			return fmt.Errorf("SET after the restart: %q", got)
		}
		c.do("PING")
		if !slices.Contains(c.invals, "<null>") {
			return fmt.Errorf("no null invalidation yet (got %q)", c.invals)
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// TestTrackingReadBehindStream: a key written, and given by the stream, before
// a tracking client reads it from a slave that has not applied the write yet
// (CLIENT PAUSE WRITE holds the slave's applier, not the reads): the stale
// reply must be followed by the key's invalidation, though the write reached
// the proxy before the read (default mode: before the key was tracked; BCAST:
// its invalidation came before the read). In both modes.
func TestTrackingReadBehindStream(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, _ := startProxy(t, master, slave)
	seen := dialTrack(t, addr, true) // sees when the stream gave the write
	seen.do("CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "behind:")
	w := redistest.DialRaw(t, addr)
	// FCALL_RO reads on the slave too (a function, replicated to it).
	mustReply(t, w, "$9\r\nbehindlib\r\n", "FUNCTION", "LOAD",
		"#!lua name=behindlib\nredis.register_function{function_name='getk', "+
			"callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}}")
	redistest.WaitConverged(t, convergeTimeout, master, slave)
	reads := [][]string{{"GET"}, {"GET"}, {"FCALL_RO", "getk", "1"}}
	for m, mode := range [][]string{{"on"}, {"on", "BCAST", "PREFIX", "behind:"}, {"on"}} {
		c := dialTrack(t, addr, true)
		c.do(append([]string{"CLIENT", "TRACKING"}, mode...)...)
		c.do("CLIENT", "CONSISTENCY", "eventual") // reads go to the slave, however behind
		warmTracking(t, addr, c)
		stale := 0
		for i := 0; i < 5; i++ {
			k := "behind:" + strconv.Itoa(m) + ":" + strconv.Itoa(i)
			slave.Do(t, "CLIENT", "PAUSE", "2000", "WRITE")
			mustReply(t, w, "+OK\r\n", "SET", k, "v")
			seen.expect(k)
			got := c.do(append(reads[m], k)...)
			slave.Do(t, "CLIENT", "UNPAUSE")
			c.invals = nil
			if got != "_\r\n" {
				continue // the slave had it
			}
			stale++
			redistest.CheckFor(t, 5*time.Second, poll, func() error {
				c.do("PING")
				if !c.invalidated(k) {
					return fmt.Errorf("%v %v: %s read stale, and no invalidation of it followed (got %q)", mode, reads[m], k, c.invals)
				}
				return nil
			})
			c.invals = nil
		}
		if stale == 0 {
			t.Fatalf("%v %v: no read was behind the stream: the test proves nothing", mode, reads[m])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// TestTrackingWithNearCache: on a proxy with the near cache, a tracking
// client's GET of a cached key is tracked, so the next write invalidates it.
func TestTrackingWithNearCache(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.NearCache = 1 << 20 }, master, slaves...)
	ns := &nearSetup{master: master, slaves: slaves, a: dialProxy(t, addr)}
	if _, err := ns.a.Do("SET", "nk", "v1"); err != nil {
		t.Fatal(err)
	}
	ns.waitHit(t, "nk", "v1") // in the near cache now
	c := dialTrack(t, addr, true)
	if got := c.do("CLIENT", "TRACKING", "on"); got != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING on: %q", got)
	}
	warmTracking(t, addr, c)
	if got := c.do("GET", "nk"); got != "$2\r\nv1\r\n" {
		t.Fatalf("GET nk: %q", got)
	}
	w := redistest.DialRaw(t, addr)
	mustReply(t, w, "+OK\r\n", "SET", "nk", "v2")
	c.expect("nk")
}
