package replicate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
)

// State is an applier's view of its slave.
type State int32

// Slave states, as INFO shows them.
const (
	StateDown       State = iota // slave unreachable
	StateResyncing               // being emptied and copied from the master
	StateCatchingUp              // applying the backlog
	StateOnline                  // applying live messages
)

func (s State) String() string {
	switch s {
	case StateResyncing:
		return "resyncing"
	case StateCatchingUp:
		return "catching-up"
	case StateOnline:
		return "online"
	}
	return "down"
}

// Applier applies sync messages to one slave, in sequence order, exactly once.
type Applier struct {
	r     *Replicator
	ep    Endpoint
	log   zerolog.Logger
	queue chan *Message
	kickC chan struct{}

	overflow atomic.Bool
	leader   atomic.Bool // holds the slave's lease (lease.go)
	// unverified: a run was applied without its position check; the next
	// sync copies the slave whole (applyTx).
	unverified atomic.Bool
	// want is set, and wantC signalled, when a reader of a follower's position
	// needs a newer one (Reached); asked is the highest position asked for,
	// askedAt when (UnixNano) it was last asked.
	want     atomic.Bool
	wantC    chan struct{}
	asked    atomic.Int64
	askedAt  atomic.Int64
	lastPoll time.Time // a follower's last read of the slave's position; run goroutine
	state    atomic.Int32
	applied  atomic.Int64
	lagMs    atomic.Int64
	resyncs  atomic.Int64
	byReason [numResyncReasons]atomic.Int64
	applies  atomic.Int64
	catchups atomic.Int64
	progress resyncProgress // of the running or last full resync (resync.go)

	epoch atomic.Pointer[string]
	hold  applierHold // after a master reset (reset.go)
	evict slaveEvictions

	// stop ends the run goroutine, which closes done; set under the
	// replicator's mu when it starts.
	stop context.CancelFunc
	done chan struct{}

	script   *redis.Script
	copy     *redis.Script
	position *redis.Script
	// slave, master, rs and failures are owned by the run goroutine.
	slave, master redis.Conn
	failures      int          // consecutive failed checks of an online slave
	sc            *slaveConn   // the socket under slave, for apply transactions
	txBuf         []byte       // an apply transaction's encoding, reused
	rs            *resyncState // during a full resync
	gen           uint64       // the master generation of the session
}

func newApplier(r *Replicator, ep Endpoint) *Applier {
	return &Applier{
		r:        r,
		ep:       ep,
		log:      r.cfg.Log.With().Str("component", "applier").Str("slave", ep.Name).Str("addr", ep.Addr).Logger(),
		queue:    make(chan *Message, r.cfg.QueueLen),
		kickC:    make(chan struct{}, 1),
		wantC:    make(chan struct{}, 1),
		script:   redis.NewScript(0, applyScript),
		copy:     redis.NewScript(0, copyScript),
		position: redis.NewScript(0, positionScript),
	}
}

// Name returns the slave's name.
func (a *Applier) Name() string { return a.ep.Name }

// Addr returns the slave's address.
func (a *Applier) Addr() string { return a.ep.Addr }

// State returns the slave's state.
func (a *Applier) State() State { return State(a.state.Load()) }

// Applied returns the sequence number of the last message applied to the slave.
// On a follower it is what the slave last showed (see Reached).
func (a *Applier) Applied() int64 { return a.applied.Load() }

// Reached reports whether the slave is known to have applied message seq. On a
// follower, a call that finds it short asks the applier's goroutine to read the
// slave's position again (lease.go: at most every followEvery, for every call
// that asked meanwhile), so followers read positions only when reads need them.
func (a *Applier) Reached(seq int64) bool {
	if a.applied.Load() >= seq {
		return true
	}
	if !a.leader.Load() {
		casMax(&a.asked, seq, func(cur int64) bool { return cur >= seq })
		a.askedAt.Store(time.Now().UnixNano())
		a.wantRefresh()
	}
	return false
}

