package router

import "github.com/syncproxy/syncproxy/replicate"

// How the proxy treats each command is one Policy row, attached to the command's
// CommandInfo when the table is built (NewTable): its class, how its write's
// effect is taken, how its replies are finished, and which of the session's
// handlers serves it. A command without a row of its own follows its COMMAND
// flags (classify); adding a command the proxy treats specially is adding a row.

// Policy is how the proxy treats one command or subcommand.
type Policy struct {
	Class Class
	// Rewrite: when the write's effect must be derived from what it did.
	Rewrite Rewrite
	// NullArray: when the write's nil reply is a null array (see Request.NullArray).
	NullArray NullArray
	// Native: when the write, its own effect, cannot fail once queued, and so
	// runs natively on the master, numbered by a short script (replicate.ModeNative).
	Native Native
	// BlockOption: the command blocks only with a BLOCK option (XREAD,
	// XREADGROUP); without it its class is Unblocked.
	BlockOption bool
	Unblocked   Class
	// Blocking: a blocking pop that the session serves itself, alone.
	Blocking bool
	// Subscribe enters subscribed mode.
	Subscribe bool
	// Publishes names a channel (args[1]) it publishes on: never the sync channel.
	Publishes bool
	// ReadOnlyDenied: a read-only user may not run it although it neither writes
	// nor is admin (scripts may write; PUBLISH reaches other clients).
	ReadOnlyDenied bool
	// Post rewrites the reply before it reaches the client.
	Post Post
	// Handler is the session's handler for it (HandlerNone: the class decides).
	Handler Handler
	// MetaFree, in DB 0, replaces the command by this read-only script, run on the
	// master, that answers as if the replication metadata keys were not there.
	MetaFree []byte
}

// Rewrite says when a write's effect is derived from what it did on the master.
type Rewrite uint8

const (
	// RewriteNever: the command is its own effect.
	RewriteNever Rewrite = iota
	// RewriteAlways: its outcome depends on randomness or the clock, or its
	// integer reply may not survive Lua's numbers.
	RewriteAlways
	// RewriteWithOptions: when options follow the required arguments (SET ... EX,
	// GETEX ... PX need absolute times).
	RewriteWithOptions
)

// Native says when a write runs natively on the master, in a transaction with
// the numbering of its effect: when its own effect (no Rewrite applies) and
// nothing but a queue-time refusal (arity, OOM, READONLY), which aborts the whole
// transaction, can make it fail. A failure once running could not be told from
// the others' outcome inside the transaction, and the write would be numbered.
type Native uint8

const (
	// NativeNever: the write runs in the master script.
	NativeNever Native = iota
	// NativeAlways: whenever it is its own effect (SET without options, SETNX).
	NativeAlways
	// NativePairs: when key-value pairs follow the name (MSET: an odd pair count
	// fails when it runs).
	NativePairs
)

// NullArray says when a write's nil reply is a null array.
type NullArray uint8

const (
	// NullArrayNever: a nil reply is a null bulk string.
	NullArrayNever NullArray = iota
	// NullArrayAlways: a nil reply is a null array.
	NullArrayAlways
	// NullArrayWithCount: with a count argument (LPOP key count).
	NullArrayWithCount
)

// Post is a finishing step applied to a reply before it reaches the client.
type Post uint8

const (
	// PostNone passes the reply unchanged.
	PostNone Post = iota
	// PostHideMetaDB0: in DB 0, leave the replication metadata keys out (SCAN, KEYS).
	PostHideMetaDB0
	// PostHideSecrets: the master's passwords are not the client's to read (CONFIG GET).
	PostHideSecrets
	// PostInfo: prepend the proxy's INFO sections.
	PostInfo
	// PostCommandDocs: a master that does not implement COMMAND DOCS (it
	// answers something else, as miniredis does) gets Redis 6's error instead,
	// on which redis-cli falls back to its own help.
	PostCommandDocs
)

// Handler names the session handler that serves a command (package proxy maps
// each to a function).
type Handler uint8

