package proxy

import (
	"bytes"
	"crypto/subtle"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// numDBs is the number of databases a client may SELECT (Redis' default).
const numDBs = 16

// What a session keeps between batches, so that an idle client costs little.
const (
	maxKeptReply    = 16 << 10
	maxKeptRequests = 64
)

// replyMode is CLIENT REPLY's setting.
type replyMode uint8

const (
	replyOn       replyMode = iota
	replyOff                // no reply is sent
	replySkipNext           // the next command's reply is not sent
)

// post is the finishing step of a call's reply, before it reaches the client.
type post uint8

const (
	postNone        post = iota
	postInfo             // prepend the proxy's INFO sections
	postExec             // EXEC: the array of the transaction's replies
	postBroadcast        // CONFIG SET sent to every backend: the master's reply, or a slave's error
	postHideMeta         // SCAN or KEYS in DB 0: leave out the replication metadata keys
	postHideSecrets      // CONFIG GET: the master's passwords are not the client's to read
	postSlowlog          // SLOWLOG GET or LEN: the master's and the slaves' merged
	postCommandDocs      // COMMAND DOCS: Redis 6's error from a master that does not implement it
)

// call is one pipelined command on its way through the session: the client's
// command, its route, the request sent for it, what becomes of its reply, and
// what its finishing step needs. The session reuses calls across batches.
type call struct {
	at      int // position in the batch
	cmd     redcon.Command
	route   router.Route
	req     router.Request
	onSlave bool // the request went to a slave: retried on the master if it failed
	skip    bool // CLIENT REPLY OFF or SKIP: the reply is not sent
	quit    bool // QUIT: the connection closes after this reply
	post    post
	exec    execEntry    // EXEC: the transaction it submitted
	bcast   bcastReplies // CONFIG SET: the slaves' replies
	eval    evalCheck    // EVAL: what to check once the batch completed
	near    nearRead     // GET: what caching its reply needs (nearcache.go)
}

// reset readies c for the command at position at, keeping its reply buffer.
func (c *call) reset(at int, cmd redcon.Command, db int) {
	reply := c.req.Reply
	*c = call{at: at, cmd: cmd}
	c.req.Reply = reply[:0]
	c.req.DB = db
}

// shape is the RESP3 shape of the call's reply (EXEC's replies are converted
// one by one, in execReply).
func (c *call) shape() *shape {
	if c.route.Info == nil || c.post == postExec {
		return nil
	}
	return replyShape(c.route.Info.Name, c.cmd.Args)
}

// info is the call's command (nil when unknown), for the metrics.
func (c *call) info() *router.CommandInfo { return c.route.Info }

// Session is one client connection's state. Its methods run on the connection's
// redcon goroutine only.
type Session struct {
	s    *Server
	conn redcon.Conn
	id   int64

	db   int
	name string
	// readState: what the session's reads must see and saw (readstate.go).
	readState

	authed       bool  // AUTH succeeded, or no password is required
	user         *User // the user authenticated as; nil: the default user
	replyMode    replyMode
	replyDecided bool        // CLIENT REPLY set the skip of its own reply
	resp3        atomic.Bool // HELLO 3: replies in RESP3 (resp3.go); read by the subscription's forwarder

	netConn net.Conn // the client's connection, for deadlines
	created time.Time
	// What CLIENT LIST shows of this session to other sessions.
	shownName  atomic.Pointer[string]
	shownDB    atomic.Int32
	shown      clientShown
	detached   atomic.Bool // served by its own goroutine (subscribed mode)
	subscribed atomic.Bool // in subscribed mode: tracking invalidations redirected here are messages
	sub        *subConn    // the dedicated subscription connection

	track      *trackState // CLIENT TRACKING (tracking.go)
	trackShown trackShown  // and what CLIENT LIST shows of it
	// outMu is held by whoever writes to the client: the session's batch, its
	// subscription's forwarder, the tracking invalidations' pusher.
	outMu sync.Mutex

	tx    *txState   // MULTI ... EXEC being queued
	watch *watchConn // dedicated master connection while WATCHing

	cmds  []redcon.Command
	calls []*call // the batch's commands
	wrote bool    // the batch sent a write: its later reads go behind it, on the master
	// onLane: the batch's last command was a client script, sent on lane (a
	// master connection for scripts, see eval.go); what follows waits for it.
	onLane bool
	lane   router.Lane
	waiter *router.Waiter
	near   nearBatch // the batch's GETs and the near cache (nearcache.go)
	// lastRoute: the route of the last read command (see routeOf).
	lastRoute routeMemo
	// batchAt is when the batch being served began: its commands' time for
	// CLIENT LIST (one clock reading per batch, not per command).
	batchAt time.Time
}

func newSession(s *Server, conn redcon.Conn, id int64) *Session {
	return &Session{
		s:       s,
		conn:    conn,
		netConn: conn.NetConn(),
		created: time.Now(),
		authed:  s.config().RequirePass == "",
		id:      id,
		waiter:  router.NewWaiter(),
	}
}

// setAuthed records whether the client is authenticated, for the session and for
// the input limits (tighter before authentication, as Redis').
func (sess *Session) setAuthed(v bool) {
	sess.authed = v
	if lc, ok := sess.netConn.(*limitConn); ok {
		lc.authed.Store(v)
	}
}

func (sess *Session) close() {
	sess.trackOff()
	sess.closeWatch()
	sess.calls = nil
	sess.cmds = nil
}

// handle serves one command and everything pipelined behind it: it dispatches the
// whole batch, waits for every reply, and writes them in order with one flush.
func (s *Server) handle(conn redcon.Conn, cmd redcon.Command) {
	sess, ok := conn.Context().(*Session)
	if !ok {
		conn.Close()
		return
	}
	sess.outMu.Lock()
	defer sess.outMu.Unlock()
	batch := append(sess.cmds[:0], cmd)
	batch = append(batch, conn.ReadPipeline()...)
	all := batch // kept for the next batch, unless a deep pipeline grew it
	quit := false
	for len(batch) > 0 && !quit {
		if sess.isMonitor(batch[0].Args) {
			sess.startMonitor(conn, batch) // (copies batch)
			clear(all)
			return
		}
		if sess.isSubscribe(batch[0].Args) {
			// Subscribed mode: the session serves itself from now on, from
			// another goroutine; this one must not touch it any more.
			sess.detach(conn, batch) // (copies batch)
			clear(all)
			return
		}
		if ci, ok := sess.isBlocking(batch[0].Args); ok {
			// A blocking command runs alone, after what precedes it was answered.
			s.commands.Add(1)
			start := time.Now()
			sess.paused(router.Route{Class: router.ClassWrite, Info: ci})
			if s.monitors.n.Load() > 0 {
				sess.feedMonitors(&call{cmd: batch[0], route: router.Route{Info: ci}})
			}
			quit = sess.block(ci, batch[0].Args)
			sess.noteBlocked("", nil)
			st := s.metrics.command(ci)
			st.calls.Add(1)
			st.latency.Observe(time.Since(start))
			batch = batch[1:]
		} else {
			n := min(len(batch), s.config().MaxPipeline)
			for j := 1; j < n; j++ {
				if _, ok := sess.isBlocking(batch[j].Args); ok || sess.isSubscribe(batch[j].Args) || sess.isMonitor(batch[j].Args) {
					n = j
					break
				}
			}
			quit = sess.serve(batch[:n])
			batch = batch[n:]
		}
		if err := flushConn(conn); err != nil {
			quit = true
		}
	}
	clear(all) // the commands' bytes are not kept alive by an idle session
	if cap(all) <= maxKeptRequests {
		sess.cmds = all[:0]
	} else {
		sess.cmds = nil
	}
	if quit {
		conn.Close()
	} else if s.closing.Load() {
		// Shutting down: answer what the client sends next, close when it idles.
		sess.netConn.SetReadDeadline(time.Now().Add(drainIdle))
	}
}

// serve runs one batch; it reports whether the connection must be closed.
func (sess *Session) serve(cmds []redcon.Command) (quit bool) {
	for len(sess.calls) < len(cmds) {
		sess.calls = append(sess.calls, &call{})
	}
	start := time.Now()
	sess.batchAt = start
	sess.wrote, sess.onLane = false, false
	sess.batchPicked, sess.batchSlave = false, nil
	calls := sess.calls[:len(cmds)]
	for i, cmd := range cmds {
		c := calls[i]
		c.reset(i, cmd, sess.db)
		mode := sess.replyMode
		sess.dispatch(c)
		sess.noteCommand(c)
		sess.decideReply(c, mode)
		if c.quit {
			// As Redis does, nothing pipelined after QUIT runs.
			calls = calls[:i+1]
			break
		}
	}
	sess.s.commands.Add(int64(len(calls)))
	sess.complete(calls)
	quit = sess.reply(calls, time.Since(start))
	// Do not keep the calls of a deep pipeline.
	if len(sess.calls) > maxKeptRequests {
		clear(sess.calls[maxKeptRequests:])
		sess.calls = sess.calls[:maxKeptRequests:maxKeptRequests]
	}
	return quit
}

// decideReply applies CLIENT REPLY (as it was before c ran) to c's reply.
func (sess *Session) decideReply(c *call, mode replyMode) {
	if sess.replyDecided { // CLIENT REPLY decides for its own reply
		sess.replyDecided = false
		return
	}
	switch mode {
	case replyOff:
		c.skip = true
	case replySkipNext:
		c.skip = true
		sess.replyMode = replyOn
	}
}

// complete waits for the batch's replies. A read that failed on a slave (it went
// down) is retried on the master, when no write of the batch could overtake it
// there.
func (sess *Session) complete(calls []*call) {
	sess.sendProbes()
	sess.waiter.Wait()
	sess.checkEvals(calls)
	sess.nearFill(calls)
	if !sess.wrote {
		retried := false
		for _, c := range calls {
			if r := &c.req; c.onSlave && r.Failed {
				r.Failed = false
				retried = true
				sess.s.router.MasterReads.Add(1)
				sess.toMaster(r)
				sess.readOnMaster()
			}
		}
		if retried {
			sess.sendProbes()
			sess.waiter.Wait()
		}
	}
	sess.applyProbes()
}

// reply finishes the batch's replies and writes them in order; it reports
// whether the connection must be closed.
func (sess *Session) reply(calls []*call, elapsed time.Duration) (quit bool) {
	buffered := 0 // reply bytes redcon's writer holds (see writeReply)
	var werr error
	sess.trackBeforeReplies(calls)
	m := sess.s.metrics
	var runInfo *router.CommandInfo // the run of calls of one command being counted
	runLen := 0
	for _, c := range calls {
		r := &c.req
		if r.Kind == router.KindWrite {
			sess.noteWrite(r)
		}
		if ci := c.info(); ci != runInfo {
			m.replies(runInfo, runLen, elapsed)
			runInfo, runLen = ci, 0
		}
		runLen++
		m.replyError(r)
		sess.finish(c)
		if sess.resp3.Load() && !c.eval.resp3 {
			r.Reply = toRESP3(c.shape(), r.Reply)
		}
		quit = quit || c.quit
		if !c.skip && werr == nil {
			werr = writeReply(sess.conn, r.Reply, &buffered)
		}
		// Do not keep large reply buffers alive between batches, nor the
		// command (redcon's copy of it, as large as the client sent), nor what
		// the finishing step used.
		if cap(r.Reply) > maxKeptReply {
			r.Reply = nil
		}
		r.Raw = nil
		c.cmd, c.exec, c.bcast, c.eval = redcon.Command{}, execEntry{}, bcastReplies{}, evalCheck{}
	}
	m.replies(runInfo, runLen, elapsed)
	sess.trackAfterReplies()
	return quit || werr != nil
}

// finish runs c's finishing step on its reply.
func (sess *Session) finish(c *call) {
	r := &c.req
	switch c.post {
	case postInfo:
		r.Reply = sess.infoReply(r.Reply)
	case postExec:
		r.Reply = sess.execReply(&c.exec, r.Reply)
	case postBroadcast:
		r.Reply = broadcastReply(&c.bcast, r.Reply)
	case postHideMeta:
		r.Reply = hideMeta(r.Reply)
	case postSlowlog:
		r.Reply = slowlogReply(c, r.Reply)
	case postHideSecrets:
		r.Reply = showRequirePass(hideSecrets(r.Reply), sess.s.config().RequirePass)
	case postCommandDocs:
		r.Reply = commandDocsReply(r.Reply)
	}
}

func (sess *Session) local(r *router.Request, reply []byte) {
	r.Kind = router.KindLocal
	r.Reply = append(r.Reply[:0], reply...)
}

func (sess *Session) localError(r *router.Request, msg string) {
	r.Kind = router.KindLocal
	r.Reply = router.AppendError(r.Reply[:0], msg)
}

func (sess *Session) toMaster(r *router.Request) {
	sess.waiter.Add(r)
	sess.s.router.Master().Submit(int(sess.id), r)
}

// dispatch runs one command: past the gate, to its handler, or routed by its class.
func (sess *Session) dispatch(c *call) {
	args := c.cmd.Args
	if isSyncproxyCommand(args) {
		if sess.tx != nil {
			sess.localError(&c.req, msgSyncproxyMulti)
			sess.tx.aborted = true
			return
		}
		sess.syncproxyCommand(&c.req, args)
		return
	}
	c.route = sess.routeOf(args)
	sess.leaveLane(c)
	sess.trackCommand(c)
	if sess.tx != nil && sess.inMulti(c) {
		return
	}
	if msg := sess.gate(c); msg != "" {
		sess.localError(&c.req, msg)
		return
	}
	sess.paused(c.route)
	if sess.s.monitors.n.Load() > 0 {
		defer sess.feedMonitors(c) // after it ran: SELECT shows its new DB
	}
	if h := handlers[c.route.Info.Policy.Handler]; h != nil {
		h(sess, c)
		return
	}
	sess.route(c)
}

// routeMemo is the route of the session's last read command, by its name as
// the client spelled it.
type routeMemo struct {
	name  [16]byte
	n     int // 0: none
	route router.Route
}

// routeOf returns the router's Route of args; a pipeline of one read command
// looks its name up once. Only routes that depend on the name alone are
// remembered: reads that are not subcommands ("xinfo|stream", found by the
// second argument) and have no BLOCK option.
func (sess *Session) routeOf(args [][]byte) router.Route {
	m := &sess.lastRoute
	if m.n > 0 && len(args) > 0 && string(args[0]) == string(m.name[:m.n]) {
		return m.route
	}
	rt := sess.s.router.Route(args)
	if ci := rt.Info; rt.Class == router.ClassRead && ci.Subcommands == nil && !ci.Policy.BlockOption &&
		!strings.Contains(ci.Name, "|") && len(args[0]) <= len(m.name) {
		m.n = copy(m.name[:], args[0])
		m.route = rt
	}
	return rt
}

// gate returns the error that refuses a call before it runs, or "": unknown
// command, arity, authentication, the user's rights, the replication metadata
// keys, a held master reset, a write the script cannot carry, the sync channel.
// Every path checks through it: dispatch, MULTI's queue, blocking commands.
func (sess *Session) gate(c *call) string {
	rt, args := c.route, c.cmd.Args
	if rt.Class == router.ClassUnknown {
		return errUnknownCommand(args)
	}
	ci := rt.Info
	if !ci.CheckArity(len(args)) {
		return errWrongArity(ci.Name)
	}
	if !sess.authed && sess.s.config().RequirePass == "" {
		sess.setAuthed(true) // a reload removed the password: as Redis, no AUTH needed
	}
	if !sess.authed && !ci.Has(router.FlagNoAuth) {
		return msgNoAuth
	}
	if e := sess.noPerm(ci); e != "" {
		return e
	}
	if rt.Class != router.ClassWrite && rt.Class != router.ClassLocal {
		if msg := checkKeys(ci, args); msg != "" {
			return msg
		}
	}
	if sess.heldWrite(rt) {
		return msgMasterResetHeld
	}
	if rt.Class == router.ClassWrite {
		if msg := sess.checkWrite(rt, args); msg != "" {
			return msg
		}
	}
	if sess.publishesToSyncChannel(ci, args) {
		return msgSyncChannel
	}
	return ""
}

// handlers serve the commands whose Policy row names a handler.
var handlers = [router.NumHandlers]func(*Session, *call){
	router.HandlerPing:          (*Session).ping,
	router.HandlerEcho:          (*Session).echo,
	router.HandlerQuit:          (*Session).quit,
	router.HandlerSelect:        (*Session).selectDB,
	router.HandlerReset:         (*Session).reset,
	router.HandlerAuth:          (*Session).auth,
	router.HandlerHello:         (*Session).hello,
	router.HandlerInfo:          (*Session).info,
	router.HandlerClientSetName: (*Session).clientSetName,
	router.HandlerClientGetName: (*Session).clientGetName,
	router.HandlerClientID:      (*Session).clientID,
	router.HandlerClientInfo:    (*Session).clientInfo,
	router.HandlerClientList:    (*Session).clientList,
	router.HandlerClientSetInfo: (*Session).clientSetInfo,
	router.HandlerClientReply:   (*Session).clientReply,
	router.HandlerClient:        (*Session).client,
	router.HandlerACL:           (*Session).acl,
	router.HandlerWait:          (*Session).wait,
	router.HandlerUnsubscribe:   (*Session).forward,
	router.HandlerMulti:         (*Session).multi,
	router.HandlerExec:          (*Session).execNoMulti,
	router.HandlerDiscard:       (*Session).discardNoMulti,
	router.HandlerWatch:         (*Session).doWatch,
	router.HandlerUnwatch:       (*Session).unwatch,
	router.HandlerEval:          (*Session).eval,
	router.HandlerFcall:         (*Session).fcall,
	router.HandlerFcallRO:       (*Session).fcallRO,
	router.HandlerScript:        (*Session).script,
	router.HandlerFunctionWrite: (*Session).functionWrite,
	router.HandlerSwapDB:        (*Session).swapDB,
	router.HandlerConfigSet:     (*Session).configSet,
	router.HandlerClientAdmin:   (*Session).clientAdmin,
	router.HandlerResetStat:     (*Session).configResetStat,
	router.HandlerMonitor:       (*Session).monitor,
	router.HandlerSlowlog:       (*Session).slowlog,
}

// route sends a call that no handler serves where its class says.
func (sess *Session) route(c *call) {
	r, ci := &c.req, c.route.Info
	switch ci.Policy.Post {
	case router.PostHideMetaDB0:
		if r.DB == 0 {
			c.post = postHideMeta
		}
	case router.PostHideSecrets:
		c.post = postHideSecrets
	case router.PostCommandDocs:
		c.post = postCommandDocs
	}
	switch c.route.Class {
	case router.ClassDenied:
		sess.localError(r, errDenied(ci.Name))
	case router.ClassLocal, router.ClassSpecial:
		sess.localError(r, errNotSupported(ci.Name))
	case router.ClassWrite:
		r.Kind, r.Raw, r.Argc = router.KindWrite, c.cmd.Raw, len(c.cmd.Args)
		r.Mode, r.NullArray = c.route.Mode, c.route.NullArray
		if bigWrite(c.cmd.Args) {
			r.Split, _ = replicate.SplitOf(c.cmd.Args) // the gate refused the others
		}
		sess.wrote = true
		sess.toMaster(r)
	case router.ClassMaster:
		r.Kind, r.Raw = router.KindRaw, c.cmd.Raw
		sess.toMaster(r)
		if ci.Has(router.FlagReadonly) { // SCAN & co. read the data set
			sess.readOnMaster()
		}
	case router.ClassRead:
		sess.read(c)
	}
}

// read sends a read. A read after a write of the same batch goes behind it on
// the master connection; a read while WATCHing reads what the transaction will
// be checked against, on the master; otherwise to a slave that has this client's
// last write.
func (sess *Session) read(c *call) {
	r := &c.req
	r.Kind, r.Raw = router.KindRaw, c.cmd.Raw
	if mf := c.route.Info.Policy.MetaFree; mf != nil && r.DB == 0 {
		// DB 0 holds the metadata keys: answered on the master without them.
		r.Raw = mf
	} else if !sess.wrote && sess.watch == nil {
		if sess.nearServe(c) {
			return
		}
		sl, err := sess.pickRead()
		if err != nil {
			sess.localError(r, msgNoSlave)
			return
		}
		sess.nearSend(c, sl)
		if sl != nil {
			sl.Reads.Add(1)
			sess.trackSlaveRead(sl)
			c.onSlave = true
			sess.waiter.Add(r)
			sess.waiter.Defer(sl.Backend, int(sess.id), r)
			sess.readOnSlave(sl)
			return
		}
	}
	sess.s.router.MasterReads.Add(1)
	sess.toMaster(r)
	sess.readOnMaster()
}

// forward sends the client's command to the master as it is.
func (sess *Session) forward(c *call) {
	c.req.Kind, c.req.Raw = router.KindRaw, c.cmd.Raw
	sess.toMaster(&c.req)
}

// forwardWrite forwards a command that may write outside the replication script
// (script and function management): later reads of the batch go behind it.
func (sess *Session) forwardWrite(c *call) {
	sess.wrote = true
	sess.forward(c)
}

// client serves the proxy's own CLIENT subcommands; the others are routed.
func (sess *Session) client(c *call) {
	args := c.cmd.Args
	if len(args) >= 2 {
		switch strings.ToLower(string(args[1])) {
		case "synctoken":
			sess.local(&c.req, appendBulk(nil, []byte(sess.syncToken(c.at))))
			return
		case "syncafter":
			sess.syncAfter(&c.req, args)
			return
		case "consistency":
			sess.clientConsistency(&c.req, args)
			return
		}
	}
	sess.route(c)
}

// acl answers ACL from the proxy's users, or forwards what the master answers.
func (sess *Session) acl(c *call) {
	reply, _, forward := sess.aclReply(c.route.Info.Name, c.cmd.Args)
	if !forward {
		sess.local(&c.req, reply)
		return
	}
	sess.forward(c)
}

// multi opens a transaction.
func (sess *Session) multi(c *call) {
	sess.s.memory() // a fresh sample for what the transaction queues
	sess.tx = &txState{db: sess.db}
	sess.local(&c.req, []byte("+OK\r\n"))
}

func (sess *Session) execNoMulti(c *call)    { sess.localError(&c.req, msgExecNoMulti) }
func (sess *Session) discardNoMulti(c *call) { sess.localError(&c.req, msgDiscardNoMult) }

// unwatch ends a watch.
func (sess *Session) unwatch(c *call) {
	sess.closeWatch()
	sess.local(&c.req, []byte("+OK\r\n"))
}

// script forwards SCRIPT to the master, noting what SCRIPT LOAD and FLUSH
// change.
func (sess *Session) script(c *call) {
	switch c.route.Info.Name {
	case "script|load":
		sess.s.scripts.add(sess.s, c.cmd.Args[2]).known.Store(true)
	case "script|flush":
		defer sess.s.scriptFlushed()
	case "script|kill", "function|kill":
		sess.killScript(c)
		return
	}
	sess.forwardWrite(c)
}

// functionWrite runs FUNCTION LOAD, DELETE, FLUSH and RESTORE on the master and
// replicates them: FUNCTION may not run in a script, so it runs natively in the
// transaction large writes use (replicate.WriteNativeCall), numbered only when it
// succeeded, its effect the command itself; the slaves apply it natively too
// (replicate/functions.go). The proxy's composed functions are composed again.
func (sess *Session) functionWrite(c *call) {
	sess.s.functions.reset()
	r, args := &c.req, c.cmd.Args
	r.Kind, r.Raw, r.Argc = router.KindWrite, c.cmd.Raw, len(args)
	r.Mode = replicate.ModeCommand
	r.Split = replicate.Split{Head: len(args) - 1, Group: 1} // one part: the whole command
	sess.wrote = true
	sess.toMaster(r)
}

// swapDB runs SWAPDB, unless it involves DB 0 (the replication metadata's).
func (sess *Session) swapDB(c *call) {
	args := c.cmd.Args
	a, errA := strconv.Atoi(string(args[1]))
	b, errB := strconv.Atoi(string(args[2]))
	if errA == nil && errB == nil && (a == 0 || b == 0) {
		sess.localError(&c.req, msgSwapDB0)
		return
	}
	r := &c.req
	r.Kind, r.Raw, r.Argc = router.KindWrite, c.cmd.Raw, len(args)
	sess.wrote = true
	sess.toMaster(r)
}

// pickRead chooses the slave for a read (nil: the master), waiting up to ryw-wait
// for a slave to apply what the read must see. Unless eventual, the batch's
// later reads go to the same place.
func (sess *Session) pickRead() (*router.Slave, error) {
	lvl := sess.level()
	if sess.batchPicked || (lvl != levelEventual && sess.afterUnknown()) {
		return sess.batchSlave, nil
	}
	rt := sess.s.router
	epoch, seq := sess.readPosition(lvl)
	if lvl == levelGlobal {
		e, s := sess.globalPosition()
		epoch, seq = later(epoch, seq, e, s)
	}
	sl, err := rt.PickRead(epoch, seq)
	if wait := sess.s.config().RYWWait; sl == nil && seq > 0 && wait > 0 {
		sl, err = sess.awaitRead(epoch, seq, wait)
	}
	if err == nil && lvl != levelEventual {
		sess.batchPicked, sess.batchSlave = true, sl
	}
	return sl, err
}

// bcastReplies are the slaves' replies to one broadcast, with the read set it
// was sent to (a reload may change the set before the replies are read).
type bcastReplies struct {
	slaves []*router.Slave
	reqs   []*router.Request
}

// broadcast sends a command (CONFIG SET) to the master and to every slave.
func (sess *Session) broadcast(c *call) {
	raw := c.cmd.Raw
	sess.forward(c)
	c.post = postBroadcast
	b := bcastReplies{slaves: sess.s.router.Slaves()}
	for _, sl := range b.slaves {
		br := &router.Request{Kind: router.KindRaw, Raw: raw}
		b.reqs = append(b.reqs, br)
		sess.waiter.Add(br)
		sess.waiter.Defer(sl.Backend, int(sess.id), br) // behind the batch's reads there
	}
	c.bcast = b
}

// broadcastReply is the master's reply, unless a slave refused.
func broadcastReply(mine *bcastReplies, master []byte) []byte {
	if len(master) > 0 && master[0] == '-' {
		return master
	}
	for j, br := range mine.reqs {
		if len(br.Reply) > 0 && br.Reply[0] == '-' {
			return router.AppendError(nil, "ERR syncproxy: the master applied it but "+
				mine.slaves[j].Backend.Name()+" answered: "+string(br.Reply[1:len(br.Reply)-2]))
		}
	}
	return master
}

// checkPassword checks AUTH's arguments, [password] or [user, password], and on
// success makes the session that user's.
func (sess *Session) checkPassword(args [][]byte) bool {
	name := "default"
	if len(args) == 2 {
		name = string(args[0])
	}
	u, ok := sess.s.config().login(name, args[len(args)-1])
	if ok {
		sess.user = u
	}
	return ok
}

// login checks a user's password: the user named name ("default", or empty, is
// requirepass's, and with no requirepass any password is accepted). It returns
// the user, nil for the default one.
func (c *Config) login(name string, pass []byte) (*User, bool) {
	if name != "" && name != "default" {
		for i := range c.Users {
			if u := &c.Users[i]; u.Name == name {
				return u, subtle.ConstantTimeCompare(pass, []byte(u.Password)) == 1
			}
		}
		return nil, false
	}
	return nil, c.RequirePass == "" || subtle.ConstantTimeCompare(pass, []byte(c.RequirePass)) == 1
}

// userName is the session's user, as ACL WHOAMI and CLIENT LIST show it.
func (sess *Session) userName() string {
	if u := sess.user; u != nil {
		return u.Name
	}
	return "default"
}

// noPerm returns Redis' ACL error when the session's user may not run ci, or "".
func (sess *Session) noPerm(ci *router.CommandInfo) string {
	if sess.user == nil || sess.user.Access != AccessReadOnly || !readOnlyRefuses(ci) {
		return ""
	}
	return "NOPERM this user has no permissions to run the '" + ci.Name + "' command"
}

// readOnlyRefuses reports whether a read-only user may not run ci.
func readOnlyRefuses(ci *router.CommandInfo) bool {
	return ci.Has(router.FlagWrite) || ci.Has(router.FlagAdmin) || ci.Policy.ReadOnlyDenied
}

// checkWrite refuses writes the replication script cannot carry, or that touch the
// replication metadata; it returns the error, or "". A write too large for the
// script runs natively (see bigWrite) when it is its own effect and splits into
// smaller ones; inside MULTI the script runs it in parts (replicate.ModeSplit).
func (sess *Session) checkWrite(rt router.Route, args [][]byte) string {
	if bigWrite(args) {
		if _, ok := replicate.SplitOf(args); !ok || rt.Mode != replicate.ModeCommand {
			return msgTooManyArgs
		}
	}
	return checkKeys(rt.Info, args)
}

// bigWrite reports whether a write has too many arguments for the master
// script: it then runs natively, split for the slaves (router.Request.Split).
func bigWrite(args [][]byte) bool { return len(args)+4 > replicate.MaxScriptArgs }

// publishesToSyncChannel reports whether a command publishes on the sync channel
// (PUBLISH or SPUBLISH), which only the master script may do.
func (sess *Session) publishesToSyncChannel(ci *router.CommandInfo, args [][]byte) bool {
	return ci.Policy.Publishes && len(args) > 1 && string(args[1]) == sess.s.cfg.SyncChannel
}

// checkKeys refuses a command, read or write, that names a key of the
// replication metadata at one of its key positions: clients neither read nor
// write them, on any path (scripts and functions check the same in the master
// script, see replicate.Guard).
func checkKeys(ci *router.CommandInfo, args [][]byte) string {
	var buf [16]int
	for _, k := range ci.KeyIndexes(args, buf[:0]) {
		if bytes.HasPrefix(args[k], []byte(replicate.KeyPrefix)) {
			return msgReservedKey
		}
	}
	if ci.Name == "sort" || ci.Name == "sort_ro" {
		for i := 2; i+1 < len(args); i++ {
			o := args[i]
			if (bytes.EqualFold(o, []byte("by")) || bytes.EqualFold(o, []byte("get"))) && replicate.PatternMayReachReserved(args[i+1]) {
				return msgReservedKey
			}
		}
	}
	return ""
}

func validClientName(b []byte) bool {
	for _, c := range b {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// setName and setDB change the session's name and DB, and what CLIENT LIST shows.
func (sess *Session) setName(n string) {
	sess.name = n
	sess.shownName.Store(&n)
}

func (sess *Session) setDB(db int) {
	sess.db = db
	sess.shownDB.Store(int32(db))
}

// buildCommand encodes args as a RESP array of bulk strings.
func buildCommand(args [][]byte) []byte {
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}

func appendBulk(dst, b []byte) []byte { return redcon.AppendBulk(dst, b) }

// commandDocsReply passes COMMAND DOCS' reply when it has the command's shape
// (name, docs, name, docs ...), and answers as Redis 6 does otherwise: the
// master does not implement it (miniredis answers COMMAND's reply), and
// redis-cli, which asserts the shape, then falls back to its own help.
func commandDocsReply(reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '*' {
		return reply
	}
	parts := splitArray(reply)
	for i := 0; i < len(parts); i += 2 {
		if len(parts[i]) == 0 || parts[i][0] != '$' {
			return []byte("-ERR Unknown subcommand or wrong number of arguments for 'docs'. Try COMMAND HELP.\r\n")
		}
	}
	return reply
}
