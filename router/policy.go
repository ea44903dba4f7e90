package router

import (
	"errors"
	"fmt"
)

// ReadPolicy says where reads may go, named as Envoy names its read policies,
// with the project's one name for the read servers: slave. The older spellings
// "replica" and "prefer-replica" are still read, as the same policies.
type ReadPolicy uint8

const (
	// PolicyPreferSlave reads from an eligible slave, else from the master.
	PolicyPreferSlave ReadPolicy = iota
	// PolicyMaster reads from the master only.
	PolicyMaster
	// PolicyPreferMaster reads from the master, from an eligible slave when the
	// master is down.
	PolicyPreferMaster
	// PolicySlave reads from eligible slaves only; none eligible is an error.
	PolicySlave
	// PolicyAny balances reads over the master and the eligible slaves.
	PolicyAny
)

// ParseReadPolicy parses a policy name.
func ParseReadPolicy(s string) (ReadPolicy, error) {
	switch s {
	case "prefer-slave", "prefer-replica", "":
		return PolicyPreferSlave, nil
	case "master":
		return PolicyMaster, nil
	case "prefer-master":
		return PolicyPreferMaster, nil
	case "slave", "replica":
		return PolicySlave, nil
	case "any":
		return PolicyAny, nil
	}
	return 0, fmt.Errorf("router: read policy %q: want master, prefer-master, slave, prefer-slave or any", s)
}

// ReadOptions bound which slaves may serve reads.
type ReadOptions struct {
	Policy ReadPolicy
	// MaxLagMessages and MaxLagMs: a slave lagging more (in messages not yet
	// applied, or in the age of the last one applied) serves no reads; 0 is no bound.
	MaxLagMessages int64
	MaxLagMs       int64
}

// ErrNoSlave is returned by PickRead under PolicySlave when no slave may serve.
var ErrNoSlave = errors.New("router: no slave is eligible for reads")

// SetReadOptions sets the read options; reads picked afterwards follow them.
func (r *Router) SetReadOptions(o ReadOptions) { r.read.Store(&o) }

// ReadOptions returns the read options in force.
func (r *Router) ReadOptions() ReadOptions { return *r.read.Load() }

// eligible reports whether s may serve a read that must see position (epoch, minSeq).
func eligible(o *ReadOptions, s *Slave, epoch string, minSeq int64) bool {
	if !s.Backend.Up() || !s.Status.Online() {
		return false
	}
	if (o.MaxLagMessages > 0 && s.Status.LagMessages() > o.MaxLagMessages) ||
		(o.MaxLagMs > 0 && s.Status.LagMs() > o.MaxLagMs) {
		return false
	}
	return minSeq == 0 || s.holds(epoch, minSeq)
}

// PickRead chooses where a read goes: a slave (nil for the master). Among the
// eligible slaves the one with the fewest requests outstanding per unit of weight
// wins, then the one that served the fewest reads per unit of weight.
func (r *Router) PickRead(epoch string, minSeq int64) (*Slave, error) {
	o := r.read.Load()
	switch o.Policy {
	case PolicyMaster:
		return nil, nil
	case PolicyPreferMaster:
		if r.master.Up() {
			return nil, nil
		}
	}
	best, weight := r.leastLoaded(o, epoch, minSeq)
	switch o.Policy {
	case PolicySlave:
		if best == nil {
			return nil, ErrNoSlave
		}
	case PolicyAny:
		// The master takes part, with weight 1.
		if best == nil {
			return nil, nil
		}
		if r.master.Up() {
			w := float64(weight)
			ml, sl := float64(r.master.Outstanding.Load()), float64(best.Backend.Outstanding.Load())/w
			if ml < sl || (ml == sl && float64(r.MasterReads.Load()) < float64(best.Reads.Load())/w) {
				return nil, nil
			}
		}
	}
	return best, nil
}

// leastLoaded returns the eligible slave of the read set to read from, and its
// weight; nil when there is none.
func (r *Router) leastLoaded(o *ReadOptions, epoch string, minSeq int64) (*Slave, int) {
	set := r.set.Load()
	n := len(set.slaves)
	if n == 0 {
		return nil, 0
	}
	start := int(r.rr.Add(1) % uint64(n))
	var best *Slave
	bestWeight := 0
	var bestLoad, bestServed float64
	for i := 0; i < n; i++ {
		j := (start + i) % n
		s := set.slaves[j]
		if !eligible(o, s, epoch, minSeq) {
			continue
		}
		// Fewest outstanding per unit of weight; on a tie (an idle pool), fewest
		// reads served per unit of weight, which splits reads by weight.
		w := float64(set.weights[j])
		load := float64(s.Backend.Outstanding.Load()) / w
		served := float64(s.Reads.Load()) / w
		if best == nil || load < bestLoad || (load == bestLoad && served < bestServed) {
			best, bestWeight, bestLoad, bestServed = s, set.weights[j], load, served
		}
	}
	return best, bestWeight
}
