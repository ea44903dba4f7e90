package replicate

import (
	"strconv"
	"sync/atomic"

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
type backlogReader struct {
	r   *Replicator
	c   redis.Conn // to the master; owned by the goroutine in run
	gen uint64     // the master generation, stamped on the messages
	log zerolog.Logger

	// hint is the highest sequence number seen on the channel, hintEpoch the
	// epoch of the last message seen there.
	hint      atomic.Int64
	hintEpoch atomic.Pointer[string]
	// track follows the channel's epochs for bridge.go (noteHint's goroutine).
	track hintTrack
	// copies and fence let run fill the backlog's evicted gaps (hints.go).
	copies *channelCopies
	fence  *fencer
	stop   <-chan struct{}
	// epoch and last: the position of the last entry handed to the appliers.
	started bool
	epoch   string
	last    int64
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
		return
	}
	for {
		cur := b.hint.Load()
		if seq <= cur || b.hint.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// run reads the backlog once per wake-up until stop is closed.
func (b *backlogReader) run(stop, wake <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		case <-wake:
		}
		if !b.started {
			if err := b.start(); err != nil {
				return err
			}
		}
		if err := b.drain(); err != nil {
			return err
		}
	}
}

// start reads from the master's current position on, once subscribed: the
// appliers, asked to compare their positions with the master's, find what came
// before in the backlog themselves.
func (b *backlogReader) start() error {
	vals, err := redis.Values(b.c.Do("MGET", KeyEpoch, KeySeq))
	if err != nil {
		return err
	}
	b.epoch, _ = redis.String(vals[0], nil)
	b.last, _ = redis.Int64(vals[1], nil)
	b.started = true
	b.r.observe(b.last)
	b.r.kickAll()
	return nil
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
			if i == 0 && b.last > 0 && (seq > b.last+1 || m.Epoch != b.epoch) {
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
	case b.last == 0 || b.epoch == "":
	case epoch == b.epoch:
		if seq > b.last {
			b.fill(b.epoch, b.last+1, seq, b.stop)
		}
	case b.fence != nil && b.fence.wait(b.r.cfg.Timeout, b.stop):
		if end := b.copies.last(b.epoch); end > b.last {
			b.fill(b.epoch, b.last+1, end, b.stop)
		}
	}
}

func (b *backlogReader) hand(m *Message, seq int64) {
	if m.Epoch != b.epoch {
		b.r.bridges.readEpoch(m.Epoch)
	}
	b.epoch, b.last = m.Epoch, seq
	m.gen = b.gen
	b.r.recent.add(m)
	b.r.observe(seq)
	if f := b.r.cfg.OnEffect; f != nil {
		for _, e := range m.Effects {
			f(e.DB, e.Args)
		}
	}
	for _, a := range b.r.Appliers() {
		a.offer(m)
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
	seq, _ := redis.Int64(vals[1], nil)
	b.fillTail(epoch, seq)
	if epoch != b.epoch && epoch != "" {
		// A new epoch (a new data set, or metadata evicted whole: bridge.go) is
		// read from its start, for the appliers to cross to it.
		b.log.Warn().Str("epoch", epoch).Int64("seq", seq).Str("was_epoch", b.epoch).Int64("was_seq", b.last).
			Msg("the master is in a new epoch; reading its backlog from its start")
		b.epoch, b.last = epoch, 0
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
