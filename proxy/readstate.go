package proxy

import (
	"bytes"
	"strconv"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/router"
)

// readState is what a session's reads must see and have seen (see
// consistency.go for the levels): its last write, the causal token it was
// given, what its reads saw, and the batch's read routing with the probes that
// read back the positions behind its reads. Session embeds it.
type readState struct {
	lastSeq   int64  // sequence number of this client's last write (read-your-writes)
	lastEpoch string // and the master's epoch then
	minSeq    int64  // causal token set by CLIENT SYNCAFTER: reads must see it
	minEpoch  string
	readSeq   int64 // what the session's reads saw (monotonic reads)
	readEpoch string

	consistency consistency // CLIENT CONSISTENCY; levelDefault: the proxy's
	shownLevel  atomic.Int32
	// The batch's reads stay on the backend the first one picked (nil: the
	// master), so that they read in order; the probes read back its position.
	batchPicked bool
	batchSlave  *router.Slave
	probeSlave  *router.Slave
	probeMaster bool
	probes      []*probe
	readUnknown bool // a probe failed: what the reads saw is not known
}

// noteWrite records the replication position of a completed write, for
// read-your-writes, WAIT and CLIENT SYNCTOKEN (a write without effect has none).
func (st *readState) noteWrite(r *router.Request) {
	if r.Seq > 0 {
		st.lastSeq, st.lastEpoch = r.Seq, r.Epoch
	}
}

// later returns the later of two positions: the second when the epochs differ
// (it was learnt last).
func later(e1 string, s1 int64, e2 string, s2 int64) (string, int64) {
	if s2 == 0 || (e1 == e2 && s1 >= s2) {
		return e1, s1
	}
	if s1 == 0 || e1 != e2 || s2 > s1 {
		return e2, s2
	}
	return e1, s1
}

// readPosition is the replication position a read must see: the causal token
// the session was given, and unless the level l is eventual its last write and
// what its reads saw.
func (st *readState) readPosition(l consistency) (string, int64) {
	epoch, seq := st.minEpoch, st.minSeq
	if l != levelEventual {
		epoch, seq = later(epoch, seq, st.lastEpoch, st.lastSeq)
		epoch, seq = later(epoch, seq, st.readEpoch, st.readSeq)
	}
	return epoch, seq
}

// seenPosition is what CLIENT SYNCTOKEN hands out: the latest of the token, the
// last write and what the reads saw, whatever the level.
func (st *readState) seenPosition() (string, int64) {
	epoch, seq := later(st.minEpoch, st.minSeq, st.lastEpoch, st.lastSeq)
	return later(epoch, seq, st.readEpoch, st.readSeq)
}

// applyProbes raises the session's read floor, and the slaves' observed
// positions, to what the completed probes read back.
func (st *readState) applyProbes() {
	for _, p := range st.probes {
		epoch, n, ok := p.position()
		if !ok {
			if p.failed() {
				// What the reads saw is not known: the next one goes to the master.
				st.readUnknown = true
			}
			continue
		}
		if string(epoch) != st.readEpoch {
			st.readEpoch = string(epoch)
			st.readSeq = 0
		}
		st.readSeq = max(st.readSeq, n)
		if p.slave != nil {
			p.slave.Observe(st.readEpoch, n)
		}
	}
	st.probes = st.probes[:0]
}

// failed reports whether the probe got no position: its backend failed or
// answered an error.
func (p *probe) failed() bool {
	return p.req.Failed || (len(p.req.Reply) > 0 && p.req.Reply[0] == '-')
}

// position returns the position the completed probe read back.
func (p *probe) position() (epoch []byte, seq int64, ok bool) {
	if p.failed() {
		return nil, 0, false
	}
	reply := p.req.Reply
	var s []byte
	if p.slave != nil {
		body, _, ok := parseBulk(reply)
		i := bytes.LastIndexByte(body, ':')
		if !ok || i <= 0 {
			return nil, 0, false
		}
		epoch, s = body[:i], body[i+1:]
	} else {
		if !bytes.HasPrefix(reply, []byte("*2\r\n")) {
			return nil, 0, false
		}
		var ok1, ok2 bool
		epoch, reply, ok1 = parseBulk(reply[4:])
		s, _, ok2 = parseBulk(reply)
		if !ok1 || !ok2 {
			return nil, 0, false
		}
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil || n <= 0 {
		return nil, 0, false
	}
	return epoch, n, true
}
