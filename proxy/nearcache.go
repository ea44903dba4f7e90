package proxy

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/router"
)

// The near cache (--near-cache SIZE) keeps the replies of GETs the proxy sent
// to a backend and serves later GETs of the same keys from memory, while the
// sync stream (keyFeed) says they are still current. It is exact:
//
//   - A reply is kept only if its backend is known to have reached a position
//     P before the read was sent (a slave's applied position; for the master,
//     the feed's), the probe behind the read (consistency.go) read back the
//     backend's position U, and the feed has reported no write to the key, nor
//     a flush of its DB, after P. Writes are remembered per (db, key) hashed
//     into a fixed table of sequence numbers (collisions only keep fewer
//     replies), and every write numbered after P must have been given to the
//     cache (the stream followed without a break since before P).
//   - An entry is dropped as soon as the feed reports a write to its key; a
//     flush drops its DB, a reset or another epoch everything.
//   - A GET that must see position R (the session's floor, its token, at the
//     global level the master's position) is served from an entry only when
//     the feed has given every message up to max(R, U) in the entry's epoch:
//     any write to the key in (P, max(R, U)] would have dropped it, so the
//     value is the key's at every position from P to the feed's. The session's
//     read floor then rises to P (monotonic reads hold: later reads see P or
//     later, where the value is the same or newer).
//
// Only plain GETs are cached, outside MULTI, WATCH and scripts, before any
// write of the batch, and before any read of the batch went to a backend (its
// position is only known once its probe returns). A hit costs a shard's lock,
// a map lookup and a copy into the request's reply buffer: no backend, no
// goroutine, no allocation. The cache starts once the feed has reported a
// write (every write after it is then known).
//
// A hit's cost is mostly cache misses (the kernel's socket work between two
// batches evicts the proxy's data), so a hit touches few cache lines: the
// shard's map is keyed by the 64-bit hash that chose the shard (the entry's
// key is compared after), an entry holds its key and reply in one buffer, and
// an entry among the most recently used quarter is not moved to the front of
// the LRU list (the list's order is kept to that precision).
//
// Concurrency: the feed's goroutine calls written, flushed and reset; sessions
// call get and put. Each shard's lock guards its entries, its LRU list and its
// write table; stream is replaced whole under streamMu and read under the
// shard locks, so that an entry of an epoch or stream that ended is never kept.

// Sizes of the near cache.
const (
	nearSlots         = 1 << 17 // write-table slots, over all shards
	nearMaxShards     = 16
	nearShardMin      = 1 << 20 // a shard's memory at least, when there are several
	nearEntryOverhead = 128     // bytes an entry costs besides its key and reply
)

// nearCache is the proxy's near cache; nil when off.
type nearCache struct {
	maxValue int
	seed     maphash.Seed
	shards   []nearShard
	mask     uint64 // len(shards) - 1

	streamMu sync.Mutex // serializes changes of stream
	stream   atomic.Pointer[nearStream]
	skipped  atomic.Int64 // GETs not looked up: the feed was behind what they must see
}

// nearStream is the part of the sync stream the cache was given.
type nearStream struct {
	epoch string
	base  int64  // every write numbered after base was given; -1: not known yet
	gen   uint64 // one more for each stream: the entries' tag
}

// nearShard is a part of the cache, by hash of (db, key).
type nearShard struct {
	mu      sync.Mutex
	keys    map[uint64]*nearEntry // by hash of (db, key) (see locate)
	tick    uint64                // one more per move to the LRU list's front
	last    []int64               // by slot: sequence number of the last write given
	flushed [numDBs]int64         // sequence number of the last flush of each DB
	lru     nearEntry             // sentinel: lru.next is the most recently used
	bytes   int64                 // memory of the entries
	budget  int64                 // bytes at most
	entries int64                 // entries held
	// Counters, under mu (a hit touches nothing shared with other shards).
	hits, misses, invalidations, evictions int64
	_                                      [64]byte // keeps shards on their own cache lines
}

