package proxy

import (
	"bytes"
	"github.com/tidwall/redcon"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/router"
)

// CLIENT TRACKING (Redis 6+ client-side caching) for the proxy's own clients,
// as Redis 7.0's tracking.c does it, with the invalidations driven by the sync
// stream (keyfeed.go): a key written through any proxy, by a script, an expiry
// or an eviction that reached the stream invalidates it for every tracking
// client of every proxy.
//
// Default mode remembers the keys of the read-only commands a client ran (by
// name; as Redis, the DB is ignored) in one table, key → client ids; a write
// to a key sends every client in its entry an invalidation and drops the
// entry. BCAST mode sends every key written under the client's prefixes.
//
// Delivery. Invalidations are queued on the tracking session (trackState) by
// the feed's goroutine and written to the client — or to the client it
// redirects to: a RESP3 push, or a __redis__:invalidate message for a RESP2
// client in subscribed mode — by the session's pusher goroutine while the
// session is idle, and by the session itself before the replies of a batch.
// Every write to a client's connection holds the session's outMu.
//
// Ordering. Before a tracking client's replies are written, the session
// waits until the feed has been given every message up to the position those
// replies may show (its writes' sequence numbers, the positions its reads'
// probes read back) and writes what is queued first: the invalidation of a
// write reaches the client before a reply that shows it. Keys a batch read
// that were invalidated while its reads were in flight are sent again after
// its replies (the reply may hold the value from before the write). When the
// wait fails, a null invalidation (flush everything) goes first instead.

// defaultTrackingMaxKeys is Redis' tracking-table-max-keys default.
const defaultTrackingMaxKeys = 1000000

// Replies of CLIENT TRACKING and CLIENT CACHING, in Redis' words.
const (
	msgTrackRedirectTwice = "ERR A client can only redirect to a single other client"
	msgTrackNoRedirect    = "ERR The client ID you want redirect to does not exist"
	msgTrackPrefixBcast   = "ERR PREFIX option requires BCAST mode to be enabled"
	msgTrackSwitchBcast   = "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."
	msgTrackOptBcast      = "ERR OPTIN and OPTOUT are not compatible with BCAST"
	msgTrackOptBoth       = "ERR You can't specify both OPTIN mode and OPTOUT mode"
	msgTrackSwitchOpt     = "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."
	msgCachingNoTracking  = "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
	msgCachingYes         = "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode."
	msgCachingNo          = "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode."
)

// tracker is the server's tracking table; it is the feed's keyConsumer.
type tracker struct {
	s       *Server
	maxKeys int

	mu      sync.Mutex
	keys    map[string]map[int64]struct{} // default mode: key → ids of the sessions that read it
	clients map[int64]*Session            // the sessions tracking, by id
	bcast   map[int64]*Session            // those in BCAST mode
	recent  recentWrites
}

// recentWrites are the last writes given by the feed, by key: a read from a
// slave behind the feed may not show writes the feed gave before the read's
// keys were remembered, which the table therefore cannot invalidate.
type recentWrites struct {
	epoch string           // of what follows; "": nothing known
	known int64            // every write after it is in last
	flush int64            // the last flush (every key written)
	last  map[string]int64 // key → its last write
	ring  []inval          // the writes in last, oldest first from next
	next  int
}

// recentMax bounds the writes recentWrites remembers.
const recentMax = 1 << 16

// note records key's write at (epoch, seq); key "" is a flush.
func (r *recentWrites) note(epoch string, seq int64, key string) {
	if epoch != r.epoch || r.last == nil {
		r.epoch, r.known, r.flush, r.next = epoch, seq-1, 0, 0
		r.last, r.ring = map[string]int64{}, r.ring[:0]
	}
	if key == "" {
		r.flush = seq
		return
	}
	if len(r.ring) < recentMax {
		r.ring = append(r.ring, inval{key, seq})
	} else {
		old := r.ring[r.next]
		if r.last[old.key] == old.seq {
			delete(r.last, old.key)
		}
		r.known = max(r.known, old.seq)
		r.ring[r.next] = inval{key, seq}
		r.next = (r.next + 1) % recentMax
	}
	r.last[key] = seq
}

