package proxy

import (
	"bytes"
	"context"
	"time"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// FCALL_RO, EVAL_RO and EVALSHA_RO are served like reads: the function runs in
// FCALL's composed script (the library from the master's FUNCTION LIST, the
// proxy's guard around it), the script in EVAL's, called read-only (EVALSHA_RO)
// on the slave a GET would read from, with the same consistency rules; on the
// master when the read must go there. The slave needs no copy of the library: a
// library loaded on the master behind the proxy's back is served too. A slave
// that lost the composed script (restarted, SCRIPT FLUSH) or failed is replaced
// by the master for that call. The guard is what keeps a read-only script from
// reading the replication metadata, as it keeps EVAL.

// msgWriteFlagRO is Redis' refusal of FCALL_RO of a function without no-writes.
const msgWriteFlagRO = "ERR Can not execute a script with write flag using *_ro command."

// readOnlyScript returns the composed script an FCALL_RO, EVAL_RO or EVALSHA_RO
// runs, the function's name for FCALL_RO, or the error that refuses the call.
func (sess *Session) readOnlyScript(name string, args [][]byte) (us *userScript, fcall, msg string) {
	s := sess.s
	switch name {
	case "fcall_ro":
		fcall = string(args[1])
		us, msg = sess.functionScript(fcall)
	case "evalsha_ro":
		if us = s.scripts.get(string(args[1])); us == nil || !us.known.Load() {
			return nil, "", msgNoScript
		}
	default:
		us = s.scripts.add(s, args[1])
		us.known.Store(true)
	}
	if msg == "" {
		msg, _ = scriptArgsOf(name, args[2:])
	}
	if msg == "" && us.writes.Load() {
		msg = msgWriteFlagRO
	}
	return us, fcall, msg
}

// fcallRO dispatches FCALL_RO name numkeys keys... args..., and EVAL_RO and
// EVALSHA_RO (args[1] the body or its SHA1).
func (sess *Session) fcallRO(c *call) {
	args, r := c.cmd.Args, &c.req
	us, fcall, msg := sess.readOnlyScript(c.route.Info.Name, args)
	if msg == "" && !us.compiled.Load() {
		msg = sess.compileScript(us)
	}
	if msg != "" {
		sess.localError(r, msg)
		return
	}
	var sl *router.Slave
	if !sess.wrote && sess.watch == nil {
		var err error
		if sl, err = sess.pickRead(); err != nil {
			sess.localError(r, msgNoSlave)
			return
		}
	}
	c.eval = evalCheck{us: us, fcall: fcall, ro: true, slave: sl, resp3: sess.resp3.Load()}
	r.Kind = router.KindRaw
	if sl == nil {
		sess.fcallROMaster(c)
		return
	}
	r.Raw = readOnlyCall(sess.s, "EVALSHA_RO", us.composed.SHA, r.DB, args[2:], sess.scriptMode(replicate.ModeScript))
	sl.Reads.Add(1)
	sess.trackSlaveRead(sl)
	c.onSlave = true
	if _, ok := us.slaves.Load(sl); !ok {
		c.eval.load = &router.Request{Kind: router.KindRaw, Raw: scriptLoadCmd(us)}
		sess.waiter.Add(c.eval.load)
		sl.Backend.Submit(int(sess.id), c.eval.load)
		us.slaves.Store(sl, true)
	}
	sess.s.functions.slaveStarted(sl, fcall == "")
	sess.waiter.Add(r)
	sl.Backend.Submit(int(sess.id), r)
	sess.readOnSlave(sl)
}

// fcallROMaster runs an FCALL_RO on the master, on a script lane (it may run
// away): the composed script read-only, sent whole (EVAL_RO) unless it is loaded.
func (sess *Session) fcallROMaster(c *call) {
	s, r, us := sess.s, &c.req, c.eval.us
	c.eval.slave = nil
	c.onSlave = false
	args := c.cmd.Args[2:]
	c.eval.body = !us.loaded.Load()
	if c.eval.body {
		r.Raw = readOnlyCall(s, "EVAL_RO", us.composed.Body, r.DB, args, sess.scriptMode(replicate.ModeScript))
	} else {
		r.Raw = readOnlyCall(s, "EVALSHA_RO", us.composed.SHA, r.DB, args, sess.scriptMode(replicate.ModeScript))
	}
	s.router.MasterReads.Add(1)
	if c.eval.fcall != "" {
		s.functions.running.Add(1)
	}
	sess.enterLane()
	sess.waiter.Add(r)
	s.router.Master().SubmitOn(sess.lane, r)
	sess.readOnMaster()
}

// scriptLoadCmd is SCRIPT LOAD of us's composed script.
func scriptLoadCmd(us *userScript) []byte {
	return buildCommand([][]byte{[]byte("SCRIPT"), []byte("LOAD"), []byte(us.composed.Body)})
}

// readOnlyCall is the call of the composed script (EVALSHA_RO sha, or EVAL_RO
// body) that runs one client script in DB db, args being numkeys, keys and
// arguments: the master script's call format (replicate.WriteCallHeader) with a
// read-only command, so that the server refuses any write.
func readOnlyCall(s *Server, cmd, script string, db int, args [][]byte, mode replicate.Mode) []byte {
	var b bytes.Buffer
	replicate.WriteCallHeader(&b, "", s.script.Args, time.Now().UnixMilli(), db, 1, len(args))
	frame := buildCommand(args)
	replicate.WriteCallCommand(&b, db, len(args), mode, skipHeader(frame))
	call := b.Bytes()
	// The header is "*N\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n": the command and script replaced.
	const evalsha = "$7\r\nEVALSHA\r\n$0\r\n\r\n"
	i := bytes.Index(call, []byte(evalsha))
	out := make([]byte, 0, len(call)+len(script)+32)
	out = append(out, call[:i]...)
	out = appendBulk(out, []byte(cmd))
	out = appendBulk(out, []byte(script))
	return append(out, call[i+len(evalsha):]...)
}

// skipHeader returns a command frame without its "*N\r\n" line.
func skipHeader(frame []byte) []byte {
	return frame[bytes.IndexByte(frame, '\n')+1:]
}

// unwrapCall returns the client's reply from the composed script's reply
// ({seq, epoch, reply}); an error the server raised itself is returned as it is.
func unwrapCall(reply []byte) []byte {
	if len(reply) == 0 || reply[0] != '*' {
		return reply
	}
	parts := splitArray(reply)
	if len(parts) != 3 {
		return reply
	}
	return replicate.FixCallReply(append([]byte(nil), parts[2]...), false)
}

// slaveLostScript reports whether an FCALL_RO sent to a slave must run on the
// master instead: the slave failed (but not by a late reply: the function may
// run away, and must not run away on the master too), or lost the composed script.
func slaveLostScript(e *evalCheck, r *router.Request) bool {
	return (r.Failed && !bytes.Contains(r.Reply, []byte("did not answer in time"))) ||
		bytes.HasPrefix(r.Reply, []byte("-NOSCRIPT")) ||
		(e.load != nil && (e.load.Failed || len(e.load.Reply) == 0 || e.load.Reply[0] == '-'))
}

// msgFcallRONotRetried answers an FCALL_RO that could not run where it was sent
// (a slave failed, or lost the composed script; the master lost it) when a
// write of the batch sent after it keeps it from being retried: it would see
// that write.
const msgFcallRONotRetried = "-ERR syncproxy: this FCALL_RO could not run where it was sent (script cache flushed or connection lost), and a later write of the same pipeline keeps it from being retried; retry it\r\n"

// checkReadOnlyCalls sends to the master the batch's FCALL_ROs that a slave
// could not run, and those the master did not find loaded (with the script
// whole), and waits for them.
func (sess *Session) checkReadOnlyCalls(calls []*call) {
	again := false
	for _, c := range calls {
		e := &c.eval
		if e.us == nil || !e.ro {
			continue
		}
		if e.slave == nil {
			if e.body || !bytes.HasPrefix(c.req.Reply, []byte("-NOSCRIPT")) {
				continue
			}
			e.us.loaded.Store(false)
			if sess.wrote {
				c.req.Reply = append(c.req.Reply[:0], msgFcallRONotRetried...)
				continue // (checkEvals counts it as ended)
			}
			if e.fcall != "" {
				sess.s.functions.running.Add(-1)
			}
		} else {
			sess.s.functions.slaveEnded(e.slave, e.fcall == "")
			if !slaveLostScript(e, &c.req) {
				continue
			}
			e.us.slaves.Delete(e.slave)
			e.load = nil
			if sess.wrote {
				// A write of the batch, sent after this call, may have run on
				// the master: the call would see it there. As a failed read on
				// a slave (complete), it is not retried.
				c.req.Failed, c.req.Reply = true, append(c.req.Reply[:0], msgFcallRONotRetried...)
				continue
			}
		}
		c.req.Failed, c.req.Reply = false, c.req.Reply[:0]
		sess.fcallROMaster(c)
		again = true
	}
	if again {
		sess.sendProbes()
		sess.waiter.Wait()
	}
}

// slaveScript is a slave and a kind of read-only call: an EVAL_RO or EVALSHA_RO
// (eval), or an FCALL_RO.
type slaveScript struct {
	sl   *router.Slave
	eval bool
}

// slaveStarted and slaveEnded count the read-only calls running on a slave, for
// SCRIPT KILL (eval) and FUNCTION KILL.
func (f *functions) slaveStarted(sl *router.Slave, eval bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onSlaves == nil {
		f.onSlaves = map[slaveScript]int{}
	}
	f.onSlaves[slaveScript{sl, eval}]++
}

func (f *functions) slaveEnded(sl *router.Slave, eval bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := slaveScript{sl, eval}
	if f.onSlaves[k]--; f.onSlaves[k] <= 0 {
		delete(f.onSlaves, k)
	}
}

// busySlaves returns the slaves running a read-only call of the kind.
func (f *functions) busySlaves(eval bool) []*router.Slave {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*router.Slave, 0, len(f.onSlaves))
	for k := range f.onSlaves {
		if k.eval == eval {
			out = append(out, k.sl)
		}
	}
	return out
}

