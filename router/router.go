package router

import (
	"bytes"
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

// SlaveStatus is what the router needs to know about a slave's replication state.
type SlaveStatus interface {
	// Online reports whether the slave applies live messages (not resyncing).
	Online() bool
	// Applied returns the sequence number of the last message applied.
	Applied() int64
	// Reached reports whether the message numbered seq is known to be applied;
	// a status that learns positions on demand may look again when it is not.
	Reached(seq int64) bool
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
	if p := s.observed.Load(); p != nil && p.Epoch == epoch && p.Seq >= minSeq {
		return true
	}
	return s.Status.Reached(minSeq) // a follower may look again
}

// slaveSet is the read set: an immutable snapshot, replaced whole by SetSlaves,
// so that readers never lock and never see half of a change.
type slaveSet struct {
	slaves  []*Slave
	weights []int // weights[i] is slaves[i]'s share of reads, at least 1
}

// Router classifies commands and picks backends.
type Router struct {
	table  *Table
	master *Backend
	set    atomic.Pointer[slaveSet]
	rr     atomic.Uint64
	read   atomic.Pointer[ReadOptions]
	// MasterReads counts the reads served by the master.
	MasterReads atomic.Int64
}

// New returns a Router over the given command table and backends; every slave
// has weight 1 until SetSlaves says otherwise.
func New(table *Table, master *Backend, slaves []*Slave) *Router {
	r := &Router{table: table, master: master}
	r.SetSlaves(slaves, nil)
	r.read.Store(&ReadOptions{})
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

// Route classifies args (args[0] is the command name) by its command's Policy
// row and, where the row says so, its arguments.
func (r *Router) Route(args [][]byte) Route {
	ci := r.table.Lookup(args)
	if ci == nil {
		return Route{Class: ClassUnknown}
	}
	p := &ci.Policy
	c := p.Class
	if p.BlockOption && !hasArg(args, "block") {
		c = p.Unblocked // XREAD and XREADGROUP only block with BLOCK
	}
	rt := Route{Class: c, Info: ci, Mode: replicate.ModeCommand}
	if c != ClassWrite {
		return rt
	}
	if p.Rewrite == RewriteAlways || (p.Rewrite == RewriteWithOptions && len(args) > -ci.Arity) {
		rt.Mode = replicate.ModeRewrite
	}
	if rt.Mode == replicate.ModeCommand && runsNative(p.Native, args) {
		rt.Mode = replicate.ModeNative
	}
	rt.NullArray = p.NullArray == NullArrayAlways || (p.NullArray == NullArrayWithCount && len(args) == 3)
	return rt
}

// runsNative reports whether a write whose row says n, its own effect, runs
// natively on the master (replicate.ModeNative). A write too large for the master
// script keeps its own native way (Request.Split).
func runsNative(n Native, args [][]byte) bool {
	if len(args)+4 > replicate.MaxScriptArgs {
		return false
	}
	switch n {
	case NativeAlways:
		return true
	case NativePairs:
		return len(args)%2 == 1
	}
	return false
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
