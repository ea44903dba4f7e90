package proxy

import (
	"strconv"
	"strings"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// WAIT and causal tokens answer from the slaves' applied positions, which the
// proxy knows exactly.

// wait answers WAIT numreplicas timeout: how many slaves applied the session's
// last write, waiting up to timeout ms (0: until numreplicas did) for numreplicas.
func (sess *Session) wait(c *call) {
	r, args := &c.req, c.cmd.Args
	want, err1 := strconv.ParseInt(string(args[1]), 10, 64)
	ms, err2 := strconv.ParseInt(string(args[2]), 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		sess.localError(r, msgNotInteger)
		return
	case ms < 0:
		sess.localError(r, "ERR timeout is negative")
		return
	}
	// What the batch sent before WAIT must have been answered: its writes count.
	sess.waiter.Wait()
	sess.updateLastSeq(c.at)
	var timeout <-chan time.Time
	if ms > 0 {
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		timeout = t.C
	}
	// Woken when a slave's position moves; every blockRetry, a client gone or a
	// shutdown ends the wait, and a slave's health is looked at again.
	recheck := time.NewTicker(blockRetry)
	defer recheck.Stop()
	for {
		moved := sess.s.repl.Moved()
		n := sess.acked()
		if n >= want {
			sess.local(r, []byte(":"+strconv.FormatInt(n, 10)+"\r\n"))
			return
		}
		select {
		case <-moved:
			continue
		case <-timeout:
		case <-recheck.C:
			if !peerClosed(sess.netConn) && !sess.s.closing.Load() {
				continue
			}
		}
		sess.local(r, []byte(":"+strconv.FormatInt(sess.acked(), 10)+"\r\n"))
		return
	}
}

// acked counts the slaves that applied the session's last write.
func (sess *Session) acked() int64 {
	var n int64
	for _, sl := range sess.s.router.Slaves() {
		st := sl.Status
		if sess.lastSeq == 0 {
			if sl.Backend.Up() && st.Online() {
				n++
			}
		} else if st.Epoch() == sess.lastEpoch && st.Reached(sess.lastSeq) {
			n++
		}
	}
	return n
}

// updateLastSeq takes the positions of the batch's writes before call i (all
// completed).
func (sess *Session) updateLastSeq(i int) {
	for _, c := range sess.calls[:i] {
		if c.req.Kind == router.KindWrite {
			sess.noteWrite(&c.req)
		}
	}
}

// syncToken is CLIENT SYNCTOKEN, call i of the batch: the latest position the
// session wrote or read, "epoch:seq" ("" before any), to hand to another
// connection. What the batch sent before it was answered first.
func (sess *Session) syncToken(i int) string {
	sess.sendProbes()
	sess.waiter.Wait()
	sess.applyProbes()
	sess.updateLastSeq(i)
	epoch, seq := sess.seenPosition()
	if seq == 0 {
		return ""
	}
	return epoch + ":" + strconv.FormatInt(seq, 10)
}

// syncAfter is CLIENT SYNCAFTER token: the session's reads must see that position.
func (sess *Session) syncAfter(r *router.Request, args [][]byte) {
	if len(args) != 3 {
		sess.localError(r, errWrongArity("client|syncafter"))
		return
	}
	tok := string(args[2])
	i := strings.LastIndexByte(tok, ':')
	seq, err := strconv.ParseInt(tok[i+1:], 10, 64)
	if i <= 0 || err != nil || seq < 0 {
		sess.localError(r, "ERR syncproxy: invalid sync token (want the reply of CLIENT SYNCTOKEN)")
		return
	}
	sess.minEpoch, sess.minSeq = tok[:i], seq
	sess.local(r, []byte("+OK\r\n"))
}
