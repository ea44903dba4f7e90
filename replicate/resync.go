package replicate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// numDBs is the number of databases copied by a full resync (Redis' default).
const numDBs = 16

// fullResync empties the slave and copies the master into it while writes go on,
// then catches up from the backlog. The slave is out of the read set meanwhile.
//
// The copy is exact although keys change while it runs: every batch of keys is
// read atomically with the master's sequence number (copyScript), which becomes
// each key's copy position. Catching up then skips an effect on keys that were
// copied after it; an effect that mixes keys copied before and after it (or that
// touches a key marked so) is not applied, and its keys are copied again, after
// which catching up continues.
// ResyncReason is why a slave was resynced in full.
type ResyncReason int

// The reasons for a full resync.
const (
	ResyncNoPosition  ResyncReason = iota // new slave, or one that lost its data
	ResyncOtherEpoch                      // the master's data set changed (it lost its data, or a failover renewed it)
	ResyncAhead                           // the slave holds messages the master does not
	ResyncBacklogGone                     // the slave is behind what the backlog still holds
	ResyncUnverified                      // a run was applied without its position check (the slave refused it)
	numResyncReasons
)

// ResyncReasons lists every reason, for metrics.
var ResyncReasons = [numResyncReasons]ResyncReason{ResyncNoPosition, ResyncOtherEpoch, ResyncAhead, ResyncBacklogGone, ResyncUnverified}

// Label is the reason's metric label.
func (r ResyncReason) Label() string {
	return [...]string{"no-position", "other-epoch", "ahead-of-master", "backlog-gone", "unverified-apply"}[r]
}

// String is the reason as logged.
func (r ResyncReason) String() string {
	return [...]string{"slave has no replication position", "slave holds another epoch",
		"slave is ahead of the master", "backlog no longer covers the slave's position",
		"a run was applied without its position check"}[r]
}

func (a *Applier) fullResync(ctx context.Context, seen slavePos, why ResyncReason) error {
	reason := why.String()
	// One resync at a time per slave, whatever the number of proxies: the lock
	// also keeps other appliers from applying to the half-copied slave, and
	// takes the slave out of their read sets (they check it every health
	// interval, and at once when an apply is refused).
	token := newEpoch()
	ok, err := redis.String(a.slave.Do("SET", KeyResync, token, "NX", "PX", resyncLockTTL.Milliseconds()))
	if err == redis.ErrNil || (err == nil && ok != "OK") {
		a.setState(StateResyncing, "resynced by another applier")
		a.unverified.Store(false) // its copy makes the slave exact
		return nil
	}
	if err != nil {
		return err
	}
	defer a.slave.Do("EVAL", releaseLock, 0, token)
	a.setState(StateResyncing, reason)
	// Give every other proxy time to see the lock before a slave that holds
	// data is emptied (one without a position has nothing to lose).
	if seen.raw != "" {
		interval, _ := a.r.health()
		if !SleepCtx(ctx, 2*interval+resyncGraceExtra) {
			return ctx.Err()
		}
	}
	// Empty the slave only if its position is still the one the decision was
	// made on, in the same atomic step.
	flushed, err := redis.Int(a.slave.Do("EVAL", flushIfUnchanged, 0, seen.raw, token, resyncLockTTL.Milliseconds()))
	if err != nil {
		return err
	}
	if flushed == 0 {
		a.log.Info().Str("reason", reason).Msg("slave position changed before the full resync; checking again")
		return errGap
	}
	a.unverified.Store(false) // emptied: the copy makes it exact
	a.resyncs.Add(1)
	a.byReason[why].Add(1)
	ev := a.log.Warn()
	if seen.raw == "" {
		ev = a.log.Info() // a new or emptied slave: nothing was lost
	}
	a.progress.begin(a.masterKeys())
	ev.Str("reason", reason).Str("slave_position", seen.raw).Int64("master_keys", a.progress.total.Load()).
		Msg("full resync: slave emptied, copying the master")
	epoch, seq, err := a.masterPosition()
	if err != nil {
		return err
	}
	// The libraries after the position: what changed them since is applied
	// again by the catch-up (a LOAD of a library the copy has only fails).
	if err := a.copyFunctions(); err != nil {
		return err
	}
	a.rs = &resyncState{positions: map[dbKey]int64{}, dirty: map[dbKey]bool{}, token: token}
	defer func() { a.rs = nil }()
	copied := 0
	for db := 0; db < numDBs; db++ {
		n, err := a.copyDB(ctx, db)
		copied += n
		if err != nil {
			return err
		}
	}
	a.progress.total.Store(int64(copied)) // the keys there were, as scanned
	if _, err := a.slave.Do("SET", KeyApplied, epoch+":"+strconv.FormatInt(seq, 10)); err != nil {
		return err
	}
	a.setEpoch(epoch)
	a.setApplied(seq)
	a.log.Info().Int("keys", copied).Int64("seq", seq).Dur("took", time.Since(a.progress.started)).
		Msg("full resync copied the master; catching up")
	if err := a.settleCopy(ctx); err != nil {
		return err
	}
	a.setState(StateOnline, "resync complete")
	return nil
}

