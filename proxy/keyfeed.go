package proxy

import (
	"bytes"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// keyFeed turns the sync stream into key invalidations for the consumers that
// derive state from it (CLIENT TRACKING, the near cache): the keys every write
// touched, in stream order, from any proxy, script, expiry or eviction that
// reached the stream. It also keeps the stream position it has given them,
// so that a reply may wait until every write it can show has been given
// (waitFed): an invalidation then reaches a tracking client before a reply
// that shows the write.
//
// The replicator's backlog reader calls message and lost from one goroutine.
type keyFeed struct {
	table *router.Table
	idx   []int // scratch for message's goroutine

	mu      sync.Mutex
	subs    []keyConsumer
	live    bool // following the stream: epoch and seq are what was given
	epoch   string
	seq     int64
	moved   chan struct{} // closed and replaced when live, epoch or seq change, if waiting
	waiting int           // goroutines in waitFed

	wanted atomic.Int32 // consumers that need the stream now
	onWant func()       // called when a consumer starts to need the stream (set before use)
}

// keyConsumer gets the stream's writes, key by key, in stream order. Its
// methods are called by the feed's goroutine and must not block.
type keyConsumer interface {
	// written: the message at (epoch, seq) wrote key in db.
	written(epoch string, seq int64, db int, key []byte)
	// flushed: the message at (epoch, seq) changed every key of db, or of
	// every DB when db < 0 (FLUSHALL, FLUSHDB, SWAPDB, FUNCTION RESTORE...).
	flushed(epoch string, seq int64, db int)
	// reset: writes may have been missed (the stream was lost or restarted,
	// the epoch changed): drop everything derived from the stream so far.
	reset()
}

func newKeyFeed(table *router.Table) *keyFeed {
	return &keyFeed{table: table, moved: make(chan struct{})}
}

// add registers c; consumers are added before the replicator starts.
func (f *keyFeed) add(c keyConsumer) {
	f.mu.Lock()
	f.subs = append(f.subs, c)
	f.mu.Unlock()
}

// want says a consumer needs (+1) or no longer needs (-1) the stream: a proxy
// that applies to no slave reads the backlog only while someone does, and the
// consumers are given nothing while no one does. A consumer holding state
// derived from the stream must therefore want it.
func (f *keyFeed) want(delta int32) {
	if f.wanted.Add(delta) == delta && delta > 0 && f.onWant != nil {
		f.onWant()
	}
}

// wants reports whether a consumer needs the stream now.
func (f *keyFeed) wants() bool { return f.wanted.Load() > 0 }

// message is the replicator's OnMessage hook.
func (f *keyFeed) message(m *replicate.Message, continuous bool) {
	var subs []keyConsumer
	if f.wants() {
		f.mu.Lock()
		subs = f.subs
		f.mu.Unlock()
	}
	if !continuous {
		for _, c := range subs {
			c.reset()
		}
	}
	if len(subs) > 0 {
		for _, e := range m.Effects {
			f.effect(subs, m.Epoch, m.Seq, e)
		}
	}
	f.mu.Lock()
	f.live, f.epoch, f.seq = true, m.Epoch, m.Seq
	f.moveLocked()
	f.mu.Unlock()
}

// effect gives the consumers the keys one effect wrote.
func (f *keyFeed) effect(subs []keyConsumer, epoch string, seq int64, e replicate.Effect) {
	if len(e.Args) == 0 {
		return
	}
	name := e.Args[0]
	switch {
	case bytes.EqualFold(name, []byte("function")):
		// Libraries are no keys: as Redis, no invalidation (a function's new
		// code is not a change of the data it reads).
		return
	case bytes.EqualFold(name, []byte("flushall")):
		for _, c := range subs {
			c.flushed(epoch, seq, -1)
		}
		return
	case bytes.EqualFold(name, []byte("flushdb")):
		for _, c := range subs {
			c.flushed(epoch, seq, e.DB)
		}
		return
	case bytes.EqualFold(name, []byte("swapdb")):
		for _, i := range []int{1, 2} {
			db := e.DB
			if i < len(e.Args) {
				db = atoiOr(e.Args[i], -1)
			}
			for _, c := range subs {
				c.flushed(epoch, seq, db)
			}
		}
		return
	}
	ci := f.table.Lookup(e.Args)
	if ci == nil {
		// A command the table does not know: every key may have changed.
		for _, c := range subs {
			c.flushed(epoch, seq, -1)
		}
		return
	}
	f.idx = ci.KeyIndexes(e.Args, f.idx[:0])
	for _, i := range f.idx {
		for _, c := range subs {
			c.written(epoch, seq, e.DB, e.Args[i])
		}
	}
	// MOVE and COPY ... DB write their key in another DB too.
	if db, key, ok := otherDBWrite(ci.Name, e.Args); ok {
		for _, c := range subs {
			c.written(epoch, seq, db, key)
		}
	}
}

// otherDBWrite returns the DB and key that MOVE key db and COPY src dst DB db
// write besides the effect's own DB.
func otherDBWrite(name string, args [][]byte) (db int, key []byte, ok bool) {
	switch name {
	case "move":
		if len(args) == 3 {
			if db = atoiOr(args[2], -1); db >= 0 {
				return db, args[1], true
			}
		}
	case "copy":
		for i := 3; i+1 < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("db")) {
				if db = atoiOr(args[i+1], -1); db >= 0 {
					return db, args[2], true
				}
			}
		}
	}
	return 0, nil, false
}

func atoiOr(b []byte, def int) int {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return def
	}
	return n
}

// keyStarter is a keyConsumer told where the stream starts: the messages after
// (epoch, seq) are given from now on, and none before it may be assumed.
type keyStarter interface {
	started(epoch string, seq int64)
}

// started is the replicator's OnStreamStart hook: the consumers drop what they
// derived while the stream was not followed, and start from (epoch, seq).
func (f *keyFeed) started(epoch string, seq int64) {
	f.mu.Lock()
	subs := f.subs
	f.mu.Unlock()
	for _, c := range subs {
		c.reset()
		if st, ok := c.(keyStarter); ok {
			st.started(epoch, seq)
		}
	}
	f.mu.Lock()
	f.live, f.epoch, f.seq = true, epoch, seq
	f.moveLocked()
	f.mu.Unlock()
}

// lost is the replicator's OnStreamLost hook.
func (f *keyFeed) lost() {
	f.mu.Lock()
	subs := f.subs
	f.live = false
	f.moveLocked()
	f.mu.Unlock()
	for _, c := range subs {
		c.reset()
	}
}

func (f *keyFeed) moveLocked() {
	if f.waiting > 0 {
		close(f.moved)
		f.moved = make(chan struct{})
	}
}

// position returns the position given to the consumers, and whether the feed
// follows the stream.
func (f *keyFeed) position() (epoch string, seq int64, live bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epoch, f.seq, f.live
}

// waitFed waits up to d until the consumers have been given every message up
// to (epoch, seq). It returns false when d passed, the stream is not followed,
// or the feed is in another epoch: the caller then cannot rely on what the
// consumers derived (it drops or bypasses it).
func (f *keyFeed) waitFed(epoch string, seq int64, d time.Duration) bool {
	var timer *time.Timer
	f.mu.Lock()
	f.waiting++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		f.mu.Lock()
		live, fe, fs, moved := f.live, f.epoch, f.seq, f.moved
		f.mu.Unlock()
		if live && fe == epoch && fs >= seq {
			return true
		}
		if d <= 0 {
			return false
		}
		if timer == nil {
			timer = time.NewTimer(d)
		}
		select {
		case <-moved:
		case <-timer.C:
			return false
		}
	}
}
