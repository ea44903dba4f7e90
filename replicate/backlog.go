package replicate

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
)

// backlogReadCount bounds the entries of one backlog read.
const backlogReadCount = 256

// backlogReader hands the appliers the sync messages of the master's backlog,
// which only the master script writes. A message on the channel is only a hint
// that the backlog grew: anyone who may PUBLISH can put anything on the channel,
// so its contents are never applied, its sequence number never skipped to nor
// shown as lag. One read (XRANGE) serves every hint received meanwhile and every
// applier.
//
// Only a proxy that needs the messages reads them: one holding a slave's lease,
// or one whose OnEffect hook wants them (Config.WantEffects). A follower-only
// proxy reads nothing (and once nothing has needed them for standbyAfter, it
// unsubscribes: subscriber.go); its appliers read the slaves' positions when
// reads need them (Applier.Reached). When it needs the messages
// again it starts from the master's position, or from the first hint of the
// wake-up if the backlog holds it a few entries back (the message that
// woke it is then handed too).
type backlogReader struct {
	r   *Replicator
	c   redis.Conn // to the master; owned by the goroutine in run
	gen uint64     // the master generation, stamped on the messages
	log zerolog.Logger

	// hint is the highest sequence number seen on the channel, hintEpoch the
	// epoch of the last message seen there.
	hint      atomic.Int64
	hintEpoch atomic.Pointer[string]
	// low is the lowest sequence number seen on the channel since the last
	// wake-up (0: none).
	low atomic.Int64
	// epoch and last: the position of the last entry handed to the appliers;
	// started: they are current (the reader reads); kicked: the appliers were
	// asked to compare their positions with the master's in this session.
	started, kicked bool
	epoch           string
	last            int64
	// atStart: last is 0 because the epoch read starts at 1 (seen on the
	// channel), not because the position is unknown.
	atStart bool
	// track follows the channel's epochs for bridge.go (noteHint's goroutine).
	track hintTrack
	// copies and fence let run fill the backlog's evicted gaps (hints.go).
	copies *channelCopies
	fence  *fencer
	stop   <-chan struct{}
	// unneeded is when the reader last found that nothing needs the messages
	// (zero: something does); notNeeded says run ended for that reason.
	unneeded  time.Time
	notNeeded atomic.Bool
	// fed is the position of the last message given to OnMessage, when the
	// messages given since the reader started are unbroken.
	fed struct {
		ok    bool
		epoch string
		seq   int64
	}
}

// noteHint records a message received on the channel; the caller then wakes run.
func (b *backlogReader) noteHint(data []byte) {
	epoch, seq, ok := peekSeq(data)
	if !ok {
		b.log.Error().Int("bytes", len(data)).Msg("undecodable message on the sync channel; reading the backlog")
		return
	}
	b.track.note(&b.r.bridges, epoch, seq)
	if b.copies != nil {
		b.copies.add(epoch, seq, data)
	}
	if e := b.hintEpoch.Load(); e == nil || *e != epoch {
		// Another epoch: its numbers start over.
		b.hintEpoch.Store(&epoch)
		b.hint.Store(seq)
	} else {
		casMax(&b.hint, seq, func(cur int64) bool { return seq <= cur })
	}
	casMax(&b.low, seq, func(cur int64) bool { return cur != 0 && cur <= seq })
}

// casMax stores v in x unless keep says the current value stays.
func casMax(x *atomic.Int64, v int64, keep func(cur int64) bool) {
	for {
		cur := x.Load()
		if keep(cur) || x.CompareAndSwap(cur, v) {
			return
		}
	}
}

// run reads the backlog once per wake-up until stop is closed, while this
// proxy needs the messages.
func (b *backlogReader) run(stop, wake <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		case <-wake:
		}
		low := b.low.Swap(0)
		leads := b.r.leads()
		if !b.kicked || (leads && !b.started) {
			// At the session's start, and when an applier started applying:
			// the appliers compare their positions with the master's.
			b.kicked = true
			b.r.kickAll()
		}
		if !leads && !b.r.wantsEffects() {
			b.started = false
			b.lost()
			if b.unneeded.IsZero() {
				b.unneeded = time.Now()
			} else if time.Since(b.unneeded) >= standbyAfter {
				return errNotNeeded
			}
			continue
		}
		b.unneeded = time.Time{}
		if !b.started {
			if err := b.start(low); err != nil {
				return err
			}
		}
		if err := b.drain(); err != nil {
			return err
		}
	}
}

