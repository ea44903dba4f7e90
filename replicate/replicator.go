package replicate

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/dial"
)

// Endpoint is one backend server as the replicator reaches it.
type Endpoint struct {
	Name     string
	Addr     string
	Username string
	Password string
	TLS      *tls.Config
}

// Config configures a Replicator.
type Config struct {
	Master  Endpoint
	Slaves  []Endpoint
	Channel string // pub/sub channel of the sync messages
	// BacklogLen is the approximate number of messages kept in the master's backlog.
	BacklogLen int
	// QueueLen is the number of messages buffered in memory per slave; beyond it the
	// slave catches up from the backlog instead.
	QueueLen int
	// RecentLen is how many of the last messages read from the backlog are kept
	// in memory for catch-ups when the backlog lost them (an eviction); 0 means
	// QueueLen, and at least 4096.
	RecentLen int
	// Timeout bounds every backend round trip.
	Timeout time.Duration
	// DialTimeout and WriteTimeout bound dials and writes; 0: Timeout.
	DialTimeout, WriteTimeout time.Duration
	// PollInterval is how often each applier compares its position with the master's,
	// so that a lost message is noticed even when no more writes come.
	PollInterval time.Duration
	// FailThreshold is how many consecutive failed checks take an online slave
	// out of the read set (its connection dropping does so at once).
	FailThreshold int
	// Keys appends to dst the indexes of the keys in a command's arguments
	// (args[0] is the name); a full resync needs it to copy exactly while writes
	// go on. The proxy passes its command table's.
	Keys func(args [][]byte, dst []int) []int
	// OnEffect, when set, is called by the subscriber's backlog reader (one
	// goroutine at a time) for every effect of every live message read from the
	// backlog, before the appliers see it: the proxy wakes the clients blocked on
	// its keys.
	OnEffect func(db int, args [][]byte)
	// OnMessage, when set, is called by the same goroutine, before OnEffect, for
	// every message read from the backlog, in stream order. continuous is false
	// when messages before m may have been missed (the first message after the
	// reader started, a jump in numbers, a new epoch): a consumer that derives
	// state from the stream (key invalidations) drops what it derived before.
	OnMessage func(m *Message, continuous bool)
	// OnStreamStart, when set, is called by the same goroutine when the reader
	// starts following the stream after the master's position (epoch, seq): the
	// messages after it are given in order, the first one continuous.
	OnStreamStart func(epoch string, seq int64)
	// OnStreamLost, when set, is called when the reader stops following the
	// stream (the subscription ended, or no hook wants messages any more): until
	// the next OnMessage, writes are not seen.
	OnStreamLost func()
	// WantEffects, when set, says whether OnEffect and OnMessage want the
	// messages now (the proxy: a client is blocked, or tracks keys): a proxy that
	// applies to no slave reads the backlog, and subscribes, only then; call
	// WakeStream when it turns true. Unset, they always get them.
	WantEffects func() bool
	// OnMasterReset is what a slave holding data the master lost gets:
	// OnMasterResetResync (the default) or OnMasterResetHold (see reset.go).
	OnMasterReset string
	Log           zerolog.Logger
}

// ErrClosed is returned by AddSlave once the Replicator is closed.
var ErrClosed = errors.New("replicate: replicator closed")

// Replicator owns the subscriber loop and one applier per slave.
type Replicator struct {
	cfg   Config
	epoch string // candidate epoch, used if the master has none yet
	// appliers is an immutable snapshot, replaced whole (under mu) by AddSlave
	// and RemoveSlave: the subscriber reads it without locking.
	appliers atomic.Pointer[[]*Applier]
	sub      *subscriber
	// recent holds the last messages read from the backlog (recent.go).
	recent *recentMessages
	evict  *evictor
	// bridges: epoch changes and metadata evictions seen (bridge.go).
	bridges bridgeState
	// gapsFilled counts messages taken from the channel (hints.go).
	gapsFilled atomic.Int64
	// evictions counts the evicted keys this proxy deleted on the slaves.
	evictions atomic.Int64

	// latest is the highest sequence number seen from the master (for lag).
	latest     atomic.Int64
	subscribed atomic.Bool // the subscriber loop is subscribed
	resets     resetState  // master resets seen (reset.go)
	// pollInterval and failThreshold: cfg's PollInterval and FailThreshold, as
	// SetHealth last changed them.
	pollInterval  atomic.Int64
	failThreshold atomic.Int64

	ctx    context.Context // of the running loops, nil before Start
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool

	gmu sync.Mutex
	gen *masterGen // the current master; replaced by SetMaster

	moved   signal   // raised when an applier's position or state changes (Moved)
	refused sync.Map // backend address → the refusal last logged (dial)
}

