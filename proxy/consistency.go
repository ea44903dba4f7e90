package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Read consistency levels. A session's read floor is the replication position
// its reads must see: at session level its last write, what its reads saw and
// the causal token it was given; global adds the master's position when the
// read arrived; eventual keeps only the token.
//
// What a read saw is bounded from above by reading the position back on the
// same backend connection, right behind the batch's reads (Redis runs one
// connection's commands in order, and a slave stores its position in the same
// step as the effects): GET syncproxy:applied on a slave, MGET of the epoch and
// sequence number on the master. These probes go in DB 0, where the metadata
// lives, and their replies never reach the client.

// consistency is a read consistency level.
type consistency uint8

const (
	levelDefault  consistency = iota // the proxy's --read-consistency
	levelSession                     // read-your-writes, monotonic reads, tokens
	levelGlobal                      // session, and every write acknowledged before the read
	levelEventual                    // the causal token only
)

var levelNames = [...]string{levelDefault: "", levelSession: "session", levelGlobal: "global", levelEventual: "eventual"}

func (c consistency) String() string { return levelNames[c] }

// parseConsistency parses a level name (case-insensitive).
func parseConsistency(s string) (consistency, bool) {
	for l := levelSession; l <= levelEventual; l++ {
		if s == levelNames[l] || strings.EqualFold(s, levelNames[l]) { // (read per read: no allocation)
			return l, true
		}
	}
	return levelDefault, false
}

// readLevel is the proxy's level: --read-your-writes=false means eventual.
func (c *Config) readLevel() consistency {
	if !c.ReadYourWrites {
		return levelEventual
	}
	if l, ok := parseConsistency(c.ReadConsistency); ok {
		return l
	}
	return levelSession
}

// level returns the session's read consistency level.
func (sess *Session) level() consistency {
	if sess.consistency != levelDefault {
		return sess.consistency
	}
	return sess.s.config().readLevel()
}

// clientConsistency is CLIENT CONSISTENCY session|global|eventual.
func (sess *Session) clientConsistency(r *router.Request, args [][]byte) {
	if len(args) != 3 {
		sess.localError(r, errWrongArity("client|consistency"))
		return
	}
	l, ok := parseConsistency(string(args[2]))
	if !ok {
		sess.localError(r, msgSyntax)
		return
	}
	sess.setConsistency(l)
	sess.local(r, []byte("+OK\r\n"))
}

// setConsistency sets the session's level (levelDefault: the proxy's), and what
// CLIENT LIST shows.
func (sess *Session) setConsistency(l consistency) {
	sess.consistency = l
	sess.shownLevel.Store(int32(l))
}

// shownConsistency is the level CLIENT INFO and CLIENT LIST show (safe from
// another session's goroutine).
func (sess *Session) shownConsistency() string {
	if l := consistency(sess.shownLevel.Load()); l != levelDefault {
		return l.String()
	}
	return sess.s.config().readLevel().String()
}

// probe reads back the position of a backend behind the batch's reads on it.
type probe struct {
	slave *router.Slave // nil: the master
	req   router.Request
}

// The probes' commands (DB 0). They are only read by the backends' writers.
var (
	probeSlaveCmd  = buildCommand([][]byte{[]byte("GET"), []byte(replicate.KeyApplied)})
	probeMasterCmd = buildCommand([][]byte{[]byte("MGET"), []byte(replicate.KeyEpoch), []byte(replicate.KeySeq)})
)

// readOnSlave notes a read sent to sl: its position must be read back.
func (sess *Session) readOnSlave(sl *router.Slave) {
	if sess.level() != levelEventual || sess.tracking() || sess.s.near != nil { // the near cache needs it
		sess.probeSlave = sl
	}
}

// readOnMaster notes a read sent to the master.
func (sess *Session) readOnMaster() {
	if sess.level() != levelEventual || sess.tracking() || sess.s.near != nil {
		sess.probeMaster = true
	}
}

// sendProbes submits the probes the reads sent since the last call need, each
// behind them on the same connection.
func (sess *Session) sendProbes() {
	sess.nearSendTTLs() // before the probes, on the same connections
	if sl := sess.probeSlave; sl != nil {
		sess.probeSlave = nil
		p := sess.nextProbe(sl, probeSlaveCmd)
		sess.waiter.Defer(sl.Backend, int(sess.id), &p.req) // in one step with the reads
	}
	if sess.probeMaster {
		sess.probeMaster = false
		p := sess.nextProbe(nil, probeMasterCmd)
		sess.s.router.Master().Submit(int(sess.id), &p.req)
	}
}