// nearEntry is one cached GET reply.
type nearEntry struct {
	prev, next *nearEntry
	hash       uint64 // its key in nearShard.keys
	db         int
	keyLen     int
	data       []byte // the key, then the reply
	gen        uint64 // the stream it was put in (see nearStream)
	from       int64  // the value is the key's from this position on
	upper      int64  // served only once the feed passed this (the probe's position)
	size       int64
	tick       uint64 // the shard's tick when it was moved to the front
}

// is reports whether e is the entry of (db, key).
func (e *nearEntry) is(db int, key []byte) bool {
	return e.db == db && string(e.data[:e.keyLen]) == string(key)
}

// newNearCache returns the near cache cfg asks for (nil when off), fed by feed.
func newNearCache(cfg *Config, feed *keyFeed) *nearCache {
	if cfg.NearCache <= 0 {
		return nil
	}
	n := 1
	for n < nearMaxShards && int64(cfg.NearCache)/int64(2*n) >= nearShardMin {
		n *= 2
	}
	c := &nearCache{maxValue: int(cfg.NearCacheMaxValue), seed: maphash.MakeSeed(),
		shards: make([]nearShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.budget = int64(cfg.NearCache) / int64(n)
		sh.last = make([]int64, nearSlots/n)
		sh.lru.next, sh.lru.prev = &sh.lru, &sh.lru
	}
	c.stream.Store(&nearStream{base: -1})
	feed.add(c)
	feed.want(+1) // always: the entries are derived from the stream
	return c
}

// locate returns the shard of (db, key), its slot in the shard's write table
// and the hash that keys its entry.
func (c *nearCache) locate(db int, key []byte) (*nearShard, int, uint64) {
	h := maphash.Bytes(c.seed, key) ^ (uint64(db+1) * 0x9e3779b97f4a7c15)
	sh := &c.shards[(h>>32)&c.mask]
	return sh, int(h % uint64(len(sh.last))), h
}

// written is keyConsumer's: the write at seq drops key's entry.
func (c *nearCache) written(epoch string, seq int64, db int, key []byte) {
	c.follow(epoch, seq)
	sh, slot, h := c.locate(db, key)
	sh.mu.Lock()
	sh.last[slot] = max(sh.last[slot], seq)
	if e := sh.keys[h]; e != nil && e.is(db, key) {
		sh.drop(e)
		sh.invalidations++
	}
	sh.mu.Unlock()
}

// flushed is keyConsumer's: the flush at seq drops db's entries (every DB's
// when db < 0).
func (c *nearCache) flushed(epoch string, seq int64, db int) {
	c.follow(epoch, seq)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		for d := range sh.flushed {
			if db < 0 || db >= numDBs || d == db {
				sh.flushed[d] = seq
			}
		}
		sh.invalidations += sh.dropDB(db)
		sh.mu.Unlock()
	}
}

// reset is keyConsumer's: writes may have been missed, everything goes.
func (c *nearCache) reset() {
	c.streamMu.Lock()
	c.stream.Store(&nearStream{base: -1, gen: c.stream.Load().gen + 1})
	c.streamMu.Unlock()
	c.clear()
}

// started is keyStarter's: the messages after (epoch, seq) are given from now
// on (a proxy that has seen no write yet caches from its start).
func (c *nearCache) started(epoch string, seq int64) { c.follow(epoch, seq+1) }

// follow notes that the message at (epoch, seq) is given: after a reset it
// starts the stream there, and another epoch drops everything.
func (c *nearCache) follow(epoch string, seq int64) {
	if st := c.stream.Load(); st.epoch == epoch && st.base >= 0 {
		return
	}
	c.streamMu.Lock()
	st := c.stream.Load()
	c.stream.Store(&nearStream{epoch: epoch, base: seq - 1, gen: st.gen + 1})
	c.streamMu.Unlock()
	if st.base >= 0 {
		c.clear() // another epoch (after a reset, clear ran already)
	}
}

// clear drops every entry and what the write tables remember. The stream was
// replaced before: an entry put meanwhile was refused, or is dropped here.
func (c *nearCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.invalidations += sh.dropDB(-1)
		clear(sh.last)
		sh.flushed = [numDBs]int64{}
		sh.mu.Unlock()
	}
}