// wantRefresh asks the run goroutine to read the slave's position (refresh).
func (a *Applier) wantRefresh() {
	if !a.want.Load() && a.want.CompareAndSwap(false, true) {
		select {
		case a.wantC <- struct{}{}:
		default:
		}
	}
}

// Epoch returns the epoch of the slave's data.
func (a *Applier) Epoch() string {
	if e := a.epoch.Load(); e != nil {
		return *e
	}
	return ""
}

func (a *Applier) setEpoch(e string) { a.epoch.Store(&e) }

// LagMessages returns how many known messages the slave has not applied yet.
func (a *Applier) LagMessages() int64 {
	if d := a.r.Latest() - a.applied.Load(); d > 0 {
		return d
	}
	return 0
}

// LagMs returns the age of the last applied message when it was applied, or 0 when
// the slave is up to date.
func (a *Applier) LagMs() int64 {
	if a.LagMessages() == 0 {
		return 0
	}
	return a.lagMs.Load()
}

// ResyncsFor counts the full resyncs done for one reason.
func (a *Applier) ResyncsFor(r ResyncReason) int64 { return a.byReason[r].Load() }

// Applies counts the apply transactions (or script calls) that changed the slave's position.
func (a *Applier) Applies() int64 { return a.applies.Load() }

// Resyncs and CatchUps count full resyncs and backlog catch-ups.
func (a *Applier) Resyncs() int64  { return a.resyncs.Load() }
func (a *Applier) CatchUps() int64 { return a.catchups.Load() }

// offer queues m without blocking; a full queue is noted and recovered from the backlog.
func (a *Applier) offer(m *Message) {
	select {
	case a.queue <- m:
	default:
		if !a.overflow.Swap(true) {
			a.log.Warn().Int("queue", cap(a.queue)).Msg("applier queue full; the slave will catch up from the backlog")
		}
		a.kick()
	}
}

// kick asks the applier to compare its position with the master's.
func (a *Applier) kick() {
	select {
	case a.kickC <- struct{}{}:
	default:
	}
}

func (a *Applier) setState(s State, reason string) {
	old := State(a.state.Swap(int32(s)))
	if old != s {
		a.r.moved.raise()
		a.log.Info().Str("from", old.String()).Str("to", s.String()).Str("reason", reason).Int64("applied", a.applied.Load()).Msg("slave state changed")
	}
}