func (sess *Session) nextProbe(sl *router.Slave, cmd []byte) *probe {
	if len(sess.probes) == cap(sess.probes) {
		sess.probes = append(sess.probes, nil)
	} else {
		sess.probes = sess.probes[:len(sess.probes)+1]
	}
	p := sess.probes[len(sess.probes)-1]
	if p == nil {
		p = &probe{}
		sess.probes[len(sess.probes)-1] = p
	}
	p.req.Reset()
	p.slave, p.req.Kind, p.req.Raw = sl, router.KindRaw, cmd
	sess.waiter.Add(&p.req)
	return p
}

// parseBulk splits a bulk string frame off b: its body and what follows.
func parseBulk(b []byte) (body, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if len(b) == 0 || b[0] != '$' || i < 2 {
		return nil, nil, false
	}
	n, err := strconv.Atoi(string(b[1 : i-1]))
	if err != nil || n < 0 || len(b) < i+1+n+2 {
		return nil, nil, false
	}
	return b[i+1 : i+1+n], b[i+1+n+2:], true
}

// afterUnknown returns true, with the batch's reads sent to the master, when a
// probe failed and the master may serve reads: its position is past anything a
// slave served.
func (sess *Session) afterUnknown() bool {
	rt := sess.s.router
	if !sess.readUnknown || rt.ReadOptions().Policy == router.PolicySlave || !rt.Master().Up() {
		return false
	}
	sess.readUnknown = false
	sess.batchPicked, sess.batchSlave = true, nil
	return true
}

// masterPosition fetches the master's position for global reads: one fetch in
// flight at a time, shared by every read that arrived before it was sent.
type masterPosition struct {
	mu   sync.Mutex
	cond *sync.Cond
	busy bool      // a fetch is in flight
	next *posFetch // joined by the reads arriving now; sent after the one in flight
	req  router.Request
	wait *router.Waiter
	// reads counts the batches of global reads that asked for the position,
	// fetches the round trips that answered them (INFO global_reads).
	reads, fetches atomic.Int64
}

type posFetch struct {
	done  bool
	epoch string
	seq   int64
}

func newMasterPosition() *masterPosition {
	m := &masterPosition{wait: router.NewWaiter()}
	m.cond = sync.NewCond(&m.mu)
	return m
}

// get returns the master's position at some time after it was called (0 when
// the master did not answer). The caller whose fetch is due sends it on
// connection idx; the others wait for it.
func (m *masterPosition) get(master *router.Backend, idx int) (string, int64) {
	m.reads.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.next
	if f == nil {
		f = &posFetch{}
		m.next = f
	}
	for !f.done {
		if m.busy || m.next != f {
			m.cond.Wait()
			continue
		}
		m.busy, m.next = true, nil
		m.mu.Unlock()
		f.epoch, f.seq = m.fetch(master, idx)
		m.mu.Lock()
		f.done, m.busy = true, false
		m.cond.Broadcast()
	}
	return f.epoch, f.seq
}

// fetch reads the master's position (only the caller holding busy runs it).
func (m *masterPosition) fetch(master *router.Backend, idx int) (string, int64) {
	m.fetches.Add(1)
	m.req.Reset()
	m.req.Kind, m.req.Raw = router.KindRaw, probeMasterCmd
	m.wait.Add(&m.req)
	master.Submit(idx, &m.req)
	m.wait.Wait()
	reply := m.req.Reply
	if m.req.Failed || !bytes.HasPrefix(reply, []byte("*2\r\n")) {
		return "", 0
	}
	epoch, rest, ok1 := parseBulk(reply[4:])
	seq, _, ok2 := parseBulk(rest)
	n, err := strconv.ParseInt(string(seq), 10, 64)
	if !ok1 || !ok2 || err != nil {
		return "", 0
	}
	return string(epoch), n
}

// awaitRead waits up to wait (ryw-wait) for a slave that may serve a read that
// must see epoch:seq, woken each time a slave's position moves; it returns
// PickRead's last answer.
func (sess *Session) awaitRead(epoch string, seq int64, wait time.Duration) (*router.Slave, error) {
	rt := sess.s.router
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		moved := sess.s.repl.Moved()
		if sl, err := rt.PickRead(epoch, seq); sl != nil {
			return sl, err
		}
		select {
		case <-moved:
		case <-timeout.C:
			return rt.PickRead(epoch, seq)
		}
	}
}
