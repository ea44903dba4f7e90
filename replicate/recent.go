package replicate

import "sync"

// recentMessages keeps the last messages the backlog reader read from the
// master's backlog, in sequence order, for the appliers' catch-up when the
// backlog itself no longer holds them: a maxmemory policy (allkeys-*) may evict
// the backlog stream, after which the master script starts a new one at the next
// sequence number. They came from the backlog, so they are as trusted as it.
type recentMessages struct {
	mu   sync.Mutex
	ring []*Message // ring[i % cap]: the message with sequence number i
	last int64      // sequence number of the newest message held (0: none)
	n    int        // messages held
}

// minRecent is the fewest messages kept, whatever the appliers' queue length.
const minRecent = 4096

func newRecentMessages(size int) *recentMessages {
	return &recentMessages{ring: make([]*Message, size)}
}

// add records m, the message read after the last one added; a message that does
// not follow it (another epoch, a gap) starts the ring over.
func (r *recentMessages) add(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && (m.Seq != r.last+1 || r.ring[r.last%int64(len(r.ring))].Epoch != m.Epoch) {
		clear(r.ring)
		r.n = 0
	}
	r.ring[m.Seq%int64(len(r.ring))] = m
	r.last = m.Seq
	r.n = min(r.n+1, len(r.ring))
}

// span returns the messages from..to of epoch, or nil unless it holds them all.
func (r *recentMessages) span(epoch string, from, to int64) []*Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 || from > to || to > r.last || from <= r.last-int64(r.n) {
		return nil
	}
	out := make([]*Message, 0, to-from+1)
	for s := from; s <= to; s++ {
		m := r.ring[s%int64(len(r.ring))]
		if m == nil || m.Seq != s || m.Epoch != epoch {
			return nil
		}
		out = append(out, m)
	}
	return out
}
