package replicate

import "sync"

// recentMessages keeps the last messages the backlog reader read from the
// master's backlog, in sequence order, for the appliers' catch-up when the
// backlog itself no longer holds them: a maxmemory policy (allkeys-*) may evict
// the backlog stream, after which the master script starts a new one at the next
// sequence number. They came from the backlog, so they are as trusted as it.
//
// It keeps the tails of the last few epochs too: when an eviction took the whole
// replication metadata and the master went on in a new epoch (or several, one
// after another), slaves still in an old one catch up to its end from here
// before they cross to the next (bridge.go).
type recentMessages struct {
	mu    sync.Mutex
	rings []*msgRing // one per epoch, the epoch being read last
}

// recentEpochs bounds the epochs whose tails are kept.
const recentEpochs = 4

// msgRing holds at most its length in messages and recentMaxBytes of them.
type msgRing struct {
	ring  []*Message // ring[i % len]: the message with sequence number i
	sizes []int      // sizes[i % len]: what ring's message counts for
	last  int64      // sequence number of the newest message held (0: none)
	n     int        // messages held: last-n+1 .. last
	bytes int        // their sizes, added up
}

// minRecent is the fewest messages kept, whatever the appliers' queue length;
// recentMaxBytes bounds what each epoch's ring holds (effects' arguments, and
// recentOverhead for each message).
const (
	minRecent      = 4096
	recentMaxBytes = 1 << 20
	recentOverhead = 256
)

func newRecentMessages(size int) *recentMessages {
	return &recentMessages{rings: []*msgRing{newMsgRing(size)}}
}

func newMsgRing(size int) *msgRing {
	return &msgRing{ring: make([]*Message, size), sizes: make([]int, size)}
}

// add records m, the message read after the last one added. A message of
// another epoch keeps what was held as that epoch's tail and starts over; a gap
// in the same epoch starts over.
func (r *recentMessages) add(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.rings[len(r.rings)-1]
	if c.n > 0 {
		if e := c.ring[c.slot(c.last)].Epoch; e != m.Epoch {
			var next *msgRing
			if len(r.rings) == recentEpochs {
				next = r.rings[0]
				r.rings = append(r.rings[:0], r.rings[1:]...)
			} else {
				next = newMsgRing(len(c.ring))
			}
			next.reset()
			r.rings = append(r.rings, next)
			c = next
		} else if m.Seq != c.last+1 {
			c.reset()
		}
	}
	c.add(m)
}

func (c *msgRing) reset() {
	clear(c.ring)
	c.last, c.n, c.bytes = 0, 0, 0
}

func (c *msgRing) add(m *Message) {
	if c.n == len(c.ring) {
		c.dropOldest()
	}
	size := recentOverhead
	for _, e := range m.Effects {
		for _, a := range e.Args {
			size += len(a)
		}
	}
	i := c.slot(m.Seq)
	c.ring[i], c.sizes[i] = m, size
	c.last, c.n, c.bytes = m.Seq, c.n+1, c.bytes+size
	for c.bytes > recentMaxBytes && c.n > 1 {
		c.dropOldest()
	}
}

func (c *msgRing) slot(seq int64) int { return int(seq % int64(len(c.ring))) }

func (c *msgRing) dropOldest() {
	i := c.slot(c.last - int64(c.n) + 1)
	c.bytes -= c.sizes[i]
	c.ring[i], c.sizes[i] = nil, 0
	c.n--
}

// span returns the messages from..to of epoch, or nil unless it holds them all.
func (r *recentMessages) span(epoch string, from, to int64) []*Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.rings) - 1; i >= 0; i-- {
		if out := r.rings[i].span(epoch, from, to); out != nil {
			return out
		}
	}
	return nil
}

func (c *msgRing) span(epoch string, from, to int64) []*Message {
	if c.n == 0 || from > to || to > c.last || from <= c.last-int64(c.n) {
		return nil
	}
	out := make([]*Message, 0, to-from+1)
	for s := from; s <= to; s++ {
		m := c.ring[c.slot(s)]
		if m == nil || m.Seq != s || m.Epoch != epoch {
			return nil
		}
		out = append(out, m)
	}
	return out
}