// since reports whether key may have been written after (epoch, seq): when
// not known (epoch "": nothing given since the feed started giving), it may.
func (r *recentWrites) since(key string, epoch string, seq int64) bool {
	// A position not known (a failed probe, no write given since a reset)
	// says nothing: the key may have been written.
	return epoch == "" || r.epoch == "" || epoch != r.epoch || seq < r.known || seq < r.flush || r.last[key] > seq
}

func newTracker(s *Server, maxKeys int) *tracker {
	return &tracker{s: s, maxKeys: maxKeys, keys: map[string]map[int64]struct{}{},
		clients: map[int64]*Session{}, bcast: map[int64]*Session{}}
}

// trackState is a session's tracking: its options, and the invalidations
// queued for it.
type trackState struct {
	// The options: written by the session's goroutine under tracker.mu, read
	// by the feed's goroutine under it.
	on, bcast, optin, optout, noloop bool
	redirect                         int64
	target                           *Session // the redirect's session; nil: none
	prefixes                         []string // BCAST's, sorted
	caching                          bool     // CLIENT CACHING for the next command (session only)
	// The probes sent before the batch's first read on each slave, to which
	// (session only).
	pre       []*router.Request
	preSlaves []*router.Slave

	mu        sync.Mutex // guards what follows; taken after tracker.mu and outMu
	queue     []inval
	null      bool                // a null invalidation goes before queue
	held      bool                // a NOLOOP batch's writes are in flight: the pusher waits
	broken    bool                // the redirect's client is gone (broken_redirect)
	reading   map[string]struct{} // keys the batch in progress read
	again     []inval             // of those, the ones invalidated meanwhile
	againNull bool
	kick      chan struct{} // wakes the pusher
	stop      chan struct{} // ends the pusher
}

// inval is one key's invalidation, by the write at seq (0: an eviction).
type inval struct {
	key string
	seq int64
}

// trackShown is what CLIENT LIST shows of a session's tracking, for other
// sessions' goroutines: redir (the redirect's id + 1: 0 when not tracking) and
// the flags t and B.
type trackShown struct {
	redir atomic.Int64
	bcast atomic.Bool
}

func (ts *trackShown) set(on, bcast bool, redirect int64) {
	if !on {
		redirect = -1
	}
	ts.redir.Store(redirect + 1)
	ts.bcast.Store(on && bcast)
}

func (ts *trackShown) redirect() int64 { return ts.redir.Load() - 1 }

// appendFlags appends CLIENT LIST's tracking flags (Redis' t and B).
func (ts *trackShown) appendFlags(f []byte) []byte {
	if ts.redir.Load() == 0 {
		return f
	}
	f = append(f, 't')
	if ts.bcast.Load() {
		f = append(f, 'B')
	}
	return f
}

// tracking reports whether the session tracks keys.
func (sess *Session) tracking() bool { return sess.track != nil && sess.track.on }

// written is the feed's: every client tracking key, or a prefix of it, gets
// its invalidation.
func (t *tracker) written(epoch string, seq int64, _ int, key []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recent.note(epoch, seq, string(key))
	if ids, ok := t.keys[string(key)]; ok {
		ks := string(key)
		delete(t.keys, ks)
		t.invalidate(ids, ks, seq)
	}
	for _, sess := range t.bcast {
		if tr := sess.track; matchPrefix(tr.prefixes, key) {
			tr.add(inval{key: string(key), seq: seq})
		}
	}
}

// invalidate queues key's invalidation for the sessions ids (under t.mu).
func (t *tracker) invalidate(ids map[int64]struct{}, key string, seq int64) {
	for id := range ids {
		if sess := t.clients[id]; sess != nil && !sess.track.bcast {
			sess.track.add(inval{key: key, seq: seq})
		}
	}
}

func matchPrefix(prefixes []string, key []byte) bool {
	for _, p := range prefixes {
		if bytes.HasPrefix(key, []byte(p)) {
			return true
		}
	}
	return false
}