// masterGen is one master the replicator follows; SetMaster starts a new one.
type masterGen struct {
	ep     Endpoint
	id     uint64
	ctx    context.Context // ended when the master is replaced
	cancel context.CancelFunc
	wg     sync.WaitGroup // sessions (subscriber, appliers) that use this master
}

func newMasterGen(ep Endpoint, id uint64) *masterGen {
	g := &masterGen{ep: ep, id: id}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	return g
}

// errMasterSwitched ends a session whose master was replaced (SetMaster).
var errMasterSwitched = errors.New("replicate: the master was switched")

// New returns a Replicator; Start runs it.
func New(cfg Config) *Replicator {
	if cfg.Channel == "" {
		cfg.Channel = "syncproxy:sync"
	}
	if cfg.BacklogLen <= 0 {
		cfg.BacklogLen = 100000
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 10000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = cfg.Timeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = cfg.Timeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.FailThreshold <= 0 {
		cfg.FailThreshold = 1
	}
	r := &Replicator{cfg: cfg, epoch: newEpoch(), gen: newMasterGen(cfg.Master, 1), recent: newRecentMessages(recentLen(cfg))}
	r.bridges.fillWait = cfg.Timeout + bridgeWait
	r.pollInterval.Store(int64(cfg.PollInterval))
	r.failThreshold.Store(int64(cfg.FailThreshold))
	var appliers []*Applier
	for _, s := range cfg.Slaves {
		appliers = append(appliers, newApplier(r, s))
	}
	r.appliers.Store(&appliers)
	r.sub = &subscriber{r: r, log: cfg.Log.With().Str("component", "subscriber").Logger(), need: make(chan struct{}, 1)}
	r.evict = &evictor{r: r, log: cfg.Log.With().Str("component", "evictions").Logger(), fencer: newFencer()}
	return r
}

func recentLen(cfg Config) int {
	if cfg.RecentLen > 0 {
		return cfg.RecentLen
	}
	return max(cfg.QueueLen, minRecent)
}

func newEpoch() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; a fixed epoch still works
		// (it only weakens the detection of a master that lost its data).
		return "0000000000000000000000000000000000000000"
	}
	return hex.EncodeToString(b[:])
}

// EpochCandidate is the epoch the master adopts if it has none (first write ever,
// or after it lost its data).
func (r *Replicator) EpochCandidate() string { return r.epoch }

// Master returns the master the replicator follows.
func (r *Replicator) Master() Endpoint {
	r.gmu.Lock()
	defer r.gmu.Unlock()
	return r.gen.ep
}

// join registers a session on the current master: sctx ends with ctx or when the
// master is replaced; leave must be called when the session ends.
func (r *Replicator) join(ctx context.Context) (g *masterGen, sctx context.Context, leave func()) {
	r.gmu.Lock()
	g = r.gen
	g.wg.Add(1)
	r.gmu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(g.ctx, cancel)
	return g, sctx, func() {
		stop()
		cancel()
		g.wg.Done()
	}
}

// Position is a master's replication position.
type Position struct {
	Epoch string // "" when the master has none (new or emptied data set)
	Seq   int64
}

// ReadPosition reads the replication position of the server at e.
func (r *Replicator) ReadPosition(ctx context.Context, e Endpoint) (Position, error) {
	c, err := r.dial(ctx, e, r.cfg.Timeout)
	if err != nil {
		return Position{}, err
	}
	defer c.Close()
	return readPosition(c)
}

func readPosition(c redis.Conn) (Position, error) {
	vals, err := redis.Values(c.Do("MGET", KeyEpoch, KeySeq))
	if err != nil {
		return Position{}, err
	}
	var p Position
	if vals[0] != nil {
		p.Epoch, _ = redis.String(vals[0], nil)
	}
	if vals[1] != nil {
		if p.Seq, err = redis.Int64(vals[1], nil); err != nil {
			return Position{}, err
		}
	}
	return p, nil
}

// renewEpoch replaces the epoch only if it is still old (another proxy may have
// renewed it already).
var renewEpoch = redis.NewScript(1, `if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2]) return 1
end
return 0`)

