package proxy

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/router"
)

// A client that subscribes (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE) gets a dedicated
// master connection: the proxy detaches the client from redcon's loop, forwards
// what the client sends to that connection and what the master sends back to the
// client, frame by frame, so that subscribed mode — messages, PING, the errors for
// other commands — is exactly Redis'. A RESP3 client (HELLO 3) gets the frames as pushes
// (resp3.go: toPush) and may run any other command while subscribed, as with
// Redis; it is served as usual, behind the replies to what was forwarded. When the client's last subscription ends, the
// dedicated connection is closed and the client is served as before (from the
// session's own loop, one command at a time).

// pubsubNames are the commands forwarded as they are in subscribed mode.
var pubsubNames = map[string]bool{
	"subscribe": true, "psubscribe": true, "ssubscribe": true,
	"unsubscribe": true, "punsubscribe": true, "sunsubscribe": true, "ping": true,
}

// pubsubNames3 are the commands forwarded in subscribed mode for a RESP3
// client, which may run any other command (PING included) as usual.
var pubsubNames3 = map[string]bool{
	"subscribe": true, "psubscribe": true, "ssubscribe": true,
	"unsubscribe": true, "punsubscribe": true, "sunsubscribe": true,
}

// barrierPrefix marks the proxy's own PINGs on a subscription connection.
const barrierPrefix = "syncproxy-barrier-"

// subConn is a session's dedicated subscription connection.
type subConn struct {
	conn    net.Conn
	br      *bufio.Reader // reads conn (the AUTH reply went through it)
	ended   atomic.Bool   // the master reported zero subscriptions left
	leaving atomic.Bool   // the session closes the connection itself
	barrier chan struct{} // the forwarder saw the proxy's barrier PING
	done    chan struct{} // the forwarder stopped
}

// isSubscribe reports whether args enters subscribed mode.
func (sess *Session) isSubscribe(args [][]byte) bool {
	if sess.tx != nil || !sess.authed || len(args) < 2 || len(args[0]) < 9 {
		return false
	}
	if c := args[0][0] | 0x20; c != 's' && c != 'p' {
		return false // the common case, without a table lookup
	}
	rt := sess.s.router.Route(args)
	return rt.Info != nil && rt.Info.Policy.Subscribe
}

// detach takes the client out of redcon's loop and serves it from a goroutine of
// its own, starting with cmds (a SUBSCRIBE first).
func (sess *Session) detach(conn redcon.Conn, cmds []redcon.Command) {
	pending := append([]redcon.Command(nil), cmds...)
	dc := conn.Detach()
	sess.detached.Store(true)
	sess.conn = dc
	s := sess.s
	s.detachedWG.Add(1)
	go func() {
		defer s.detachedWG.Done()
		sess.serveDetached(dc, pending)
		dc.Close()
		s.logClosed(sess.netConn, sess.id)
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		sess.close()
		s.clientLeft()
	}()
}

// serveDetached is the session's own loop once detached.
func (sess *Session) serveDetached(dc redcon.DetachedConn, pending []redcon.Command) {
	mu := &sess.outMu // the forwarder and the tracking pusher write to the client too
	defer sess.endSub()
	next := func() (redcon.Command, error) {
		if len(pending) > 0 {
			c := pending[0]
			pending = pending[1:]
			return c, nil
		}
		if sess.s.closing.Load() {
			dc.NetConn().SetReadDeadline(time.Now().Add(drainIdle))
		}
		return dc.ReadCommand()
	}
	for {
		cmd, err := next()
		if err != nil {
			return
		}
		if name := strings.ToLower(string(cmd.Args[0])); sess.sub != nil && sess.resp3.Load() && !pubsubNames3[name] {
			// A RESP3 client may run any command while subscribed: served as
			// usual, after the replies to what was forwarded before it. RESET
			// leaves subscribed mode.
			if name == "reset" || !sess.subBarrier() {
				sess.endSub()
			}
		} else {
			if sess.sub != nil {
				sess.noteSubCommand(cmd)
			}
			if sess.sub != nil && !sess.subForward(cmd) {
				sess.endSub()
			}
			if sess.sub != nil {
				continue // forwarded
			}
		}
		if sess.isSubscribe(cmd.Args) {
			if err := sess.startSub(dc, mu); err != nil {
				mu.Lock()
				dc.WriteError(sess.s.masterDown(nil, err))
				dc.Flush()
				mu.Unlock()
				continue
			}
			sess.noteSubCommand(cmd)
			sess.subForward(cmd)
			continue
		}
		mu.Lock()
		quit := false
		if ci, ok := sess.isBlocking(cmd.Args); ok {
			quit = sess.block(ci, cmd.Args)
		} else {
			quit = sess.serve([]redcon.Command{cmd})
		}
		err = dc.Flush()
		mu.Unlock()
		if quit || err != nil {
			return
		}
	}
}