// flushed is the feed's: as Redis on FLUSHALL and FLUSHDB (whatever the DB),
// every tracking client gets a null invalidation and the table is emptied.
func (t *tracker) flushed(epoch string, seq int64, _ int) {
	t.mu.Lock()
	t.recent.note(epoch, seq, "")
	t.mu.Unlock()
	t.flushAll()
}

// reset is the feed's: writes may have been missed, nothing cached can be
// trusted.
func (t *tracker) reset() {
	t.mu.Lock()
	t.recent = recentWrites{}
	t.mu.Unlock()
	t.flushAll()
}

// started is the feed's keyStarter hook, after reset (once the replicator
// says where it starts following the stream): every write after (epoch, seq)
// will be given.
func (t *tracker) started(epoch string, seq int64) {
	t.mu.Lock()
	t.recent = recentWrites{epoch: epoch, known: seq, last: map[string]int64{}}
	t.mu.Unlock()
}

// behind queues for after the batch's replies the invalidation of the keys
// it read that may have been written after (epoch, seq), what its slave
// reads are known to show at least (see trackSlaveRead).
func (t *tracker) behind(tr *trackState, epoch string, seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for k := range tr.reading {
		if t.recent.since(k, epoch, seq) {
			tr.again = append(tr.again, inval{key: k})
		}
	}
}

// trackSlaveRead is the read path's hook, before a read is sent to sl: the
// first of the batch's reads on sl goes behind a probe that reads sl's
// position back, which the reads then show at least.
func (sess *Session) trackSlaveRead(sl *router.Slave) {
	tr := sess.track
	if tr == nil || !tr.on || slices.Contains(tr.preSlaves, sl) {
		return
	}
	if len(tr.pre) == len(tr.preSlaves) {
		tr.pre = append(tr.pre, &router.Request{})
	}
	r := tr.pre[len(tr.preSlaves)]
	tr.preSlaves = append(tr.preSlaves, sl)
	r.Reset()
	r.Kind, r.Raw = router.KindRaw, probeSlaveCmd
	sess.waiter.Add(r)
	sl.Backend.Submit(int(sess.id), r)
}

// readFloor returns the lowest position the batch's slave reads' probes read
// back (epoch "" when one failed); ok is false without slave reads.
func (tr *trackState) readFloor() (epoch string, seq int64, ok bool) {
	unknown := false
	for i := range tr.preSlaves {
		r := tr.pre[i]
		body, _, okb := parseBulk(r.Reply)
		j := bytes.LastIndexByte(body, ':')
		n, err := strconv.ParseInt(string(body[max(j+1, 0):]), 10, 64)
		if r.Failed || !okb || j <= 0 || err != nil {
			unknown = true // every key read may be behind
			continue
		}
		if e := string(body[:j]); !ok || e != epoch || n < seq {
			epoch, seq, ok = e, n, true
		}
	}
	if unknown {
		epoch, seq, ok = "", 0, true
	}
	clear(tr.preSlaves)
	tr.preSlaves = tr.preSlaves[:0]
	return epoch, seq, ok
}

func (t *tracker) flushAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.keys)
	for _, sess := range t.clients {
		sess.track.addNull()
	}
}

// remember adds the keys args names at idx to the table for sess, evicting
// keys (with their invalidations) beyond maxKeys as Redis does.
func (t *tracker) remember(sess *Session, args [][]byte, idx []int) {
	tr := sess.track
	t.mu.Lock()
	for _, i := range idx {
		ids := t.keys[string(args[i])]
		if ids == nil {
			ids = map[int64]struct{}{}
			t.keys[string(args[i])] = ids
		}
		ids[sess.id] = struct{}{}
	}
	for t.maxKeys > 0 && len(t.keys) > t.maxKeys {
		for k, ids := range t.keys { // (a key taken at random)
			delete(t.keys, k)
			t.invalidate(ids, k, 0)
			break
		}
	}
	t.mu.Unlock()
	tr.noteReading(args, idx, false)
}

// maxQueued bounds the invalidations queued for a client that reads none
// (until the output timeout cuts it): beyond, one null invalidation says it all.
const maxQueued = 1 << 14