func (a *Applier) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		err := a.session(ctx, &backoff)
		a.closeConns()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errMasterSwitched) {
			a.log.Info().Str("master", a.r.Master().Addr).Msg("master switched; checking the slave against the new one")
			backoff = minBackoff
			continue
		}
		_, threshold := a.r.health()
		switch {
		case a.State() == StateOnline && a.slaveAlive(ctx):
			// The master, not the slave, failed: the slave keeps a consistent
			// (if aging) copy and keeps serving reads until the master is back.
			a.log.Warn().Err(err).Msg("master unreachable; the slave keeps serving reads")
		case a.State() == StateOnline && a.failures+1 < threshold:
			a.failures++
			a.log.Warn().Err(err).Int("failures", a.failures).Int("threshold", threshold).Msg("slave check failed")
		default:
			a.failures = 0
			a.setState(StateDown, err.Error())
		}
		if !SleepCtx(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

// slaveAlive reports whether the slave answers a PING on a new connection.
func (a *Applier) slaveAlive(ctx context.Context) bool {
	c, err := a.r.dial(ctx, a.ep, a.r.cfg.Timeout)
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Do("PING")
	return err == nil
}

func (a *Applier) closeConns() {
	if a.slave != nil {
		a.slave.Close()
		a.slave, a.sc = nil, nil
	}
	if a.master != nil {
		a.master.Close()
		a.master = nil
	}
}

func (a *Applier) session(ctx context.Context, backoff *time.Duration) error {
	g, sctx, leave := a.r.join(ctx)
	defer leave()
	a.gen = g.id
	err := a.serve(sctx, g.ep, backoff)
	if ctx.Err() == nil && sctx.Err() != nil {
		return errMasterSwitched
	}
	return err
}

func (a *Applier) serve(ctx context.Context, master Endpoint, backoff *time.Duration) error {
	var err error
	if a.slave, a.sc, err = a.r.dialSlave(ctx, a.ep, a.r.cfg.Timeout); err != nil {
		return err
	}
	if a.master, err = a.r.dial(ctx, master, a.r.cfg.Timeout); err != nil {
		return err
	}
	if err := a.check(ctx); err != nil {
		return err
	}
	a.failures = 0
	*backoff = minBackoff
	interval, _ := a.r.health()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	batch := make([]*Message, 0, 256)
	for {
		select {
		case <-ctx.Done():
			a.releaseLease()
			return nil
		case m := <-a.queue:
			batch = append(batch[:0], m)
			for len(batch) < cap(batch) {
				select {
				case m := <-a.queue:
					batch = append(batch, m)
					continue
				default:
				}
				break
			}
			if err := a.take(ctx, batch); err != nil {
				return err
			}
			clear(batch)
		case <-a.wantC:
			if err := a.refresh(ctx); err != nil {
				return err
			}
		case <-a.kickC:
			if d, _ := a.r.health(); d != interval {
				interval = d
				tick.Reset(d)
			}
			if err := a.check(ctx); err != nil {
				return err
			}
		case <-tick.C:
			if _, err := a.slave.Do("PING"); err != nil {
				return err
			}
			if err := a.check(ctx); err != nil {
				return err
			}
		}
	}
}

// take handles a batch of live messages: the lease holder applies them; a
// follower (it lost the lease since they were queued) drops them.
func (a *Applier) take(ctx context.Context, msgs []*Message) error {
	if !a.Leader() {
		return nil
	}
	return a.settle(ctx, a.applyLive(ctx, msgs))
}

// settle answers errGap (another proxy's applier moved the slave, or locked it for
// a resync) by reading both positions again; other errors end the session.
func (a *Applier) settle(ctx context.Context, err error) error {
	for i := 0; i < 3 && errors.Is(err, errGap); i++ {
		err = a.sync(ctx)
	}
	return err
}

// applyLive applies messages received from pub/sub, filling gaps from the backlog.
func (a *Applier) applyLive(ctx context.Context, msgs []*Message) error {
	epoch := a.Epoch()
	run := msgs[:0:0]
	for _, m := range msgs {
		if m.gen != a.gen {
			continue // from a master replaced since: what counts is in the new one
		}
		if m.Epoch != epoch {
			// The master's data set changed: find out how, from the master itself.
			return a.sync(ctx)
		}
		next := a.applied.Load() + 1
		if len(run) > 0 {
			next = run[len(run)-1].Seq + 1
		}
		switch {
		case m.Seq < next:
			continue // already applied (by us, or by another proxy)
		case m.Seq > next:
			if err := a.applyRun(run); err != nil {
				return err
			}
			run = run[:0]
			if err := a.catchUp(ctx, m.Seq-1); err != nil {
				return err
			}
			if m.Seq <= a.applied.Load() {
				continue
			}
		}
		run = append(run, m)
	}
	if err := a.applyRun(run); err != nil {
		return err
	}
	if a.overflow.Swap(false) {
		return a.sync(ctx)
	}
	return nil
}

// masterPosition returns the master's epoch and last sequence number, giving the
// master an epoch if it has none (a new or emptied data set), after restoring
// metadata an eviction removed (positionScript).
func (a *Applier) masterPosition() (string, int64, error) {
	vals, err := redis.Values(a.position.Do(a.master, a.r.EpochCandidate(), time.Now().UnixMilli(),
		a.r.cfg.BacklogLen, a.r.cfg.Channel))
	if err != nil {
		return "", 0, err
	}
	var epoch string
	var seq int64
	if _, err := redis.Scan(vals, &epoch, &seq); err != nil {
		return "", 0, err
	}
	a.r.observe(seq)
	return epoch, seq, nil
}

// slavePos is a slave's replication position as read from the slave itself.
type slavePos struct {
	raw   string // syncproxy:applied as stored ("" when absent)
	epoch string
	seq   int64
	ok    bool   // false when the slave has none (new, emptied, restarted without persistence)
	lock  string // syncproxy:resync: the token of the applier resyncing it, if any
}

// lockedOut reports whether another applier (another proxy's) is resyncing the
// slave, and takes the slave out of the read set until it is done (the next check
// sees the lock gone).
func (a *Applier) lockedOut(sp slavePos) bool {
	if sp.lock == "" || (a.rs != nil && sp.lock == a.rs.token) {
		return false
	}
	a.setState(StateResyncing, "resynced by another applier")
	return true
}

// slavePosition reads the slave's applied position and resync lock in one step.
func (a *Applier) slavePosition() (slavePos, error) {
	vals, err := redis.Strings(a.slave.Do("MGET", KeyApplied, KeyResync))
	if err != nil {
		return slavePos{}, err
	}
	p := slavePos{raw: vals[0], lock: vals[1]}
	i := strings.LastIndexByte(p.raw, ':')
	if i <= 0 {
		return p, nil
	}
	if p.seq, err = strconv.ParseInt(p.raw[i+1:], 10, 64); err != nil {
		return p, nil
	}
	p.epoch, p.ok = p.raw[:i], true
	return p, nil
}

// sync brings the slave to the master's current position: by catching up from the
// backlog when it can, by a full resync otherwise.
//
// The slave's position is read before the master's: sequence numbers only grow,
// so a slave that another proxy's applier moves meanwhile is still found at or
// behind the master, never "ahead" of it. A full resync re-checks, atomically on
// the slave, that the position it decided on has not changed (resync.go).
func (a *Applier) sync(ctx context.Context) error {
	sp, err := a.slavePosition()
	if err != nil || a.lockedOut(sp) {
		return err
	}
	mEpoch, mSeq, err := a.masterPosition()
	if err != nil {
		return err
	}
	switch {
	case !sp.ok:
		return a.fullResync(ctx, sp, ResyncNoPosition)
	case a.unverified.Load():
		return a.fullResync(ctx, sp, ResyncUnverified)
	case sp.epoch != mEpoch:
		if crossed, err := a.bridge(ctx, sp, mEpoch); crossed || err != nil {
			return err // crossed: the next sync catches up in the new epoch
		}
		return a.masterReset(ctx, sp, ResyncOtherEpoch, mEpoch)
	case sp.seq > mSeq:
		return a.masterReset(ctx, sp, ResyncAhead, mEpoch)
	}
	a.hold.held.Store(false)
	a.setEpoch(sp.epoch)
	a.setApplied(sp.seq)
	if sp.seq < mSeq {
		if err := a.catchUp(ctx, mSeq); err == errNotCovered {
			return a.fullResync(ctx, sp, ResyncBacklogGone)
		} else if err != nil {
			return err
		}
	}
	a.setState(StateOnline, "caught up")
	return nil
}

var (
	errNotCovered = errors.New("replicate: backlog does not cover the slave's position")
	errGap        = errors.New("replicate: slave position moved under the applier")
)

// catchUpOffline is the gap beyond which a slave leaves the read set while it
// catches up.
const catchUpOffline = 1000

// catchUp applies the backlog from the slave's position up to target.
func (a *Applier) catchUp(ctx context.Context, target int64) error {
	if a.applied.Load() >= target {
		return nil
	}
	a.catchups.Add(1)
	// A long catch-up takes the slave out of the read set meanwhile.
	if a.State() == StateOnline && target-a.applied.Load() > catchUpOffline {
		a.setState(StateCatchingUp, "far behind")
		defer func() {
			if a.State() == StateCatchingUp && a.applied.Load() >= target {
				a.setState(StateOnline, "caught up")
			}
		}()
	}
	epoch := a.Epoch()
	for a.applied.Load() < target {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		msgs, err := a.nextRun(ctx, epoch, a.applied.Load()+1, target)
		if err != nil {
			return err
		}
		if a.rs != nil {
			if msgs, err = a.filter(msgs); err != nil {
				return err
			}
		}
		if err := a.applyRun(msgs); err != nil {
			return err
		}
	}
	return nil
}

// nextRun returns the next messages of epoch to apply, from from on: from the
// backlog, and from the recent messages where the backlog lost them (evicted,
// or the master went on in a new epoch: bridge.go).
func (a *Applier) nextRun(ctx context.Context, epoch string, from, target int64) ([]*Message, error) {
	vals, err := redis.Values(a.master.Do("XRANGE", KeyBacklog, strconv.FormatInt(from, 10)+"-0", "+", "COUNT", 256))
	if err != nil {
		return nil, err
	}
	var msgs []*Message
	for i, v := range vals {
		m, id, err := decodeBacklogEntry(v)
		if err != nil {
			return nil, err
		}
		switch {
		case m.Epoch != epoch && i > 0:
			return msgs, nil // the rest next round
		case m.Epoch != epoch:
			vals = nil // what the slave lacks of its own epoch, the reader had read
		case i == 0 && id != from:
			held, err := a.lostRun(ctx, epoch, from, m)
			if err != nil || held == nil {
				return nil, err
			}
			msgs = append(msgs, held...)
			continue
		default:
			msgs = append(msgs, m)
			continue
		}
		break
	}
	if len(vals) == 0 {
		// The backlog ends before target: evicted, and not written since.
		if msgs = a.r.bridges.held(ctx, a.r.recent, epoch, from, target); msgs == nil {
			return nil, errNotCovered
		}
	}
	return msgs, nil
}

// lostRun returns the messages from from to m (the backlog's first entry, past
// from): what the backlog lost, from the recent messages, then m. After a
// FLUSHALL, which also emptied the backlog, it applies m alone (what the missing
// messages did is wiped by it) and returns nil.
func (a *Applier) lostRun(ctx context.Context, epoch string, from int64, m *Message) ([]*Message, error) {
	held := a.r.recent.span(epoch, from, m.Seq-1)
	flushed := a.rs == nil && flushesAll(m)
	if held == nil && !flushed {
		// The backlog reader may be taking them from the channel.
		held = a.r.bridges.held(ctx, a.r.recent, epoch, from, m.Seq-1)
	}
	if held != nil {
		return append(held, m), nil
	}
	if !flushed {
		return nil, errNotCovered
	}
	if err := a.applyTx([]*Message{m}); err != nil {
		return nil, err
	}
	a.log.Info().Int64("from", from).Int64("flushall_seq", m.Seq).Msg("catch-up skipped the messages a FLUSHALL wiped")
	return nil, nil
}

// flushesAll reports whether one of m's effects is a FLUSHALL: the slave's state
// after m does not depend on the messages before it.
func flushesAll(m *Message) bool {
	for _, e := range m.Effects {
		if len(e.Args) > 0 && strings.EqualFold(string(e.Args[0]), "flushall") {
			return true
		}
	}
	return false
}

func decodeBacklogEntry(v interface{}) (*Message, int64, error) {
	entry, err := redis.Values(v, nil)
	if err != nil || len(entry) != 2 {
		return nil, 0, ErrMessageFormat
	}
	idb, _ := entry[0].([]byte)
	id, _, _ := strings.Cut(string(idb), "-")
	seq, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil, 0, ErrMessageFormat
	}
	fields, err := redis.ByteSlices(entry[1], nil)
	if err != nil || len(fields) != 2 {
		return nil, 0, ErrMessageFormat
	}
	m, err := DecodeMessage(fields[1])
	if err != nil {
		return nil, 0, err
	}
	if m.Seq != seq {
		return nil, 0, ErrMessageFormat
	}
	return m, seq, nil
}