// noteSubCommand records a command forwarded to the subscription connection as
// the session's last one, for CLIENT LIST (cmd=subscribe, idle); its arguments
// are not kept once it ran, as Redis frees them (argv-mem=0).
func (sess *Session) noteSubCommand(cmd redcon.Command) {
	sess.batchAt = time.Now()
	c := call{cmd: cmd, route: sess.s.router.Route(cmd.Args)}
	sess.noteCommand(&c)
	sess.shown.argvMem.Store(0)
}

// startSub dials the dedicated connection and starts the forwarder.
func (sess *Session) startSub(dc redcon.DetachedConn, mu *sync.Mutex) error {
	c, br, err := sess.s.dialMaster()
	if err != nil {
		return err
	}
	sub := &subConn{conn: c, br: br, barrier: make(chan struct{}, 1), done: make(chan struct{})}
	sess.sub = sub
	sess.subscribed.Store(true)
	go sub.forward(sess, dc, mu)
	return nil
}

// forward copies the master's frames to the client, noting when no subscription
// is left and swallowing the proxy's barrier PINGs.
func (sub *subConn) forward(sess *Session, dc redcon.DetachedConn, mu *sync.Mutex) {
	defer close(sub.done)
	br := sub.br
	var frame []byte
	for {
		var err error
		if frame, err = router.ReadFrame(br, frame[:0]); err != nil {
			if !sub.leaving.Load() {
				dc.NetConn().Close() // the master went away: so does the client, as with Redis
			}
			return
		}
		if bytes.Contains(frame, []byte(barrierPrefix)) {
			select {
			case sub.barrier <- struct{}{}:
			default:
			}
			continue
		}
		sess.shown.subs.note(frame)
		if countZero(frame) {
			sub.ended.Store(true)
		}
		out := frame
		if sess.resp3.Load() {
			out = toPush(frame) // as Redis sends them to a RESP3 client
		}
		mu.Lock()
		buffered := 0
		if err = writeReply(dc, out, &buffered); err == nil {
			err = dc.Flush()
		}
		mu.Unlock()
		if err != nil {
			// The client is gone or reads nothing (the output timeout): it is
			// disconnected, as Redis disconnects a subscriber over its limit.
			dc.NetConn().Close()
			return
		}
		if cap(frame) > maxKeptReply {
			frame = nil // not the largest message's buffer for the subscription's life
		}
	}
}

// countZero reports whether frame is an unsubscribe confirmation leaving no
// subscription: *3 $11 unsubscribe <channel> :0 (and the p/s variants).
func countZero(frame []byte) bool {
	if !bytes.HasSuffix(frame, []byte("\r\n:0\r\n")) {
		return false
	}
	parts := splitArray(frame)
	if len(parts) != 3 {
		return false
	}
	return strings.HasSuffix(bulkText(parts[0]), "unsubscribe")
}

// subForward sends cmd to the subscription connection; it returns false when the
// client has no subscription left and cmd must be served normally instead.
func (sess *Session) subForward(cmd redcon.Command) bool {
	sub := sess.sub
	name := strings.ToLower(string(cmd.Args[0]))
	if name == "reset" {
		return false // leaves subscribed mode; served by the session (+RESET)
	}
	if !pubsubNames[name] && !sess.subBarrier() {
		return false
	}
	sub.conn.SetWriteDeadline(time.Now().Add(sess.s.cfg.BackendTimeout))
	if _, err := sub.conn.Write(cmd.Raw); err != nil {
		return false
	}
	if name == "quit" {
		<-sub.done
	}
	return true
}

// subBarrier makes sure every reply to what was forwarded has been seen, so
// that the subscription count is known; it reports whether a subscription is
// left.
func (sess *Session) subBarrier() bool {
	sub := sess.sub
	id := strconv.FormatInt(time.Now().UnixNano(), 10)
	sub.conn.SetWriteDeadline(time.Now().Add(sess.s.cfg.BackendTimeout))
	if _, err := sub.conn.Write(buildCommand([][]byte{[]byte("PING"), []byte(barrierPrefix + id)})); err != nil {
		return false
	}
	t := time.NewTimer(sess.s.cfg.BackendTimeout)
	select {
	case <-sub.barrier:
	case <-sub.done:
	case <-t.C:
	}
	t.Stop()
	return !sub.ended.Load()
}

// endSub closes the subscription connection and waits for its forwarder.
func (sess *Session) endSub() {
	if sub := sess.sub; sub != nil {
		sess.sub = nil
		sess.subscribed.Store(false)
		sub.leaving.Store(true)
		sub.conn.Close()
		<-sub.done
		sess.shown.subs.reset()
	}
}