// add queues an invalidation and wakes the pusher.
func (tr *trackState) add(iv inval) {
	tr.mu.Lock()
	if len(tr.queue) < maxQueued {
		tr.queue = append(tr.queue, iv)
	} else {
		tr.queue, tr.null = nil, true
	}
	if _, ok := tr.reading[iv.key]; ok {
		tr.again = append(tr.again, iv)
	}
	tr.mu.Unlock()
	tr.wake()
}

// addNull queues a null invalidation, which makes what is queued moot.
func (tr *trackState) addNull() {
	tr.mu.Lock()
	tr.queue, tr.null = tr.queue[:0], true
	if len(tr.reading) > 0 {
		tr.againNull = true
	}
	tr.mu.Unlock()
	tr.wake()
}

func (tr *trackState) wake() {
	select {
	case tr.kick <- struct{}{}:
	default:
	}
}

// trackCommand is the dispatch's hook: it remembers the keys a read-only
// command reads, as CLIENT TRACKING's mode says, and CLIENT CACHING's flag
// lasts one command (a transaction's).
func (sess *Session) trackCommand(c *call) {
	tr, ci := sess.track, c.route.Info
	if tr == nil || !tr.on || ci == nil {
		return
	}
	caching := tr.caching
	switch name := ci.Name; {
	case strings.HasPrefix(name, "client|"):
	case name == "exec" || name == "discard" || (sess.tx == nil && name != "multi"):
		tr.caching = false
	}
	if tr.noloop && (c.route.Class == router.ClassWrite || ci.Has(router.FlagWrite)) {
		tr.mu.Lock()
		tr.held = true
		tr.mu.Unlock()
	}
	if !ci.Has(router.FlagReadonly) || (tr.optin && !caching) || (tr.optout && caching) {
		return
	}
	var buf [8]int
	if idx := ci.KeyIndexes(c.cmd.Args, buf[:0]); len(idx) == 0 {
		return
	} else if tr.bcast {
		tr.noteReading(c.cmd.Args, idx, true) // BCAST needs no table, only the re-sends
	} else {
		sess.s.tracker.remember(sess, c.cmd.Args, idx)
	}
}

// noteReading notes the keys the batch reads (of its prefixes, in BCAST mode):
// their invalidations while the batch runs are sent again after its replies.
func (tr *trackState) noteReading(args [][]byte, idx []int, bcast bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.reading == nil {
		tr.reading = map[string]struct{}{}
	}
	for _, i := range idx {
		if !bcast || matchPrefix(tr.prefixes, args[i]) {
			tr.reading[string(args[i])] = struct{}{}
		}
	}
}

// ownWrite is a key one of the batch's writes wrote, for NOLOOP.
type ownWrite struct {
	key string
	seq int64
}

// trackBeforeReplies is the reply path's hook, before a batch's replies are
// written: it waits until the feed passed what they may show, then writes
// what is queued (or wakes the pusher of a redirect).
func (sess *Session) trackBeforeReplies(calls []*call) {
	if !sess.tracking() {
		return
	}
	tr := sess.track
	epoch, seq := sess.readEpoch, sess.readSeq
	var own []ownWrite
	shows, scripts := false, false // a reply may show data; a script ran
	for _, c := range calls {
		r := &c.req
		shows = shows || r.Kind != router.KindLocal
		scripts = scripts || (r.Kind != router.KindLocal && ranScript(c))
		if r.Seq <= 0 {
			continue
		}
		epoch, seq = later(epoch, seq, r.Epoch, r.Seq)
		if tr.noloop && r.Kind == router.KindWrite && c.route.Info != nil {
			own = appendOwn(own, c, r.Seq)
		}
	}
	if scripts {
		// A script ran on a master connection of its own: the master's
		// position now is past what it read.
		e, s := sess.s.masterPos.get(sess.s.router.Master(), int(sess.id))
		if s == 0 {
			tr.addNull() // not known
		}
		epoch, seq = later(epoch, seq, e, s)
	}
	if shows && !sess.fedUpTo(epoch, seq) {
		tr.addNull()
	}
	if e, s, ok := tr.readFloor(); ok {
		sess.s.tracker.behind(tr, e, s)
	}
	tr.mu.Lock()
	tr.held = false
	var out []byte
	if tr.target == nil {
		out = tr.takeLocked(out, sess.resp3.Load(), false, own)
	} else if len(own) > 0 {
		tr.queue = dropOwn(tr.queue, own) // the pusher sends the rest
	}
	tr.mu.Unlock()
	if len(out) > 0 {
		sess.conn.WriteRaw(out)
	}
	tr.wake()
}

