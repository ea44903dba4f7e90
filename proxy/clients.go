package proxy

import (
	"sort"
	"sync"
	"sync/atomic"
)

// clientSet is the server's book of its clients: their sessions, how many
// there are, the next id, and the shutdown's wait for the last one to leave.
// Server embeds it.
type clientSet struct {
	nextID  atomic.Int64
	clients atomic.Int64 // counted under mu while not shut down, so that none is added after
	// lastLeft is closed when the last client leaves during a shutdown.
	lastLeft     chan struct{}
	lastLeftOnce sync.Once
	closing      atomic.Bool

	mu       sync.Mutex // guards shutdown and sessions (and the Server's admin list)
	shutdown bool
	sessions map[*Session]struct{}
}

func (cs *clientSet) init() {
	cs.lastLeft, cs.sessions = make(chan struct{}), map[*Session]struct{}{}
}

// clientLeft counts a client gone; the last one during a shutdown wakes it.
func (cs *clientSet) clientLeft() {
	if cs.clients.Add(-1) == 0 && cs.closing.Load() {
		cs.lastLeftOnce.Do(func() { close(cs.lastLeft) })
	}
}

// sessionList returns the connected sessions, by id.
func (cs *clientSet) sessionList() []*Session {
	cs.mu.Lock()
	list := make([]*Session, 0, len(cs.sessions))
	for sess := range cs.sessions {
		list = append(list, sess)
	}
	cs.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	return list
}
