package router

import (
	"bytes"
	"context"
	"time"

	"github.com/syncproxy/syncproxy/internal/dial"
)

// A client's script may run for as long as it likes: Redis then answers BUSY to
// every other connection until the script ends or SCRIPT KILL ends it. BUSY means
// that the server is alive, not down: a backend that hears it records when
// (noteBusy), and a reply that takes longer than the reply timeout while the
// server keeps answering BUSY is waited for still (awaitReply), since the
// command it belongs to is running — or queued behind the script that runs.
// Client scripts run on connections of their own (SubmitOn with a ScriptLane),
// so that a runaway one holds no other client's commands behind it.

// busyPrefix starts Redis' reply to a command refused while a script runs.
var busyPrefix = []byte("-BUSY ")

// busyFresh is how long a BUSY reply counts as a sign of life: the keepalive
// PING of an idle connection refreshes it about every keepaliveIdle.
const busyFresh = 5 * keepaliveIdle

// IsBusy reports whether reply is Redis' BUSY error: a script or function is
// running on the server.
func IsBusy(reply []byte) bool { return bytes.HasPrefix(reply, busyPrefix) }

// noteBusy records that the server answered BUSY when reply is that error.
func (b *Backend) noteBusy(reply []byte) {
	if IsBusy(reply) {
		b.busyAt.Store(monoNow())
	}
}

// Busy reports whether the server answered BUSY lately: it is running a script.
func (b *Backend) Busy() bool {
	at := b.busyAt.Load()
	return at != 0 && time.Duration(monoNow()-at) < busyFresh
}

// Lane is a connection of a backend, for SubmitOn.
type Lane int

// ScriptLane chooses the connection for a client's script: a script connection
// that waits for no reply, else the one whose oldest reply is the most recent (a
// runaway script holds the others); without script connections, the session's
// connection idx.
func (b *Backend) ScriptLane(idx int) Lane {
	if len(b.scriptLinks) == 0 {
		return Lane(idx % len(b.links))
	}
	best, bestSince := 0, int64(-1)
	for i, l := range b.scriptLinks {
		since := l.waitSince.Load()
		if !l.up.Load() {
			continue
		}
		if since == 0 {
			best = i
			break
		}
		if since > bestSince {
			best, bestSince = i, since
		}
	}
	return Lane(len(b.links) + best)
}

// laneLink is the connection of lane: the session connections, then the
// script connections.
func (b *Backend) laneLink(lane Lane) *link {
	i := int(lane) % (len(b.links) + len(b.scriptLinks))
	if i < len(b.links) {
		return b.links[i]
	}
	return b.scriptLinks[i-len(b.links)]
}

// SubmitOn queues r on the connection lane, as Submit does on a session's.
func (b *Backend) SubmitOn(lane Lane, r *Request) {
	l := b.laneLink(lane)
	if !l.up.Load() && !l.switching.Load() {
		b.failIn(r, l.downMsg())
		return
	}
	l.enqueue(r, 1)
}

// probeBusy asks the server, on a connection of its own, whether it is running
// a script (its PING answered BUSY): a reply late for that reason is still
// coming.
func (l *link) probeBusy() bool {
	o := &l.b.opts
	busy := false
	t := dial.Target{Role: o.Name, Addr: l.b.Addr(), Username: o.Username, Password: o.Password,
		TLS: o.TLS, Timeout: o.DialTimeout, OnBusy: func() { busy = true }}
	conn, _, err := dial.Dial(context.Background(), t)
	if err != nil {
		return false
	}
	conn.Close()
	if busy {
		l.b.busyAt.Store(monoNow())
	}
	return busy
}

// SubmitTxOn queues reqs on the connection lane as SubmitTx does on a
// session's: one script call — the first request's Script when set.
func (b *Backend) SubmitTxOn(lane Lane, reqs []*Request) {
	for i := 0; i+1 < len(reqs); i++ {
		reqs[i].next = reqs[i+1]
	}
	l := b.laneLink(lane)
	if !l.up.Load() && !l.switching.Load() {
		for _, r := range reqs {
			r.next = nil
			b.failIn(r, l.downMsg())
		}
		return
	}
	l.enqueue(reqs[0], len(reqs))
}
