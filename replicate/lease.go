package replicate

import (
	"context"
	"time"

	"github.com/gomodule/redigo/redis"
)

// One applier per slave: when several proxies front the same slaves, the applier
// holding the slave's lease (KeyLease, on the slave) applies to it and the others
// follow its position, ready to take over when the lease lapses. Correctness does
// not rest on the lease (each apply transaction checks the slave's position under WATCH,
// so two appliers that both think they hold it only waste work); it saves the
// duplicate apply calls and the lag they cause.
//
// A follower costs nothing per message: a proxy that holds no lease is not
// subscribed to the sync channel (subscriber.go: standby, unless its clients need
// the stream), reads no backlog and decodes no message. It learns the slave's
// position at every check (observe), and between checks only when a read or WAIT
// asks for a position it has not seen (Applier.Reached, refresh): one read of the
// slave's position, at most every followEvery, serves every read that asked. It
// takes over at the check after the lease lapsed (at most the TTL plus one health
// interval), and subscribes then.

// takeLease is run on the slave: it takes the lease if it is free or ours and
// renews it. ARGV: holder id, TTL in ms. It returns 1 when we hold the lease.
const takeLease = `
local cur = redis.call('GET', 'syncproxy:lease')
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', 'syncproxy:lease', ARGV[1], 'PX', ARGV[2])
return 1
`

// Bounds of the lease's TTL: three health intervals, within these.
const (
	minLeaseTTL = time.Second
	maxLeaseTTL = 30 * time.Second
)

// leaseTTL is how long a lease lasts without renewal: an applier renews it every
// health interval, and another proxy takes over at most this long after the
// holder stopped.
func (a *Applier) leaseTTL() time.Duration {
	interval, _ := a.r.health()
	return min(max(3*interval, minLeaseTTL), maxLeaseTTL)
}

// renewLease takes or renews the slave's lease and records whether this applier
// holds it.
func (a *Applier) renewLease() error {
	n, err := redis.Int(a.slave.Do("EVAL", takeLease, 0, a.r.epoch, a.leaseTTL().Milliseconds()))
	if err != nil {
		return err
	}
	if held := n == 1; held != a.leader.Swap(held) {
		role := "follower"
		if held {
			role = "applier"
			a.r.sub.wake() // the stream is needed now
		}
		a.log.Info().Str("role", role).Msg("slave lease changed hands")
	}
	return nil
}

// dropLease deletes the lease if ARGV[1] still holds it.
const dropLease = `if redis.call('GET', 'syncproxy:lease') == ARGV[1] then return redis.call('DEL', 'syncproxy:lease') end return 0`

// releaseLease gives the lease up when the applier stops, so that another proxy
// takes over at its next check instead of after the TTL.
func (a *Applier) releaseLease() {
	if a.leader.Swap(false) {
		a.slave.Do("EVAL", dropLease, 0, a.r.epoch)
	}
}

// Leader reports whether this applier holds the slave's lease and applies to it;
// otherwise another proxy does and this one follows the slave's position.
func (a *Applier) Leader() bool { return a.leader.Load() }

// followEvery is the shortest time between two reads of the slave's position by
// a follower for the reads that asked (refresh): however many reads and
// messages arrive, a follower reads each slave's position at most this often.
const followEvery = time.Millisecond

// refresh is how a follower keeps its view of the slave's position (what read
// routing and WAIT use) current without following every message: a reader
// needed a position the slave had not shown (Reached), so it reads the slave's
// position once, for every read that asked meanwhile. Reads asking after the
// poll started ask again.
func (a *Applier) refresh(ctx context.Context) error {
	if a.Leader() {
		a.want.Store(false)
		return nil
	}
	if d := followEvery - time.Since(a.lastPoll); d > 0 && !SleepCtx(ctx, d) {
		return nil
	}
	a.want.Store(false)
	a.lastPoll = time.Now()
	sp, err := a.slavePosition()
	if err != nil || a.lockedOut(sp) {
		return err
	}
	if sp.ok && sp.epoch == a.Epoch() && sp.seq > a.applied.Load() {
		a.setApplied(sp.seq)
	}
	if a.applied.Load() < a.asked.Load() && time.Since(time.Unix(0, a.askedAt.Load())) < refreshFor {
		// Still short of what a reader asked for lately: look again (at most
		// every followEvery) rather than leave it to the reader's next retry.
		a.wantRefresh()
	}
	return nil
}

// refreshFor is how long a follower keeps reading a slave's position, every
// followEvery, for a position asked for (Reached) that the slave has not
// shown: longer than a blocked WAIT's retry (blockRetry in the proxy), which
// asks again; a position that never comes (a token from elsewhere) is given
// up on that long after the last ask.
const refreshFor = 300 * time.Millisecond

// check is the periodic check of the slave: the lease holder brings it to the
// master's position (sync); a follower reads both positions.
func (a *Applier) check(ctx context.Context) error {
	if err := a.renewLease(); err != nil {
		return err
	}
	if err := a.checkEvictions(); err != nil {
		return err
	}
	if a.Leader() {
		return a.settle(ctx, a.sync(ctx))
	}
	return a.observe(ctx)
}

// observe is a follower's check: it reads the slave's position, then the
// master's (in that order, as sync does), and sets the slave's state from them.
// It never writes to the slave.
func (a *Applier) observe(ctx context.Context) error {
	sp, err := a.slavePosition()
	if err != nil || a.lockedOut(sp) {
		return err
	}
	mEpoch, mSeq, err := a.masterPosition()
	if err != nil {
		return err
	}
	reset := sp.ok && (sp.epoch != mEpoch || sp.seq > mSeq)
	if reset && a.r.cfg.OnMasterReset == OnMasterResetHold {
		// Held here as by the lease holder: reads go on from the slave and this
		// proxy refuses writes too, until an operator confirms on any proxy
		// (the one confirmed resyncs the slave, which ends every hold).
		why := ResyncOtherEpoch
		if sp.epoch == mEpoch {
			why = ResyncAhead
		}
		return a.masterReset(ctx, sp, why, mEpoch)
	}
	if !sp.ok || reset {
		a.setState(StateResyncing, "waiting for the lease holder to resync the slave")
		return nil
	}
	a.hold.held.Store(false)
	if sp.epoch != a.Epoch() || sp.seq > a.applied.Load() {
		a.setEpoch(sp.epoch)
		a.setApplied(sp.seq)
	}
	a.setState(StateOnline, "followed the lease holder")
	return nil
}
