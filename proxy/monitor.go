package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/router"
)

// MONITOR streams the commands the proxy receives from its clients, in Redis'
// format (+<unix time> [<db> <client address>] "arg" ...), as Redis shows the
// commands it runs: not those refused before they run (unknown, wrong arity,
// no permission), nor administrative ones, and AUTH's and HELLO's passwords
// redacted. A MONITOR client leaves redcon's loop: one goroutine reads what it
// sends (PING, QUIT), another writes the stream; a client that does not keep
// up with the stream (monitorQueue lines behind) is disconnected, as Redis
// disconnects it at its output buffer limit.

// monitorQueue is how many lines a MONITOR client may fall behind.
const monitorQueue = 4096

// monitorConn is one MONITOR client's stream.
type monitorConn struct {
	lines chan []byte   // to write; a nil line closes the connection
	done  chan struct{} // closed when the client is gone
	once  sync.Once
}

func (m *monitorConn) stop() { m.once.Do(func() { close(m.done) }) }

// monitors are the MONITOR clients.
type monitors struct {
	n  atomic.Int32 // len(m), read without the lock on every command
	mu sync.Mutex
	m  map[*monitorConn]struct{}
}

func (ms *monitors) add(m *monitorConn) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = map[*monitorConn]struct{}{}
	}
	ms.m[m] = struct{}{}
	ms.n.Store(int32(len(ms.m)))
}

func (ms *monitors) remove(m *monitorConn) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, m)
	ms.n.Store(int32(len(ms.m)))
}

// feed sends line to every MONITOR client; one that is too far behind is cut.
func (ms *monitors) feed(line []byte) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for m := range ms.m {
		select {
		case m.lines <- line:
		default:
			m.stop()
		}
	}
}

// isMonitor reports whether args starts MONITOR mode (when refused, the
// command is served as any other, and the gate answers why).
func (sess *Session) isMonitor(args [][]byte) bool {
	if len(args) != 1 || len(args[0]) != 7 || !strings.EqualFold(string(args[0]), "monitor") || sess.tx != nil || !sess.authed {
		return false
	}
	rt := sess.s.router.Route(args)
	return rt.Info != nil && sess.noPerm(rt.Info) == ""
}

// monitor answers a MONITOR that could not start MONITOR mode (see isMonitor).
func (sess *Session) monitor(c *call) { sess.localError(&c.req, errNotSupported("monitor")) }

// feedMonitors shows c, which passed the gate, to the MONITOR clients.
func (sess *Session) feedMonitors(c *call) {
	ci := c.route.Info
	if !monitored(ci) {
		return
	}
	sess.s.monitors.feed(sess.monitorLine(sess.db, ci.Name, c.cmd.Args))
}

// monitored reports whether Redis shows the command to MONITOR clients: not
// administrative ones, nor those flagged skip-monitor, except the scripts
// (Redis shows EVAL, FCALL, ... as the script starts; EXEC once the
// transaction's commands ran: feedExec).
func monitored(ci *router.CommandInfo) bool {
	if ci == nil || ci.Has(router.FlagAdmin) {
		return false
	}
	return !ci.Has(router.FlagSkipMonitor) || isScript(ci)
}

// feedExec shows an EXEC to the MONITOR clients as Redis does: the queued
// commands that ran (ran: the transaction was not discarded), each in the DB
// it ran in, then EXEC in the DB the transaction left selected.
func (sess *Session) feedExec(tx *txState, ran bool) {
	ms := &sess.s.monitors
	if ms.n.Load() == 0 {
		return
	}
	for j := range tx.cmds {
		q := &tx.cmds[j]
		if !ran || !q.shown {
			continue
		}
		db := tx.db // the DB after the command: a SELECT shows its new DB
		if j+1 < len(tx.cmds) {
			db = tx.cmds[j+1].db
		}
		raw := q.raw
		if q.orig != nil {
			raw = q.orig
		}
		args := frameArgs(raw)
		if len(args) > 0 {
			ms.feed(sess.monitorLine(db, strings.ToLower(string(args[0])), args))
		}
	}
	ms.feed(sess.monitorLine(tx.db, "exec", [][]byte{tx.exec}))
}

// frameArgs returns the arguments of a command frame (*N then N bulks).
func frameArgs(raw []byte) [][]byte {
	parts := splitArray(raw)
	args := make([][]byte, len(parts))
	for i, p := range parts {
		args[i] = bulkData(p)
	}
	return args
}