// lost tells OnStreamLost that the messages given so far no longer continue.
func (b *backlogReader) lost() {
	if !b.fed.ok {
		return
	}
	b.fed.ok = false
	if f := b.r.cfg.OnStreamLost; f != nil {
		f()
	}
}

// feed gives m to OnMessage, saying whether it follows the last one given.
func (b *backlogReader) feed(m *Message, seq int64) {
	f := b.r.cfg.OnMessage
	if f == nil {
		return
	}
	continuous := b.fed.ok && b.fed.epoch == m.Epoch && b.fed.seq+1 == seq
	b.fed.ok, b.fed.epoch, b.fed.seq = true, m.Epoch, seq
	f(m, continuous)
}

// start reads from the master's current position on, or from just before low
// (the first hint of this wake-up) when that is at most backlogReadCount
// entries back: appliers find what came before in the backlog themselves.
func (b *backlogReader) start(low int64) error {
	vals, err := redis.Values(b.c.Do("MGET", KeyEpoch, KeySeq))
	if err != nil {
		return err
	}
	b.epoch, _ = redis.String(vals[0], nil)
	b.last, _ = redis.Int64(vals[1], nil)
	b.started, b.atStart = true, false
	if b.epoch != "" {
		b.r.bridges.readEpoch(b.epoch)
	}
	b.r.observe(b.last)
	if low > 0 && low <= b.last && b.last-low < backlogReadCount {
		b.last = low - 1
	}
	b.startFeed()
	return nil
}

// startFeed tells OnStreamStart that the messages after the position read are
// given from now on.
func (b *backlogReader) startFeed() {
	f := b.r.cfg.OnStreamStart
	if f == nil || b.epoch == "" {
		return
	}
	b.fed.ok, b.fed.epoch, b.fed.seq = true, b.epoch, b.last
	f(b.epoch, b.last)
}

// drain hands the appliers every backlog entry after the last one read.
func (b *backlogReader) drain() error {
	// A hint seen before the read must be in what it reads (the master script
	// appends to the backlog before it publishes); later ones woke run again.
	h, he := b.hint.Load(), b.hintEpoch.Load()
	for {
		vals, err := redis.Values(b.c.Do("XRANGE", KeyBacklog, strconv.FormatInt(b.last+1, 10)+"-0", "+",
			"COUNT", backlogReadCount))
		if err != nil {
			return err
		}
		for i, v := range vals {
			m, seq, err := decodeBacklogEntry(v)
			if err != nil {
				// The appliers meet it too, in their catch-up, and stop there.
				b.log.Error().Err(err).Int64("after", b.last).Msg("undecodable backlog entry")
				b.r.kickAll()
				return nil
			}
			if i == 0 && (b.last > 0 || b.atStart) && (seq > b.last+1 || m.Epoch != b.epoch) {
				// The backlog was evicted and started again past what was read,
				// in this epoch or in a new one.
				b.fillTail(m.Epoch, seq-1)
			}
			b.hand(m, seq)
		}
		if len(vals) < backlogReadCount {
			break
		}
	}
	if h > b.last || (he != nil && *he != b.epoch) {
		return b.unknownHint(h, he)
	}
	return nil
}

// fillTail takes from the channel the messages the master numbered after the
// last one read, when the backlog no longer has them: the backlog was evicted
// and not written since (the master's counter, read before the fence, proves
// they exist), or the epoch ended (bridge.go: its end is where the channel's
// messages of that epoch stopped). epoch and seq are the master's position.
func (b *backlogReader) fillTail(epoch string, seq int64) {
	switch {
	case (b.last == 0 && !b.atStart) || b.epoch == "":
	case epoch == b.epoch:
		if seq > b.last && !b.backlogHas(b.last+1) {
			b.fill(b.epoch, b.last+1, seq, b.stop)
		}
	default:
		b.fillEnd()
	}
}

