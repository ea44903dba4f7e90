package replicate

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gomodule/redigo/redis"
)

// A master reset is a slave holding data of another epoch than the master's, or
// ahead of the master in the same epoch: the master lost its data (restarted
// empty, or from an older snapshot), or was given a new epoch after a failover
// that lost writes. Matching the master then means emptying every slave. With
// OnMasterReset "resync" (the default) the slaves are emptied and copied from
// the master at once; with "hold" they keep their data and keep serving reads,
// and the proxy refuses writes (MasterResetHeld), until ConfirmMasterReset.
// Either way the reset is logged at error level with the keys each slave holds,
// and counted (MasterResets, MasterResetKeysDropped).

// Values of Config.OnMasterReset.
const (
	OnMasterResetResync = "resync"
	OnMasterResetHold   = "hold"
)

// resetState is the replicator's record of master resets.
type resetState struct {
	confirms atomic.Uint64 // ConfirmMasterReset calls: a hold started before the last one ends
	resets   atomic.Int64
	dropped  atomic.Int64
	mu       sync.Mutex
	last     string // the last reset counted (several slaves see the same one)
}

// applierHold is an applier's hold on its slave after a master reset; set and
// cleared by the applier's goroutine.
type applierHold struct {
	held     atomic.Bool
	confirms uint64 // the replicator's confirms when the hold began
}

// MasterResets returns the number of master resets seen.
func (r *Replicator) MasterResets() int64 { return r.resets.resets.Load() }

// MasterResetKeysDropped returns the number of keys emptied from slaves to match
// a reset master.
func (r *Replicator) MasterResetKeysDropped() int64 { return r.resets.dropped.Load() }

// MasterResetHeld reports whether a slave is held after a master reset, waiting
// for ConfirmMasterReset: writes must be refused meanwhile.
func (r *Replicator) MasterResetHeld() bool {
	for _, a := range r.Appliers() {
		if a.hold.held.Load() {
			return true
		}
	}
	return false
}

// ConfirmMasterReset lets the held slaves resync to the reset master; it returns
// how many were held.
func (r *Replicator) ConfirmMasterReset() int {
	r.resets.confirms.Add(1)
	n := 0
	for _, a := range r.Appliers() {
		if a.hold.held.Load() {
			n++
			a.kick()
		}
	}
	r.cfg.Log.Warn().Int("held_slaves", n).Msg("master reset confirmed by an operator: the held slaves resync to the master")
	return n
}

// countReset counts the reset named id once, however many slaves report it.
func (r *Replicator) countReset(id string) {
	r.resets.mu.Lock()
	defer r.resets.mu.Unlock()
	if id != r.resets.last {
		r.resets.last = id
		r.resets.resets.Add(1)
	}
}

// masterReset handles a slave whose data the master no longer has (see above):
// it holds the slave, or empties and resyncs it.
func (a *Applier) masterReset(ctx context.Context, sp slavePos, why ResyncReason, mEpoch string) error {
	reason, sEpoch, sSeq := why.String(), sp.epoch, sp.seq
	id := sEpoch + " -> " + mEpoch
	if sEpoch == mEpoch {
		id = sEpoch + ":" + strconv.FormatInt(sSeq, 10) + " -> " + mEpoch
	}
	a.r.countReset(id)
	keys, perDB := a.slaveKeys()
	if a.r.cfg.OnMasterReset == OnMasterResetHold {
		if !a.hold.held.Load() {
			a.hold.confirms = a.r.resets.confirms.Load()
			a.hold.held.Store(true)
			a.log.Error().Str("reason", reason).Str("slave_epoch", sEpoch).Int64("slave_seq", sSeq).
				Str("master_epoch", mEpoch).Int64("slave_keys", keys).Str("slave_keys_per_db", perDB).
				Msg("master reset: the slave keeps its data and serves reads; writes are held until an operator confirms (SYNCPROXY MASTER-RESET CONFIRM)")
		}
		if a.r.resets.confirms.Load() == a.hold.confirms {
			a.setEpoch(sEpoch)
			a.setApplied(sSeq)
			a.setState(StateOnline, "held after a master reset")
			return nil
		}
	}
	a.hold.held.Store(false)
	if keys > 0 {
		a.r.resets.dropped.Add(keys)
	}
	a.log.Error().Str("reason", reason).Str("slave_epoch", sEpoch).Int64("slave_seq", sSeq).
		Str("master_epoch", mEpoch).Int64("keys_dropped", keys).Str("keys_dropped_per_db", perDB).
		Msg("master reset: emptying the slave to match the master")
	return a.fullResync(ctx, sp, why)
}

// slaveKeys counts the slave's keys, its replication keys excepted (-1 when it
// cannot tell), in all and per DB ("db0=100,db3=10", as DBSIZE in each).
func (a *Applier) slaveKeys() (int64, string) {
	info, err := redis.String(a.slave.Do("INFO", "keyspace"))
	if err != nil {
		return -1, ""
	}
	meta, _ := redis.Int64(a.slave.Do("EXISTS", KeyApplied, KeyResync, KeyLease))
	var n int64
	var perDB []string
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		db, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":keys=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		k, _ := strconv.ParseInt(v, 10, 64)
		if db == "db0" {
			k -= meta
		}
		n += k
		perDB = append(perDB, db+"="+strconv.FormatInt(k, 10))
	}
	return n, strings.Join(perDB, ",")
}