// The session's handlers.
const (
	HandlerNone Handler = iota
	HandlerPing
	HandlerEcho
	HandlerQuit
	HandlerSelect
	HandlerReset
	HandlerAuth
	HandlerHello
	HandlerInfo
	HandlerClientSetName
	HandlerClientGetName
	HandlerClientID
	HandlerClientInfo
	HandlerClientList
	HandlerClientSetInfo
	HandlerClientReply
	HandlerClient        // CLIENT SYNCTOKEN, SYNCAFTER, CONSISTENCY; other subcommands route
	HandlerACL           // ACL and its subcommands, from the proxy's users
	HandlerWait          // WAIT, from the slaves' positions
	HandlerUnsubscribe   // not subscribed: the master answers
	HandlerMulti         // MULTI, EXEC, DISCARD, WATCH, UNWATCH
	HandlerExec          //
	HandlerDiscard       //
	HandlerWatch         //
	HandlerUnwatch       //
	HandlerEval          // EVAL, EVALSHA: the client's script in a composed one
	HandlerFcall         // FCALL: the function's library in a composed script
	HandlerFcallRO       // FCALL_RO, EVAL_RO, EVALSHA_RO: the composed script, read-only, as a read (a slave)
	HandlerScript        // SCRIPT ...: to the master, in write order
	HandlerFunctionWrite // FUNCTION LOAD, DELETE, FLUSH, RESTORE
	HandlerSwapDB        // SWAPDB, not of DB 0
	HandlerConfigSet     // CONFIG SET, to every backend when allowed
	HandlerClientAdmin   // CLIENT KILL, PAUSE, UNPAUSE, UNBLOCK, NO-EVICT: on the proxy's clients
	HandlerResetStat     // CONFIG RESETSTAT: the proxy's and every backend's
	HandlerMonitor       // MONITOR, when it cannot start (it is served before dispatch)
	HandlerSlowlog       // SLOWLOG GET, LEN, RESET: merged from the master and the slaves
	numHandlers
)

// NumHandlers is the number of handlers, for tables indexed by Handler.
const NumHandlers = int(numHandlers)

// row is a Policy as written in rows: pinned says that its class is not derived
// from the flags; subs that the container's handler serves its subcommands too.
type row struct {
	Policy
	pinned bool
	subs   bool
}

func local(h Handler) row { return row{Policy: Policy{Class: ClassLocal, Handler: h}, pinned: true} }
func special(h Handler) row {
	return row{Policy: Policy{Class: ClassSpecial, Handler: h}, pinned: true}
}
func pinned(c Class) row         { return row{Policy: Policy{Class: c}, pinned: true} }
func byFlags(p Policy) row       { return row{Policy: p} }
func specialPolicy(p Policy) row { p.Class = ClassSpecial; return row{Policy: p, pinned: true} }
func deniedWith(h Handler) row {
	return row{Policy: Policy{Class: ClassDenied, Handler: h}, pinned: true}
}
func rewrite(r Rewrite) row          { return row{Policy: Policy{Rewrite: r}} }
func nullArray(n NullArray) row      { return row{Policy: Policy{NullArray: n}} }
func native(r row, n Native) row     { r.Native = n; return r }
func blockingPop() row               { return row{Policy: Policy{Blocking: true}} }
func readOnlyDenied(r row) row       { r.ReadOnlyDenied = true; return r }
func withPost(r row, p Post) row     { r.Post = p; return r }
func handledBy(r row, h Handler) row { r.Handler = h; return r }