// Bounds of one apply transaction: what one round trip to the slave carries.
const (
	maxApplyBytes = 8 << 20
	maxApplyMsgs  = 1024
)

// applyRun applies consecutive messages starting at Applied()+1, in
// transactions bounded in size, each atomic with the update of the slave's
// position (applyTx).
func (a *Applier) applyRun(msgs []*Message) error {
	for {
		// Skip what is already applied (possibly by another proxy's applier).
		for len(msgs) > 0 && msgs[0].Seq <= a.applied.Load() {
			msgs = msgs[1:]
		}
		if len(msgs) == 0 {
			return nil
		}
		if msgs[0].Seq != a.applied.Load()+1 {
			return errGap
		}
		n, size := 0, 0
		for n < len(msgs) && n < maxApplyMsgs && (n == 0 || size < maxApplyBytes) {
			for _, e := range msgs[n].Effects {
				for _, arg := range e.Args {
					size += len(arg)
				}
			}
			n++
		}
		if err := a.applyTx(msgs[:n]); err != nil {
			return err
		}
	}
}

// applyScripted applies msgs in one call of the apply script, which checks the
// slave's position and applies what it can of each effect: the way for a run
// the slave refused as a transaction (applyTx).
func (a *Applier) applyScripted(msgs []*Message) error {
	from := a.applied.Load()
	last := msgs[len(msgs)-1]
	neff := 0
	nargs := 5
	for _, m := range msgs {
		neff += len(m.Effects)
		for _, e := range m.Effects {
			nargs += 2 + len(e.Args)
		}
	}
	args := make([]interface{}, 0, nargs)
	token := ""
	if a.rs != nil {
		token = a.rs.token
	}
	args = append(args, last.Epoch, from, last.Seq, neff, token)
	for _, m := range msgs {
		for _, e := range m.Effects {
			args = append(args, e.DB, len(e.Args))
			for _, arg := range e.Args {
				args = append(args, arg)
			}
		}
	}
	failed, err := redis.Int(a.script.Do(a.slave, args...))
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) && strings.HasPrefix(string(re), "SYNCGAP") {
			return a.moved(last.Epoch, from)
		}
		return err
	}
	a.appliedRun(last, failed)
	return nil
}