// settleCopy catches the copied slave up with the master, copying again the
// keys that changed during the copy, until none did.
func (a *Applier) settleCopy(ctx context.Context) error {
	for round := 0; ; round++ {
		_, target, err := a.masterPosition()
		if err != nil {
			return err
		}
		if target < a.rs.maxPos {
			target = a.rs.maxPos
		}
		if err := a.catchUp(ctx, target); err != nil {
			return err
		}
		if len(a.rs.dirty) == 0 {
			return nil
		}
		if round == maxRecopyRounds {
			return errResyncUnstable
		}
		n, err := a.recopyDirty(ctx)
		if err != nil {
			return err
		}
		a.log.Info().Int("keys", n).Int("round", round+1).Msg("full resync copied keys changed during the copy again")
	}
}

// resyncLockTTL bounds how long a crashed resync keeps a slave locked; a running
// resync refreshes it with every batch it copies.
const resyncLockTTL = 30 * time.Second

// resyncGraceExtra is added to two health intervals between taking the resync lock
// and emptying the slave.
const resyncGraceExtra = 50 * time.Millisecond

// flushIfUnchanged empties the slave and renews the resync lock if the slave's
// position is still ARGV[1] ("" for none) and the lock still holds ARGV[2].
// ARGV[3] is the lock's TTL in milliseconds. It returns 1 when it emptied the slave.
const flushIfUnchanged = `
if (redis.call('GET', 'syncproxy:applied') or '') ~= ARGV[1] then return 0 end
if redis.call('GET', 'syncproxy:resync') ~= ARGV[2] then return 0 end
redis.call('FLUSHALL')
redis.call('SET', 'syncproxy:resync', ARGV[2], 'PX', ARGV[3])
return 1
`

// releaseLock deletes the resync lock if it is still ours.
const releaseLock = `if redis.call('GET', 'syncproxy:resync') == ARGV[1] then return redis.call('DEL', 'syncproxy:resync') end return 0`

// maxRecopyRounds bounds the rounds of copying changed keys again; beyond it the
// resync starts over.
const maxRecopyRounds = 20

var (
	errResyncUnstable = errors.New("replicate: keys kept changing during the full resync; starting over")
	errResyncGlobal   = errors.New("replicate: a database-wide write happened during the full resync; starting over")
)

// dbKey names a key in a database.
type dbKey struct {
	db  int
	key string
}

// resyncState is the per-key bookkeeping of a full resync.
type resyncState struct {
	token     string          // value of the slave's resync lock
	positions map[dbKey]int64 // sequence number each copied key is exact at
	dirty     map[dbKey]bool  // keys whose effects were not applied: copy again
	maxPos    int64
}

// filter drops from msgs the effects that the copy already holds, and those that
// cannot be applied exactly (whose keys it marks dirty). Messages keep their
// sequence numbers, possibly with no effects left.
func (a *Applier) filter(msgs []*Message) ([]*Message, error) {
	rs := a.rs
	out := make([]*Message, 0, len(msgs))
	var idx []int
	for _, m := range msgs {
		fm := &Message{Epoch: m.Epoch, Seq: m.Seq, TimeMs: m.TimeMs}
		for _, e := range m.Effects {
			idx = a.keysOf(e.Args, idx[:0])
			if len(idx) == 0 {
				return nil, errResyncGlobal
			}
			covered, dirty := 0, false
			for _, i := range idx {
				k := dbKey{e.DB, string(e.Args[i])}
				if rs.dirty[k] {
					dirty = true
				}
				if p, ok := rs.positions[k]; ok && p >= m.Seq {
					covered++
				}
			}
			switch {
			case !dirty && covered == 0:
				fm.Effects = append(fm.Effects, e)
			case !dirty && covered == len(idx):
				// Already in the copy.
			default:
				for _, i := range idx {
					rs.dirty[dbKey{e.DB, string(e.Args[i])}] = true
				}
			}
		}
		out = append(out, fm)
	}
	return out, nil
}

// keysOf returns the key indexes of an effect's arguments.
func (a *Applier) keysOf(args [][]byte, dst []int) []int {
	if a.r.cfg.Keys != nil {
		return a.r.cfg.Keys(args, dst)
	}
	return dst
}