// rows are the commands the proxy does not treat by their flags alone. Keys are
// full names ("config|get").
var rows = map[string]row{
	// Answered by the proxy.
	"ping": local(HandlerPing), "echo": local(HandlerEcho), "quit": local(HandlerQuit),
	"select": local(HandlerSelect), "hello": local(HandlerHello), "auth": local(HandlerAuth),
	"reset": local(HandlerReset), "info": withPost(local(HandlerInfo), PostInfo),
	"client|setname": local(HandlerClientSetName), "client|getname": local(HandlerClientGetName),
	"client|id": local(HandlerClientID), "client|info": local(HandlerClientInfo),
	"client|setinfo": local(HandlerClientSetInfo), "client|list": local(HandlerClientList),
	"client|reply": local(HandlerClientReply), "client|help": pinned(ClassMaster),
	"client|kill": local(HandlerClientAdmin), "client|pause": local(HandlerClientAdmin),
	"client|unpause": local(HandlerClientAdmin), "client|unblock": local(HandlerClientAdmin),
	"client|no-evict": local(HandlerClientAdmin), "config|resetstat": special(HandlerResetStat),
	"client|tracking": local(HandlerClientAdmin), "client|caching": local(HandlerClientAdmin),
	"client|trackinginfo": local(HandlerClientAdmin), "client|getredir": local(HandlerClientAdmin),
	"slowlog|get": special(HandlerSlowlog), "slowlog|len": special(HandlerSlowlog),
	"slowlog|reset": special(HandlerSlowlog),
	"monitor":       local(HandlerMonitor),
	"command|docs":  withPost(byFlags(Policy{}), PostCommandDocs),
	"client":        byFlags(Policy{Handler: HandlerClient}),
	"acl":           {Policy: Policy{Handler: HandlerACL}, subs: true},

	// Topology, persistence control of backends, or replication bypass.
	"replicaof": pinned(ClassDenied), "slaveof": pinned(ClassDenied), "sync": pinned(ClassDenied),
	"psync": pinned(ClassDenied), "replconf": pinned(ClassDenied), "shutdown": pinned(ClassDenied),
	"debug": pinned(ClassDenied), "migrate": pinned(ClassDenied),
	"failover": pinned(ClassDenied), "cluster": pinned(ClassDenied), "readonly": pinned(ClassDenied),
	"readwrite": pinned(ClassDenied), "asking": pinned(ClassDenied), "module": pinned(ClassDenied),
	"config|rewrite": pinned(ClassDenied),
	"acl|setuser":    deniedWith(HandlerACL), "acl|deluser": deniedWith(HandlerACL),
	"acl|load": deniedWith(HandlerACL), "acl|save": deniedWith(HandlerACL),
	// What the master has loaded (clients probe it for RedisJSON, RediSearch, ...).
	"module|list": pinned(ClassMaster), "module|help": pinned(ClassMaster),

	// Session state: transactions, subscriptions, scripts, blocking.
	"multi": special(HandlerMulti), "exec": special(HandlerExec), "discard": special(HandlerDiscard),
	"watch": special(HandlerWatch), "unwatch": special(HandlerUnwatch),
	"subscribe":    specialPolicy(Policy{Subscribe: true}),
	"psubscribe":   specialPolicy(Policy{Subscribe: true}),
	"ssubscribe":   specialPolicy(Policy{Subscribe: true}),
	"unsubscribe":  special(HandlerUnsubscribe),
	"punsubscribe": special(HandlerUnsubscribe),
	"sunsubscribe": special(HandlerUnsubscribe),
	"eval":         readOnlyDenied(special(HandlerEval)),
	"evalsha":      readOnlyDenied(special(HandlerEval)),
	"eval_ro":      special(HandlerFcallRO), "evalsha_ro": special(HandlerFcallRO),
	"fcall":         readOnlyDenied(special(HandlerFcall)),
	"script":        special(HandlerScript),
	"script|exists": special(HandlerScript), "script|kill": readOnlyDenied(special(HandlerScript)),
	"script|help": special(HandlerScript), "script|load": readOnlyDenied(special(HandlerScript)),
	"script|flush": readOnlyDenied(special(HandlerScript)),
	"wait":         special(HandlerWait), "swapdb": special(HandlerSwapDB),
	"config|set": special(HandlerConfigSet),
	"blpop":      blockingPop(), "brpop": blockingPop(), "blmove": blockingPop(),
	"brpoplpush": blockingPop(), "blmpop": blockingPop(), "bzpopmin": blockingPop(),
	"bzpopmax": blockingPop(), "bzmpop": blockingPop(),
	"xread": {Policy: Policy{Blocking: true, BlockOption: true, Unblocked: ClassRead, NullArray: NullArrayAlways}},
	"xreadgroup": {Policy: Policy{Blocking: true, BlockOption: true, Unblocked: ClassWrite,
		Rewrite: RewriteAlways, NullArray: NullArrayAlways}},

	// The function library lives on the master (and is replicated); FCALL_RO runs
	// FCALL's composed script read-only where a read goes (a slave).
	"fcall_ro": special(HandlerFcallRO), "function": pinned(ClassMaster),
	"function|load":    handledBy(pinned(ClassMaster), HandlerFunctionWrite),
	"function|delete":  handledBy(pinned(ClassMaster), HandlerFunctionWrite),
	"function|flush":   handledBy(pinned(ClassMaster), HandlerFunctionWrite),
	"function|restore": handledBy(pinned(ClassMaster), HandlerFunctionWrite),
	"function|kill":    readOnlyDenied(special(HandlerScript)),

	// PFCOUNT updates the cached cardinality inside the HyperLogLog: run on the
	// master and replicated, or the slaves' values would drift from the master's.
	"pfcount": pinned(ClassWrite),
	"pfdebug": readOnlyDenied(byFlags(Policy{})), "pfselftest": readOnlyDenied(byFlags(Policy{})),
	"publish": readOnlyDenied(byFlags(Policy{Publishes: true})), "spublish": readOnlyDenied(byFlags(Policy{Publishes: true})),

	// Cursors are only valid on the backend that issued them.
	"scan": withPost(pinned(ClassMaster), PostHideMetaDB0), "sscan": pinned(ClassMaster),
	"hscan": pinned(ClassMaster), "zscan": pinned(ClassMaster),
	"keys":       withPost(byFlags(Policy{}), PostHideMetaDB0),
	"config|get": withPost(byFlags(Policy{}), PostHideSecrets),
	"dbsize":     byFlags(Policy{MetaFree: metaFreeDBSize}),
	"randomkey":  byFlags(Policy{MetaFree: metaFreeRandomKey}),

	// Writes whose effect is not the command itself: their outcome depends on
	// randomness or on the clock, or their integer reply may not survive Lua's
	// numbers (see the master script in package replicate).
	"spop": rewrite(RewriteAlways), "incrbyfloat": rewrite(RewriteAlways),
	"hincrbyfloat": rewrite(RewriteAlways), "expire": rewrite(RewriteAlways),
	"pexpire": rewrite(RewriteAlways), "setex": rewrite(RewriteAlways), "psetex": rewrite(RewriteAlways),
	"restore": rewrite(RewriteAlways), "xadd": rewrite(RewriteAlways), "xtrim": rewrite(RewriteAlways),
	"incr": rewrite(RewriteAlways), "incrby": rewrite(RewriteAlways), "decr": rewrite(RewriteAlways),
	"decrby": rewrite(RewriteAlways), "hincrby": rewrite(RewriteAlways), "flushall": rewrite(RewriteAlways),
	"flushdb": rewrite(RewriteAlways), "xclaim": rewrite(RewriteAlways), "xautoclaim": rewrite(RewriteAlways),
	"set": native(rewrite(RewriteWithOptions), NativeAlways), "getex": rewrite(RewriteWithOptions),

	// Writes that run natively on the master (see Native): they overwrite
	// whatever the keys hold, with no reply or outcome that can be an error.
	"setnx": native(byFlags(Policy{}), NativeAlways), "mset": native(byFlags(Policy{}), NativePairs),
	"msetnx": native(byFlags(Policy{}), NativePairs),

	// Writes whose nil reply is a null array.
	"lpop": nullArray(NullArrayWithCount), "rpop": nullArray(NullArrayWithCount),
	"lmpop": nullArray(NullArrayAlways), "zmpop": nullArray(NullArrayAlways),
}

