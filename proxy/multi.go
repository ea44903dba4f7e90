package proxy

import (
	"bytes"
	"strconv"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// A transaction (MULTI ... EXEC) is queued by the session and runs as one call of
// the replication script on the master: atomically, as EXEC runs in Redis, and it
// reaches the slaves as one sync message, applied atomically too. Reads inside it
// run on the master, in the script, with no effect.

// Redis' transaction replies.
const (
	msgExecAbort     = "EXECABORT Transaction discarded because of previous errors."
	msgExecNoMulti   = "ERR EXEC without MULTI"
	msgDiscardNoMult = "ERR DISCARD without MULTI"
	msgMultiNested   = "ERR MULTI calls can not be nested"
	msgWatchInMulti  = "ERR WATCH inside MULTI is not allowed"
	msgExecBusy      = "EXECABORT Transaction discarded because of: "
	// FUNCTION LOAD, DELETE, FLUSH, RESTORE run natively: alone in a transaction.
	msgFunctionTx = "ERR syncproxy: FUNCTION LOAD, DELETE, FLUSH and RESTORE run inside MULTI only alone (no other command, no WATCH)"
)

// txState is a transaction being queued.
type txState struct {
	db      int  // the DB of the next queued command (SELECT inside MULTI moves it)
	aborted bool // a command was refused while queuing: EXEC answers EXECABORT
	cmds    []txCmd
	bytes   int64  // of the commands queued, counted as the master's memory (memory.go)
	denyOOM bool   // a queued command may use memory: EXEC is refused over maxmemory
	scripts bool   // a client script is queued: the transaction runs in replicate.TxScript
	exec    []byte // EXEC as the client spelled it (MONITOR shows it)
}

// txCmd is one queued command.
type txCmd struct {
	db        int
	raw       []byte
	argc      int
	mode      replicate.Mode
	nullArray bool
	local     []byte          // the reply, when the proxy answers it (SELECT)
	block     string          // a blocking pop run in its non-blocking form: convert the reply
	fcall     string          // FCALL, FCALL_RO: the function, named in its errors
	split     replicate.Split // FUNCTION LOAD, ...: run natively (Request.Split)
	fus       *userScript     // and its composed script
	shown     bool            // MONITOR shows it when the transaction runs (monitored)
	deferred  router.Route    // a CLIENT subcommand the proxy answers when EXEC runs it
	orig      []byte          // the client's frame, when raw is another (MONITOR shows it)
}

// inMulti handles a command while a transaction is open; it reports whether it
// did (EXEC, DISCARD and the queued commands), leaving QUIT and RESET to the
// normal path. A command refused while queuing aborts the transaction.
func (sess *Session) inMulti(c *call) bool {
	r := &c.req
	if c.route.Info != nil {
		switch c.route.Info.Policy.Handler {
		case router.HandlerQuit, router.HandlerReset:
			return false
		case router.HandlerExec:
			tx := sess.tx
			tx.exec = append(tx.exec[:0], c.cmd.Args[0]...)
			sess.exec(c)
			if c.post != postExec {
				sess.feedExec(tx, false) // refused: Redis shows the EXEC alone
			}
			sess.wrote = true // later reads of the batch go behind it, on the master
			return true
		case router.HandlerDiscard:
			sess.tx = nil
			sess.closeWatch()
			sess.local(r, []byte("+OK\r\n"))
			if sess.s.monitors.n.Load() > 0 {
				sess.feedMonitors(c)
			}
			return true
		case router.HandlerMulti, router.HandlerWatch:
			msg := msgMultiNested
			if c.route.Info.Policy.Handler == router.HandlerWatch {
				msg = msgWatchInMulti
			}
			sess.localError(r, msg)
			if sess.s.monitors.n.Load() > 0 {
				sess.feedMonitors(c) // refused as it ran: Redis shows it
			}
			return true
		}
	}
	tx := sess.tx
	msg := sess.gate(c)
	if msg == "" && sess.s.memory().overMaxmemory(tx.bytes+int64(len(c.cmd.Raw))) {
		msg = msgOOM // as Redis, over maxmemory nothing more is queued
	}
	var q txCmd
	var reply []byte
	if msg == "" {
		q, reply, msg = sess.queue(c)
	}
	if msg != "" {
		reply = router.AppendError(nil, msg)
	}
	if reply != nil {
		sess.local(r, reply)
		tx.aborted = true
		return true
	}
	q.shown = monitored(c.route.Info)
	tx.cmds = append(tx.cmds, q)
	if c.route.Info.Policy.Handler != router.HandlerACL { // answered by the proxy: nothing to count
		tx.bytes += int64(len(q.raw))
		tx.denyOOM = tx.denyOOM || c.route.Info.Has(router.FlagDenyOOM)
	}
	sess.local(r, []byte("+QUEUED\r\n"))
	return true
}

// queue makes the queued form of a command that passed the gate; it returns the
// error that refuses it instead, or (ACL) the reply that refuses it.
func (sess *Session) queue(c *call) (q txCmd, refusal []byte, msg string) {
	rt, args := c.route, c.cmd.Args
	name := rt.Info.Name
	q = txCmd{db: sess.tx.db, raw: append([]byte(nil), c.cmd.Raw...), argc: len(args)}
	native := len(sess.tx.cmds) == 1 && sess.tx.cmds[0].split.Group > 0
	switch {
	case native || (rt.Info.Policy.Handler == router.HandlerFunctionWrite && (len(sess.tx.cmds) > 0 || sess.watch != nil)):
		return q, nil, msgFunctionTx
	case rt.Info.Policy.Handler == router.HandlerFunctionWrite:
		// Run natively (FUNCTION may not run in a script), numbered when it
		// succeeded, as outside MULTI (functionWrite).
		q.mode, q.split = replicate.ModeCommand, replicate.Split{Head: len(args) - 1, Group: 1}
	case rt.Info.Policy.Handler == router.HandlerACL:
		// Answered from the proxy's users when queued (they change only with
		// the configuration); the master's ACL is never asked.
		reply, refused, forward := sess.aclReply(name, args)
		if forward {
			return q, nil, "ERR syncproxy: '" + name + "' is not supported inside MULTI"
		}
		if refused {
			return q, reply, ""
		}
		q.local = reply
	case rt.Info.Policy.Handler == router.HandlerSelect:
		q.local = sess.queueSelect(args[1])
	case deferredInTx(rt.Info.Policy.Handler):
		// About this client, answered by the proxy when EXEC runs, in the
		// transaction's order (SETNAME, then GETNAME, as in Redis).
		q.deferred = rt
	case rt.Info.Policy.Handler == router.HandlerPing || rt.Info.Policy.Handler == router.HandlerEcho:
		q.mode = replicate.ModeRead
	case rt.Class == router.ClassWrite:
		q.mode, q.nullArray = rt.Mode, rt.NullArray
		if bigWrite(args) {
			q.mode = replicate.ModeSplit // in parts, in the transaction's script call
		}
	case rt.Class == router.ClassRead || (rt.Class == router.ClassMaster && !rt.Info.Has(router.FlagNoScript)):
		q.mode = replicate.ModeRead
		q.nullArray = rt.Info.Policy.NullArray == router.NullArrayAlways // XREAD run in the script
	case rt.Class == router.ClassSpecial && rt.Info.Policy.Blocking:
		// Inside a transaction a blocking pop does not block, as in Redis.
		form, _, msg := nonBlocking(name, args)
		if msg != "" {
			return q, nil, msg
		}
		q.orig = q.raw
		q.raw, q.argc, q.mode, q.block = buildCommand(form), len(form), replicate.ModeRewrite, name
		q.nullArray = name != "blmove" && name != "brpoplpush" // (their nil is a null bulk string)
	case rt.Info.Policy.Handler == router.HandlerEval || rt.Info.Policy.Handler == router.HandlerFcall ||
		rt.Info.Policy.Handler == router.HandlerFcallRO:
		return sess.queueScript(c, q)
	case rt.Class == router.ClassDenied:
		return q, nil, errDenied(name)
	default:
		return q, nil, "ERR syncproxy: '" + name + "' is not supported inside MULTI"
	}
	return q, nil, ""
}

// queueScript queues EVAL, EVALSHA or FCALL: the script's body travels with
// the transaction and runs in it, in the master's script (replicate.TxScript),
// its writes replicated as effects in the transaction's message. What Redis
// finds wrong only at EXEC (no such script or function, numkeys, a body that
// does not compile) is the command's reply in EXEC's array; what the proxy
// refuses (a reserved key in KEYS) aborts the transaction, as outside scripts.
func (sess *Session) queueScript(c *call, q txCmd) (txCmd, []byte, string) {
	s, args := sess.s, c.cmd.Args
	var us *userScript
	msg := ""
	switch c.route.Info.Name {
	case "fcall", "fcall_ro":
		us, msg = sess.functionScript(string(args[1]))
	case "evalsha", "evalsha_ro":
		if us = s.scripts.get(string(args[1])); us == nil {
			msg = msgNoScript
		}
	default:
		us = s.scripts.add(s, args[1])
	}
	refused := false
	if msg == "" {
		msg, refused = scriptArgsOf(c.route.Info.Name, args[2:])
	}
	if refused {
		return q, nil, msg
	}
	if msg == "" && c.route.Info.Name == "fcall_ro" && us.writes.Load() {
		msg = msgWriteFlagRO
	}
	if msg == "" && !us.compiled.Load() {
		msg = sess.compileScript(us)
	}
	if msg != "" {
		q.local = router.AppendError(nil, msg)
		return q, nil, ""
	}
	if name := c.route.Info.Name; name == "fcall" || name == "fcall_ro" {
		q.fcall, q.fus = string(args[1]), us
	}
	form := append([][]byte{[]byte(us.body)}, args[2:]...)
	q.orig = q.raw
	q.raw, q.argc, q.mode = buildCommand(form), len(form), replicate.ModeTxScript
	if name := c.route.Info.Name; name == "eval_ro" || name == "evalsha_ro" {
		q.mode = replicate.ModeTxScriptRO // its writes refused, as Redis refuses them
	}
	sess.tx.scripts = true
	return q, nil, ""
}

// queueSelect is SELECT's reply inside a transaction: Redis runs it at EXEC
// time, where an invalid one fails alone; a valid one moves the next commands.
func (sess *Session) queueSelect(arg []byte) []byte {
	n, err := strconv.Atoi(string(arg))
	switch {
	case err != nil:
		return router.AppendError(nil, msgNotInteger)
	case n < 0 || n >= numDBs:
		return router.AppendError(nil, msgDBRange)
	}
	sess.tx.db = n
	return []byte("+OK\r\n")
}

// writes reports whether the transaction has a command that may write.
func (tx *txState) writes() bool {
	for _, q := range tx.cmds {
		if q.mode != replicate.ModeRead && q.local == nil {
			return true
		}
	}
	return false
}

// exec submits the queued transaction as one script call; execReply builds the
// client's reply once it completed.
func (sess *Session) exec(c *call) {
	tx, r := sess.tx, &c.req
	sess.tx = nil
	if tx.denyOOM && sess.s.memory().overMaxmemory(tx.bytes) {
		sess.closeWatch()
		sess.localError(r, "EXECABORT Transaction discarded because of: "+msgOOM)
		return
	}
	if tx.aborted {
		sess.closeWatch()
		sess.localError(r, msgExecAbort)
		return
	}
	if tx.writes() && sess.s.repl.MasterResetHeld() {
		// Queued before the hold began: refused at EXEC, as Redis refuses it.
		sess.closeWatch()
		sess.localError(r, "EXECABORT Transaction discarded because of: "+msgMasterResetHeld)
		return
	}
	sess.setDB(tx.db) // SELECT inside the transaction holds for what follows EXEC
	c.post = postExec
	r.Kind = router.KindLocal
	ex := execEntry{tx: tx}
	var chain []*router.Request
	for _, q := range tx.cmds {
		tr := &router.Request{}
		ex.reqs = append(ex.reqs, tr)
		if q.local != nil || q.deferred.Info != nil {
			tr.Kind = router.KindLocal
			tr.Reply = q.local // a deferred one is answered once the transaction ran (runDeferred)
			continue
		}
		tr.Kind, tr.DB, tr.Raw, tr.Argc = router.KindWrite, q.db, q.raw, q.argc
		tr.Mode, tr.NullArray, tr.Split = sess.scriptMode(q.mode), q.nullArray, q.split
		if q.split.Group > 0 {
			sess.s.functions.reset()
		}
		chain = append(chain, tr)
	}
	switch {
	case sess.watch != nil:
		sess.execWatched(&ex, chain)
	case tx.scripts && len(chain) > 0:
		sess.execScripts(chain)
	case len(chain) > 0:
		for _, tr := range chain {
			sess.waiter.Add(tr)
		}
		sess.s.router.Master().SubmitTx(int(sess.id), chain)
	}
	sess.runDeferred(&ex)
	c.exec = ex
}

// runDeferred answers the transaction's CLIENT subcommands and INFO
// (deferredInTx) once it ran, in order, before the commands that follow EXEC;
// none when it did not run (a watched key changed, the master could not run
// it), as in Redis.
func (sess *Session) runDeferred(ex *execEntry) {
	deferred := false
	for _, q := range ex.tx.cmds {
		deferred = deferred || q.deferred.Info != nil
	}
	if !deferred {
		return
	}
	sess.waiter.Wait() // the transaction's outcome
	if ex.aborted || ex.err != "" {
		return
	}
	for _, tr := range ex.reqs {
		if tr.Failed || router.IsBusy(tr.Reply) {
			return
		}
	}
	calls := make([]*call, len(ex.tx.cmds))
	for j := range ex.tx.cmds {
		if q := &ex.tx.cmds[j]; q.deferred.Info != nil {
			calls[j] = &call{cmd: redcon.Command{Raw: q.raw, Args: frameArgs(q.raw)}, route: q.deferred}
			handlers[q.deferred.Info.Policy.Handler](sess, calls[j])
		}
	}
	sess.waiter.Wait() // INFO asks the master
	for j, c := range calls {
		if c != nil {
			sess.finish(c)
			ex.reqs[j].Reply = c.req.Reply
		}
	}
}

// execScripts submits a transaction holding client scripts: one call of
// replicate.TxScript, on a lane (it may run away as a script may, eval.go).
func (sess *Session) execScripts(chain []*router.Request) {
	master, txs := sess.s.router.Master(), sess.s.scripts.txScript(sess.s)
	sess.enterLane()
	if !txs.loaded.Load() {
		load := &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{
			[]byte("SCRIPT"), []byte("LOAD"), []byte(txs.composed.Body)})}
		sess.waiter.Add(load)
		master.SubmitOn(sess.lane, load)
		txs.loaded.Store(true)
	}
	chain[0].Script = txs.composed
	for _, tr := range chain {
		sess.waiter.Add(tr)
	}
	master.SubmitTxOn(sess.lane, chain)
}

