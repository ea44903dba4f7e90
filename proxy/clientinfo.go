package proxy

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// CLIENT INFO and CLIENT LIST describe a session with every field Redis 7.0
// gives, in Redis' order, so that clients that parse them (redis-py's
// client_info, node-redis' clientInfo) find what they expect; the proxy's own
// field (consistency) comes last. Fields the proxy has no value for (the
// sizes of redcon's buffers) are 0.

// clientShown is what CLIENT LIST shows of a session to other sessions'
// goroutines: the session's goroutine writes it, any goroutine reads it.
type clientShown struct {
	cmd      atomic.Pointer[string] // the last command's name ("client|info")
	last     atomic.Int64           // when it arrived, in Unix nanoseconds
	argvMem  atomic.Int64           // its arguments' bytes
	inMulti  atomic.Int32           // commands queued in MULTI plus one; 0: not in MULTI
	multiMem atomic.Int64           // their bytes
	blocked  atomic.Bool            // in a blocking command
	noEvict  atomic.Bool            // CLIENT NO-EVICT on
	monitor  atomic.Bool            // in MONITOR mode
	user     atomic.Pointer[string] // the user authenticated as
	subs     subscriptions          // what the subscription connection holds

	// CLIENT UNBLOCK's hold on a blocking command (clientadmin.go).
	bmu       sync.Mutex
	wake      chan struct{} // the blocking command's, nil when not blocked
	unblocked int32         // unblockTimeout or unblockError, asked for
}

// noteCommand records c as the session's last command, for CLIENT LIST.
func (sess *Session) noteCommand(c *call) {
	sh := &sess.shown
	if ci := c.route.Info; ci != nil {
		if p := sh.cmd.Load(); p == nil || *p != ci.Name {
			name := ci.Name
			sh.cmd.Store(&name)
		}
	}
	at := sess.batchAt
	if at.IsZero() {
		at = time.Now()
	}
	storeChanged(&sh.last, at.UnixNano())
	storeChanged(&sh.argvMem, argvLen(c.cmd.Args))
	if p := sh.user.Load(); p == nil || *p != sess.userName() {
		u := sess.userName()
		sh.user.Store(&u)
	}
	sess.noteMulti()
}

// noteBlocked records a blocking command's start (name, args) or end ("").
func (sess *Session) noteBlocked(name string, args [][]byte) {
	sh := &sess.shown
	if name != "" {
		sh.cmd.Store(&name)
		sh.last.Store(time.Now().UnixNano())
		sh.argvMem.Store(argvLen(args))
	}
	sh.blocked.Store(name != "")
}

// argvLen is what a command's arguments take, as CLIENT LIST's argv-mem shows.
func argvLen(args [][]byte) int64 {
	n := int64(0)
	for _, a := range args {
		n += int64(len(a))
	}
	return n
}

// noteMulti records the MULTI queue's length and bytes.
func (sess *Session) noteMulti() {
	sh := &sess.shown
	if tx := sess.tx; tx != nil {
		sh.inMulti.Store(int32(len(tx.cmds)) + 1)
		sh.multiMem.Store(tx.bytes)
	} else if sh.inMulti.Load() != 0 || sh.multiMem.Load() != 0 {
		sh.inMulti.Store(0)
		sh.multiMem.Store(0)
	}
}

// storeChanged stores v in a unless a holds it: an atomic store is a locked
// instruction (a barrier), a load is not, and a pipeline's commands mostly
// store what the one before stored.
func storeChanged(a *atomic.Int64, v int64) {
	if a.Load() != v {
		a.Store(v)
	}
}

