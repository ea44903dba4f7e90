package proxy

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Client scripts (EVAL, EVALSHA) run on the master inside a script the proxy
// composes around them (replicate.UserScript): the client's redis.call and
// redis.pcall are recorded, and the effects of its writes are published with a
// sequence number like any write — exactly what Redis' effect replication sends
// to its replicas. Read-only scripts (EVAL_RO, EVALSHA_RO) and SCRIPT
// subcommands go to the master as they are.

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
	known    atomic.Bool // the client's: EVAL or SCRIPT LOAD ran it since the last SCRIPT FLUSH
}

// scripts caches client scripts by their SHA1 (lower-case hex).
type scripts struct {
	mu    sync.Mutex
	m     map[string]*userScript
	guard replicate.Guard // what client scripts may not do, for the composed scripts
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
	nk, err := strconv.Atoi(string(args[1]))
	switch {
	case err != nil:
		sess.localError(r, msgNotInteger)
		return
	case nk < 0:
		sess.localError(r, msgNumKeysNeg)
		return
	case nk > len(args)-2:
		sess.localError(r, msgNumKeysLarge)
		return
	}
	for _, k := range args[2 : 2+nk] {
		if strings.HasPrefix(string(k), "syncproxy:") {
			sess.localError(r, msgReservedKey)
			return
		}
	}
	if len(args)+5 > replicate.MaxScriptArgs {
		sess.localError(r, msgTooManyArgs)
		return
	}
	master := s.router.Master()
	check := evalCheck{us: us}
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
		sess.waiter.Add(check.load)
		master.Submit(int(sess.id), check.load)
		us.loaded.Store(true)
	}
	r.Kind = router.KindWrite
	r.Raw = buildCommand(args[1:])
	r.Argc = len(args) - 1
	r.Mode = replicate.ModeScript
	r.Script = us.composed
	c.eval = check
	sess.wrote = true
	sess.toMaster(r)
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
	return ""
}

// evalCheck remembers what an EVAL of the batch needs checked, to notice a
// composed script that is not on the master after all (its load failed, or a
// SCRIPT FLUSH came between).
type evalCheck struct {
	us   *userScript     // nil: not an EVAL
	load *router.Request // the SCRIPT LOAD sent with it, if any
}

// checkEvals runs once the batch completed.
func (sess *Session) checkEvals(calls []*call) {
	for _, c := range calls {
		e, reply := &c.eval, c.req.Reply
		if e.us == nil {
			continue
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

// functions caches, per function name, the script that runs it.
type functions struct {
	mu sync.Mutex
	m  map[string]*userScript
}

func (f *functions) get(name string) *userScript {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[name]
}

func (f *functions) put(name string, us *userScript) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*userScript{}
	}
	f.m[name] = us
}

// reset forgets every function (FUNCTION LOAD, DELETE, FLUSH, RESTORE went through).
func (f *functions) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = nil
}

// fcall dispatches FCALL name numkeys keys... args...
func (sess *Session) fcall(c *call) {
	s, args := sess.s, c.cmd.Args
	name := string(args[1])
	us := s.functions.get(name)
	if us == nil {
		code, msg := sess.libraryOf(name)
		if msg != "" {
			sess.localError(&c.req, msg)
			return
		}
		body := "local __fns = {}\nlocal __lib = function(redis)\n" + code +
			"\nend\nlocal __fake = setmetatable({register_function = function(a, b)\n" +
			"  if type(a) == 'table' then __fns[a.function_name] = a.callback else __fns[a] = b end\n" +
			"end}, {__index = redis})\n__lib(__fake)\nreturn __fns[" + replicate.LuaQuote(name) + "](KEYS, ARGV)"
		us = s.scripts.add(s, []byte(body))
		s.functions.put(name, us)
	}
	// As EVAL: args[2:] are numkeys, keys and arguments.
	sess.runScript(c, us, args[1:])
}

// libraryOf returns the code (without its #! line) of the library that holds the
// function, from the master.
func (sess *Session) libraryOf(name string) (string, string) {
	q := &router.Request{Kind: router.KindRaw, Raw: buildCommand([][]byte{
		[]byte("FUNCTION"), []byte("LIST"), []byte("WITHCODE")})}
	sess.waiter.Add(q)
	sess.s.router.Master().Submit(int(sess.id), q)
	sess.waiter.Wait()
	if len(q.Reply) == 0 || q.Reply[0] == '-' {
		return "", string(bytesTrimErr(q.Reply))
	}
	for _, lib := range splitArray(q.Reply) {
		fields := splitArray(lib)
		var code string
		found := false
		for k := 0; k+1 < len(fields); k += 2 {
			switch bulkText(fields[k]) {
			case "functions":
				for _, fn := range splitArray(fields[k+1]) {
					ff := splitArray(fn)
					for m := 0; m+1 < len(ff); m += 2 {
						if bulkText(ff[m]) == "name" && bulkText(ff[m+1]) == name {
							found = true
						}
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
			return code, ""
		}
	}
	return "", msgFunctionNotFound
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
		write := ci.Has(router.FlagWrite)
		for _, sub := range ci.Subcommands {
			write = write || sub.Has(router.FlagWrite)
		}
		guardLine(&spec, rt, ci, [][]byte{[]byte(name)}, write, len(ci.Subcommands) > 0)
		// In a fixed order: proxies in front of the same master compose the
		// same scripts.
		for _, subName := range slices.Sorted(maps.Keys(ci.Subcommands)) {
			sub := ci.Subcommands[subName]
			guardLine(&spec, rt, sub, [][]byte{[]byte(name), []byte(subName)}, sub.Has(router.FlagWrite), false)
		}
	}
	spec.WriteByte('\n')
	pre, post, _ := strings.Cut(errDenied("\x00"), "\x00")
	return replicate.Guard{Spec: spec.String(), ReservedKey: msgReservedKey, SyncChannel: msgSyncChannel,
		SwapDB0: msgSwapDB0, DeniedPrefix: pre, DeniedSuffix: post}
}

// guardLine appends ci's line to a replicate.Guard's Spec; args name it.
func guardLine(b *strings.Builder, rt *router.Router, ci *router.CommandInfo, args [][]byte, write, container bool) {
	flags := ""
	if write {
		flags += "w"
	}
	if container {
		flags += "c"
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
	fmt.Fprintf(b, "\n%s %s %d %d %d", ci.Name, flags, ci.FirstKey, ci.LastKey, ci.Step)
}