// fillEnd takes from the channel the messages of the epoch read that came
// after the last one read, up to the last the channel had (the epoch ended, or
// its metadata is being evicted): everything published before the fence is in.
func (b *backlogReader) fillEnd() {
	if b.last == 0 || b.epoch == "" || b.fence == nil || !b.fence.wait(b.r.cfg.Timeout, b.stop) {
		return
	}
	if end := b.copies.last(b.epoch); end > b.last {
		b.fill(b.epoch, b.last+1, end, b.stop)
	}
}

// backlogHas reports whether the backlog holds entry seq (written since it was
// read: the next wake-up reads it); errors say no, and the channel is tried.
func (b *backlogReader) backlogHas(seq int64) bool {
	id := strconv.FormatInt(seq, 10) + "-0"
	vals, err := redis.Values(b.c.Do("XRANGE", KeyBacklog, id, id))
	return err == nil && len(vals) == 1
}

func (b *backlogReader) hand(m *Message, seq int64) {
	if m.Epoch != b.epoch {
		b.r.bridges.readEpoch(m.Epoch)
	}
	b.epoch, b.last, b.atStart = m.Epoch, seq, false
	m.gen = b.gen
	b.r.recent.add(m)
	b.r.observe(seq)
	b.feed(m, seq)
	if f := b.r.cfg.OnEffect; f != nil {
		for _, e := range m.Effects {
			f(e.DB, e.Args)
		}
	}
	for _, a := range b.r.Appliers() {
		if a.Leader() {
			a.offer(m)
		}
	}
}

// unknownHint deals with a position seen on the channel (h, in epoch he) that
// the backlog does not have: the master's data set changed (it restarted empty,
// or got a new epoch), or someone published a message of their own.
func (b *backlogReader) unknownHint(h int64, he *string) error {
	vals, err := redis.Values(b.c.Do("MGET", KeyEpoch, KeySeq))
	if err != nil {
		return err
	}
	epoch, _ := redis.String(vals[0], nil)
	seq, err := redis.Int64(vals[1], nil)
	if epoch == "" || err != nil {
		// No epoch or no counter: evicted (a new epoch follows with the next
		// write, bridge.go) or the master was emptied (its new epoch is read
		// when it comes). What this epoch published last, the channel has.
		b.fillEnd()
		b.hint.CompareAndSwap(h, b.last)
		return nil
	}
	b.fillTail(epoch, seq)
	if epoch != b.epoch && epoch != "" {
		// A new epoch (a new data set, or metadata evicted whole: bridge.go) is
		// read from its start, for the appliers to cross to it. Where the
		// channel showed it start, the messages the backlog lost since are
		// taken from the channel (drain, fillTail).
		b.log.Warn().Str("epoch", epoch).Int64("seq", seq).Str("was_epoch", b.epoch).Int64("was_seq", b.last).
			Msg("the master is in a new epoch; reading its backlog from its start")
		b.epoch, b.last, b.atStart = epoch, 0, false
		if first := b.r.bridges.firstOf(epoch); first > 0 && first <= seq {
			b.last, b.atStart = first-1, true
		}
		b.r.bridges.readEpoch(epoch)
		b.r.latest.Store(seq)
		b.r.kickAll()
		b.hint.CompareAndSwap(h, 0)
		b.hintEpoch.CompareAndSwap(he, &epoch)
		return b.drain()
	}
	if epoch != b.epoch || seq < b.last {
		b.log.Warn().Str("epoch", epoch).Int64("seq", seq).Str("was_epoch", b.epoch).Int64("was_seq", b.last).
			Msg("the master's data set changed; reading its backlog from its position")
		b.epoch, b.last = epoch, seq
		b.r.latest.Store(seq)
		b.r.kickAll()
	} else if h > b.last {
		b.log.Warn().Int64("channel_seq", h).Int64("backlog_seq", b.last).
			Msg("a message on the sync channel that the master's backlog does not hold: ignored")
	}
	// Hints raised meanwhile woke run again.
	b.hint.CompareAndSwap(h, b.last)
	cur := b.epoch
	b.hintEpoch.CompareAndSwap(he, &cur)
	return nil
}