// moved answers a run refused because the slave was not at from in epoch:
// another applier (another proxy's) moved it on, and this one continues from
// there; or it is elsewhere (errGap).
func (a *Applier) moved(epoch string, from int64) error {
	sp, err := a.slavePosition()
	if err != nil {
		return err
	}
	if sp.ok && sp.lock == "" && sp.epoch == epoch && sp.seq > from {
		a.setApplied(sp.seq)
		return nil
	}
	return errGap
}

// appliedRun records a run applied up to last, failed of its effects refused by
// the slave.
func (a *Applier) appliedRun(last *Message, failed int) {
	if failed > 0 {
		a.log.Error().Int("failed", failed).Int64("seq", last.Seq).Msg("effects failed on the slave: it may have diverged")
	}
	a.setApplied(last.Seq)
	a.applies.Add(1)
	a.lagMs.Store(time.Now().UnixMilli() - last.TimeMs)
}

// Suspect takes an online slave out of the read set until the applier checked its
// position again: its read connection was re-established, and the server may
// have restarted empty.
func (a *Applier) Suspect() {
	if a.state.CompareAndSwap(int32(StateOnline), int32(StateCatchingUp)) {
		a.log.Info().Str("from", "online").Str("to", "catching-up").Str("reason", "read connection re-established; checking the slave").Msg("slave state changed")
	}
	a.kick()
}

// Online reports whether the slave is caught up and applying live messages, and
// does not evict keys of its own: whether it may serve reads.
func (a *Applier) Online() bool { return a.State() == StateOnline && !a.Evicting() }
