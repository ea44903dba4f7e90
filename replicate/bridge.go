package replicate

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Crossing epochs after an eviction.
//
// A maxmemory policy that may evict any key (allkeys-*) can take the epoch, the
// counter and the backlog together. The master script then starts a new epoch
// (numberMessage), and a slave still in the old one would look like a copy of a
// data set the master lost: emptied and copied again. It is not: the master
// lost only its metadata, and the keys the eviction took reach the slaves as
// deletes (evict.go). So a slave in the old epoch is brought to the old epoch's
// last message and then moved, atomically on the slave, to the position just
// before the new epoch's first message: it crosses instead of being resynced.
//
// That needs proof of three things, or the slave is resynced as before:
//   - where the old epoch ended and the new one began: the sync channel's
//     messages of one unbroken subscription, in the master's order (every
//     message is published by the script that numbers it, and an epoch starts
//     with a message, positionScript). The subscription saw the old epoch, so it
//     saw its last message; a restarted master breaks the subscription. A proxy
//     subscribes only while it needs the stream (subscriber.go): one that takes
//     a lease after the epoch changed has no such record, and resyncs instead.
//   - that an eviction took the metadata (not a FLUSHALL behind the proxy's
//     back): the evictor saw the epoch or the counter evicted, near that time.
//     Its subscription may lag behind thousands of notifications of evicted
//     keys while the new epoch is already seen: before it is taken for none,
//     a fence on it (a PING answered after every notification sent before)
//     makes sure it has read them (find).
//   - the old epoch's messages the slave lacks: the backlog reader's recent
//     messages keep the old epoch's tail (recent.go).
//
// A message on the channel may be forged by anyone who may PUBLISH there; a
// forged position can only make the proof fail (the old epoch's tail would not
// hold it), never make a slave skip a message.

// epochBridge is where the master went from one epoch to the next.
type epochBridge struct {
	from  string    // the old epoch
	last  int64     // its last message
	to    string    // the new epoch
	first int64     // its first message
	at    time.Time // when the subscription saw it
}

// bridgeMaxAge is how far apart the epoch change and the eviction of the
// metadata may be seen; bridgeWait is how long an applier waits for either.
const (
	bridgeMaxAge = 5 * time.Second
	bridgeWait   = time.Second
	bridgesKept  = 4
)

// bridgeState is the epoch changes the subscription saw and the metadata
// evictions the evictor saw.
type bridgeState struct {
	mu      sync.Mutex
	seen    []epochBridge // the last bridgesKept epoch changes, oldest first
	evicted time.Time     // when the epoch or the counter was last seen evicted
	lost    time.Time     // when the backlog was last seen evicted
	real    []string      // the last epochs read from the master (backlog reader, appliers)
	changed chan struct{} // closed and replaced when either is recorded
	// fillWait is how long held waits: the backlog reader's fill waits up to
	// the backend timeout for its fence, then hands what it took.
	fillWait time.Duration
	crossed  atomic.Int64 // slaves moved to a new epoch without a resync
}

// waitChan returns the channel closed at the next change; s.mu is held.
func (s *bridgeState) waitChan() <-chan struct{} {
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

func (s *bridgeState) signal() {
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// wake tells the appliers waiting in find or held that something changed.
func (s *bridgeState) wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.signal()
}

// held waits up to fillWait for the recent messages to hold from..to of
// epoch: the backlog reader takes them from the channel when the backlog lost
// them (hints.go), and wakes the waiters when it did. It waits whether or not
// the evictor saw the backlog evicted: the reader's fill does not depend on it
// (the notification may be late, or lost with a subscription), and an
// applier that found the backlog short may have got there before the reader.
func (s *bridgeState) held(ctx context.Context, recent *recentMessages, epoch string, from, to int64) []*Message {
	var msgs []*Message
	s.await(ctx, max(s.fillWait, bridgeWait), func() bool { return true }, nil, func() bool {
		msgs = recent.span(epoch, from, to)
		return msgs != nil
	})
	return msgs
}

// await calls found until it reports true, waiting for each change recorded,
// for up to d, while waiting is worth it (lately). Before giving up it calls
// fence once, if any, and looks again.
func (s *bridgeState) await(ctx context.Context, d time.Duration, lately func() bool, fence func(<-chan struct{}) bool, found func() bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	fenced := false
	for {
		s.mu.Lock()
		wait := s.waitChan()
		s.mu.Unlock()
		if found() {
			return true
		}
		if lately() {
			select {
			case <-wait:
				continue
			case <-t.C:
			case <-ctx.Done():
				return false
			}
		}
		if fenced || fence == nil || !fence(ctx.Done()) {
			return false
		}
		fenced = true
		t.Reset(d) // the time the fence took is not the wait's
	}
}

// evictedLately reports whether the evictor saw the metadata or the backlog
// evicted within bridgeMaxAge.
func (s *bridgeState) evictedLately() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return (!s.evicted.IsZero() && time.Since(s.evicted) < bridgeMaxAge) ||
		(!s.lost.IsZero() && time.Since(s.lost) < bridgeMaxAge)
}

// metaEvicted records that the master evicted one of its replication keys.
func (s *bridgeState) metaEvicted(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch key {
	case KeyEpoch, KeySeq:
		s.evicted = time.Now()
	case KeyBacklog:
		s.lost = time.Now()
	default:
		return
	}
	s.signal()
}

func (s *bridgeState) record(b epochBridge) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == bridgesKept {
		s.seen = append(s.seen[:0], s.seen[1:]...)
	}
	s.seen = append(s.seen, b)
	s.signal()
}

