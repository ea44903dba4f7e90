package proxy

import (
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
)

// txState is a transaction being queued.
type txState struct {
	db      int  // the DB of the next queued command (SELECT inside MULTI moves it)
	aborted bool // a command was refused while queuing: EXEC answers EXECABORT
	cmds    []txCmd
	bytes   int64 // of the commands queued, counted as the master's memory (memory.go)
	denyOOM bool  // a queued command may use memory: EXEC is refused over maxmemory
}

// txCmd is one queued command.
type txCmd struct {
	db        int
	raw       []byte
	argc      int
	mode      replicate.Mode
	nullArray bool
	local     []byte // the reply, when the proxy answers it (SELECT)
	block     string // a blocking pop run in its non-blocking form: convert the reply
}

// inMulti handles a command while a transaction is open; it reports whether it
// did (EXEC, DISCARD and the queued commands), leaving QUIT and RESET to the
// normal path.
func (sess *Session) inMulti(i int, r *router.Request, c redcon.Command, rt router.Route) bool {
	tx := sess.tx
	args := c.Args
	if rt.Class == router.ClassUnknown {
		sess.localError(r, errUnknownCommand(args))
		tx.aborted = true
		return true
	}
	name := rt.Info.Name
	switch name {
	case "quit", "reset":
		return false
	case "exec":
		sess.exec(i, r)
		return true
	case "discard":
		sess.tx = nil
		sess.closeWatch()
		sess.local(r, []byte("+OK\r\n"))
		return true
	case "multi":
		sess.localError(r, msgMultiNested)
		return true
	case "watch":
		sess.localError(r, msgWatchInMulti)
		return true
	}
	if !rt.Info.CheckArity(len(args)) {
		sess.localError(r, errWrongArity(name))
		tx.aborted = true
		return true
	}
	if e := sess.noPerm(rt.Info); e != "" {
		sess.localError(r, e)
		tx.aborted = true
		return true
	}
	if sess.heldWrite(rt) {
		sess.localError(r, msgMasterResetHeld)
		tx.aborted = true
		return true
	}
	if sess.s.memory().overMaxmemory(tx.bytes + int64(len(c.Raw))) {
		// As Redis, over maxmemory nothing more is queued.
		sess.localError(r, msgOOM)
		tx.aborted = true
		return true
	}
	q := txCmd{db: tx.db, raw: append([]byte(nil), c.Raw...), argc: len(args)}
	if isACL(rt.Info) {
		// Answered from the proxy's users when queued (they change only with
		// the configuration); the master's ACL is never asked.
		reply, refused, forward := sess.aclReply(name, args)
		if refused || forward {
			if forward {
				reply = router.AppendError(nil, "ERR syncproxy: '"+name+"' is not supported inside MULTI")
			}
			sess.local(r, reply)
			tx.aborted = true
			return true
		}
		q.local = reply
		tx.cmds = append(tx.cmds, q)
		sess.local(r, []byte("+QUEUED\r\n"))
		return true
	}
	switch {
	case name == "select":
		n, err := strconv.Atoi(string(args[1]))
		if err != nil || n < 0 || n >= numDBs {
			// Redis runs SELECT at EXEC time; an invalid one fails then, alone.
			q.local = router.AppendError(nil, msgDBRange)
			if err != nil {
				q.local = router.AppendError(nil, msgNotInteger)
			}
		} else {
			q.local = []byte("+OK\r\n")
			tx.db = n
		}
	case name == "ping" || name == "echo":
		q.mode = replicate.ModeRead
	case rt.Class == router.ClassWrite:
		if msg := sess.checkWrite(rt.Info, args); msg != "" {
			sess.localError(r, msg)
			tx.aborted = true
			return true
		}
		q.mode, q.nullArray = rt.Mode, rt.NullArray
	case rt.Class == router.ClassRead || (rt.Class == router.ClassMaster && !rt.Info.Has(router.FlagNoScript)):
		if msg := checkKeys(rt.Info, args); msg != "" {
			sess.localError(r, msg)
			tx.aborted = true
			return true
		}
		if sess.publishesToSyncChannel(name, args) {
			sess.localError(r, msgSyncChannel)
			tx.aborted = true
			return true
		}
		q.mode = replicate.ModeRead
		q.nullArray = name == "xread"
	case rt.Class == router.ClassSpecial && blockingPops[name]:
		// Inside a transaction a blocking pop does not block, as in Redis.
		form, _, msg := nonBlocking(name, args)
		if msg != "" {
			sess.localError(r, msg)
			tx.aborted = true
			return true
		}
		q.raw, q.argc, q.nullArray, q.mode, q.block = buildCommand(form), len(form), true, replicate.ModeRewrite, name
	case rt.Class == router.ClassDenied:
		sess.localError(r, errDenied(name))
		tx.aborted = true
		return true
	default:
		sess.localError(r, "ERR syncproxy: '"+name+"' is not supported inside MULTI")
		tx.aborted = true
		return true
	}
	tx.cmds = append(tx.cmds, q)
	tx.bytes += int64(len(q.raw))
	tx.denyOOM = tx.denyOOM || rt.Info.Has(router.FlagDenyOOM)
	sess.local(r, []byte("+QUEUED\r\n"))
	return true
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
func (sess *Session) exec(i int, r *router.Request) {
	tx := sess.tx
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
	sess.posts[i] = postExec
	r.Kind = router.KindLocal
	ex := execEntry{tx: tx}
	var chain []*router.Request
	for _, q := range tx.cmds {
		tr := &router.Request{}
		ex.reqs = append(ex.reqs, tr)
		if q.local != nil {
			tr.Kind = router.KindLocal
			tr.Reply = q.local
			continue
		}
		tr.Kind, tr.DB, tr.Raw, tr.Argc = router.KindWrite, q.db, q.raw, q.argc
		tr.Mode, tr.NullArray = q.mode, q.nullArray
		chain = append(chain, tr)
	}
	if sess.watch != nil {
		sess.execWatched(&ex, chain)
		sess.execs = append(sess.execs, ex)
		return
	}
	sess.execs = append(sess.execs, ex)
	for _, tr := range chain {
		sess.waiter.Add(tr)
	}
	if len(chain) > 0 {
		sess.s.router.Master().SubmitTx(int(sess.id), chain)
	}
}

// execEntry is a transaction submitted by an EXEC of the current batch.
type execEntry struct {
	tx      *txState
	reqs    []*router.Request
	aborted bool   // a watched key changed: EXEC's reply is nil
	err     string // the master could not run it
}

// execReply is EXEC's reply: the array of the queued commands' replies, or the
// proxy's error when the master could not run the transaction.
func (sess *Session) execReply(dst []byte) []byte {
	ex := sess.execs[0]
	sess.execs = sess.execs[1:]
	tx := ex.tx
	if ex.aborted {
		return append(dst[:0], "*-1\r\n"...)
	}
	if ex.err != "" {
		return router.AppendError(dst[:0], ex.err)
	}
	for _, tr := range ex.reqs {
		if tr.Failed {
			return append(dst[:0], tr.Reply...)
		}
	}
	out := redcon.AppendArray(dst[:0], len(ex.reqs))
	for j, tr := range ex.reqs {
		reply := tr.Reply
		if b := tx.cmds[j].block; b != "" {
			reply = blockingReply(b, reply)
		}
		out = append(out, reply...)
		sess.noteWrite(tr)
	}
	return out
}