// clientLine describes the session as CLIENT INFO and CLIENT LIST show it to
// viewer. It may run on another session's goroutine: it reads only what is safe
// to share.
func (sess *Session) clientLine(viewer *Session) string {
	sh := &sess.shown
	name := ""
	if p := sess.shownName.Load(); p != nil {
		name = *p
	}
	cmd := "NULL"
	if p := sh.cmd.Load(); p != nil {
		cmd = *p
	}
	now := time.Now()
	idle := int64(0)
	if last := sh.last.Load(); last > 0 {
		idle = int64(now.Sub(time.Unix(0, last)).Seconds())
	}
	multi := int64(sh.inMulti.Load()) - 1
	argv, mmem := sh.argvMem.Load(), sh.multiMem.Load()
	if sess != viewer && !sh.blocked.Load() {
		argv = 0 // Redis frees a command's arguments once it ran
	}
	var b strings.Builder
	b.Grow(320)
	field := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	num := func(k string, v int64) { field(k, strconv.FormatInt(v, 10)) }
	num("id", sess.id)
	field("addr", sess.netConn.RemoteAddr().String())
	field("laddr", sess.netConn.LocalAddr().String())
	num("fd", int64(connFD(sess.netConn)))
	field("name", name)
	num("age", int64(now.Sub(sess.created).Seconds()))
	num("idle", idle)
	field("flags", sess.clientFlags())
	num("db", int64(sess.shownDB.Load()))
	for kind, k := range []string{"sub", "psub", "ssub"} {
		num(k, int64(sh.subs.count(kind)))
	}
	num("multi", multi)
	for _, k := range []string{"qbuf", "qbuf-free"} {
		num(k, 0)
	}
	num("argv-mem", argv)
	num("multi-mem", mmem)
	for _, k := range []string{"rbs", "rbp", "obl", "oll", "omem"} {
		num(k, 0)
	}
	num("tot-mem", argv+mmem)
	field("events", "r")
	field("cmd", cmd)
	field("user", sess.shownUser())
	num("redir", sess.trackShown.redirect())
	resp := int64(2)
	if sess.resp3.Load() {
		resp = 3
	}
	num("resp", resp)
	field("consistency", sess.shownConsistency())
	b.WriteByte('\n')
	return b.String()
}

// clientFlags is CLIENT LIST's flags field: O in MONITOR mode, P subscribed, x
// in MULTI, b blocked, e no-evict, N none (Redis' letters, in Redis' order).
func (sess *Session) clientFlags() string {
	sh := &sess.shown
	f := make([]byte, 0, 4)
	if sh.monitor.Load() {
		f = append(f, 'O')
	}
	if sess.detached.Load() {
		f = append(f, 'P')
	}
	if sh.inMulti.Load() > 0 {
		f = append(f, 'x')
	}
	if sh.blocked.Load() {
		f = append(f, 'b')
	}
	f = sess.trackShown.appendFlags(f)
	if sh.noEvict.Load() {
		f = append(f, 'e')
	}
	if len(f) == 0 {
		f = append(f, 'N')
	}
	return string(f)
}

// shownUser is the session's user, for another session's goroutine.
func (sess *Session) shownUser() string {
	if p := sess.shown.user.Load(); p != nil {
		return *p
	}
	return "default"
}

// connFD is the file descriptor of the client's socket, or -1.
func connFD(c net.Conn) int {
	c = socketOf(c)
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if raw.Control(func(u uintptr) { fd = int(u) }) != nil {
		return -1
	}
	return fd
}

// subscriptions are a session's channels, patterns and shard channels as the
// master confirmed them on its subscription connection (CLIENT LIST's sub, psub
// and ssub): the forwarder writes them, CLIENT LIST reads them.
type subscriptions struct {
	mu   sync.Mutex
	sets [3]map[string]struct{} // channels, patterns, shard channels
}

// subKinds are the confirmations that change a subscription set: the set's
// index, and whether it adds.
var subKinds = map[string]struct {
	kind int
	add  bool
}{
	"subscribe": {0, true}, "unsubscribe": {0, false},
	"psubscribe": {1, true}, "punsubscribe": {1, false},
	"ssubscribe": {2, true}, "sunsubscribe": {2, false},
}

// note applies a frame of the subscription connection (RESP2) when it confirms a
// subscription or its end; other frames (messages) are passed over cheaply.
func (ss *subscriptions) note(frame []byte) {
	if !bytes.HasPrefix(frame, []byte("*3\r\n$")) || bytes.HasPrefix(frame, []byte("*3\r\n$7\r\nmessage\r\n")) ||
		bytes.HasPrefix(frame, []byte("*3\r\n$8\r\nsmessage\r\n")) {
		return
	}
	parts := splitArray(frame)
	if len(parts) != 3 {
		return
	}
	k, ok := subKinds[bulkText(parts[0])]
	if !ok {
		return
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if !k.add {
		if parts[1][0] == '$' && parts[1][1] != '-' {
			delete(ss.sets[k.kind], bulkText(parts[1]))
		}
		return
	}
	if ss.sets[k.kind] == nil {
		ss.sets[k.kind] = map[string]struct{}{}
	}
	ss.sets[k.kind][bulkText(parts[1])] = struct{}{}
}

// count returns the size of the set kind (0 channels, 1 patterns, 2 shard channels).
func (ss *subscriptions) count(kind int) int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.sets[kind])
}

// reset empties the sets: the subscription connection is closed.
func (ss *subscriptions) reset() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.sets = [3]map[string]struct{}{}
}
