package replicate

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
)

// Keys the master evicts (maxmemory) reach the slaves as a sequenced effect: the
// evictor subscribes to the master's "evicted" keyevent notifications and runs,
// for a batch of evicted keys, evictScript, which atomically on the master keeps
// the keys that are still absent and appends a DEL of each to a new sync message
// (sequence number, backlog, hint: as masterScript does). A key written again
// between its eviction and the script is present at that position and stays on
// the slaves. Several proxies may run it at once: a DEL of a missing key does
// nothing, so the second proxy's message only costs a sequence number.

// evictBatch bounds the keys of one evictScript call (two arguments each).
const evictBatch = 1000

// evictQueue bounds the evicted keys buffered between the subscription and the
// script; when full, the subscription waits (the master buffers for it).
const evictQueue = 8192

// evictCheckEvery is how often the evictor checks that the master still sends
// eviction notifications (another proxy may have restored its setting).
const evictCheckEvery = 5 * time.Second

// evictChannel is the keyevent channel of evictions in db. One SUBSCRIBE per DB
// rather than a pattern: a pattern would show in the clients' PUBSUB NUMPAT.
func evictChannel(db int) string { return "__keyevent@" + strconv.Itoa(db) + "__:evicted" }

// maxEvictDBs bounds the DBs whose evictions are followed.
const maxEvictDBs = 4096

// evictScript deletes on the slaves the evicted keys the master does not hold
// again. ARGV: backlog-maxlen, channel, now (unix ms), epoch-candidate, then per
// key: db, key. It returns {seq, deleted}; seq 0 when no message was written.
var evictScript = redis.NewScript(0, recoverMeta+numberMessage+encodeEffect+`
local maxlen, channel, ms, epoch_c = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local eff, cur = {}, nil
for i = 5, #ARGV - 1, 2 do
  local db, key = ARGV[i], ARGV[i + 1]
  if db ~= cur then redis.call('SELECT', db); cur = db end
  if redis.call('EXISTS', key) == 0 then eff[#eff + 1] = enc(db, {'DEL', key}) end
end
redis.call('SELECT', 0)
if #eff == 0 then return {0, 0} end
-- Metadata evicted whole: the deletes start a new epoch, which the slaves
-- cross to from the old one (bridge.go).
local seq = number_message(epoch_c, ms, #eff, table.concat(eff), maxlen, channel)
return {seq, #eff}
`)

// EvictedKey is a key the master evicted, in DB.
type EvictedKey struct {
	DB  int
	Key string
}

// ReplicateEvictions runs the conditional delete of keys on c, a connection to
// the master: each key the master does not hold is deleted on the slaves, in
// one sync message. It returns that message's sequence number (0 for none) and
// the number of keys deleted. Keys under KeyPrefix are skipped.
func (r *Replicator) ReplicateEvictions(c redis.Conn, keys []EvictedKey) (seq int64, deleted int, err error) {
	args := make([]interface{}, 0, 4+2*len(keys))
	args = append(args, r.cfg.BacklogLen, r.cfg.Channel, time.Now().UnixMilli(), r.epoch)
	for _, k := range keys {
		if strings.HasPrefix(k.Key, KeyPrefix) {
			continue
		}
		args = append(args, k.DB, k.Key)
	}
	if len(args) == 4 {
		return 0, 0, nil
	}
	vals, err := redis.Int64s(evictScript.Do(c, args...))
	if err != nil {
		return 0, 0, err
	}
	if len(vals) != 2 {
		return 0, 0, errors.New("replicate: unexpected reply from the eviction script")
	}
	if vals[1] > 0 {
		r.evictions.Add(vals[1])
		r.observe(vals[0])
	}
	return vals[0], int(vals[1]), nil
}

// EvictionsReplicated counts the evicted keys this proxy deleted on the slaves.
func (r *Replicator) EvictionsReplicated() int64 { return r.evictions.Load() }

