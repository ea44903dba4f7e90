package proxy

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Client scripts (EVAL, EVALSHA) run on the master inside a script the proxy
// composes around them (replicate.UserScript): the client's redis.call and
// redis.pcall are recorded, and the effects of its writes are published with a
// sequence number like any write — exactly what Redis' effect replication sends
// to its replicas. Read-only scripts (EVAL_RO, EVALSHA_RO) run in the same
// composed script, read-only, as reads (fcallro.go); SCRIPT subcommands go to
// the master as they are.

// Redis' script errors.
const (
	msgNoScript     = "NOSCRIPT No matching script. Please use EVAL."
	msgNumKeysNeg   = "ERR Number of keys can't be negative"
	msgNumKeysLarge = "ERR Number of keys can't be greater than number of args"
)

// userScript is a client script and the composed script that runs it.
type userScript struct {
	body     string
	composed *router.WriteScript
	loaded   atomic.Bool // SCRIPT LOADed on the master
	compiled atomic.Bool // the client's body compiled alone on the master
	known    atomic.Bool // the client's: EVAL or SCRIPT LOAD ran it since the last SCRIPT FLUSH
	writes   atomic.Bool // a function's, without the no-writes flag: FCALL_RO refuses it
	slaves   sync.Map    // *router.Slave → true: SCRIPT LOADed there (FCALL_RO)
}

// scripts caches client scripts by their SHA1 (lower-case hex).
type scripts struct {
	mu    sync.Mutex
	m     map[string]*userScript
	guard replicate.Guard // what client scripts may not do, for the composed scripts
	tx    *userScript     // runs transactions holding scripts (replicate.TxScript)
}

// txScript returns the script that runs a transaction holding client scripts.
func (sc *scripts) txScript(s *Server) *userScript {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.tx == nil {
		composed := replicate.TxScript(sc.guard)
		sc.tx = &userScript{composed: &router.WriteScript{SHA: composed.SHA, Body: composed.Body, Args: s.script.Args}}
	}
	return sc.tx
}

func (sc *scripts) get(sha string) *userScript {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.m[strings.ToLower(sha)]
}

// add returns the cached script for body, composing it the first time.
func (sc *scripts) add(s *Server, body []byte) *userScript {
	sum := sha1.Sum(body)
	sha := hex.EncodeToString(sum[:])
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if us := sc.m[sha]; us != nil {
		return us
	}
	if sc.m == nil {
		sc.m = map[string]*userScript{}
	}
	composed := replicate.UserScript(string(body), sc.guard)
	us := &userScript{body: string(body), composed: &router.WriteScript{
		SHA: composed.SHA, Body: composed.Body, Args: s.script.Args}}
	sc.m[sha] = us
	return us
}

// forget makes EVALSHA of every client script answer NOSCRIPT (SCRIPT FLUSH),
// as the proxy's own scripts (FCALL's) do always.
func (sc *scripts) forget() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, us := range sc.m {
		us.known.Store(false)
	}
}

// unload forgets that the composed scripts are on the master (SCRIPT FLUSH).
func (sc *scripts) unload() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for _, us := range sc.m {
		us.loaded.Store(false)
	}
	if sc.tx != nil {
		sc.tx.loaded.Store(false)
	}
}

// eval dispatches EVAL and EVALSHA (args[1] is the body or its SHA).
func (sess *Session) eval(c *call) {
	s, args := sess.s, c.cmd.Args
	var us *userScript
	if c.route.Info.Name == "evalsha" {
		if us = s.scripts.get(string(args[1])); us == nil || !us.known.Load() {
			sess.localError(&c.req, msgNoScript)
			return
		}
	} else {
		us = s.scripts.add(s, args[1])
		us.known.Store(true)
	}
	sess.runScript(c, us, args[1:])
}