// ranScript reports whether c ran a client script or function (whose reads
// no probe reads back).
func ranScript(c *call) bool {
	if c.route.Info == nil {
		return false
	}
	switch c.route.Info.Policy.Handler {
	case router.HandlerEval, router.HandlerFcall, router.HandlerFcallRO, router.HandlerScript:
		return true
	}
	return false
}

// appendOwn notes the keys of the write c, at seq.
func appendOwn(own []ownWrite, c *call, seq int64) []ownWrite {
	var buf [8]int
	for _, i := range c.route.Info.KeyIndexes(c.cmd.Args, buf[:0]) {
		own = append(own, ownWrite{key: string(c.cmd.Args[i]), seq: seq})
	}
	return own
}

// fedUpTo waits (up to --ryw-wait, or the backend timeout) until the feed has
// given the consumers every message up to (epoch, seq); false when it could
// not: what the replies show may not have been invalidated.
func (sess *Session) fedUpTo(epoch string, seq int64) bool {
	if sess.readUnknown {
		return false
	}
	if seq <= 0 {
		return true
	}
	f := sess.s.feed
	if _, _, live := f.position(); !live {
		return false // not following the stream: no wait can help
	}
	cfg := sess.s.config()
	d := cfg.RYWWait
	if d <= 0 {
		d = cfg.BackendTimeout
	}
	return f.waitFed(epoch, seq, d)
}

// trackAfterReplies is the reply path's hook after a batch's replies: keys the
// batch read that were invalidated while it ran are invalidated again.
func (sess *Session) trackAfterReplies() {
	tr := sess.track
	if tr == nil {
		return
	}
	tr.mu.Lock()
	var out []byte
	if tr.target == nil && (tr.againNull || len(tr.again) > 0) {
		out = tr.encode(out, sess.resp3.Load(), false, tr.againNull, tr.again, nil)
	} else if tr.againNull {
		tr.null = true
	} else {
		tr.queue = append(tr.queue, tr.again...)
	}
	clear(tr.reading)
	tr.again, tr.againNull = tr.again[:0], false
	tr.mu.Unlock()
	if len(out) > 0 {
		sess.conn.WriteRaw(out)
	}
	tr.wake()
}

// takeLocked encodes and dequeues what is queued, for a client in RESP3 (or a
// RESP2 one in subscribed mode, pubsub), leaving out the keys of own (NOLOOP).
func (tr *trackState) takeLocked(out []byte, resp3, pubsub bool, own []ownWrite) []byte {
	out = tr.encode(out, resp3, pubsub, tr.null, tr.queue, own)
	tr.queue, tr.null = tr.queue[:0], false
	if cap(tr.queue) > 1024 {
		tr.queue = nil
	}
	return out
}

// Invalidation frames, as Redis sends them.
var (
	pushInvalidate = []byte(">2\r\n$10\r\ninvalidate\r\n")
	msgInvalidate  = []byte("*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n")
)

// encode appends the invalidations: a null one first, then one frame per key
// (default mode) or one for every key (BCAST). A RESP2 client gets them as
// __redis__:invalidate messages if in subscribed mode, else nothing.
func (tr *trackState) encode(out []byte, resp3, pubsub, null bool, q []inval, own []ownWrite) []byte {
	head := pushInvalidate
	switch {
	case resp3:
	case pubsub:
		head = msgInvalidate
	default:
		return out
	}
	if null {
		out = append(out, head...)
		if resp3 {
			out = append(out, "_\r\n"...)
		} else {
			out = append(out, "$-1\r\n"...)
		}
	}
	keys := make([]string, 0, len(q))
	for i, iv := range q {
		if !skipOwn(q, i, own) {
			keys = append(keys, iv.key)
		}
	}
	if len(keys) == 0 {
		return out
	}
	if tr.bcast {
		out = append(out, head...)
		out = appendKeys(out, keys)
		return out
	}
	for _, k := range keys {
		out = append(out, head...)
		out = appendKeys(out, []string{k})
	}
	return out
}