// killOnSlaves sends SCRIPT KILL, each on a connection of its own, to the slaves
// running an EVAL_RO or EVALSHA_RO (eval: SCRIPT KILL) or an FCALL_RO (FUNCTION
// KILL); it reports whether one was killed.
func (s *Server) killOnSlaves(eval bool) bool {
	killed := false
	for _, sl := range s.functions.busySlaves(eval) {
		addr := sl.Backend.Addr()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
		conn, br, err := dial.Dial(ctx, dial.Target{Role: sl.Backend.Name(), Addr: addr,
			Username: s.cfg.SlaveUser, Password: s.cfg.SlavePassword, TLS: backendTLSFor(s.backendTLS, addr),
			Timeout: s.cfg.DialTimeout(), OnBusy: func() {}})
		cancel()
		if err != nil {
			s.log.Warn().Err(err).Str("slave", addr).Msg("FUNCTION KILL: slave unreachable")
			continue
		}
		conn.SetDeadline(time.Now().Add(s.cfg.BackendTimeout))
		reply := []byte(nil)
		if _, err = conn.Write(buildCommand([][]byte{[]byte("SCRIPT"), []byte("KILL")})); err == nil {
			reply, err = router.ReadFrame(br, nil)
		}
		conn.Close()
		if err == nil && string(reply) == "+OK\r\n" {
			killed = true
		}
		s.log.Debug().Str("slave", addr).Bool("eval", eval).Err(err).Bytes("reply", reply).Msg("SCRIPT KILL sent to a slave")
	}
	return killed
}