// runScript runs a composed script; args[1] is numkeys, then keys and arguments.
func (sess *Session) runScript(c *call, us *userScript, args [][]byte) {
	s, r := sess.s, &c.req
	if msg, _ := scriptArgsOf(c.route.Info.Name, args[1:]); msg != "" {
		sess.localError(r, msg)
		return
	}
	master := s.router.Master()
	check := evalCheck{us: us}
	if c.route.Info.Name == "fcall" {
		check.fcall = string(c.cmd.Args[1])
	}
	if !us.loaded.Load() {
		// The client's script must compile alone (the master compiles it and
		// words its errors) before the composed script, where it is a
		// function's body, runs: a body that does not compile alone could end
		// that function and run code of its own outside it.
		if msg := sess.compileScript(us); msg != "" {
			sess.localError(r, msg)
			return
		}
		check.load = &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{
			[]byte("SCRIPT"), []byte("LOAD"), []byte(us.composed.Body)})}
		sess.enterLane()
		sess.waiter.Add(check.load)
		master.SubmitOn(sess.lane, check.load)
		us.loaded.Store(true)
	}
	r.Kind = router.KindWrite
	r.Raw = buildCommand(args[1:])
	r.Argc = len(args) - 1
	r.Mode = sess.scriptMode(replicate.ModeScript)
	r.Script = us.composed
	check.resp3 = sess.resp3.Load()
	c.eval = check
	if check.fcall != "" {
		s.functions.running.Add(1)
	}
	sess.wrote = true
	sess.enterLane()
	sess.waiter.Add(r)
	master.SubmitOn(sess.lane, r)
}

// A client's script runs on a master connection for scripts (a lane), not on
// the session's: a runaway script then holds no other client behind it, and
// they get the master's BUSY reply as direct clients would. The session's
// commands keep their order: a script waits for what the batch sent before it,
// and what follows a run of scripts waits for them (leaveLane).

// enterLane waits for what the batch sent before and picks the lane of the
// batch's run of scripts.
func (sess *Session) enterLane() {
	if sess.onLane {
		return
	}
	sess.waiter.Wait()
	sess.lane = sess.s.router.Master().ScriptLane(int(sess.id))
	sess.onLane = true
}

// leaveLane waits for the batch's scripts before a command that is not one runs.
func (sess *Session) leaveLane(c *call) {
	if !sess.onLane || (sess.tx == nil && isScriptCall(c)) {
		return
	}
	sess.waiter.Wait()
	sess.onLane = false
}

// isScriptCall reports whether c runs a client's script on a lane.
func isScriptCall(c *call) bool { return isScript(c.route.Info) }

// isScript reports whether ci runs a client's script (EVAL, EVALSHA, FCALL and
// their _RO forms).
func isScript(ci *router.CommandInfo) bool {
	if ci == nil {
		return false
	}
	switch ci.Policy.Handler {
	case router.HandlerEval, router.HandlerFcall, router.HandlerFcallRO:
		return true
	}
	return false
}

// killScript sends SCRIPT KILL or FUNCTION KILL to the master on a connection
// of its own: the master's other connections may wait behind the script to
// kill. It does not wait for the batch either (what it sent may wait behind it).
func (sess *Session) killScript(c *call) {
	s, r := sess.s, &c.req
	conn, br, err := s.dialMaster()
	if err != nil {
		sess.localError(r, s.masterDown(nil, err))
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(s.cfg.BackendTimeout))
	raw, onSlave := c.cmd.Raw, false
	if name := c.route.Info.Name; name == "function|kill" || name == "script|kill" {
		onSlave = s.killOnSlaves(name == "script|kill")
		if name == "function|kill" && s.functions.running.Load() > 0 {
			raw = buildCommand([][]byte{[]byte("SCRIPT"), []byte("KILL")})
		}
	}
	if _, err = conn.Write(raw); err == nil {
		var reply []byte
		if reply, err = router.ReadFrame(br, nil); err == nil {
			if onSlave && strings.HasPrefix(string(reply), "-NOTBUSY") {
				reply = []byte("+OK\r\n") // the script ran on a slave
			}
			sess.local(r, reply)
			return
		}
	}
	sess.localError(r, s.masterDown(conn, err))
}

// Redis' reply to the client of a script that SCRIPT KILL ended, up to the
// script's SHA1.
const killedPrefix = "-ERR Script killed by user with SCRIPT KILL... script: "

