package proxy

import (
	"bytes"
	"crypto/subtle"
	"net"
	"strconv"
	"strings"
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

// post says how a request's reply is rewritten before it reaches the client.
type post uint8

const (
	postNone        post = iota
	postInfo             // prepend the proxy's INFO sections
	postQuit             // close the connection after this reply
	postExec             // EXEC: the array of the transaction's replies
	postBroadcast        // CONFIG SET sent to every backend: the master's reply, or a slave's error
	postHideMeta         // SCAN or KEYS in DB 0: leave out the replication metadata keys
	postHideSecrets      // CONFIG GET: the master's passwords are not the client's to read
)

// Session is one client connection's state. Its methods run on the connection's
// redcon goroutine only.
type Session struct {
	s    *Server
	conn redcon.Conn
	id   int64

	db        int
	name      string
	lastSeq   int64  // sequence number of this client's last write (read-your-writes)
	lastEpoch string // and the master's epoch then
	minSeq    int64  // causal token set by CLIENT SYNCAFTER: reads must see it
	minEpoch  string
	readSeq   int64 // what the session's reads saw (monotonic reads; see consistency.go)
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

	authed       bool  // AUTH succeeded, or no password is required
	user         *User // the user authenticated as; nil: the default user
	replyMode    int   // 0 on, 1 off, 2 skip next
	replyDecided bool  // CLIENT REPLY set the skip of its own reply

	netConn net.Conn // the client's connection, for deadlines
	created time.Time
	// What CLIENT LIST shows of this session to other sessions.
	shownName atomic.Pointer[string]
	shownDB   atomic.Int32
	detached  atomic.Bool // served by its own goroutine (subscribed mode)
	sub       *subConn    // the dedicated subscription connection

	evalChecks []evalCheck    // the batch's EVALs
	bcast      []bcastReplies // the slaves' replies to the batch's broadcasts

	tx    *txState    // MULTI ... EXEC being queued
	watch *watchConn  // dedicated master connection while WATCHing
	execs []execEntry // transactions submitted by the batch's EXECs, in order

	cmds    []redcon.Command
	reqs    []*router.Request
	posts   []post
	infos   []*router.CommandInfo // each request's command, for the metrics
	onSlave []bool                // the request went to a slave
	skip    []bool                // CLIENT REPLY OFF/SKIP: the reply is not sent
	waiter  *router.Waiter
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
	sess.closeWatch()
	sess.reqs = nil
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
	batch := append(sess.cmds[:0], cmd)
	batch = append(batch, conn.ReadPipeline()...)
	all := batch // kept for the next batch, unless a deep pipeline grew it
	quit := false
	for len(batch) > 0 && !quit {
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
			quit = sess.block(ci, batch[0].Args)
			st := s.metrics.command(ci)
			st.calls.Add(1)
			st.latency.Observe(time.Since(start))
			batch = batch[1:]
		} else {
			n := min(len(batch), s.config().MaxPipeline)
			for j := 1; j < n; j++ {
				if _, ok := sess.isBlocking(batch[j].Args); ok || sess.isSubscribe(batch[j].Args) {
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
	for len(sess.reqs) < len(cmds) {
		sess.reqs = append(sess.reqs, &router.Request{})
		sess.posts = append(sess.posts, postNone)
		sess.infos = append(sess.infos, nil)
		sess.onSlave = append(sess.onSlave, false)
		sess.skip = append(sess.skip, false)
	}
	wrote := false
	start := time.Now()
	sess.batchPicked, sess.batchSlave = false, nil
	for i, c := range cmds {
		r := sess.reqs[i]
		r.Reset()
		r.DB = sess.db
		sess.posts[i] = postNone
		sess.onSlave[i] = false
		sess.skip[i] = false
		mode := sess.replyMode
		sess.dispatch(i, r, c, &wrote)
		if sess.replyDecided { // CLIENT REPLY decides for its own reply
			sess.replyDecided = false
		} else {
			switch mode {
			case 1:
				sess.skip[i] = true
			case 2:
				sess.skip[i] = true
				sess.replyMode = 0
			}
		}
		if sess.posts[i] == postQuit {
			// As Redis does, nothing pipelined after QUIT runs.
			cmds = cmds[:i+1]
			break
		}
	}
	sess.s.commands.Add(int64(len(cmds)))
	sess.sendProbes()
	sess.waiter.Wait()
	if len(sess.evalChecks) > 0 {
		sess.checkEvals()
	}
	// A read that failed on a slave (it went down) is retried on the master, when
	// no write of the batch could overtake it there.
	if !wrote {
		retried := false
		for i := range cmds {
			if r := sess.reqs[i]; sess.onSlave[i] && r.Failed {
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
	elapsed := time.Since(start)
	buffered := 0 // reply bytes redcon's writer holds (see writeReply)
	var werr error
	for i := range cmds {
		r := sess.reqs[i]
		if r.Kind == router.KindWrite {
			sess.noteWrite(r)
		}
		sess.s.metrics.reply(sess.infos[i], r, elapsed)
		switch sess.posts[i] {
		case postInfo:
			r.Reply = sess.infoReply(r.Reply)
		case postExec:
			r.Reply = sess.execReply(r.Reply)
		case postBroadcast:
			r.Reply = sess.broadcastReply(r.Reply)
		case postHideMeta:
			r.Reply = hideMeta(r.Reply)
		case postHideSecrets:
			r.Reply = hideSecrets(r.Reply)
		case postQuit:
			quit = true
		}
		if !sess.skip[i] && werr == nil {
			werr = writeReply(sess.conn, r.Reply, &buffered)
		}

		// Do not keep large reply buffers alive between batches, nor the
		// command (redcon's copy of it, as large as the client sent).
		if cap(r.Reply) > maxKeptReply {
			r.Reply = nil
		}
		r.Raw = nil
	}
	// Nor the requests of a deep pipeline.
	if len(sess.reqs) > maxKeptRequests {
		clear(sess.reqs[maxKeptRequests:])
		sess.reqs = sess.reqs[:maxKeptRequests:maxKeptRequests]
		sess.posts = sess.posts[:maxKeptRequests:maxKeptRequests]
		sess.infos = sess.infos[:maxKeptRequests:maxKeptRequests]
		sess.onSlave = sess.onSlave[:maxKeptRequests:maxKeptRequests]
		sess.skip = sess.skip[:maxKeptRequests:maxKeptRequests]
	}
	return quit || werr != nil
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

func (sess *Session) dispatch(i int, r *router.Request, c redcon.Command, wrote *bool) {
	args := c.Args
	if isSyncproxyCommand(args) {
		if sess.tx != nil {
			sess.localError(r, msgSyncproxyMulti)
			sess.tx.aborted = true
			return
		}
		sess.syncproxyCommand(r, args)
		return
	}
	rt := sess.s.router.Route(args)
	sess.infos[i] = rt.Info
	if sess.tx != nil && sess.inMulti(i, r, c, rt) {
		if rt.Info != nil && rt.Info.Name == "exec" {
			*wrote = true // later reads of the batch go behind it, on the master
		}
		return
	}
	if rt.Class == router.ClassUnknown {
		sess.localError(r, errUnknownCommand(args))
		return
	}
	if !rt.Info.CheckArity(len(args)) {
		sess.localError(r, errWrongArity(rt.Info.Name))
		return
	}
	if !sess.authed && sess.s.config().RequirePass == "" {
		sess.setAuthed(true) // a reload removed the password: as Redis, no AUTH needed
	}
	if !sess.authed && !rt.Info.Has(router.FlagNoAuth) {
		sess.localError(r, msgNoAuth)
		return
	}
	if e := sess.noPerm(rt.Info); e != "" {
		sess.localError(r, e)
		return
	}
	if rt.Class != router.ClassWrite && rt.Class != router.ClassLocal {
		if msg := checkKeys(rt.Info, args); msg != "" {
			sess.localError(r, msg)
			return
		}
	}
	if sess.heldWrite(rt) {
		sess.localError(r, msgMasterResetHeld)
		return
	}
	if rt.Info.Name == "client" && len(args) >= 2 {
		switch strings.ToLower(string(args[1])) {
		case "synctoken":
			sess.local(r, appendBulk(nil, []byte(sess.syncToken(i))))
			return
		case "syncafter":
			sess.syncAfter(r, args)
			return
		case "consistency":
			sess.clientConsistency(r, args)
			return
		}
	}
	if isACL(rt.Info) {
		reply, _, forward := sess.aclReply(rt.Info.Name, args)
		if !forward {
			sess.local(r, reply)
			return
		}
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		sess.toMaster(r)
		return
	}
	switch rt.Info.Name {
	case "wait":
		sess.wait(i, r, args)
		return
	case "unsubscribe", "punsubscribe", "sunsubscribe":
		// Not subscribed: the master answers (no subscription to leave), and
		// the shared connection's state does not change.
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		sess.toMaster(r)
		return
	case "multi":
		sess.s.memory() // a fresh sample for what the transaction queues
		sess.tx = &txState{db: sess.db}
		sess.local(r, []byte("+OK\r\n"))
		return
	case "exec":
		sess.localError(r, msgExecNoMulti)
		return
	case "discard":
		sess.localError(r, msgDiscardNoMult)
		return
	case "watch":
		sess.doWatch(r, c.Raw)
		return
	case "fcall":
		sess.fcall(i, r, args, wrote)
		return
	case "function|load", "function|delete", "function|flush", "function|restore":
		sess.s.functions.reset()
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		*wrote = true
		sess.toMaster(r)
		return
	case "swapdb":
		a, errA := strconv.Atoi(string(args[1]))
		b, errB := strconv.Atoi(string(args[2]))
		if errA == nil && errB == nil && (a == 0 || b == 0) {
			sess.localError(r, msgSwapDB0)
			return
		}
		r.Kind, r.Raw, r.Argc = router.KindWrite, c.Raw, len(args)
		*wrote = true
		sess.toMaster(r)
		return
	case "config|set":
		if sess.s.cfg.ConfigSet != "broadcast" {
			sess.localError(r, msgConfigSet)
			return
		}
		sess.broadcast(i, r, c.Raw)
		return
	case "eval", "evalsha":
		sess.eval(i, r, rt.Info.Name, args, wrote)
		return
	case "eval_ro", "evalsha_ro", "script|exists", "script|kill", "script|help", "script|load", "script|flush", "script":
		switch rt.Info.Name {
		case "script|load":
			sess.s.scripts.add(sess.s, args[2])
		case "script|flush":
			defer sess.s.scriptFlushed()
		}
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		*wrote = true
		sess.toMaster(r)
		return
	case "unwatch":
		sess.closeWatch()
		sess.local(r, []byte("+OK\r\n"))
		return
	}
	switch rt.Class {
	case router.ClassLocal:
		sess.runLocal(i, r, rt.Info, args)
	case router.ClassDenied:
		sess.localError(r, errDenied(rt.Info.Name))
	case router.ClassSpecial:
		sess.localError(r, errNotSupported(rt.Info.Name))
	case router.ClassWrite:
		if msg := sess.checkWrite(rt.Info, args); msg != "" {
			sess.localError(r, msg)
			return
		}
		r.Kind = router.KindWrite
		r.Raw = c.Raw
		r.Argc = len(args)
		r.Rewrite = rt.Rewrite
		r.NullArray = rt.NullArray
		*wrote = true
		sess.toMaster(r)
	case router.ClassMaster:
		if sess.publishesToSyncChannel(rt.Info.Name, args) {
			sess.localError(r, msgSyncChannel)
			return
		}
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		if rt.Info.Name == "scan" && r.DB == 0 {
			sess.posts[i] = postHideMeta
		}
		if rt.Info.Name == "config|get" {
			sess.posts[i] = postHideSecrets
		}
		sess.toMaster(r)
		if rt.Info.Has(router.FlagReadonly) { // SCAN & co. read the data set
			sess.readOnMaster()
		}
	case router.ClassRead:
		r.Kind = router.KindRaw
		r.Raw = c.Raw
		if rt.Info.Name == "keys" && r.DB == 0 {
			sess.posts[i] = postHideMeta
		}
		if (rt.Info.Name == "dbsize" || rt.Info.Name == "randomkey") && r.DB == 0 {
			// DB 0 holds the metadata keys: answered on the master without them.
			r.Raw = metaFreeScripts[rt.Info.Name]
			sess.s.router.MasterReads.Add(1)
			sess.toMaster(r)
			sess.readOnMaster()
			return
		}
		// A read after a write of the same batch goes behind it on the master
		// connection; a read while WATCHing reads what the transaction will be
		// checked against, on the master; otherwise to a slave that has this
		// client's last write.
		if !*wrote && sess.watch == nil {
			sl, err := sess.pickRead()
			if err != nil {
				sess.localError(r, msgNoReplica)
				return
			}
			if sl != nil {
				sl.Reads.Add(1)
				sess.onSlave[i] = true
				sess.waiter.Add(r)
				sl.Backend.Submit(int(sess.id), r)
				sess.readOnSlave(sl)
				return
			}
		}
		sess.s.router.MasterReads.Add(1)
		sess.toMaster(r)
		sess.readOnMaster()
	}
}

// noteWrite records the replication position of a completed write, for
// read-your-writes, WAIT and CLIENT SYNCTOKEN (a write without effect has none).
func (sess *Session) noteWrite(r *router.Request) {
	if r.Seq > 0 {
		sess.lastSeq, sess.lastEpoch = r.Seq, r.Epoch
	}
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
	epoch, seq := sess.readPosition()
	if lvl == levelGlobal {
		e, s := sess.s.masterPos.get(rt.Master(), int(sess.id))
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
func (sess *Session) broadcast(i int, r *router.Request, raw []byte) {
	r.Kind = router.KindRaw
	r.Raw = raw
	sess.toMaster(r)
	sess.posts[i] = postBroadcast
	b := bcastReplies{slaves: sess.s.router.Slaves()}
	for _, sl := range b.slaves {
		br := &router.Request{Kind: router.KindRaw, Raw: raw}
		b.reqs = append(b.reqs, br)
		sess.waiter.Add(br)
		sl.Backend.Submit(int(sess.id), br)
	}
	sess.bcast = append(sess.bcast, b)
}

// broadcastReply is the master's reply, unless a slave refused.
func (sess *Session) broadcastReply(master []byte) []byte {
	mine := sess.bcast[0]
	sess.bcast = sess.bcast[1:]
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
	pass := args[len(args)-1]
	cfg := sess.s.config()
	if len(args) == 2 && string(args[0]) != "default" {
		for i := range cfg.Users {
			if u := &cfg.Users[i]; u.Name == string(args[0]) {
				if subtle.ConstantTimeCompare(pass, []byte(u.Password)) != 1 {
					return false
				}
				sess.user = u
				return true
			}
		}
		return false
	}
	want := cfg.RequirePass
	if want != "" && subtle.ConstantTimeCompare(pass, []byte(want)) != 1 {
		return false
	}
	sess.user = nil // the default user; with no password, any is accepted
	return true
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
	return ci.Has(router.FlagWrite) || ci.Has(router.FlagAdmin) || readOnlyDenied[ci.Name]
}

// readOnlyDenied are the commands, neither write nor admin, that a read-only user
// may not run: they can write (scripts) or reach other clients.
var readOnlyDenied = map[string]bool{
	"eval": true, "evalsha": true, "fcall": true, "publish": true, "spublish": true,
	"script|load": true, "script|flush": true, "script|kill": true, "function|kill": true,
	"pfdebug": true, "pfselftest": true,
}

// checkWrite refuses writes the replication script cannot carry, or that touch the
// replication metadata; it returns the error, or "".
func (sess *Session) checkWrite(ci *router.CommandInfo, args [][]byte) string {
	if len(args)+4 > replicate.MaxScriptArgs {
		return msgTooManyArgs
	}
	return checkKeys(ci, args)
}

// publishesToSyncChannel reports whether a command publishes on the sync channel
// (PUBLISH or SPUBLISH), which only the master script may do.
func (sess *Session) publishesToSyncChannel(name string, args [][]byte) bool {
	return (name == "publish" || name == "spublish") && len(args) > 1 && string(args[1]) == sess.s.cfg.SyncChannel
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

// runLocal answers the commands the proxy implements itself.
func (sess *Session) runLocal(i int, r *router.Request, ci *router.CommandInfo, args [][]byte) {
	switch ci.Name {
	case "ping":
		if len(args) == 1 {
			sess.local(r, []byte("+PONG\r\n"))
		} else {
			sess.local(r, appendBulk(nil, args[1]))
		}
	case "echo":
		sess.local(r, appendBulk(nil, args[1]))
	case "quit":
		sess.local(r, []byte("+OK\r\n"))
		sess.posts[i] = postQuit
	case "select":
		n, err := strconv.Atoi(string(args[1]))
		switch {
		case err != nil:
			sess.localError(r, msgNotInteger)
		case n < 0 || n >= numDBs:
			sess.localError(r, msgDBRange)
		default:
			sess.setDB(n)
			sess.local(r, []byte("+OK\r\n"))
		}
	case "reset":
		sess.setAuthed(sess.s.config().RequirePass == "")
		sess.user = nil
		sess.tx = nil
		sess.closeWatch()
		sess.setDB(0)
		sess.setName("")
		sess.replyMode = 0
		sess.setConsistency(levelDefault)
		sess.local(r, []byte("+RESET\r\n"))
	case "auth":
		switch {
		case len(args) > 3:
			sess.localError(r, msgSyntax)
		case len(args) == 2 && sess.s.config().RequirePass == "":
			sess.localError(r, msgAuthNoPassword)
		case sess.checkPassword(args[1:]):
			sess.setAuthed(true)
			sess.local(r, []byte("+OK\r\n"))
		default:
			sess.localError(r, msgWrongPass)
		}
	case "hello":
		sess.hello(r, args)
	case "info":
		r.Kind = router.KindRaw
		r.Raw = buildCommand(args)
		sess.posts[i] = postInfo
		sess.toMaster(r)
	case "client|setname":
		if !validClientName(args[2]) {
			sess.localError(r, msgClientName)
			return
		}
		sess.setName(string(args[2]))
		sess.local(r, []byte("+OK\r\n"))
	case "client|getname":
		if sess.name == "" {
			sess.local(r, []byte("$-1\r\n"))
		} else {
			sess.local(r, appendBulk(nil, []byte(sess.name)))
		}
	case "client|id":
		sess.local(r, []byte(":"+strconv.FormatInt(sess.id, 10)+"\r\n"))
	case "client|info":
		sess.local(r, appendBulk(nil, []byte(sess.clientLine())))
	case "client|list":
		sess.local(r, appendBulk(nil, []byte(sess.s.clientList())))
	case "client|setinfo":
		sess.local(r, []byte("+OK\r\n"))
	case "client|reply":
		sess.replyDecided = true
		switch strings.ToLower(string(args[2])) {
		case "on":
			sess.replyMode = 0
			sess.local(r, []byte("+OK\r\n"))
		case "off":
			sess.replyMode = 1
			sess.skip[i] = true
		case "skip":
			sess.replyMode = 2
			sess.skip[i] = true
		default:
			sess.localError(r, msgSyntax)
		}
	default:
		sess.localError(r, errNotSupported(ci.Name))
	}
}

func validClientName(b []byte) bool {
	for _, c := range b {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// clientLine describes the session as CLIENT INFO and CLIENT LIST do. It may run
// on another session's goroutine: it reads only what is safe to share.
func (sess *Session) clientLine() string {
	name := ""
	if p := sess.shownName.Load(); p != nil {
		name = *p
	}
	return "id=" + strconv.FormatInt(sess.id, 10) +
		" addr=" + sess.netConn.RemoteAddr().String() +
		" laddr=" + sess.netConn.LocalAddr().String() +
		" name=" + name +
		" user=" + sess.userName() +
		" age=" + strconv.FormatInt(int64(time.Since(sess.created).Seconds()), 10) +
		" db=" + strconv.FormatInt(int64(sess.shownDB.Load()), 10) +
		" consistency=" + sess.shownConsistency() + "\n"
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

// hello answers HELLO [protover [AUTH user pass] [SETNAME name]] for RESP2.
func (sess *Session) hello(r *router.Request, args [][]byte) {
	if len(args) >= 2 {
		v, err := strconv.Atoi(string(args[1]))
		if err != nil {
			sess.localError(r, msgProtoNotInt)
			return
		}
		if v != 2 {
			sess.localError(r, msgNoProto)
			return
		}
		for j := 2; j < len(args); j++ {
			opt := strings.ToLower(string(args[j]))
			switch {
			case opt == "auth" && j+2 < len(args):
				if !sess.checkPassword(args[j+1 : j+3]) {
					sess.localError(r, msgWrongPass)
					return
				}
				sess.setAuthed(true)
				j += 2
			case opt == "setname" && j+1 < len(args):
				if !validClientName(args[j+1]) {
					sess.localError(r, msgClientName)
					return
				}
				sess.setName(string(args[j+1]))
				j++
			default:
				sess.localError(r, "ERR Syntax error in HELLO option '"+sanitize(args[j], 128)+"'")
				return
			}
		}
	}
	if !sess.authed {
		sess.localError(r, msgHelloNoAuth)
		return
	}
	b := redcon.AppendArray(nil, 14)
	b = redcon.AppendBulkString(b, "server")
	b = redcon.AppendBulkString(b, "redis")
	b = redcon.AppendBulkString(b, "version")
	b = redcon.AppendBulkString(b, "7.0.0")
	b = redcon.AppendBulkString(b, "proto")
	b = redcon.AppendInt(b, 2)
	b = redcon.AppendBulkString(b, "id")
	b = redcon.AppendInt(b, sess.id)
	b = redcon.AppendBulkString(b, "mode")
	b = redcon.AppendBulkString(b, "standalone")
	b = redcon.AppendBulkString(b, "role")
	b = redcon.AppendBulkString(b, "master")
	b = redcon.AppendBulkString(b, "modules")
	b = redcon.AppendArray(b, 0)
	sess.local(r, b)
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