// notifySetting is the master's notify-keyspace-events as the evictor changed it.
type notifySetting struct {
	master   Endpoint // the master it was changed on
	original string   // the operator's value
	ours     string   // the value set
}

// evictor follows the master's eviction notifications (see evictScript).
type evictor struct {
	r   *Replicator
	log zerolog.Logger
	// set is what the evictor changed, per master address, to restore on exit.
	mu        sync.Mutex
	set       map[string]notifySetting
	warnedCfg bool // CONFIG refused was logged once
	// fencer and up let the bridge wait for the notifications already sent
	// (fence): up while a subscription to every DB's channel is on.
	fencer *fencer
	up     atomic.Bool
}

// fence waits until the subscription has received every eviction notification
// the master sent before it was called: an eviction the master made before
// something the caller saw is then known (bridge.go). False when there is no
// subscription to ask, after the timeout, or when stop is closed.
func (e *evictor) fence(stop <-chan struct{}) bool {
	return e.up.Load() && e.fencer.wait(e.r.cfg.Timeout, stop)
}

func (e *evictor) run(ctx context.Context) {
	defer e.restore()
	backoff := minBackoff
	lost := false
	for ctx.Err() == nil {
		err := e.session(ctx, &backoff, lost)
		if ctx.Err() != nil {
			return
		}
		lost = true
		if errors.Is(err, errMasterSwitched) {
			backoff = minBackoff
			continue
		}
		e.log.Warn().Err(err).Dur("backoff", backoff).Msg("eviction subscription lost; reconnecting")
		if !SleepCtx(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

func (e *evictor) session(ctx context.Context, backoff *time.Duration, lost bool) error {
	g, sctx, leave := e.r.join(ctx)
	defer leave()
	err := e.subscribe(sctx, g, backoff, lost)
	if ctx.Err() == nil && sctx.Err() != nil {
		return errMasterSwitched
	}
	return err
}

func (e *evictor) subscribe(ctx context.Context, g *masterGen, backoff *time.Duration, lost bool) error {
	ping, _ := e.r.health()
	if ping < 100*time.Millisecond {
		ping = 100 * time.Millisecond
	}
	c, wc, dbs, err := e.connect(ctx, g, ping)
	if err != nil {
		return err
	}
	defer c.Close()
	defer wc.Close()
	psc := redis.PubSubConn{Conn: c}
	stop := make(chan struct{})
	queue := make(chan EvictedKey, evictQueue)
	workerDone := make(chan struct{})
	go func() {
		defer close(workerDone)
		e.work(ctx, wc, g.ep, queue, stop, ping, c)
	}()
	sweepCtx, endSweep := context.WithCancel(ctx)
	sweepDone := make(chan struct{})
	close(sweepDone) // replaced when a sweep starts
	defer func() {
		close(stop)
		c.Close()
		<-workerDone
		endSweep()
		<-sweepDone
		e.up.Store(false)
	}()
	for {
		switch m := psc.Receive().(type) {
		case redis.Message:
			db, ok := evictedDB(m.Channel)
			if !ok {
				continue
			}
			if db == 0 && strings.HasPrefix(string(m.Data), KeyPrefix) {
				e.r.bridges.metaEvicted(string(m.Data))
			}
			select {
			case queue <- EvictedKey{DB: db, Key: string(m.Data)}:
			case <-workerDone:
				return errors.New("replicate: the eviction worker stopped")
			case <-ctx.Done():
				return ctx.Err()
			}
		case redis.Subscription:
			if m.Kind == "subscribe" && m.Count == dbs {
				e.up.Store(true)
				*backoff = minBackoff
				if lost {
					e.log.Warn().Msg("eviction subscription back: evictions on the master while it was down may have been missed; sweeping the slaves for them")
					sweepDone = make(chan struct{})
					go func() {
						defer close(sweepDone)
						e.sweep(sweepCtx, g)
					}()
				}
			}
		case redis.Pong:
			e.fencer.pong(m.Data)
		case error:
			return m
		}
	}
}

// connect dials the subscription (c, its reads bounded by three ping periods)
// and the worker's connection (wc), enables the notifications and subscribes c
// to the evicted channel of each of the master's dbs.
func (e *evictor) connect(ctx context.Context, g *masterGen, ping time.Duration) (c, wc redis.Conn, dbs int, err error) {
	if c, err = e.r.dial(ctx, g.ep, 3*ping+e.r.cfg.Timeout); err != nil {
		return nil, nil, 0, err
	}
	if wc, err = e.r.dial(ctx, g.ep, e.r.cfg.Timeout); err == nil {
		err = e.enable(wc, g.ep)
	}
	if err == nil {
		dbs = databases(wc)
		chans := make([]interface{}, dbs)
		for i := range chans {
			chans[i] = evictChannel(i)
		}
		err = redis.PubSubConn{Conn: c}.Subscribe(chans...)
	}
	if err != nil {
		c.Close()
		if wc != nil {
			wc.Close()
		}
		return nil, nil, 0, err
	}
	return c, wc, dbs, nil
}

// databases returns the master's number of DBs (16 if CONFIG is refused).
func databases(c redis.Conn) int {
	vals, err := redis.Strings(c.Do("CONFIG", "GET", "databases"))
	if err != nil || len(vals) != 2 {
		return 16
	}
	n, err := strconv.Atoi(vals[1])
	if err != nil || n < 1 {
		return 16
	}
	return min(n, maxEvictDBs)
}

// evictedDB returns the DB of a "__keyevent@<db>__:evicted" channel.
func evictedDB(ch string) (int, bool) {
	s, ok := strings.CutPrefix(ch, "__keyevent@")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "__:evicted")
	if !ok {
		return 0, false
	}
	db, err := strconv.Atoi(s)
	return db, err == nil && db >= 0
}

// work owns wc and the sending side of c (pings and fences): it runs the
// script for batches of queued keys, and checks now and then that
// notifications are still on. It closes c on failure, which ends the receiving loop.
func (e *evictor) work(ctx context.Context, wc redis.Conn, ep Endpoint, queue <-chan EvictedKey, stop <-chan struct{}, ping time.Duration, c redis.Conn) error {
	psc := redis.PubSubConn{Conn: c}
	tick := time.NewTicker(ping)
	defer tick.Stop()
	lastCheck := time.Now()
	batch := make([]EvictedKey, 0, evictBatch)
	fail := func(err error) error {
		c.Close()
		return err
	}
	for {
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			c.Close()
			return nil
		case <-tick.C:
			if err := psc.Ping(""); err != nil {
				return fail(err)
			}
			if time.Since(lastCheck) >= evictCheckEvery {
				lastCheck = time.Now()
				if err := e.enable(wc, ep); err != nil {
					return fail(err)
				}
			}
		case tok := <-e.fencer.req:
			if err := psc.Ping(tok); err != nil {
				return fail(err)
			}
		case k := <-queue:
			batch = append(batch[:0], k)
		drain:
			for len(batch) < evictBatch {
				select {
				case k := <-queue:
					batch = append(batch, k)
				default:
					break drain
				}
			}
			if err := e.replicate(ctx, wc, batch); err != nil {
				return fail(err)
			}
		}
	}
}

// evictRetries is how many times a batch the master refused (OOM while it is
// over maxmemory, BUSY) is tried again before it is dropped.
const evictRetries = 5

// replicate runs the eviction script for batch, again a few times when the
// master refuses it; a connection error ends the session.
func (e *evictor) replicate(ctx context.Context, wc redis.Conn, batch []EvictedKey) error {
	for i := 0; ; i++ {
		_, _, err := e.r.ReplicateEvictions(wc, batch)
		if _, refused := err.(redis.Error); !refused {
			if err != nil {
				e.log.Warn().Err(err).Int("keys", len(batch)).Msg("replicating evictions failed")
			}
			return err
		}
		if i == evictRetries {
			e.log.Error().Err(err).Int("keys", len(batch)).
				Msg("the master refused to replicate evictions: the slaves keep these keys until `syncproxy check --repair`")
			return nil
		}
		if !SleepCtx(ctx, time.Duration(i+1)*100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// enable makes the master send eviction notifications, keeping the operator's
// other flags: E (keyevent channels) and e (evicted) are added when missing. A
// master that refuses CONFIG (managed Redis) is only logged: its operator may
// have enabled them.
func (e *evictor) enable(c redis.Conn, ep Endpoint) error {
	vals, err := redis.Strings(c.Do("CONFIG", "GET", "notify-keyspace-events"))
	if err != nil || len(vals) != 2 {
		if _, ok := err.(redis.Error); ok || err == nil {
			if !e.warnedCfg {
				e.warnedCfg = true
				e.log.Warn().Err(err).Msg("cannot read notify-keyspace-events on the master: evictions replicate only if it has E and e (or A)")
			}
			return nil
		}
		return err
	}
	cur := vals[1]
	want := withEvictFlags(cur)
	if want == cur {
		return nil
	}
	if _, err := c.Do("CONFIG", "SET", "notify-keyspace-events", want); err != nil {
		if _, ok := err.(redis.Error); ok {
			if !e.warnedCfg {
				e.warnedCfg = true
				e.log.Warn().Err(err).Msg("cannot set notify-keyspace-events on the master: evictions do not replicate")
			}
			return nil
		}
		return err
	}
	// Read back: Redis answers with its own spelling of the flags.
	if vals, err = redis.Strings(c.Do("CONFIG", "GET", "notify-keyspace-events")); err != nil {
		return err
	}
	if len(vals) == 2 {
		want = vals[1]
	}
	e.mu.Lock()
	if e.set == nil {
		e.set = map[string]notifySetting{}
	}
	// Set again (someone restored it meanwhile): the value found is the one to restore.
	e.set[ep.Addr] = notifySetting{master: ep, original: cur, ours: want}
	e.mu.Unlock()
	e.log.Info().Str("was", cur).Str("now", want).Msg("enabled eviction notifications on the master")
	return nil
}

// withEvictFlags returns flags with E and e added when missing (A includes e).
func withEvictFlags(flags string) string {
	out := flags
	if !strings.Contains(out, "E") {
		out += "E"
	}
	if !strings.Contains(out, "e") && !strings.Contains(out, "A") {
		out += "e"
	}
	return out
}

// restore puts back the operator's notify-keyspace-events on every master the
// evictor changed, unless someone changed it since (an operator, or another
// proxy that restored it first).
func (e *evictor) restore() {
	e.mu.Lock()
	set := e.set
	e.set = nil
	e.mu.Unlock()
	for _, s := range set {
		e.restoreOn(s)
	}
}

func (e *evictor) restoreOn(s notifySetting) {
	ctx, cancel := context.WithTimeout(context.Background(), e.r.cfg.DialTimeout+e.r.cfg.Timeout)
	defer cancel()
	c, err := e.r.dial(ctx, s.master, e.r.cfg.Timeout)
	if err != nil {
		e.log.Warn().Err(err).Str("value", s.original).Msg("cannot restore notify-keyspace-events on the master")
		return
	}
	defer c.Close()
	vals, err := redis.Strings(c.Do("CONFIG", "GET", "notify-keyspace-events"))
	if err != nil || len(vals) != 2 || vals[1] != s.ours {
		return
	}
	if _, err := c.Do("CONFIG", "SET", "notify-keyspace-events", s.original); err != nil {
		e.log.Warn().Err(err).Str("value", s.original).Msg("cannot restore notify-keyspace-events on the master")
		return
	}
	e.log.Info().Str("value", s.original).Msg("restored notify-keyspace-events on the master")
}