// killedReply words the reply of a killed client script as Redis does: the
// master named the composed script, which the client never sent; a function
// (fcall, its name) is named as Redis names one. A line outside the client's
// code (the kill was noticed in the composed script's own code) is reported as
// the script's first.
func killedReply(reply []byte, us *userScript, fcall string) []byte {
	rest, ok := strings.CutPrefix(string(reply), killedPrefix+us.composed.SHA+", on @user_script:")
	if !ok {
		return reply
	}
	line, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(line)
	lines := strings.Count(us.body, "\n") + 1
	if fcall != "" {
		// The library's code starts on the body's third line, and on the
		// library's second (its #! line is cut).
		if err != nil || n < 3 || n > lines {
			n = 3
		}
		return []byte(killedPrefix + fcall + ", on @user_function:" + strconv.Itoa(n-1) + ".\r\n")
	}
	if err != nil || n < 1 || n > lines {
		n = 1
	}
	return []byte(killedPrefix + sha1Hex(us.body) + ", on @user_script:" + strconv.Itoa(n) + ".\r\n")
}

// functionErrReply words the error of a function (fcall, its name) as Redis
// does: "script: <the function>, on @user_function:<line of the library>.", where
// the master named the composed script and its line.
func functionErrReply(reply []byte, us *userScript, fcall string) []byte {
	if fcall == "" || len(reply) == 0 || reply[0] != '-' {
		return reply
	}
	text := strings.TrimSuffix(string(reply), "\r\n")
	for _, sha := range []string{sha1Hex(us.body), us.composed.SHA} {
		head, line, ok := strings.Cut(text, " script: "+sha+", on @user_script:")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(line, "."))
		if err != nil || n < 3 || n > strings.Count(us.body, "\n")+1 {
			n = 3
		}
		return []byte(head + " script: " + fcall + ", on @user_function:" + strconv.Itoa(n-1) + ".\r\n")
	}
	return reply
}

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// scriptArgs checks a script's numkeys, keys and arguments (rest[0] is
// numkeys): it returns Redis' error, or (refused) the proxy's refusal.
func scriptArgs(rest [][]byte) (msg string, refused bool) {
	nk, err := strconv.Atoi(string(rest[0]))
	switch {
	case err != nil:
		return msgNotInteger, false
	case nk < 0:
		return msgNumKeysNeg, false
	case nk > len(rest)-1:
		return msgNumKeysLarge, false
	}
	for _, k := range rest[1 : 1+nk] {
		if strings.HasPrefix(string(k), replicate.KeyPrefix) {
			return msgReservedKey, true
		}
	}
	if len(rest)+6 > replicate.MaxScriptArgs {
		return msgTooManyArgs, true
	}
	return "", false
}

// msgBadNumKeys is Redis' error for FCALL's numkeys that is no integer.
const msgBadNumKeys = "ERR Bad number of keys provided"

// scriptArgsOf is scriptArgs for the command name, with FCALL's and FCALL_RO's
// wording of a numkeys that is no integer.
func scriptArgsOf(name string, rest [][]byte) (msg string, refused bool) {
	msg, refused = scriptArgs(rest)
	if msg == msgNotInteger && (name == "fcall" || name == "fcall_ro") {
		msg = msgBadNumKeys
	}
	return msg, refused
}

// compileScript has the master compile the client's script alone (SCRIPT LOAD)
// and waits for it; it returns the error to reply, or "".
func (sess *Session) compileScript(us *userScript) string {
	q := &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{
		[]byte("SCRIPT"), []byte("LOAD"), []byte(us.body)})}
	sess.waiter.Add(q)
	sess.s.router.Master().Submit(int(sess.id), q)
	sess.waiter.Wait()
	if len(q.Reply) == 0 || q.Reply[0] == '-' {
		return string(bytesTrimErr(q.Reply))
	}
	us.compiled.Store(true)
	return ""
}

// evalCheck remembers what an EVAL of the batch needs checked, to notice a
// composed script that is not on the master after all (its load failed, or a
// SCRIPT FLUSH came between).
type evalCheck struct {
	us    *userScript     // nil: not an EVAL
	load  *router.Request // the SCRIPT LOAD sent with it, if any
	fcall string          // the function an FCALL calls (counted in functions.running on the master)
	ro    bool            // an FCALL_RO: the reply is the composed script's call reply
	slave *router.Slave   // an FCALL_RO's slave; nil: the master
	body  bool            // an FCALL_RO sent the composed script whole (EVAL_RO)
	resp3 bool            // a RESP3 client's: the reply is RESP3 in a bulk string (replicate.RESP3Mode)
}