func appendKeys(out []byte, keys []string) []byte {
	out = appendAggregate(out, '*', len(keys))
	for _, k := range keys {
		out = redcon.AppendBulkString(out, k)
	}
	return out
}

// dropOwn removes from q the invalidations of the session's own writes.
func dropOwn(q []inval, own []ownWrite) []inval {
	kept := make([]inval, 0, len(q))
	for i, iv := range q {
		if !skipOwn(q, i, own) {
			kept = append(kept, iv)
		}
	}
	return kept
}

// skipOwn reports whether q[i] is the invalidation of the session's own write
// (NOLOOP). Writes of one group commit share a sequence number: a key's
// invalidations at seq are sent (once) only when they outnumber the session's
// own writes of the key at seq, i.e. a script or another client wrote it too.
func skipOwn(q []inval, i int, own []ownWrite) bool {
	if len(own) == 0 || q[i].seq == 0 {
		return false
	}
	mine := 0
	for _, o := range own {
		if o.seq == q[i].seq && o.key == q[i].key {
			mine++
		}
	}
	if mine == 0 {
		return false
	}
	all, after := 0, 0
	for j, iv := range q {
		if iv.seq == q[i].seq && iv.key == q[i].key {
			all++
			if j > i {
				after++
			}
		}
	}
	return all <= mine || after > 0
}

// push runs while the session tracks: it writes what is queued while the
// session (or the client it redirects to) is idle.
func (sess *Session) push(tr *trackState) {
	for {
		select {
		case <-tr.stop:
			return
		case <-tr.kick:
		}
		sess.deliver(tr)
	}
}

// deliver writes what is queued to the client the invalidations go to, unless
// it is in a batch (it writes them itself) or a NOLOOP batch's writes are in
// flight.
func (sess *Session) deliver(tr *trackState) {
	tr.mu.Lock()
	to := tr.target
	tr.mu.Unlock()
	if to == nil {
		to = sess
	} else if !sess.s.hasSession(to) {
		sess.redirectBroken(tr)
		return
	}
	to.outMu.Lock()
	defer to.outMu.Unlock()
	tr.mu.Lock()
	if tr.held {
		tr.mu.Unlock()
		return
	}
	// As Redis, a RESP2 client gets messages only as a redirect's subscriber.
	out := tr.takeLocked(nil, to.resp3.Load(), to != sess && to.subscribed.Load(), nil)
	tr.mu.Unlock()
	if len(out) > 0 {
		to.netConn.Write(out) // a client that reads nothing is cut by the output timeout
	}
}

// redirectBroken drops the invalidations of a client whose redirect is gone;
// a RESP3 client is told once, as Redis tells it.
func (sess *Session) redirectBroken(tr *trackState) {
	tr.mu.Lock()
	tr.queue, tr.null = tr.queue[:0], false
	first := !tr.broken
	tr.broken = true
	tr.mu.Unlock()
	if !first || !sess.resp3.Load() {
		return
	}
	out := []byte(">2\r\n$20\r\ntracking-redir-broken\r\n")
	out = append(strconv.AppendInt(append(out, ':'), tr.redirect, 10), "\r\n"...)
	sess.outMu.Lock()
	sess.netConn.Write(out)
	sess.outMu.Unlock()
}

// hasSession reports whether sess is connected.
func (cs *clientSet) hasSession(sess *Session) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	_, ok := cs.sessions[sess]
	return ok
}

// sessionByID returns the connected session id, or nil.
func (cs *clientSet) sessionByID(id int64) *Session {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for sess := range cs.sessions {
		if sess.id == id {
			return sess
		}
	}
	return nil
}