// execEntry is the transaction an EXEC of the batch submitted.
type execEntry struct {
	tx      *txState
	reqs    []*router.Request
	aborted bool   // a watched key changed: EXEC's reply is nil
	err     string // the master could not run it
}

// execReply is EXEC's reply: the array of the queued commands' replies, or the
// proxy's error when the master could not run the transaction.
func (sess *Session) execReply(ex *execEntry, dst []byte) []byte {
	tx := ex.tx
	if ex.aborted {
		sess.feedExec(tx, false) // a watched key changed: nothing ran
		return append(dst[:0], "*-1\r\n"...)
	}
	if ex.err != "" {
		sess.feedExec(tx, false)
		return router.AppendError(dst[:0], ex.err)
	}
	for _, tr := range ex.reqs {
		if tx.scripts && (bytes.HasPrefix(tr.Reply, []byte("-NOSCRIPT")) ||
			bytes.HasPrefix(tr.Reply, []byte("-ERR syncproxy: the replication script was flushed"))) {
			sess.s.scripts.txScript(sess.s).loaded.Store(false) // SCRIPT FLUSH came between
		}
		if tr.Failed {
			return append(dst[:0], tr.Reply...)
		}
		if router.IsBusy(tr.Reply) {
			// The master runs a script: as Redis refuses EXEC then (no command
			// in a transaction's script gets BUSY).
			sess.feedExec(tx, false)
			return router.AppendError(dst[:0], msgExecBusy+string(bytesTrimErr(tr.Reply)))
		}
	}
	sess.feedExec(tx, true)
	out := redcon.AppendArray(dst[:0], len(ex.reqs))
	for j, tr := range ex.reqs {
		reply := tr.Reply
		if b := tx.cmds[j].block; b != "" {
			reply = blockingReply(b, reply)
		}
		if q := &tx.cmds[j]; q.fcall != "" {
			reply = functionErrReply(reply, q.fus, q.fcall)
		} else if q.mode == replicate.ModeRead {
			reply = nestedNullArrays(q.raw, reply)
		}
		if replicate.IsRESP3Mode(tr.Mode) {
			reply = unwrapRESP3(reply) // a script's reply, already RESP3
		} else if sess.resp3.Load() {
			reply = toRESP3(tx.cmds[j].shape(), reply)
		}
		out = append(out, reply...)
		sess.noteWrite(tr)
	}
	return out
}

