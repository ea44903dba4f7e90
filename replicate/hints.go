package replicate

import (
	"bytes"
	"strconv"
	"sync"
	"time"
)

// Filling the backlog's gaps from the channel.
//
// The backlog is where the appliers take messages from: the channel is only a
// hint, since anyone who may PUBLISH on the master can put anything there. But a
// maxmemory policy that may evict any key (allkeys-*) can take the backlog
// before the backlog reader read its newest entries; the master script starts a
// new one at the next sequence number, and the messages in between would be
// lost: every slave behind them resynced in full.
//
// The reader then takes them from what one unbroken subscription received, under
// three conditions that a forger cannot meet without being seen:
//   - the backlog proves the gap: its entries resume after the missing numbers
//     (or the epoch ended), so the master did number those messages, and
//     published each of them, in order, on this subscription;
//   - a fence (a PING on the subscribing connection, answered after every
//     message published before it) shows that everything published before the
//     backlog was read has been received;
//   - each missing number was received exactly once (two different messages
//     with the same number: one is forged, and neither is used).

// channelCopyBytes and channelCopyLen bound what channelCopies holds.
const (
	channelCopyBytes = 1 << 20
	channelCopyLen   = minRecent
)

// channelCopies keeps the last messages one subscription received, as received,
// in arrival order.
type channelCopies struct {
	mu    sync.Mutex
	log   []channelCopy // circular, oldest at head
	head  int
	n     int
	bytes int
}

type channelCopy struct {
	epoch string
	seq   int64
	data  []byte
}

func newChannelCopies() *channelCopies {
	return &channelCopies{log: make([]channelCopy, channelCopyLen)}
}

// add keeps data, a message received in epoch with sequence number seq.
func (c *channelCopies) add(epoch string, seq int64, data []byte) {
	if len(data) > channelCopyBytes/4 {
		data = nil // too large to keep: that number can only be found missing
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.n > 0 && (c.n == len(c.log) || c.bytes+len(data) > channelCopyBytes) {
		c.bytes -= len(c.log[c.head].data)
		c.log[c.head] = channelCopy{}
		c.head = (c.head + 1) % len(c.log)
		c.n--
	}
	c.log[(c.head+c.n)%len(c.log)] = channelCopy{epoch: epoch, seq: seq, data: data}
	c.n++
	c.bytes += len(data)
}

// last returns the highest sequence number received in epoch (0: none).
func (c *channelCopies) last(epoch string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var hi int64
	for i := 0; i < c.n; i++ {
		if e := &c.log[(c.head+i)%len(c.log)]; e.epoch == epoch {
			hi = max(hi, e.seq)
		}
	}
	return hi
}

// span returns the messages from..to of epoch, each received exactly once (or
// twice the same) and well-formed, or nil.
func (c *channelCopies) span(epoch string, from, to int64) []*Message {
	if from > to || to-from >= int64(len(c.log)) {
		return nil
	}
	found := make([][]byte, to-from+1)
	c.mu.Lock()
	for i := 0; i < c.n; i++ {
		e := &c.log[(c.head+i)%len(c.log)]
		if e.epoch != epoch || e.seq < from || e.seq > to {
			continue
		}
		k := e.seq - from
		if e.data == nil || (found[k] != nil && !bytes.Equal(found[k], e.data)) {
			c.mu.Unlock()
			return nil
		}
		found[k] = e.data
	}
	c.mu.Unlock()
	out := make([]*Message, 0, len(found))
	for i, data := range found {
		if data == nil {
			return nil
		}
		m, err := DecodeMessage(data)
		if err != nil || m.Epoch != epoch || m.Seq != from+int64(i) {
			return nil
		}
		out = append(out, m)
	}
	return out
}

// fencer lets the backlog reader wait until the subscription has received every
// message published before it asked: the subscription's pinger sends PING with a
// token, answered by the master after those messages.
type fencer struct {
	req chan string // tokens for the pinger to send
	mu  sync.Mutex
	n   uint64
	got map[string]chan struct{}
}

func newFencer() *fencer {
	return &fencer{req: make(chan string, 1), got: make(map[string]chan struct{})}
}

// wait returns true once the fence is through, false after timeout or stop.
func (f *fencer) wait(timeout time.Duration, stop <-chan struct{}) bool {
	f.mu.Lock()
	f.n++
	tok := "syncproxy-fence-" + strconv.FormatUint(f.n, 10)
	done := make(chan struct{})
	f.got[tok] = done
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.got, tok)
		f.mu.Unlock()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f.req <- tok:
	case <-t.C:
		return false
	case <-stop:
		return false
	}
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	case <-stop:
		return false
	}
}

// pong is called by the subscription's receiver for every PONG.
func (f *fencer) pong(data string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if done, ok := f.got[data]; ok {
		close(done)
		delete(f.got, data)
	}
}

// fill hands the appliers the messages from..to of epoch that the backlog lost,
// from the channel (see above). It reports whether it could.
func (b *backlogReader) fill(epoch string, from, to int64, stop <-chan struct{}) bool {
	defer b.r.bridges.wake() // an applier may wait for these to cross an epoch
	if from > to || b.fence == nil {
		return false
	}
	if !b.fence.wait(b.r.cfg.Timeout, stop) {
		b.log.Warn().Str("epoch", epoch).Int64("from", from).Int64("to", to).
			Msg("backlog entries evicted before they were read; the channel did not answer the fence")
		return false
	}
	msgs := b.copies.span(epoch, from, to)
	if msgs == nil {
		b.log.Warn().Str("epoch", epoch).Int64("from", from).Int64("to", to).
			Msg("backlog entries evicted before they were read, and not all received once on the channel")
		return false
	}
	for _, m := range msgs {
		b.hand(m, m.Seq)
	}
	b.r.gapsFilled.Add(int64(len(msgs)))
	b.log.Info().Str("epoch", epoch).Int64("from", from).Int64("to", to).
		Msg("backlog entries evicted before they were read: taken from the channel")
	return true
}

// GapsFilled counts the messages the backlog lost to an eviction before they
// were read, taken from the sync channel instead (see hints.go).
func (r *Replicator) GapsFilled() int64 { return r.gapsFilled.Load() }
