package proxy

import (
	"bufio"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// WATCH needs the master's own bookkeeping of modified keys, which belongs to one
// connection: a session that WATCHes gets a dedicated master connection, where the
// WATCH runs and, at EXEC, MULTI + the transaction's script call + EXEC. The master
// aborts the EXEC if a watched key changed — whoever changed it, through any proxy.
// EXEC, DISCARD, UNWATCH and RESET end the watch and close the connection.

// watchConn is a session's dedicated master connection while it watches keys.
type watchConn struct {
	conn net.Conn
	br   *bufio.Reader
	db   int
	// unloaded: the master was running a script (BUSY) when the connection
	// was opened; the replication script is loaded at EXEC.
	unloaded bool
}

var errWatchReply = errors.New("proxy: unexpected reply on the WATCH connection")

// roundTrip writes frames within the backend timeout and reads n replies within
// the write-reply timeout: an EXEC still running on the master may be applied.
func (sess *Session) watchRoundTrip(frames []byte, n int) ([][]byte, error) {
	w := sess.watch
	w.conn.SetWriteDeadline(time.Now().Add(sess.s.cfg.BackendTimeout))
	w.conn.SetReadDeadline(time.Now().Add(sess.s.cfg.WriteReplyTimeout))
	if _, err := w.conn.Write(frames); err != nil {
		return nil, err
	}
	out := make([][]byte, n)
	for i := range out {
		f, err := router.ReadFrame(w.br, nil)
		if err != nil {
			return nil, err
		}
		out[i] = f
	}
	return out, nil
}

// openWatch dials the dedicated connection and loads the replication script on it.
func (sess *Session) openWatch() error {
	s := sess.s
	c, br, err := s.dialMaster()
	if err != nil {
		return err
	}
	sess.watch = &watchConn{conn: c, br: br}
	replies, err := sess.watchRoundTrip(buildCommand([][]byte{[]byte("SCRIPT"), []byte("LOAD"), []byte(s.script.Body)}), 1)
	if err == nil && router.IsBusy(replies[0]) {
		// Alive, running a script: WATCH works then, as in Redis.
		sess.watch.unloaded = true
	} else if err == nil && replies[0][0] == '-' {
		err = errWatchReply
	}
	if err != nil {
		sess.closeWatch()
	}
	return err
}

func (sess *Session) closeWatch() {
	if sess.watch != nil {
		sess.watch.conn.Close()
		sess.watch = nil
	}
}

func (sess *Session) watchDown(r *router.Request, err error) {
	var c net.Conn
	if sess.watch != nil {
		c = sess.watch.conn
	}
	sess.localError(r, sess.s.masterDown(c, err))
	sess.closeWatch()
}

// doWatch runs WATCH on the dedicated connection, after what the batch sent before.
func (sess *Session) doWatch(c *call) {
	r, raw := &c.req, c.cmd.Raw
	sess.waiter.Wait()
	if sess.watch == nil {
		if err := sess.openWatch(); err != nil {
			sess.watchDown(r, err)
			return
		}
	}
	var frames []byte
	if sess.watch.db != sess.db {
		frames = buildCommand([][]byte{[]byte("SELECT"), []byte(strconv.Itoa(sess.db))})
	}
	frames = append(frames, raw...)
	n := 1
	if len(frames) > len(raw) {
		n = 2
	}
	replies, err := sess.watchRoundTrip(frames, n)
	if err != nil {
		sess.watchDown(r, err)
		return
	}
	sess.watch.db = sess.db
	sess.local(r, replies[n-1])
}

// execWatched runs a transaction on the dedicated connection: MULTI, the script
// call, EXEC. The watch ends whatever happens.
func (sess *Session) execWatched(ex *execEntry, chain []*router.Request) {
	defer sess.closeWatch()
	sess.waiter.Wait()
	var frames []byte
	n, ws := 2, sess.s.script
	if ex.tx.scripts {
		// The transaction's client scripts run in a script of its own (multi.go).
		ws = sess.s.scripts.txScript(sess.s).composed
	}
	if ex.tx.scripts || sess.watch.unloaded {
		frames = buildCommand([][]byte{[]byte("SCRIPT"), []byte("LOAD"), []byte(ws.Body)})
		n++
	}
	frames = append(frames, "*1\r\n$5\r\nMULTI\r\n"...)
	if len(chain) > 0 {
		frames = router.AppendScriptCall(frames, ws, chain, sess.watch.db)
		n++
	}
	frames = append(frames, "*1\r\n$4\r\nEXEC\r\n"...)
	replies, err := sess.watchRoundTrip(frames, n)
	if err == nil && sess.s.replaced(sess.watch.conn) {
		err = errReplaced // answered by a master the proxy no longer follows
	}
	if err != nil {
		ex.err = sess.execLost(err)
		return
	}
	execRe := replies[n-1]
	if len(chain) > 0 && router.IsBusy(replies[n-2]) {
		// The master runs a script: EXEC is refused as Redis refuses it then.
		ex.err = msgExecBusy + string(bytesTrimErr(replies[n-2]))
		return
	}
	switch {
	case string(execRe) == "*-1\r\n":
		ex.aborted = true // a watched key changed
		return
	case execRe[0] == '-':
		ex.err = string(execRe[1 : len(execRe)-2])
		return
	}
	if len(chain) == 0 {
		return
	}
	outer := splitArray(execRe)
	if len(outer) != 1 {
		ex.err = "ERR syncproxy: unexpected EXEC reply from the master: the transaction's outcome is unknown"
		return
	}
	if outer[0][0] == '-' {
		ex.err = string(outer[0][1 : len(outer[0])-2])
		return
	}
	parts := splitArray(outer[0])
	if len(parts) != replicate.CallReplyLen(len(chain)) {
		ex.err = "ERR syncproxy: unexpected script reply from the master: the transaction's outcome is unknown"
		return
	}
	seq, _ := replicate.CallSeq(parts[0])
	epoch := bulkText(parts[1])
	for j, tr := range chain {
		tr.Reply = append(tr.Reply[:0], parts[j+2]...)
		tr.Seq, tr.Epoch = seq, epoch
		tr.FixScriptReply()
	}
}

// execLost words the error of a watched transaction sent to the master whose
// reply did not come: it may have run, so its outcome is unknown — unless the
// master was replaced (the proxy's switch error).
func (sess *Session) execLost(err error) string {
	mc, ok := sess.watch.conn.(*masterConn)
	if errors.Is(err, errReplaced) || (ok && mc.switched.Load() != nil) {
		return sess.s.masterDown(sess.watch.conn, nil)
	}
	return "ERR syncproxy: the master did not answer the transaction (" + sanitize([]byte(err.Error()), 200) +
		"): its outcome is unknown"
}