// generation returns the tag of the entries of the stream followed now, when
// it is of epoch.
func (c *nearCache) generation(epoch string) (uint64, bool) {
	st := c.stream.Load()
	return st.gen, st.epoch == epoch && st.base >= 0
}

// get appends to dst[:0] the cached reply of GET key in db, when its entry is
// of generation gen and the feed, at fed, passed the entry's probe position;
// it returns the position the value is the key's from.
func (c *nearCache) get(db int, key []byte, gen uint64, fed int64, dst []byte) ([]byte, int64, bool) {
	if db < 0 || db >= numDBs {
		return dst, 0, false
	}
	sh, _, h := c.locate(db, key)
	sh.mu.Lock()
	e := sh.keys[h]
	if e == nil || e.gen != gen || e.upper > fed || !e.is(db, key) {
		sh.misses++
		sh.mu.Unlock()
		return dst, 0, false
	}
	sh.hits++
	if sh.tick-e.tick > uint64(sh.entries/4) {
		sh.unlink(e)
		sh.pushFront(e)
	}
	dst = append(dst[:0], e.data[e.keyLen:]...)
	from := e.from
	sh.mu.Unlock()
	return dst, from, true
}

// put keeps reply, GET key's in db, read from a backend known to be at
// (epoch, from) before the read was sent, and at upper after it; unless a
// write to the key, or a flush of db, was given after from, or the stream
// given does not cover every write after from.
func (c *nearCache) put(db int, key, reply []byte, epoch string, from, upper int64) {
	if db < 0 || db >= numDBs || bulkLen(reply) > c.maxValue {
		return
	}
	sh, slot, h := c.locate(db, key)
	size := int64(len(key)+len(reply)) + nearEntryOverhead
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := c.stream.Load()
	if size > sh.budget || st.epoch != epoch || st.base < 0 || from < st.base ||
		sh.last[slot] > from || sh.flushed[db] > from {
		return
	}
	if sh.keys == nil {
		sh.keys = map[uint64]*nearEntry{}
	}
	if old := sh.keys[h]; old != nil {
		sh.drop(old) // the key's, or another's of the same hash: one entry per hash
	}
	data := make([]byte, 0, len(key)+len(reply))
	data = append(append(data, key...), reply...)
	e := &nearEntry{hash: h, db: db, keyLen: len(key), data: data,
		gen: st.gen, from: from, upper: upper, size: size}
	sh.keys[h] = e
	sh.pushFront(e)
	sh.bytes += size
	sh.entries++
	for sh.bytes > sh.budget {
		sh.drop(sh.lru.prev)
		sh.evictions++
	}
}

// bulkLen is the length of a bulk string reply's value (0 for a null one).
func bulkLen(reply []byte) int {
	body, _, ok := parseBulk(reply)
	if !ok {
		return 0
	}
	return len(body)
}

func (sh *nearShard) pushFront(e *nearEntry) {
	sh.tick++
	e.tick = sh.tick
	e.prev, e.next = &sh.lru, sh.lru.next
	e.next.prev = e
	sh.lru.next = e
}

func (sh *nearShard) unlink(e *nearEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

// drop removes e (under mu).
func (sh *nearShard) drop(e *nearEntry) {
	sh.unlink(e)
	delete(sh.keys, e.hash)
	sh.bytes -= e.size
	sh.entries--
}

// dropDB removes db's entries, every DB's when db is out of range (under mu);
// it returns how many went.
func (sh *nearShard) dropDB(db int) int64 {
	n := int64(0)
	for _, e := range sh.keys {
		if db < 0 || db >= numDBs || e.db == db {
			sh.drop(e)
			n++
		}
	}
	return n
}

// nearStats are the near cache's figures, for INFO and /metrics.
type nearStats struct {
	hits, misses, invalidations, evictions, bytes, entries, maxBytes int64
}

// stats sums the shards' figures.
func (c *nearCache) stats() nearStats {
	st := nearStats{misses: c.skipped.Load()}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		st.hits += sh.hits
		st.misses += sh.misses
		st.invalidations += sh.invalidations
		st.evictions += sh.evictions
		st.bytes += sh.bytes
		st.entries += sh.entries
		st.maxBytes += sh.budget
		sh.mu.Unlock()
	}
	return st
}