// trackOptions are CLIENT TRACKING's arguments.
type trackOptions struct {
	on, bcast, optin, optout, noloop bool
	redirect                         int64
	target                           *Session
	prefixes                         []string
}

// parseTracking parses CLIENT TRACKING ON|OFF [options]; it returns Redis'
// error, or "".
func (sess *Session) parseTracking(args [][]byte) (o trackOptions, msg string) {
	for j := 3; j < len(args); j++ {
		more := j+1 < len(args)
		switch opt := strings.ToLower(string(args[j])); {
		case opt == "redirect" && more:
			j++
			if o.redirect != 0 {
				return o, msgTrackRedirectTwice
			}
			n, err := strconv.ParseInt(string(args[j]), 10, 64)
			if err != nil {
				return o, msgNotInteger
			}
			if o.target = sess.s.sessionByID(n); o.target == nil {
				return o, msgTrackNoRedirect
			}
			o.redirect = n
		case opt == "bcast":
			o.bcast = true
		case opt == "optin":
			o.optin = true
		case opt == "optout":
			o.optout = true
		case opt == "noloop":
			o.noloop = true
		case opt == "prefix" && more:
			j++
			o.prefixes = append(o.prefixes, string(args[j]))
		default:
			return o, msgSyntax
		}
	}
	switch strings.ToLower(string(args[2])) {
	case "on":
		o.on = true
		return o, sess.checkTracking(&o)
	case "off":
		return o, ""
	}
	return o, msgSyntax
}

// checkTracking checks CLIENT TRACKING ON's options against each other and
// the session's tracking, in Redis' order.
func (sess *Session) checkTracking(o *trackOptions) string {
	tr := sess.track
	on := tr != nil && tr.on
	switch {
	case !o.bcast && len(o.prefixes) > 0:
		return msgTrackPrefixBcast
	case on && tr.bcast != o.bcast:
		return msgTrackSwitchBcast
	case o.bcast && (o.optin || o.optout):
		return msgTrackOptBcast
	case o.optin && o.optout:
		return msgTrackOptBoth
	case on && ((o.optin && tr.optout) || (o.optout && tr.optin)):
		return msgTrackSwitchOpt
	}
	if !o.bcast {
		return ""
	}
	for i, p := range o.prefixes {
		if on {
			for _, q := range tr.prefixes {
				if overlap(p, q) {
					return "ERR Prefix '" + p + "' overlaps with an existing prefix '" + q + "'. Prefixes for a single client must not overlap."
				}
			}
		}
		for _, q := range o.prefixes[i+1:] {
			if overlap(p, q) {
				return "ERR Prefix '" + p + "' overlaps with another provided prefix '" + q + "'. Prefixes for a single client must not overlap."
			}
		}
	}
	return ""
}

// overlap reports whether one of a and b is a prefix of the other.
func overlap(a, b string) bool { return strings.HasPrefix(a, b) || strings.HasPrefix(b, a) }

// clientTracking is CLIENT TRACKING.
func (sess *Session) clientTracking(c *call) {
	o, msg := sess.parseTracking(c.cmd.Args)
	if msg != "" {
		sess.localError(&c.req, msg)
		return
	}
	if o.on {
		sess.trackOn(&o)
	} else {
		sess.trackOff()
	}
	sess.local(&c.req, []byte("+OK\r\n"))
}