// scriptMode is the mode that runs a client's script (m) for the session: a
// RESP3 client gets the script's reply as Redis gives it to a RESP3 client.
func (sess *Session) scriptMode(m replicate.Mode) replicate.Mode {
	if sess.resp3.Load() {
		return replicate.RESP3Mode(m)
	}
	return m
}

// unwrapRESP3 returns the RESP3 reply a script call in a RESP3 mode returned in
// a bulk string (an error, or anything else, as it is).
func unwrapRESP3(reply []byte) []byte {
	if len(reply) < 4 || reply[0] != '$' {
		return reply
	}
	i := bytes.IndexByte(reply, '\n')
	if i < 0 || i+1 > len(reply)-2 {
		return reply
	}
	return reply[i+1 : len(reply)-2]
}

// checkEvals runs once the batch completed.
func (sess *Session) checkEvals(calls []*call) {
	sess.checkReadOnlyCalls(calls)
	for _, c := range calls {
		e, reply := &c.eval, c.req.Reply
		if e.us == nil {
			continue
		}
		if e.fcall != "" && e.slave == nil {
			sess.s.functions.running.Add(-1)
		}
		if e.ro {
			if e.body && len(reply) > 0 && reply[0] == '*' {
				e.us.loaded.Store(true) // EVAL_RO ran it: the master has it
			}
			reply = unwrapCall(reply)
		}
		c.req.Reply = functionErrReply(killedReply(reply, e.us, e.fcall), e.us, e.fcall)
		if e.resp3 {
			c.req.Reply = unwrapRESP3(c.req.Reply)
		}
		if (e.load != nil && (e.load.Failed || len(e.load.Reply) == 0 || e.load.Reply[0] == '-')) ||
			strings.HasPrefix(string(reply), "-NOSCRIPT") ||
			strings.HasPrefix(string(reply), "-ERR syncproxy: the replication script was flushed") {
			e.us.loaded.Store(false)
		}
	}
}

// scriptFlushed is called after SCRIPT FLUSH went through: every script must be
// loaded again, the replication script first.
func (s *Server) scriptFlushed() {
	s.router.Master().ReloadScript()
	s.scripts.unload()
	s.scripts.forget()
}

// Functions (FCALL) are served like scripts: the proxy reads the function's
// library from the master (FUNCTION LIST WITHCODE), composes a script that loads
// the library with a register_function of its own and calls the function, and
// runs it as an EVAL, so that its writes are replicated as effects.

// msgFunctionNotFound is Redis' reply to FCALL of an unknown function.
const msgFunctionNotFound = "ERR Function not found"

// functionRecheck is how long a function's composed script is used before the
// proxy reads its library from the master again: libraries loaded, replaced or
// deleted on the master directly are seen within it.
const functionRecheck = time.Second

// functions caches, per function name, the script that runs it.
type functions struct {
	mu sync.Mutex
	m  map[string]cachedFunction
	// running counts FCALLs sent and not completed: the master runs them as
	// scripts, so FUNCTION KILL is sent as SCRIPT KILL meanwhile.
	running atomic.Int64
	// onSlaves counts the read-only calls running on each slave, which SCRIPT
	// KILL (EVAL_RO, EVALSHA_RO) and FUNCTION KILL (FCALL_RO) reach too.
	onSlaves map[slaveScript]int
}

// cachedFunction is a function's composed script and when it was composed.
type cachedFunction struct {
	us *userScript
	at time.Time
}

// get returns the function's script, nil when unknown or older than functionRecheck.
func (f *functions) get(name string) *userScript {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.m[name]; ok && time.Since(e.at) < functionRecheck {
		return e.us
	}
	return nil
}

func (f *functions) put(name string, us *userScript) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]cachedFunction{}
	}
	f.m[name] = cachedFunction{us: us, at: time.Now()}
}

// reset forgets every function (FUNCTION LOAD, DELETE, FLUSH, RESTORE went through).
func (f *functions) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = nil
}

// fcall dispatches FCALL name numkeys keys... args...
func (sess *Session) fcall(c *call) {
	args := c.cmd.Args
	us, msg := sess.functionScript(string(args[1]))
	if msg != "" {
		sess.localError(&c.req, msg)
		return
	}
	// As EVAL: args[2:] are numkeys, keys and arguments.
	sess.runScript(c, us, args[1:])
}