// monitorLine is one line of the MONITOR stream for args run in db, as Redis
// writes it.
func (sess *Session) monitorLine(db int, name string, args [][]byte) []byte {
	now := time.Now()
	b := make([]byte, 0, 64+len(args)*16)
	b = append(b, '+')
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, '.')
	us := strconv.Itoa(now.Nanosecond() / 1000)
	b = append(b, strings.Repeat("0", 6-len(us))+us...)
	b = append(b, " ["...)
	b = strconv.AppendInt(b, int64(db), 10)
	b = append(b, ' ')
	b = append(b, sess.netConn.RemoteAddr().String()...)
	b = append(b, ']')
	for i, a := range args {
		b = append(b, ' ')
		if redacted(name, args, i) {
			b = append(b, `"(redacted)"`...)
			continue
		}
		b = appendRepr(b, a)
	}
	return append(b, '\r', '\n')
}

// redacted reports whether args[i] is a password MONITOR does not show.
func redacted(name string, args [][]byte, i int) bool {
	switch name {
	case "auth":
		return i > 0
	case "hello":
		for j := 2; j+2 < len(args) && j < i; j++ {
			if bytes.EqualFold(args[j], []byte("auth")) && (i == j+1 || i == j+2) {
				return true
			}
		}
	}
	return false
}

// appendRepr appends a quoted as Redis' sdscatrepr does.
func appendRepr(b, a []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range a {
		switch c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\a':
			b = append(b, '\\', 'a')
		case '\b':
			b = append(b, '\\', 'b')
		default:
			if c >= 0x20 && c <= 0x7e {
				b = append(b, c)
			} else {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			}
		}
	}
	return append(b, '"')
}

// startMonitor takes the client out of redcon's loop into MONITOR mode; cmds
// are MONITOR and what was pipelined after it.
func (sess *Session) startMonitor(conn redcon.Conn, cmds []redcon.Command) {
	pending := append([]redcon.Command(nil), cmds[1:]...)
	sess.noteBlocked("monitor", nil)
	sess.shown.blocked.Store(false)
	sess.shown.monitor.Store(true) // before Detach: redcon's closed leaves the session to us
	dc := conn.Detach()
	sess.conn = dc
	m := &monitorConn{lines: make(chan []byte, monitorQueue), done: make(chan struct{})}
	m.lines <- []byte("+OK\r\n")
	s := sess.s
	s.monitors.add(m)
	readerDone := make(chan struct{})
	s.detachedWG.Add(2)
	go func() {
		defer s.detachedWG.Done()
		defer close(readerDone)
		sess.readMonitor(dc, pending, m)
	}()
	go func() {
		defer s.detachedWG.Done()
		writeMonitor(dc, m)
		m.stop()
		s.monitors.remove(m)
		dc.Close()
		<-readerDone
		s.logClosed(sess.netConn, sess.id)
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		sess.close()
		s.clients.Add(-1)
	}()
}

// writeMonitor writes the stream until the client is gone or a nil line.
func writeMonitor(dc redcon.DetachedConn, m *monitorConn) {
	for {
		select {
		case line := <-m.lines:
			if line == nil {
				dc.Flush()
				return
			}
			dc.WriteRaw(line)
			if len(m.lines) == 0 && dc.Flush() != nil {
				return
			}
		case <-m.done:
			return
		}
	}
}

// readMonitor serves what a MONITOR client sends: PING, QUIT (RESET ends the
// connection too: the proxy cannot take it back into redcon's loop).
func (sess *Session) readMonitor(dc redcon.DetachedConn, pending []redcon.Command, m *monitorConn) {
	defer m.stop()
	for {
		var cmd redcon.Command
		var err error
		if len(pending) > 0 {
			cmd, pending = pending[0], pending[1:]
		} else if cmd, err = dc.ReadCommand(); err != nil {
			return
		}
		var reply []byte
		quit := false
		switch strings.ToLower(string(cmd.Args[0])) {
		case "ping":
			reply = []byte("+PONG\r\n")
		case "quit":
			reply, quit = []byte("+OK\r\n"), true
		case "reset":
			reply, quit = []byte("+RESET\r\n"), true
		default:
			reply = router.AppendError(nil, "ERR syncproxy: a MONITOR connection serves only PING, QUIT and RESET")
		}
		select {
		case m.lines <- reply:
		case <-m.done:
			return
		}
		if quit {
			select {
			case m.lines <- nil:
			case <-m.done:
			}
			return
		}
	}
}