// nestedNullArrays gives back the null arrays inside a read's reply that the
// transaction's script returned as null bulk strings (Lua has one nil): GEOPOS'
// missing members and XPENDING's consumers when none is pending, as Redis
// answers them in a transaction.
func nestedNullArrays(raw, reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '*' || !bytes.Contains(reply, []byte("$-1\r\n")) {
		return reply
	}
	args := frameArgs(raw)
	if len(args) == 0 {
		return reply
	}
	elems, from := splitArray(reply), 0
	switch name := string(bytes.ToLower(args[0])); {
	case name == "geopos":
	case name == "xpending" && len(args) == 3 && len(elems) == 4:
		from = 3
	default:
		return reply
	}
	out := redcon.AppendArray(make([]byte, 0, len(reply)+8), len(elems))
	for i, e := range elems {
		if i >= from && string(e) == "$-1\r\n" {
			e = []byte("*-1\r\n")
		}
		out = append(out, e...)
	}
	return out
}

// deferredInTx reports whether a command the proxy answers (about the client
// itself, or INFO with its own sections) is queued in a transaction and
// answered once it ran.
func deferredInTx(h router.Handler) bool {
	switch h {
	case router.HandlerClientSetName, router.HandlerClientGetName, router.HandlerClientID,
		router.HandlerClientInfo, router.HandlerClientList, router.HandlerClientSetInfo, router.HandlerInfo:
		return true
	}
	return false
}