// functionScript returns the script that runs the function name, or the error.
func (sess *Session) functionScript(name string) (*userScript, string) {
	s := sess.s
	if us := s.functions.get(name); us != nil {
		return us, ""
	}
	code, noWrites, msg := sess.libraryOf(name)
	if msg != "" {
		return nil, msg
	}
	us := s.scripts.add(s, []byte(composeFunction(name, code, noWrites, s.writeNames())))
	us.writes.Store(!noWrites)
	s.functions.put(name, us)
	return us, ""
}

// msgReadOnlyScript is Redis' error for a write command in a no-writes function.
const msgReadOnlyScript = "ERR Write commands are not allowed from read-only scripts."

// composeFunction returns the body of the script that runs the function name of
// the library code (its #! line cut): the library registers its functions in a
// table of ours, and the function is called. A no-writes function gets a redis
// table that refuses the commands named in writes (Lua table fields), as Redis
// refuses them in a read-only script.
func composeFunction(name, code string, noWrites bool, writes string) string {
	var b strings.Builder
	b.WriteString("local __fns = {}\nlocal __lib = function(redis)\n")
	b.WriteString(code)
	b.WriteString("\nend\nlocal __api = {register_function = function(a, b)\n" +
		"  if type(a) == 'table' then __fns[a.function_name] = a.callback else __fns[a] = b end\nend}\n")
	if noWrites {
		b.WriteString("local __w = {" + writes + "}\nlocal __r = redis\n" +
			"local function __isw(n, sub)\n" +
			"  if type(n) ~= 'string' then return false end\n  n = string.lower(n)\n" +
			"  if __w[n] then return true end\n" +
			"  return type(sub) == 'string' and __w[n .. '|' .. string.lower(sub)] == true\nend\n" +
			"__api.call = function(...)\n" +
			"  if __isw(...) then error('\\1" + msgReadOnlyScript + "', 2) end\n  return __r.call(...)\nend\n" +
			"__api.pcall = function(...)\n" +
			"  if __isw(...) then return {err = '" + msgReadOnlyScript + "'} end\n  return __r.pcall(...)\nend\n")
	}
	// The metatable hidden: getmetatable would hand out the unchecked redis table.
	b.WriteString("__lib(setmetatable(__api, {__index = redis, __metatable = false}))\nreturn __fns[" +
		replicate.LuaQuote(name) + "](KEYS, ARGV)")
	return b.String()
}

// writeNames returns the commands of the command table a read-only script may
// not run (writes, PFCOUNT, may-replicate ones) as the fields of a Lua table
// ("['set']=true,..."), subcommands as "container|sub".
func (s *Server) writeNames() string {
	s.writesOnce.Do(func() {
		var b strings.Builder
		t := s.router.Table()
		for _, name := range t.Names() {
			ci := t.Lookup([][]byte{[]byte(name)})
			if guardWrite(s.router, ci, [][]byte{[]byte(name)}) || mayReplicate(ci) {
				b.WriteString("[" + replicate.LuaQuote(name) + "]=true,")
			}
			for _, sub := range slices.Sorted(maps.Keys(ci.Subcommands)) {
				if ci.Subcommands[sub].Has(router.FlagWrite) {
					b.WriteString("[" + replicate.LuaQuote(name+"|"+sub) + "]=true,")
				}
			}
		}
		s.writes = b.String()
	})
	return s.writes
}

// libraryOf returns the code (without its #! line) of the library that holds the
// function, from the master, and whether the function has the no-writes flag.
func (sess *Session) libraryOf(name string) (code string, noWrites bool, msg string) {
	q := &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{
		[]byte("FUNCTION"), []byte("LIST"), []byte("WITHCODE")})}
	sess.waiter.Add(q)
	sess.s.router.Master().Submit(int(sess.id), q)
	sess.waiter.Wait()
	if len(q.Reply) == 0 || q.Reply[0] == '-' {
		return "", false, string(bytesTrimErr(q.Reply))
	}
	for _, lib := range splitArray(q.Reply) {
		fields := splitArray(lib)
		found := false
		for k := 0; k+1 < len(fields); k += 2 {
			switch bulkText(fields[k]) {
			case "functions":
				for _, fn := range splitArray(fields[k+1]) {
					if ok, nw := functionEntry(fn, name); ok {
						found, noWrites = true, nw
					}
				}
			case "library_code":
				code = bulkText(fields[k+1])
			}
		}
		if found {
			if strings.HasPrefix(code, "#!") {
				if j := strings.IndexByte(code, '\n'); j >= 0 {
					code = code[j+1:]
				} else {
					code = ""
				}
			}
			return code, noWrites, ""
		}
	}
	return "", false, msgFunctionNotFound
}