// trackOn enables tracking, or changes its options (as Redis' enableTracking:
// BCAST prefixes add up).
func (sess *Session) trackOn(o *trackOptions) {
	t := sess.s.tracker
	tr := sess.track
	if tr == nil || !tr.on {
		tr = &trackState{kick: make(chan struct{}, 1), stop: make(chan struct{})}
		sess.track = tr
		sess.s.feed.want(1)
		sess.s.detachedWG.Add(1) // Close waits for it: trackOff, when the client leaves, stops it
		go func() {
			defer sess.s.detachedWG.Done()
			sess.push(tr)
		}()
	}
	prefixes := tr.prefixes
	if o.bcast {
		if len(o.prefixes) == 0 {
			o.prefixes = []string{""}
		}
		for _, p := range o.prefixes {
			if i := sort.SearchStrings(prefixes, p); i == len(prefixes) || prefixes[i] != p {
				prefixes = append(prefixes, p)
				sort.Strings(prefixes)
			}
		}
	}
	t.mu.Lock()
	if len(t.clients) == 0 {
		// The feed gave no one the writes since the last client stopped.
		t.recent = recentWrites{}
	}
	tr.mu.Lock() // the pusher reads target under it
	tr.on, tr.bcast, tr.optin, tr.optout, tr.noloop = true, o.bcast, o.optin, o.optout, o.noloop
	tr.redirect, tr.target, tr.prefixes = o.redirect, o.target, prefixes
	if tr.target == sess {
		tr.target = nil // to itself: as without a redirect
	}
	tr.mu.Unlock()
	sess.trackShown.set(true, o.bcast, tr.redirect)
	t.clients[sess.id] = sess
	if o.bcast {
		t.bcast[sess.id] = sess
	}
	t.mu.Unlock()
	tr.mu.Lock()
	tr.broken = false
	tr.mu.Unlock()
}

// trackOff disables tracking (CLIENT TRACKING OFF, RESET, the client leaving).
// The table keeps the session's id under the keys it read until they are
// written or evicted, as Redis'.
func (sess *Session) trackOff() {
	tr := sess.track
	if tr == nil || !tr.on {
		return
	}
	t := sess.s.tracker
	t.mu.Lock()
	delete(t.clients, sess.id)
	delete(t.bcast, sess.id)
	tr.on = false
	t.mu.Unlock()
	sess.trackShown.set(false, false, 0)
	close(tr.stop)
	sess.s.feed.want(-1)
	sess.track = nil
}

// clientCaching is CLIENT CACHING YES|NO.
func (sess *Session) clientCaching(c *call) {
	tr := sess.track
	if tr == nil || !tr.on {
		sess.localError(&c.req, msgCachingNoTracking)
		return
	}
	switch strings.ToLower(string(c.cmd.Args[2])) {
	case "yes":
		if !tr.optin {
			sess.localError(&c.req, msgCachingYes)
			return
		}
	case "no":
		if !tr.optout {
			sess.localError(&c.req, msgCachingNo)
			return
		}
	default:
		sess.localError(&c.req, msgSyntax)
		return
	}
	tr.caching = true
	sess.local(&c.req, []byte("+OK\r\n"))
}

// clientGetRedir is CLIENT GETREDIR: the redirect's id, 0 without one, -1
// when not tracking.
func (sess *Session) clientGetRedir(c *call) {
	sess.local(&c.req, []byte(":"+strconv.FormatInt(sess.trackRedirect(), 10)+"\r\n"))
}

func (sess *Session) trackRedirect() int64 {
	if !sess.tracking() {
		return -1
	}
	return sess.track.redirect
}

// clientTrackingInfo is CLIENT TRACKINGINFO (a map in RESP3: resp3shapes.go).
func (sess *Session) clientTrackingInfo(c *call) {
	flags := []string{"off"}
	var prefixes []string
	if tr := sess.track; tr != nil && tr.on {
		flags[0] = "on"
		if tr.bcast {
			flags = append(flags, "bcast")
		}
		if tr.optin {
			flags = append(flags, "optin")
			if tr.caching {
				flags = append(flags, "caching-yes")
			}
		}
		if tr.optout {
			flags = append(flags, "optout")
			if tr.caching {
				flags = append(flags, "caching-no")
			}
		}
		if tr.noloop {
			flags = append(flags, "noloop")
		}
		tr.mu.Lock()
		if tr.broken {
			flags = append(flags, "broken_redirect")
		}
		tr.mu.Unlock()
		prefixes = tr.prefixes
	}
	out := appendAggregate(nil, '*', 6)
	out = appendBulk(out, []byte("flags"))
	out = appendKeys(out, flags)
	out = appendBulk(out, []byte("redirect"))
	out = append(strconv.AppendInt(append(out, ':'), sess.trackRedirect(), 10), "\r\n"...)
	out = appendBulk(out, []byte("prefixes"))
	out = appendKeys(out, prefixes)
	sess.local(&c.req, out)
}
