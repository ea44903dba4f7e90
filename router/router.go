package router

import (
	"bytes"
	"strings"
	"sync/atomic"

	"github.com/syncproxy/syncproxy/replicate"
)

// Class is the path a command takes through the proxy.
type Class uint8

const (
	// ClassRead goes to a slave chosen by the read policy.
	ClassRead Class = iota
	// ClassWrite runs on the master through the replication script.
	ClassWrite
	// ClassMaster is forwarded unchanged to the master: commands that neither read
	// nor write the data set (COMMAND, CONFIG GET, PUBLISH, SLOWLOG, ...) and reads
	// whose state lives on one backend (SCAN cursors).
	ClassMaster
	// ClassLocal is answered by the proxy itself.
	ClassLocal
	// ClassSpecial needs session state (transactions, subscriptions, blocking,
	// scripts) and is handled by the session.
	ClassSpecial
	// ClassDenied would break the topology or bypass replication.
	ClassDenied
	// ClassUnknown is not a command the master knows.
	ClassUnknown
)

// Route is the routing decision for one command.
type Route struct {
	Class Class
	Info  *CommandInfo // nil for ClassUnknown
	// Mode: how the replication script takes the write's effect
	// (replicate.ModeRewrite: derived from what it did on the master).
	Mode replicate.Mode
	// NullArray: the write's nil reply is a null array (see Request.NullArray).
	NullArray bool
}

// rewriteNames are the writes whose effect is not the command itself: their
// outcome depends on randomness or on the clock, or their integer reply may not
// survive Lua's numbers (see the master script in package replicate).
var rewriteNames = map[string]bool{
	"spop": true, "incrbyfloat": true, "hincrbyfloat": true, "expire": true, "pexpire": true,
	"setex": true, "psetex": true, "restore": true, "xadd": true, "xtrim": true,
	"incr": true, "incrby": true, "decr": true, "decrby": true, "hincrby": true,
	"flushall": true, "flushdb": true, "xclaim": true, "xautoclaim": true, "xreadgroup": true,
}

// classOverrides pins the class of commands whose COMMAND flags do not tell the
// proxy enough. Keys are full names ("config|get").
var classOverrides = map[string]Class{
	// Answered by the proxy.
	"ping": ClassLocal, "echo": ClassLocal, "quit": ClassLocal, "select": ClassLocal,
	"hello": ClassLocal, "auth": ClassLocal, "reset": ClassLocal, "info": ClassLocal,
	"client|setname": ClassLocal, "client|getname": ClassLocal, "client|id": ClassLocal,
	"client|info": ClassLocal, "client|setinfo": ClassLocal, "client|list": ClassLocal,
	"client|reply": ClassLocal, "client|help": ClassMaster,

	// Topology, persistence control of backends, or replication bypass.
	"replicaof": ClassDenied, "slaveof": ClassDenied, "sync": ClassDenied, "psync": ClassDenied,
	"replconf": ClassDenied, "shutdown": ClassDenied, "debug": ClassDenied, "monitor": ClassDenied,
	"migrate": ClassDenied, "failover": ClassDenied, "cluster": ClassDenied, "readonly": ClassDenied,
	"readwrite": ClassDenied, "asking": ClassDenied, "module": ClassDenied,
	"config|rewrite": ClassDenied, "config|resetstat": ClassDenied,
	"client|kill": ClassDenied, "client|pause": ClassDenied, "client|unpause": ClassDenied,
	"client|tracking": ClassDenied, "client|caching": ClassDenied, "client|no-evict": ClassDenied,
	"client|unblock": ClassDenied, "client|trackinginfo": ClassDenied, "client|getredir": ClassDenied,
	"acl|setuser": ClassDenied, "acl|deluser": ClassDenied, "acl|load": ClassDenied, "acl|save": ClassDenied,

	// Session state: transactions, subscriptions, scripts, blocking.
	"multi": ClassSpecial, "exec": ClassSpecial, "discard": ClassSpecial, "watch": ClassSpecial,
	"unwatch": ClassSpecial, "subscribe": ClassSpecial, "psubscribe": ClassSpecial,
	"ssubscribe": ClassSpecial, "unsubscribe": ClassSpecial, "punsubscribe": ClassSpecial,
	"sunsubscribe": ClassSpecial, "eval": ClassSpecial, "evalsha": ClassSpecial,
	"eval_ro": ClassSpecial, "evalsha_ro": ClassSpecial, "fcall": ClassSpecial,
	"script": ClassSpecial, "wait": ClassSpecial, "swapdb": ClassSpecial,
	"config|set": ClassSpecial,

	// Read-only functions and the function library live on the master.
	"fcall_ro": ClassMaster, "function": ClassMaster,

	// PFCOUNT updates the cached cardinality inside the HyperLogLog: run on the
	// master and replicated, or the slaves' values would drift from the master's.
	"pfcount": ClassWrite,

	// Cursors are only valid on the backend that issued them.
	"scan": ClassMaster, "sscan": ClassMaster, "hscan": ClassMaster, "zscan": ClassMaster,
}