// SetMaster moves replication to a new master (Sentinel promoted a replica): the
// subscriber and the appliers end their sessions on the old master — SetMaster
// waits for them, within a bound — and start new ones on ep; messages still
// queued from the old master are dropped. pos is ep's position, read (by
// ReadPosition) before any write of this proxy reached ep; nil if it could not be.
//
// The new master normally continues the old one's data set (same epoch, same
// sequence numbers, same backlog), and slaves just catch up. But asynchronous
// replication may have lost the old master's last messages, which slaves may
// already hold: the new master would then give their sequence numbers to other
// writes. When ep is behind what the slaves applied (or what the old master was
// seen to publish), SetMaster gives ep a new epoch, so that every slave resyncs in
// full instead; it reports whether it did.
func (r *Replicator) SetMaster(ep Endpoint, pos *Position) (renewed bool, err error) {
	r.gmu.Lock()
	old := r.gen
	r.gen = newMasterGen(ep, old.id+1)
	r.gmu.Unlock()
	old.cancel()
	ended := make(chan struct{})
	go func() {
		old.wg.Wait()
		close(ended)
	}()
	t := time.NewTimer(2*r.cfg.Timeout + r.cfg.DialTimeout)
	defer t.Stop()
	stuck := false
	select {
	case <-ended:
	case <-t.C:
		// A session stuck on a server: it ends at its own timeout (the waiter
		// above ends with it). Assume the worst about what it applied.
		stuck = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DialTimeout+r.cfg.Timeout)
	defer cancel()
	if pos == nil {
		p, err := r.ReadPosition(ctx, ep)
		if err != nil {
			return false, err
		}
		pos = &p
	}
	high, shared := r.latest.Load(), false
	for _, a := range r.Appliers() {
		if a.Epoch() == pos.Epoch {
			shared = true
			if v := a.Applied(); v > high {
				high = v
			}
		}
	}
	r.latest.Store(pos.Seq)
	if pos.Epoch == "" || !shared || (pos.Seq >= high && !stuck) {
		return false, nil
	}
	c, err := r.dial(ctx, ep, r.cfg.Timeout)
	if err != nil {
		return false, err
	}
	defer c.Close()
	epoch := newEpoch() + "-" + strconv.FormatInt(time.Now().UnixMilli(), 10)
	n, err := redis.Int(renewEpoch.Do(c, KeyEpoch, pos.Epoch, epoch))
	if err != nil {
		return false, err
	}
	r.cfg.Log.Warn().Int64("new_master_seq", pos.Seq).Int64("seen_seq", high).Bool("stuck_session", stuck).
		Str("epoch", epoch).Bool("renewed_by_us", n == 1).
		Msg("the new master lacks messages of the old one that slaves may hold: new epoch, every slave resyncs in full")
	return n == 1, nil
}

// Channel returns the sync channel.
func (r *Replicator) Channel() string { return r.cfg.Channel }

// BacklogLen returns the configured backlog length.
func (r *Replicator) BacklogLen() int { return r.cfg.BacklogLen }

// Appliers returns one applier per slave, in configuration order: a snapshot
// that the caller must not modify.
func (r *Replicator) Appliers() []*Applier { return *r.appliers.Load() }

// AddSlave adds a slave and, once Start ran, starts its applier: a slave with
// no replication position is resynced in full, then follows the master.
func (r *Replicator) AddSlave(ep Endpoint) (*Applier, error) {
	a := newApplier(r, ep)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	list := append(slices.Clone(r.Appliers()), a)
	r.appliers.Store(&list)
	if r.ctx != nil {
		r.startApplier(a)
	}
	return a, nil
}

