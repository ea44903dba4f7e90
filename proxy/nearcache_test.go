package proxy

import (
	"strconv"
	"testing"

	"github.com/syncproxy/syncproxy/router"
)

func newTestNearCache(size, maxValue int64) *nearCache {
	cfg := DefaultConfig()
	cfg.NearCache, cfg.NearCacheMaxValue = ByteSize(size), ByteSize(maxValue)
	return newNearCache(&cfg, newKeyFeed(nil))
}

// hit GETs key in db from c at feed position (epoch, fed).
func hit(c *nearCache, db int, key, epoch string, fed int64) (string, int64, bool) {
	gen, ok := c.generation(epoch)
	if !ok {
		return "", 0, false
	}
	reply, from, ok := c.get(db, []byte(key), gen, fed, nil)
	return string(reply), from, ok
}

func bulkOf(v string) []byte { return appendBulk(nil, []byte(v)) }

// TestNearCacheRules checks when a reply is kept and served: not before the
// stream is followed, not past a write or flush given after its position, not
// before the feed passed its probe's position, not across epochs or resets.
func TestNearCacheRules(t *testing.T) {
	c := newTestNearCache(1<<20, 1024)
	v := bulkOf("v")
	c.put(0, []byte("k"), v, "e", 5, 5)
	if _, _, ok := hit(c, 0, "k", "e", 100); ok {
		t.Fatal("kept before the stream was followed")
	}
	c.written("e", 10, 0, []byte("a")) // every write after 9 is given
	c.put(0, []byte("k"), v, "e", 8, 12)
	if _, _, ok := hit(c, 0, "k", "e", 100); ok {
		t.Fatal("kept from a position before the stream was followed")
	}
	c.put(0, []byte("k"), v, "e", 9, 12)
	if _, _, ok := hit(c, 0, "k", "e", 11); ok {
		t.Fatal("served before the feed passed the probe's position")
	}
	if r, from, ok := hit(c, 0, "k", "e", 12); !ok || r != string(v) || from != 9 {
		t.Fatalf("hit = %q, %d, %v; want %q from 9", r, from, ok, v)
	}
	if _, _, ok := hit(c, 0, "k", "other", 12); ok {
		t.Fatal("served in another epoch")
	}
	if _, _, ok := hit(c, 1, "k", "e", 12); ok {
		t.Fatal("served for another DB")
	}
	c.written("e", 13, 0, []byte("k"))
	if _, _, ok := hit(c, 0, "k", "e", 13); ok {
		t.Fatal("served after a write to the key")
	}
	c.put(0, []byte("k"), v, "e", 12, 14) // the write at 13 came after 12
	if _, _, ok := hit(c, 0, "k", "e", 14); ok {
		t.Fatal("kept though a write was given after its position")
	}
	c.put(0, []byte("k"), v, "e", 13, 14)
	c.put(1, []byte("k"), v, "e", 13, 14)
	c.flushed("e", 15, 0)
	if _, _, ok := hit(c, 0, "k", "e", 15); ok {
		t.Fatal("served after FLUSHDB")
	}
	if _, _, ok := hit(c, 1, "k", "e", 15); !ok {
		t.Fatal("FLUSHDB of DB 0 dropped DB 1")
	}
	c.put(0, []byte("j"), v, "e", 14, 15)
	if _, _, ok := hit(c, 0, "j", "e", 15); ok {
		t.Fatal("kept though its DB was flushed after its position")
	}
	c.reset()
	if _, _, ok := hit(c, 1, "k", "e", 15); ok {
		t.Fatal("served after a reset")
	}
	c.put(1, []byte("k"), v, "e", 20, 20)
	if _, _, ok := hit(c, 1, "k", "e", 20); ok {
		t.Fatal("kept after a reset, before the stream was followed again")
	}
	c.written("e", 30, 0, []byte("a"))
	c.put(1, []byte("k"), v, "e", 29, 30)
	c.written("f", 1, 0, []byte("a")) // another epoch
	if _, _, ok := hit(c, 1, "k", "e", 30); ok {
		t.Fatal("served after the epoch changed")
	}
	st := c.stats()
	if st.entries != 0 || st.bytes != 0 || st.hits != 2 || st.invalidations != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNearCacheBounds: values over the limit are not kept, and the cache
// stays within its size, least recently used out first.
func TestNearCacheBounds(t *testing.T) {
	c := newTestNearCache(4096, 100)
	c.written("e", 1, 0, []byte("a"))
	c.put(0, []byte("big"), bulkOf(string(make([]byte, 101))), "e", 1, 1)
	if _, _, ok := hit(c, 0, "big", "e", 1); ok {
		t.Fatal("kept a value over the limit")
	}
	for i := 0; i < 100; i++ {
		c.put(0, []byte("k"+strconv.Itoa(i)), bulkOf("value"), "e", 1, 1)
		hit(c, 0, "k0", "e", 1) // k0 stays the most recently used
	}
	st := c.stats()
	if st.bytes > 4096 || st.evictions == 0 || st.entries*(nearEntryOverhead+10) < 4096/2 {
		t.Fatalf("stats %+v", st)
	}
	if _, _, ok := hit(c, 0, "k0", "e", 1); !ok {
		t.Fatal("the most recently used entry was evicted")
	}
	if _, _, ok := hit(c, 0, "k1", "e", 1); ok {
		t.Fatal("the least recently used entry was kept")
	}
}

// TestNearCacheHitAllocs: a hit allocates nothing.
func TestNearCacheHitAllocs(t *testing.T) {
	c := newTestNearCache(1<<20, 1024)
	c.written("e", 1, 0, []byte("a"))
	key := []byte("k")
	c.put(0, key, bulkOf("v"), "e", 1, 1)
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		gen, _ := c.generation("e")
		if _, _, ok := c.get(0, key, gen, 1, buf); !ok {
			t.Fatal("miss")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per hit", n)
	}
}

// TestNearCacheNoExpiry: only a key without an expiry is cached; a value read
// just before the key expired (PEXPIRETIME then says -2) is not.
func TestNearCacheNoExpiry(t *testing.T) {
	for _, v := range []struct {
		get, ttl string
		want     bool
	}{
		{"$1\r\nx\r\n", ":-1\r\n", true},
		{"$-1\r\n", ":-2\r\n", true},
		{"$1\r\nx\r\n", ":-2\r\n", false}, // expired between GET and PEXPIRETIME
		{"$1\r\nx\r\n", ":1700000000000\r\n", false},
		{"$-1\r\n", ":1700000000000\r\n", false},
		{"$1\r\nx\r\n", "-ERR unknown command\r\n", false},
	} {
		r := &router.Request{Reply: []byte(v.ttl)}
		if got := noExpiry([]byte(v.get), r); got != v.want {
			t.Errorf("noExpiry(%q, %q) = %v, want %v", v.get, v.ttl, got, v.want)
		}
	}
	if noExpiry([]byte("$1\r\nx\r\n"), &router.Request{Reply: []byte(":-1\r\n"), Failed: true}) {
		t.Error("a failed PEXPIRETIME says no expiry")
	}
}

// fixedSlave is a slave's replication status as an applier would know it.
type fixedSlave struct {
	epoch   string
	applied int64
	offline bool
}

func (s *fixedSlave) Online() bool           { return !s.offline }
func (s *fixedSlave) Applied() int64         { return s.applied }
func (s *fixedSlave) Reached(seq int64) bool { return s.applied >= seq }
func (s *fixedSlave) Epoch() string          { return s.epoch }
func (s *fixedSlave) LagMessages() int64     { return 0 }
func (s *fixedSlave) LagMs() int64           { return 0 }

// TestNearCacheSlavesFloor: a cache hit must show at least what a slave of the
// read set is known to hold (in the feed's epoch): a client told by WAIT that
// every slave applied a write never reads an older value from the cache.
func TestNearCacheSlavesFloor(t *testing.T) {
	s := &Server{router: router.New(nil, nil, []*router.Slave{
		{Status: &fixedSlave{epoch: "e", applied: 7}},
		{Status: &fixedSlave{epoch: "e", applied: 12}},
		{Status: &fixedSlave{epoch: "older", applied: 90, offline: true}}, // resyncing: not counted
	})}
	for _, c := range []struct {
		epoch string
		seq   int64
		want  int64
	}{
		{"", 0, 12},   // no floor of its own: the most advanced slave's
		{"e", 5, 12},  // below the slaves: raised
		{"e", 20, 20}, // the session's own floor is higher
	} {
		e, got := s.slavesFloor("e", c.epoch, c.seq)
		if e != "e" || got != c.want {
			t.Errorf("slavesFloor(e, %q, %d) = %s %d, want e %d", c.epoch, c.seq, e, got, c.want)
		}
	}
	// A slave online in another epoch than the feed's (it crossed to a new
	// epoch the feed has not read yet): its position, so that no hit is served.
	if e, got := s.slavesFloor("before", "", 0); e != "e" || got != 7 {
		t.Errorf("slavesFloor(before) = %s %d, want e 7 (the first slave ahead in another epoch)", e, got)
	}
}

// BenchmarkNearCacheGet: hits over a 1,000-key working set, as the bench's
// -near-cache-get run does them.
func BenchmarkNearCacheGet(b *testing.B) {
	c := newTestNearCache(64<<20, 1024)
	c.written("e", 1, 0, []byte("a"))
	keys := make([][]byte, 1000)
	for i := range keys {
		keys[i] = []byte("key:" + strconv.Itoa(100000000000+i))
		c.put(0, keys[i], bulkOf("xxx"), "e", 1, 1)
	}
	gen, _ := c.generation("e")
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var ok bool
		if buf, _, ok = c.get(0, keys[(i*7919)%len(keys)], gen, 1, buf); !ok {
			b.Fatal("miss")
		}
	}
}