// classify derives the class of a known command.
func classify(ci *CommandInfo) Class {
	if c, ok := classOverrides[ci.Name]; ok {
		return c
	}
	if i := strings.IndexByte(ci.Name, '|'); i > 0 {
		// Unlisted subcommands of a listed container (CONFIG GET) follow their flags.
		if c, ok := classOverrides[ci.Name[:i]]; ok && c != ClassLocal {
			return c
		}
	}
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

// SlaveStatus is what the router needs to know about a slave's replication state.
type SlaveStatus interface {
	// Online reports whether the slave applies live messages (not resyncing).
	Online() bool
	// Applied returns the sequence number of the last message applied.
	Applied() int64
	// Epoch returns the epoch of the slave's data.
	Epoch() string
	// LagMessages and LagMs measure how far behind the master the slave is.
	LagMessages() int64
	LagMs() int64
}

// Slave is a read backend and its replication status (the proxy's: its applier).
type Slave struct {
	Backend *Backend
	Status  SlaveStatus
	// Reads counts the reads the slave served.
	Reads atomic.Int64
	// observed is the highest position a session read back from the slave
	// itself (see Observe): another proxy's applier may have taken the slave
	// past what Status says.
	observed atomic.Pointer[Position]
}

// Position is a replication position: a sequence number within an epoch.
type Position struct {
	Epoch string
	Seq   int64
}

// Observe records that the slave holds at least position (epoch, seq), as read
// from the slave: it stays eligible for reads that must see it.
func (s *Slave) Observe(epoch string, seq int64) {
	for {
		cur := s.observed.Load()
		if cur != nil && cur.Epoch == epoch && cur.Seq >= seq {
			return
		}
		if s.observed.CompareAndSwap(cur, &Position{Epoch: epoch, Seq: seq}) {
			return
		}
	}
}

// ForgetObserved drops what Observe recorded (the slave reconnected: it may
// have restarted without its data).
func (s *Slave) ForgetObserved() { s.observed.Store(nil) }

// holds reports whether the slave is known to hold position (epoch, minSeq):
// from its applier, or from what a session read back from it in the epoch the
// applier knows.
func (s *Slave) holds(epoch string, minSeq int64) bool {
	if s.Status.Epoch() != epoch {
		return false
	}
	if s.Status.Applied() >= minSeq {
		return true
	}
	p := s.observed.Load()
	return p != nil && p.Epoch == epoch && p.Seq >= minSeq
}

// slaveSet is the read set: an immutable snapshot, replaced whole by SetSlaves,
// so that readers never lock and never see half of a change.
type slaveSet struct {
	slaves  []*Slave
	weights []int // weights[i] is slaves[i]'s share of reads, at least 1
}

// Router classifies commands and picks backends.
type Router struct {
	table   *Table
	classes map[*CommandInfo]Class
	master  *Backend
	set     atomic.Pointer[slaveSet]
	rr      atomic.Uint64
	read    atomic.Pointer[ReadOptions]
	// MasterReads counts the reads served by the master.
	MasterReads atomic.Int64
}

// New returns a Router over the given command table and backends; every slave
// has weight 1 until SetSlaves says otherwise.
func New(table *Table, master *Backend, slaves []*Slave) *Router {
	r := &Router{table: table, master: master, classes: map[*CommandInfo]Class{}}
	r.SetSlaves(slaves, nil)
	r.read.Store(&ReadOptions{})
	for _, name := range table.Names() {
		ci := table.Lookup([][]byte{[]byte(name)})
		r.classes[ci] = classify(ci)
		for _, sub := range ci.Subcommands {
			r.classes[sub] = classify(sub)
		}
	}
	return r
}

// Table returns the command table.
func (r *Router) Table() *Table { return r.table }

// Master returns the master backend.
func (r *Router) Master() *Backend { return r.master }

// Slaves returns the read backends: a snapshot that the caller must not modify.
// Iterate it, not Slaves() again, to see one consistent set.
func (r *Router) Slaves() []*Slave { return r.set.Load().slaves }

// SetSlaves replaces the read set in one step: a read picks from the old set or
// from the new one, never from a mix. weights[i] is slaves[i]'s share of reads
// relative to the others (missing or below 1: 1). The caller stops the backends
// of the slaves it left out, once the reads in flight on them are done.
func (r *Router) SetSlaves(slaves []*Slave, weights []int) {
	set := &slaveSet{slaves: append([]*Slave(nil), slaves...), weights: make([]int, len(slaves))}
	for i := range set.weights {
		set.weights[i] = 1
		if i < len(weights) && weights[i] > 1 {
			set.weights[i] = weights[i]
		}
	}
	r.set.Store(set)
}

// Weight returns sl's weight in the read set, or 0 when sl is not in it.
func (r *Router) Weight(sl *Slave) int {
	set := r.set.Load()
	for i, s := range set.slaves {
		if s == sl {
			return set.weights[i]
		}
	}
	return 0
}

// Route classifies args (args[0] is the command name).
func (r *Router) Route(args [][]byte) Route {
	ci := r.table.Lookup(args)
	if ci == nil {
		return Route{Class: ClassUnknown}
	}
	c := r.classes[ci]
	if c == ClassRead && ci.Has(FlagBlocking) {
		c = ClassSpecial
	}
	// XREAD and XREADGROUP are flagged blocking but only block with BLOCK.
	if (ci.Name == "xread" || ci.Name == "xreadgroup") && !hasArg(args, "block") {
		if ci.Name == "xread" {
			c = ClassRead
		} else {
			c = ClassWrite
		}
	}
	rw := false
	if c == ClassWrite {
		switch ci.Name {
		case "set":
			rw = len(args) > 3 // options: EX/PX need absolute times
		case "getex":
			rw = len(args) > 2
		default:
			rw = rewriteNames[ci.Name]
		}
	}
	na := false
	if c == ClassWrite {
		switch ci.Name {
		case "lpop", "rpop":
			na = len(args) == 3
		case "lmpop", "zmpop", "xreadgroup":
			na = true
		}
	}
	mode := replicate.ModeCommand
	if rw {
		mode = replicate.ModeRewrite
	}
	return Route{Class: c, Info: ci, Mode: mode, NullArray: na}
}

func hasArg(args [][]byte, name string) bool {
	for _, a := range args[1:] {
		if len(a) == len(name) && bytes.EqualFold(a, []byte(name)) {
			return true
		}
	}
	return false
}

// PickSlave returns an eligible slave (see PickRead) for a read that must see
// (epoch, minSeq), whatever the read policy; nil when there is none.
func (r *Router) PickSlave(epoch string, minSeq int64) *Slave {
	sl, _ := r.leastLoaded(r.read.Load(), epoch, minSeq)
	return sl
}