// RemoveSlave stops a's applier and waits for it to end (its round trip in
// progress ends within the timeout). The slave's data stays as it is.
func (r *Replicator) RemoveSlave(a *Applier) {
	r.mu.Lock()
	list := slices.DeleteFunc(slices.Clone(r.Appliers()), func(x *Applier) bool { return x == a })
	r.appliers.Store(&list)
	stop, done := a.stop, a.done
	r.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// SetHealth changes how often appliers check their slave and how many failed
// checks take a slave out of the read set (values below 1 are ignored). The
// subscriber's ping period follows at its next connection.
func (r *Replicator) SetHealth(interval time.Duration, failures int) {
	if interval > 0 {
		r.pollInterval.Store(int64(interval))
	}
	if failures > 0 {
		r.failThreshold.Store(int64(failures))
	}
	r.kickAll()
}

func (r *Replicator) health() (interval time.Duration, failures int) {
	return time.Duration(r.pollInterval.Load()), int(r.failThreshold.Load())
}

// Latest returns the highest sequence number the replicator has seen.
func (r *Replicator) Latest() int64 { return r.latest.Load() }

// Subscribed reports whether the subscriber loop follows the sync channel as
// this proxy needs: subscribed on the master, or on standby because nothing
// here needs the stream (no slave lease held, no client waiting on it).
func (r *Replicator) Subscribed() bool { return r.subscribed.Load() || r.sub.standby.Load() }

// WakeStream tells a subscriber on standby that a client needs the stream now
// (Config.WantEffects turned true): it subscribes at once, not at its next look.
func (r *Replicator) WakeStream() { r.sub.wake() }

// leads reports whether an applier of this proxy holds its slave's lease.
func (r *Replicator) leads() bool {
	for _, a := range r.Appliers() {
		if a.Leader() {
			return true
		}
	}
	return false
}

// wantsEffects reports whether the OnEffect or OnMessage hook wants the
// messages now.
func (r *Replicator) wantsEffects() bool {
	cfg := &r.cfg
	return (cfg.OnEffect != nil || cfg.OnMessage != nil) && (cfg.WantEffects == nil || cfg.WantEffects())
}

// streamNeeded reports whether this proxy needs the sync stream: it applies to
// a slave, or a hook wants the messages.
func (r *Replicator) streamNeeded() bool { return r.leads() || r.wantsEffects() }

func (r *Replicator) observe(seq int64) {
	for {
		cur := r.latest.Load()
		if seq <= cur || r.latest.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// Start runs the subscriber loop and the appliers until Close.
func (r *Replicator) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.cancel != nil {
		cancel()
		return
	}
	r.ctx, r.cancel = ctx, cancel
	r.goFunc(func() { r.sub.run(ctx) })
	r.goFunc(func() { r.evict.run(ctx) })
	for _, a := range r.Appliers() {
		r.startApplier(a)
	}
}

// startApplier runs a until RemoveSlave or Close; r.mu is held.
func (r *Replicator) startApplier(a *Applier) {
	ctx, cancel := context.WithCancel(r.ctx)
	a.stop, a.done = cancel, make(chan struct{})
	r.goFunc(func() {
		defer close(a.done)
		defer cancel()
		a.run(ctx)
	})
}

func (r *Replicator) goFunc(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// Close stops every loop and waits for them; it is safe to call twice.
func (r *Replicator) Close() {
	r.mu.Lock()
	r.closed = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
}

// dial opens a redigo connection to e with the replicator's timeouts.
// A backend's refusal (TLS, AUTH: a configuration problem, not an outage) is
// logged at error level, once until the endpoint accepts a connection again.
func (r *Replicator) dial(ctx context.Context, e Endpoint, readTimeout time.Duration) (redis.Conn, error) {
	t := e.DialTarget(r.cfg.DialTimeout)
	t.BufferSize = streamBufferSize
	c, err := dial.Redigo(ctx, t, readTimeout, r.cfg.WriteTimeout)
	r.noteDial(ctx, e, err)
	return c, err
}

// streamBufferSize is the read buffer of the replicator's connections: a
// sync message (a group of up to 512 writes: tens of KB) or a run's replies
// is read in one system call.
const streamBufferSize = 64 << 10

// noteDial logs a backend's refusal of a connection, once until it accepts one.
func (r *Replicator) noteDial(ctx context.Context, e Endpoint, err error) {
	switch {
	case err == nil:
		r.refused.Delete(e.Addr)
	case dial.Refused(err) && ctx.Err() == nil:
		if prev, loaded := r.refused.Swap(e.Addr, err.Error()); !loaded || prev != err.Error() {
			r.cfg.Log.Error().Err(err).Str("backend", e.Name).Str("addr", e.Addr).
				Msg("backend refused the connection; check the TLS and credential settings")
		}
	}
}

// Dial opens a redigo connection to e as every backend connection is opened
// (see internal/dial): TCP, TLS with e's settings, AUTH with e's credentials,
// PING, within dialTimeout; read and write bound each command afterwards.
func Dial(ctx context.Context, e Endpoint, dialTimeout, read, write time.Duration) (redis.Conn, error) {
	return dial.Redigo(ctx, e.DialTarget(dialTimeout), read, write)
}

// DialTarget is e as internal/dial reaches it, with timeout for the dial and
// the handshake.
func (e Endpoint) DialTarget(timeout time.Duration) dial.Target {
	return dial.Target{Role: e.Name, Addr: e.Addr, Username: e.Username, Password: e.Password, TLS: e.TLS, Timeout: timeout}
}

// SleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func SleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Backoff bounds for reconnect loops.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

func nextBackoff(d time.Duration) time.Duration {
	d *= 2
	if d > maxBackoff {
		d = maxBackoff
	}
	return d
}
