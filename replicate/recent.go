package replicate

import "sync"

// recentMessages keeps the last messages the backlog reader read from the
// master's backlog, in sequence order, for the appliers' catch-up when the
// backlog itself no longer holds them: a maxmemory policy (allkeys-*) may evict
// the backlog stream, after which the master script starts a new one at the next
// sequence number. They came from the backlog, so they are as trusted as it. It
// holds at most its length in messages and recentMaxBytes of them.
type recentMessages struct {
	mu    sync.Mutex
	ring  []*Message // ring[i % len]: the message with sequence number i
	sizes []int      // sizes[i % len]: what ring's message counts for
	last  int64      // sequence number of the newest message held (0: none)
	n     int        // messages held: last-n+1 .. last
	bytes int        // their sizes, added up
}

// minRecent is the fewest messages kept, whatever the appliers' queue length;
// recentMaxBytes bounds what they hold (effects' arguments, and
// recentOverhead for each message).
const (
	minRecent      = 4096
	recentMaxBytes = 1 << 20
	recentOverhead = 256
)

func newRecentMessages(size int) *recentMessages {
	return &recentMessages{ring: make([]*Message, size), sizes: make([]int, size)}
}

// add records m, the message read after the last one added; a message that does
// not follow it (another epoch, a gap) starts the ring over.
func (r *recentMessages) add(m *Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && (m.Seq != r.last+1 || r.ring[r.slot(r.last)].Epoch != m.Epoch) {
		clear(r.ring)
		r.n, r.bytes = 0, 0
	}
	if r.n == len(r.ring) {
		r.dropOldest()
	}
	size := recentOverhead
	for _, e := range m.Effects {
		for _, a := range e.Args {
			size += len(a)
		}
	}
	i := r.slot(m.Seq)
	r.ring[i], r.sizes[i] = m, size
	r.last, r.n, r.bytes = m.Seq, r.n+1, r.bytes+size
	for r.bytes > recentMaxBytes && r.n > 1 {
		r.dropOldest()
	}
}

func (r *recentMessages) slot(seq int64) int { return int(seq % int64(len(r.ring))) }

func (r *recentMessages) dropOldest() {
	i := r.slot(r.last - int64(r.n) + 1)
	r.bytes -= r.sizes[i]
	r.ring[i], r.sizes[i] = nil, 0
	r.n--
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
		m := r.ring[r.slot(s)]
		if m == nil || m.Seq != s || m.Epoch != epoch {
			return nil
		}
		out = append(out, m)
	}
	return out
}