// copyDB copies one database from the master with SCAN and copyScript batches.
func (a *Applier) copyDB(ctx context.Context, db int) (int, error) {
	if _, err := a.master.Do("SELECT", db); err != nil {
		return 0, err
	}
	defer a.master.Do("SELECT", 0)
	copied := 0
	cursor := "0"
	for {
		if ctx.Err() != nil {
			return copied, ctx.Err()
		}
		vals, err := redis.Values(a.master.Do("SCAN", cursor, "COUNT", 200))
		if err != nil {
			return copied, err
		}
		if len(vals) != 2 {
			return copied, ErrMessageFormat
		}
		cursor, _ = redis.String(vals[0], nil)
		keys, _ := redis.ByteSlices(vals[1], nil)
		todo := keys[:0]
		for _, k := range keys {
			if db == 0 && strings.HasPrefix(string(k), KeyPrefix) {
				continue
			}
			todo = append(todo, k)
		}
		n, err := a.copyKeys(db, todo)
		copied += n
		a.progress.add(a, n)
		if err != nil {
			return copied, err
		}
		if cursor == "0" {
			return copied, nil
		}
	}
}

// recopyDirty copies the dirty keys again and clears them.
func (a *Applier) recopyDirty(ctx context.Context) (int, error) {
	byDB := map[int][][]byte{}
	for k := range a.rs.dirty {
		byDB[k.db] = append(byDB[k.db], []byte(k.key))
	}
	clear(a.rs.dirty)
	n := 0
	for db, keys := range byDB {
		for len(keys) > 0 {
			if ctx.Err() != nil {
				return n, ctx.Err()
			}
			b := keys[:min(len(keys), 200)]
			keys = keys[len(b):]
			m, err := a.copyKeys(db, b)
			n += m
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// copyKeys copies keys of db from the master to the slave, atomically read with
// the master's sequence number, which becomes their copy position. A key gone from
// the master is deleted from the slave.
func (a *Applier) copyKeys(db int, keys [][]byte) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	args := make([]interface{}, 0, len(keys)+1)
	args = append(args, db)
	for _, k := range keys {
		args = append(args, k)
	}
	vals, err := redis.Values(a.copy.Do(a.master, args...))
	if err != nil {
		return 0, err
	}
	if len(vals) != 1+2*len(keys) {
		return 0, ErrMessageFormat
	}
	pos, err := redis.Int64(vals[0], nil)
	if err != nil {
		return 0, err
	}
	if _, err := a.slave.Do("SELECT", db); err != nil {
		return 0, err
	}
	defer a.slave.Do("SELECT", 0)
	for i, k := range keys {
		dump, exp := vals[1+2*i], vals[2+2*i]
		if dump == nil {
			a.slave.Send("DEL", k)
		} else {
			ttl, _ := redis.Int64(exp, nil)
			if ttl < 0 {
				ttl = 0
			}
			a.slave.Send("RESTORE", k, ttl, dump, "REPLACE", "ABSTTL")
		}
		a.rs.positions[dbKey{db, string(k)}] = pos
	}
	if pos > a.rs.maxPos {
		a.rs.maxPos = pos
	}
	a.slave.Send("SELECT", 0)
	a.slave.Send("PEXPIRE", KeyResync, resyncLockTTL.Milliseconds())
	a.slave.Send("SELECT", db)
	if err := a.slave.Flush(); err != nil {
		return 0, err
	}
	for i := 0; i < len(keys)+3; i++ {
		if _, err := a.slave.Receive(); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// resyncLogEvery is how often a full resync logs its progress.
const resyncLogEvery = 5 * time.Second

// resyncProgress counts the keys a full resync copied of those the master held
// when it began; the figures stay after it ends, for INFO and the status page.
type resyncProgress struct {
	copied, total atomic.Int64
	started       time.Time // run goroutine only, as lastLog
	lastLog       time.Time
}

// ResyncProgress returns the keys copied by the running (or last) full resync,
// and the keys the master held when it began (the copied ones once it copied all).
func (a *Applier) ResyncProgress() (copied, total int64) {
	return a.progress.copied.Load(), a.progress.total.Load()
}

func (p *resyncProgress) begin(total int64) {
	p.copied.Store(0)
	p.total.Store(total)
	p.started = time.Now()
	p.lastLog = p.started
}

// add counts n keys copied and logs the progress every resyncLogEvery.
func (p *resyncProgress) add(a *Applier, n int) {
	copied := p.copied.Add(int64(n))
	if time.Since(p.lastLog) < resyncLogEvery {
		return
	}
	p.lastLog = time.Now()
	ev := a.log.Info().Int64("keys_copied", copied).Int64("keys_total", p.total.Load())
	if secs := time.Since(p.started).Seconds(); secs > 0 {
		ev = ev.Int64("keys_per_second", int64(float64(copied)/secs))
	}
	ev.Msg("full resync copying")
}

// masterKeys returns the number of keys of the master's databases (INFO
// keyspace), replication metadata included; 0 if unknown.
func (a *Applier) masterKeys() int64 {
	info, err := redis.String(a.master.Do("INFO", "keyspace"))
	if err != nil {
		return 0
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		_, rest, ok := strings.Cut(line, ":keys=")
		if !ok || !strings.HasPrefix(line, "db") {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		if v, err := strconv.ParseInt(n, 10, 64); err == nil {
			total += v
		}
	}
	return total
}