// nearBatch is what a batch's GETs share: the feed's position and the
// position the reads must see, read at the first GET that needs them; and the
// GETs sent to a backend, whose keys' expiry must be read.
type nearBatch struct {
	sent []*call           // kept across batches
	ttls []*router.Request // the PEXPIRETIME requests, reused across batches
	nearPos
}

// nearPos are the positions a batch's GETs compare with.
type nearPos struct {
	checked   bool
	live      bool   // the feed follows the stream, and the cache with it
	epoch     string // the feed's position
	fed       int64
	gen       uint64 // the cache's stream (nearStream.gen)
	needEpoch string // the position the batch's reads must see
	need      int64
	// The master's position for the batch's global reads, once fetched.
	global      bool
	globalEpoch string
	globalSeq   int64
}

// nearRead is a GET sent to a backend whose reply may be cached: the backend
// (nil: the master), the position it was known to hold before, and the
// PEXPIRETIME of the key read behind it (a key that expires on the slaves
// changes without a message: only keys without an expiry are cached).
type nearRead struct {
	ok    bool
	slave *router.Slave
	epoch string
	from  int64
	ttl   *router.Request
}

// isPlainGet reports whether c is GET key.
func isPlainGet(c *call) bool {
	return c.route.Info != nil && c.route.Info.Name == "get" && len(c.cmd.Args) == 2
}

// nearServe answers a GET from the near cache when the session's level allows
// it; it reports whether it did.
func (sess *Session) nearServe(c *call) bool {
	nc := sess.s.near
	if nc == nil || !isPlainGet(c) || sess.tracking() {
		// A tracking client's reads stay on the backend path, the one the
		// tracker's ordering rules (probes, invalidations re-sent for keys
		// written while a read was out) are built and tested on.
		return false
	}
	if sess.readUnknown || sess.batchPicked || sess.probeSlave != nil || sess.probeMaster || sess.onLane {
		// A read of the batch went to a backend: what it saw is not known
		// yet, a hit could show an older state.
		return false
	}
	b := sess.nearPosition()
	if !b.live || (b.need > 0 && (b.needEpoch != b.epoch || b.fed < b.need)) {
		nc.skipped.Add(1)
		return false
	}
	r := &c.req
	reply, from, ok := nc.get(r.DB, c.cmd.Args[1], b.gen, b.fed, r.Reply)
	r.Reply = reply
	if !ok {
		return false
	}
	r.Kind = router.KindLocal
	sess.readEpoch, sess.readSeq = later(sess.readEpoch, sess.readSeq, b.epoch, from)
	return true
}

// nearPosition reads, once per batch, the feed's position and the position
// the batch's reads must see.
func (sess *Session) nearPosition() *nearBatch {
	b := &sess.near
	if b.checked {
		return b
	}
	b.checked = true
	b.epoch, b.fed, b.live = sess.s.feed.position()
	var ok bool
	if b.gen, ok = sess.s.near.generation(b.epoch); !ok {
		b.live = false
	}
	lvl := sess.level()
	b.needEpoch, b.need = sess.readPosition(lvl)
	if lvl == levelGlobal {
		e, s := sess.globalPosition()
		if s == 0 {
			b.live = false // the master's position is not known: no hit
		}
		b.needEpoch, b.need = later(b.needEpoch, b.need, e, s)
	}
	b.needEpoch, b.need = sess.s.slavesFloor(b.epoch, b.needEpoch, b.need)
	return b
}

// slavesFloor raises (epoch, seq), the position a read must see, to the
// highest position an online slave of the read set is known to hold: a hit is
// never older than what a slave would answer, so a client told by WAIT that
// every slave applied a write reads it from the cache too (when this proxy
// knows it: its own WAIT, or a slave it applies to). A slave online in another
// epoch than the feed's (it crossed to a new one the feed has not read yet)
// gives its epoch: no hit until the feed is there too.
func (s *Server) slavesFloor(feedEpoch, epoch string, seq int64) (string, int64) {
	for _, sl := range s.router.Slaves() {
		st := sl.Status
		if !st.Online() {
			continue
		}
		if e := st.Epoch(); e != feedEpoch {
			return e, st.Applied()
		}
		epoch, seq = later(epoch, seq, feedEpoch, st.Applied())
	}
	return epoch, seq
}

