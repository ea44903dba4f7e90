package replicate

import "sync"

// signal wakes every goroutine waiting for a change: wait returns a channel that
// the next raise closes (a fresh one is made for the waits after it). A waiter
// takes the channel, then checks its condition, then blocks on the channel, so
// that a change between the check and the block is not missed. raise allocates
// nothing while no one waits.
type signal struct {
	mu sync.Mutex
	ch chan struct{} // nil while no one waits
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) raise() {
	s.mu.Lock()
	ch := s.ch
	s.ch = nil
	s.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// Moved returns a channel closed at the next change of a slave's applied
// position or state: what read-your-writes and WAIT wait on (check, then wait).
func (r *Replicator) Moved() <-chan struct{} { return r.moved.wait() }

// setApplied records the slave's applied position and wakes the waiters of Moved.
func (a *Applier) setApplied(seq int64) {
	a.applied.Store(seq)
	a.r.moved.raise()
}