// firstOf returns the sequence number of epoch's first message, as a
// subscription saw the master go to it from another epoch (0: not seen).
func (s *bridgeState) firstOf(epoch string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.seen) - 1; i >= 0; i-- {
		if s.seen[i].to == epoch {
			return s.seen[i].first
		}
	}
	return 0
}

// readEpoch records an epoch read from the master, by the backlog reader or in
// an applier's position (the channel alone may name any epoch).
func (s *bridgeState) readEpoch(epoch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.real) > 0 && s.real[len(s.real)-1] == epoch {
		return
	}
	if len(s.real) == 2*bridgesKept {
		s.real = append(s.real[:0], s.real[1:]...)
	}
	s.real = append(s.real, epoch)
	s.signal()
}

// lookup returns the last change from epoch from to an epoch read from the
// master, once an eviction of the metadata was seen near it; ok is false
// if there is none (yet).
func (s *bridgeState) lookup(from string) (b epochBridge, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.seen) - 1; i >= 0; i-- {
		if c := s.seen[i]; c.from == from && slices.Contains(s.real, c.to) {
			d := c.at.Sub(s.evicted)
			return c, !s.evicted.IsZero() && d < bridgeMaxAge && d > -bridgeMaxAge
		}
	}
	return epochBridge{}, false
}

// find returns the proof that the master went from epoch from to a next one
// by an eviction, waiting up to bridgeWait for the channel to show the change
// when the evictor saw the metadata evicted (without that, it is no eviction: a
// master restarted empty, say). fence waits for the evictor's subscription to
// receive what the master sent before it: the evictor may not have read the
// eviction's notification yet (it follows its own subscription, which may be
// behind thousands of notifications of evicted keys).
func (s *bridgeState) find(ctx context.Context, from string, fence func(<-chan struct{}) bool) (epochBridge, bool) {
	var b epochBridge
	ok := s.await(ctx, bridgeWait, s.evictedLately, fence, func() bool {
		var found bool
		b, found = s.lookup(from)
		return found
	})
	return b, ok
}

// hintTrack follows the epochs of one subscription's messages, in order: its
// owner (the subscription's receiving goroutine) calls note for each.
type hintTrack struct {
	epoch string // the epoch of the last message (empty: none yet)
	max   int64  // the highest sequence number seen in it
}

func (t *hintTrack) note(s *bridgeState, epoch string, seq int64) {
	switch {
	case t.epoch == "":
		t.epoch, t.max = epoch, seq
	case epoch == t.epoch:
		t.max = max(t.max, seq)
	default:
		s.record(epochBridge{from: t.epoch, last: t.max, to: epoch, first: seq, at: time.Now()})
		t.epoch, t.max = epoch, seq
	}
}

// crossScript moves a slave from the end of one epoch to the start of the next,
// if it is still there and no resync holds it. ARGV: old position, new position
// ("<epoch>:<seq>"). It returns 1 when it moved the slave.
const crossScript = `
if redis.call('GET', 'syncproxy:applied') ~= ARGV[1] or redis.call('EXISTS', 'syncproxy:resync') == 1 then
  return 0
end
redis.call('SET', 'syncproxy:applied', ARGV[2])
return 1
`

// bridge brings a slave in epoch sp.epoch across to the next epoch when an
// eviction, not a loss of data, started it: it applies the old epoch's last
// messages from the recent ones and moves the slave's position. The next sync
// catches up in the new epoch, or crosses again if the master has since moved
// on to another. It returns false when it cannot prove that, for the caller to
// resync. mEpoch is the master's epoch, as the applier read it from the master.
func (a *Applier) bridge(ctx context.Context, sp slavePos, mEpoch string) (bool, error) {
	// Read from the master: real, even if the backlog reader has not read it yet.
	a.r.bridges.readEpoch(mEpoch)
	b, ok := a.r.bridges.find(ctx, sp.epoch, a.r.evict.fence)
	if !ok {
		return false, nil
	}
	log := a.log.With().Str("from_epoch", b.from).Int64("from_seq", b.last).Str("to_epoch", b.to).
		Int64("to_seq", b.first-1).Int64("slave_seq", sp.seq).Logger()
	if sp.seq > b.last {
		log.Warn().Msg("slave past the end of its epoch: cannot cross")
		return false, nil
	}
	if sp.seq < b.last {
		msgs := a.r.bridges.held(ctx, a.r.recent, b.from, sp.seq+1, b.last)
		if msgs == nil {
			log.Warn().Msg("the old epoch's last messages are no longer held: cannot cross")
			return false, nil
		}
		a.setEpoch(b.from)
		a.setApplied(sp.seq)
		if err := a.applyRun(msgs); err != nil {
			return false, err
		}
	}
	to := strconv.FormatInt(b.first-1, 10)
	n, err := redis.Int(a.slave.Do("EVAL", crossScript, 0, b.from+":"+strconv.FormatInt(b.last, 10), b.to+":"+to))
	if err != nil {
		return false, err
	}
	if n != 1 {
		return false, errGap // moved under us (another proxy crossed it): look again
	}
	a.setEpoch(b.to)
	a.setApplied(b.first - 1)
	a.r.bridges.crossed.Add(1)
	log.Info().Msg("the master's metadata was evicted: slave crossed to the new epoch without a resync")
	a.kick()
	return true, nil
}

// EpochsCrossed counts the slaves moved to a new epoch without a resync after
// an eviction took the master's replication metadata.
func (r *Replicator) EpochsCrossed() int64 { return r.bridges.crossed.Load() }