// functionEntry reads one function of FUNCTION LIST's reply: whether it is the
// function name, and whether it has the no-writes flag.
func functionEntry(fn []byte, name string) (match, noWrites bool) {
	ff := splitArray(fn)
	for m := 0; m+1 < len(ff); m += 2 {
		switch bulkText(ff[m]) {
		case "name":
			match = bulkText(ff[m+1]) == name
		case "flags":
			for _, f := range splitArray(ff[m+1]) {
				_, r := redcon.ReadNextRESP(f)
				noWrites = noWrites || string(r.Data) == "no-writes"
			}
		}
	}
	return match, noWrites
}

func bytesTrimErr(reply []byte) []byte {
	if len(reply) > 3 {
		return reply[1 : len(reply)-2]
	}
	return []byte("ERR syncproxy: no reply from the master")
}

// scriptGuard tells the scripts the proxy composes what client scripts may not
// do: what the proxy refuses outside scripts (reserved keys at the command
// table's key positions, denied commands, PUBLISH to the sync channel, SWAPDB of
// DB 0), with the same replies. See replicate.Guard.
func scriptGuard(rt *router.Router) replicate.Guard {
	var spec strings.Builder
	t := rt.Table()
	for _, name := range t.Names() {
		ci := t.Lookup([][]byte{[]byte(name)})
		args := [][]byte{[]byte(name)}
		write := guardWrite(rt, ci, args)
		for _, sub := range ci.Subcommands {
			write = write || sub.Has(router.FlagWrite)
		}
		guardLine(&spec, rt, ci, args, write, len(ci.Subcommands) > 0)
		// In a fixed order: proxies in front of the same master compose the
		// same scripts.
		for _, subName := range slices.Sorted(maps.Keys(ci.Subcommands)) {
			sub, args := ci.Subcommands[subName], [][]byte{[]byte(name), []byte(subName)}
			guardLine(&spec, rt, sub, args, guardWrite(rt, sub, args), false)
		}
	}
	spec.WriteByte('\n')
	pre, post, _ := strings.Cut(errDenied("\x00"), "\x00")
	return replicate.Guard{Spec: spec.String(), ReservedKey: msgReservedKey, SyncChannel: msgSyncChannel,
		SwapDB0: msgSwapDB0, DeniedPrefix: pre, DeniedSuffix: post}
}

// guardWrite reports whether a client script's call of ci (named by args) is
// a write whose effect the slaves apply: a write, or a command the proxy runs
// as one (PFCOUNT updates the cardinality cached in the HyperLogLog).
func guardWrite(rt *router.Router, ci *router.CommandInfo, args [][]byte) bool {
	return ci.Has(router.FlagWrite) || rt.Route(args).Class == router.ClassWrite
}

// mayReplicate reports whether ci is one of Redis' may-replicate commands,
// which a read-only script may not run either (Redis 7.0's COMMAND does not
// show the flag).
func mayReplicate(ci *router.CommandInfo) bool {
	return ci.Has(router.FlagMayReplicate) || ci.Name == "publish" || ci.Name == "spublish"
}

// guardLine appends ci's line to a replicate.Guard's Spec; args name it.
func guardLine(b *strings.Builder, rt *router.Router, ci *router.CommandInfo, args [][]byte, write, container bool) {
	flags := ""
	if write {
		flags += "w"
	}
	if !write && mayReplicate(ci) {
		flags += "r"
	}
	if container {
		flags += "c"
	}
	if ci.Has(router.FlagNoScript) {
		flags += "n"
	}
	switch {
	case ci.Name == "sort" || ci.Name == "sort_ro":
		flags += "s"
	case !ci.KeysAtPositions():
		flags += "m"
	}
	if rt.Route(args).Class == router.ClassDenied {
		flags += "d"
	}
	if flags == "" {
		flags = "-"
	}
	fmt.Fprintf(b, "\n%s %s %d %d %d %d", ci.Name, flags, ci.FirstKey, ci.LastKey, ci.Step, ci.Arity)
}