// The read-only scripts that answer DBSIZE and RANDOMKEY in DB 0 as if the
// replication metadata keys were not there.
var (
	metaFreeDBSize = scriptCommand("EVAL_RO", "return redis.call('DBSIZE') - redis.call('EXISTS', '"+
		replicate.KeyEpoch+"', '"+replicate.KeySeq+"', '"+replicate.KeyBacklog+"')")
	metaFreeRandomKey = scriptCommand("EVAL_RO", `
local function meta(k) return string.sub(k, 1, 10) == '`+replicate.KeyPrefix+`' end
for _ = 1, 16 do
  local k = redis.call('RANDOMKEY')
  if not k or not meta(k) then return k end
end
local cursor = '0'
repeat
  local r = redis.call('SCAN', cursor, 'COUNT', 100)
  cursor = r[1]
  for _, k in ipairs(r[2]) do if not meta(k) then return k end end
until cursor == '0'
return false`)
)

// scriptCommand encodes "<cmd> <body> 0" as a RESP array.
func scriptCommand(cmd, body string) []byte {
	b := appendArrayHeader(nil, 3)
	b = appendBulk(b, []byte(cmd))
	b = appendBulk(b, []byte(body))
	return appendBulk(b, []byte("0"))
}

// attachPolicies gives c and its subcommands their rows.
func attachPolicies(c *CommandInfo) {
	c.Policy = rowOf(c, nil)
	parent := rows[c.Name]
	for _, sub := range c.Subcommands {
		sub.Policy = rowOf(sub, &parent)
	}
}

// rowOf derives ci's policy: its row, else its flags; an unlisted subcommand of
// a container whose class is pinned (SCRIPT DEBUG, CLUSTER INFO) takes that
// class, unless the container is answered locally, and its handler when the
// container's row serves its subcommands (ACL).
func rowOf(ci *CommandInfo, parent *row) Policy {
	r, ok := rows[ci.Name]
	if !ok && parent != nil {
		if parent.pinned && parent.Class != ClassLocal {
			r.Class, r.pinned = parent.Class, true
		}
		if parent.subs {
			r.Handler = parent.Handler
		}
	}
	p := r.Policy
	if !r.pinned {
		p.Class = classify(ci)
	}
	if p.Class == ClassRead && ci.Has(FlagBlocking) {
		p.Class = ClassSpecial
	}
	return p
}

// classify derives the class of a command from its flags.
func classify(ci *CommandInfo) Class {
	switch {
	case ci.Has(FlagBlocking):
		return ClassSpecial
	case ci.Has(FlagWrite):
		if ci.Has(FlagNoScript) {
			return ClassSpecial
		}
		return ClassWrite
	case ci.Has(FlagReadonly):
		return ClassRead
	}
	return ClassMaster
}
