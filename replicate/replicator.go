package replicate

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
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
	// OnEffect, when set, is called by the subscriber loop (one goroutine) for
	// every effect of every live message, before the appliers see it: the proxy
	// wakes the clients blocked on its keys.
	OnEffect func(db int, args [][]byte)
	Log      zerolog.Logger
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

	// latest is the highest sequence number seen from the master (for lag).
	latest     atomic.Int64
	subscribed atomic.Bool // the subscriber loop is subscribed
	// pollInterval and failThreshold: cfg's PollInterval and FailThreshold, as
	// SetHealth last changed them.
	pollInterval  atomic.Int64
	failThreshold atomic.Int64

	ctx    context.Context // of the running loops, nil before Start
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	closed bool
}

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
	r := &Replicator{cfg: cfg, epoch: newEpoch()}
	r.pollInterval.Store(int64(cfg.PollInterval))
	r.failThreshold.Store(int64(cfg.FailThreshold))
	var appliers []*Applier
	for _, s := range cfg.Slaves {
		appliers = append(appliers, newApplier(r, s))
	}
	r.appliers.Store(&appliers)
	r.sub = &subscriber{r: r, log: cfg.Log.With().Str("component", "subscriber").Logger()}
	return r
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

// Subscribed reports whether the subscriber loop is subscribed to the sync
// channel on the master.
func (r *Replicator) Subscribed() bool { return r.subscribed.Load() }

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
func (r *Replicator) dial(ctx context.Context, e Endpoint, readTimeout time.Duration) (redis.Conn, error) {
	opts := []redis.DialOption{
		redis.DialConnectTimeout(r.cfg.DialTimeout),
		redis.DialReadTimeout(readTimeout),
		redis.DialWriteTimeout(r.cfg.WriteTimeout),
	}
	if e.Password != "" {
		opts = append(opts, redis.DialPassword(e.Password))
		if e.Username != "" {
			opts = append(opts, redis.DialUsername(e.Username))
		}
	}
	if e.TLS != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(e.TLS))
	}
	return redis.DialContext(ctx, "tcp", e.Addr, opts...)
}

// sleepCtx waits d or until ctx ends; it reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
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