// globalPosition returns the master's position for the batch's global reads:
// fetched once per batch (the batch's reads all arrived before the fetch).
func (sess *Session) globalPosition() (string, int64) {
	b := &sess.near
	if !b.global {
		b.global = true
		b.globalEpoch, b.globalSeq = sess.s.masterPos.get(sess.s.router.Master(), int(sess.id))
	}
	return b.globalEpoch, b.globalSeq
}

// nearSend notes a GET about to be sent to sl (nil: the master): the position
// the backend holds now bounds what its reply shows from below.
func (sess *Session) nearSend(c *call, sl *router.Slave) {
	if sess.s.near == nil || !isPlainGet(c) {
		return
	}
	nr := &c.near
	if sl != nil {
		nr.ok, nr.slave, nr.epoch, nr.from = true, sl, sl.Status.Epoch(), sl.Status.Applied()
	} else {
		// The master is past every message the feed gave.
		var live bool
		nr.epoch, nr.from, live = sess.s.feed.position()
		nr.ok = live
	}
	if nr.ok {
		sess.near.sent = append(sess.near.sent, c)
	}
}

// nearSendTTLs reads the expiry of the keys the batch's GETs read, each on the
// backend connection of its GET, after the batch's reads and before the probe:
// a write that changed the expiry in between is numbered before the probe's
// position, so it keeps the reply out of the cache (see put).
func (sess *Session) nearSendTTLs() {
	b := &sess.near
	for i, c := range b.sent {
		b.sent[i] = nil
		if i == len(b.ttls) {
			b.ttls = append(b.ttls, &router.Request{})
		}
		r := b.ttls[i]
		c.near.ttl = r
		r.Reset()
		r.Kind, r.DB = router.KindRaw, c.req.DB
		r.Raw = buildCommand([][]byte{[]byte("PEXPIRETIME"), c.cmd.Args[1]})
		sess.waiter.Add(r)
		if sl := c.near.slave; sl != nil {
			sess.waiter.Defer(sl.Backend, int(sess.id), r) // behind the batch's deferred GETs
		} else {
			sess.s.router.Master().Submit(int(sess.id), r)
		}
	}
	b.sent = b.sent[:0]
	if len(b.ttls) > maxKeptRequests {
		b.sent, b.ttls = nil, nil // a deep pipeline's are not kept
	}
}

// nearFill caches the batch's GET replies that nearSend noted, with the
// positions their probes read back; it ends the batch for the near cache.
func (sess *Session) nearFill(calls []*call) {
	sess.near.nearPos = nearPos{}
	nc := sess.s.near
	if nc == nil {
		return
	}
	for _, c := range calls {
		nr, r := &c.near, &c.req
		if !nr.ok || r.Failed || len(r.Reply) == 0 || r.Reply[0] != '$' || !noExpiry(r.Reply, nr.ttl) {
			continue
		}
		epoch, upper, ok := sess.probed(nr.slave)
		if ok && string(epoch) == nr.epoch && upper >= nr.from && nr.from > 0 {
			nc.put(r.DB, c.cmd.Args[1], r.Reply, nr.epoch, nr.from, upper)
		}
	}
}

// noExpiry reports whether PEXPIRETIME, read after GET answered get, says
// that the key has no expiry: -1 for a value, -2 for a nil reply. A value and
// -2 is a key that expired in between.
func noExpiry(get []byte, ttl *router.Request) bool {
	if ttl == nil || ttl.Failed {
		return false
	}
	if string(get) == "$-1\r\n" {
		return string(ttl.Reply) == ":-2\r\n"
	}
	return string(ttl.Reply) == ":-1\r\n"
}

// probed returns the position the batch's probe of sl (nil: the master) read.
func (sess *Session) probed(sl *router.Slave) ([]byte, int64, bool) {
	for _, p := range sess.probes {
		if p.slave == sl {
			return p.position()
		}
	}
	return nil, 0, false
}
