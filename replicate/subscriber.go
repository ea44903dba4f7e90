package replicate

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"
)

// subscriber receives the master's sync channel, which only says that the
// backlog grew: a backlogReader reads the new entries and hands them to the
// appliers that hold their slave's lease. What it misses, appliers find in the
// backlog.
//
// Only a proxy that needs the messages subscribes: one holding a slave's lease,
// or one whose clients need the stream (Config.WantEffects). A follower-only
// proxy stands by, unsubscribed: every message on the channel would wake it
// (a process wake-up per write, measured at about 50us of CPU each on the
// development machine, for every follower), while it learns the slaves'
// positions when reads need them (Applier.Reached). It subscribes when one of
// its appliers takes a lease or a client needs the stream (WakeStream), and
// stands by again once neither has been the case for standbyAfter.
type subscriber struct {
	r   *Replicator
	log zerolog.Logger
	// need wakes a subscriber on standby (buffered: a signal sent before it
	// waits is kept).
	need chan struct{}
	// standby is set while the subscriber is unsubscribed because nothing needs
	// the stream (from the moment it decides so until it subscribes again).
	standby atomic.Bool
	// readerWake is the running session's wake-up of its backlog reader (nil
	// between sessions): a reader that stopped because nothing needed the
	// messages starts at once when something does, not at the next message.
	readerWake atomic.Pointer[chan struct{}]
}

// standbyAfter is how long a subscription lasts once nothing needs it: clients
// that need the stream for a moment (a blocking pop) do not make the proxy
// subscribe and unsubscribe each time.
const standbyAfter = 5 * time.Second

// errNotNeeded ends a subscription nothing has needed for standbyAfter.
var errNotNeeded = errors.New("replicate: the sync stream is not needed")

func (s *subscriber) wake() {
	select {
	case s.need <- struct{}{}:
	default:
	}
	if w := s.readerWake.Load(); w != nil {
		select {
		case *w <- struct{}{}:
		default:
		}
	}
}

// standBy waits, unsubscribed, until the stream may be needed: a wake-up
// (a lease taken, a client that needs the stream), or the next health interval,
// when the caller looks again.
func (s *subscriber) standBy(ctx context.Context) {
	s.standby.Store(true)
	interval, _ := s.r.health()
	t := time.NewTimer(interval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-s.need:
	case <-t.C:
	}
}

func (s *subscriber) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		if !s.r.streamNeeded() {
			s.standBy(ctx)
			continue
		}
		s.standby.Store(false)
		err := s.session(ctx, &backoff)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errNotNeeded) {
			s.log.Info().Msg("no slave lease held here and no client needs the stream: sync subscription on standby")
			continue
		}
		if errors.Is(err, errMasterSwitched) {
			s.log.Info().Str("master", s.r.Master().Addr).Msg("master switched; subscribing on the new one")
			backoff = minBackoff
			s.r.kickAll()
			continue
		}
		s.log.Warn().Err(err).Dur("backoff", backoff).Msg("sync subscription lost; reconnecting")
		// Whatever was published meanwhile is in the backlog.
		s.r.kickAll()
		if !SleepCtx(ctx, backoff) {
			return
		}
		backoff = nextBackoff(backoff)
	}
}

func (s *subscriber) session(ctx context.Context, backoff *time.Duration) error {
	g, sctx, leave := s.r.join(ctx)
	defer leave()
	err := s.subscribe(sctx, g, backoff)
	if ctx.Err() == nil && sctx.Err() != nil {
		return errMasterSwitched
	}
	return err
}

func (s *subscriber) subscribe(ctx context.Context, g *masterGen, backoff *time.Duration) error {
	ping, _ := s.r.health()
	if ping < 100*time.Millisecond {
		ping = 100 * time.Millisecond
	}
	// The pinger below keeps traffic flowing, so a read that waits three ping
	// periods means the master or the network is gone.
	c, err := s.r.dial(ctx, g.ep, 3*ping+s.r.cfg.Timeout)
	if err != nil {
		return err
	}
	rc, err := s.r.dial(ctx, g.ep, s.r.cfg.Timeout)
	if err != nil {
		c.Close()
		return err
	}
	psc := redis.PubSubConn{Conn: c}
	if err := psc.Subscribe(s.r.cfg.Channel); err != nil {
		c.Close()
		rc.Close()
		return err
	}
	// The pinger owns the sending side (redigo allows one sender and one receiver
	// at a time); it closes the connection when ctx ends, to unblock Receive.
	stop := make(chan struct{})
	done := make(chan struct{})
	fence := newFencer()
	go func() {
		defer close(done)
		pinger(ctx, psc, ping, stop, fence)
	}()
	// The reader owns rc; a failed read ends the session (closing c ends Receive).
	rd := &backlogReader{r: s.r, c: rc, gen: g.id, log: s.log, copies: newChannelCopies(), fence: fence, stop: stop}
	wake := make(chan struct{}, 1)
	s.readerWake.Store(&wake)
	defer s.readerWake.Store(nil)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		if err := rd.run(stop, wake); err != nil {
			select {
			case <-stop: // the session is ending: rc was closed under the read
			default:
				if errors.Is(err, errNotNeeded) {
					rd.notNeeded.Store(true)
					s.standby.Store(true) // no moment of neither subscribed nor on standby
				} else {
					s.log.Warn().Err(err).Msg("reading the master's backlog failed")
				}
				c.Close()
			}
		}
	}()
	defer func() {
		s.r.subscribed.Store(false)
		close(stop)
		rc.Close()
		<-done
		<-readerDone
		c.Close()
		rd.lost()
	}()

	err = s.receive(psc, rd, wake, backoff)
	if rd.notNeeded.Load() {
		return errNotNeeded
	}
	return err
}

// pinger sends a PING every period, and the fences asked for, on psc until ctx
// ends (it then closes psc, to unblock the receiver) or stop is closed.
func pinger(ctx context.Context, psc redis.PubSubConn, period time.Duration, stop <-chan struct{}, fence *fencer) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			psc.Close()
			return
		case <-stop:
			return
		case <-t.C:
			err = psc.Ping("")
		case tok := <-fence.req:
			err = psc.Ping(tok)
		}
		if err != nil {
			psc.Close()
			return
		}
	}
}

// receive reads the subscription until it fails: each message is noted as a
// hint and wakes the backlog reader.
func (s *subscriber) receive(psc redis.PubSubConn, rd *backlogReader, wake chan struct{}, backoff *time.Duration) error {
	for {
		switch m := psc.Receive().(type) {
		case redis.Message:
			rd.noteHint(m.Data)
			select {
			case wake <- struct{}{}:
			default:
			}
		case redis.Subscription:
			if m.Kind == "subscribe" {
				s.r.subscribed.Store(true)
				*backoff = minBackoff
				s.log.Info().Str("channel", m.Channel).Msg("subscribed to sync channel")
				// The reader starts from the master's position, then the
				// appliers compare theirs with it.
				select {
				case wake <- struct{}{}:
				default:
				}
			}
		case redis.Pong:
			rd.fence.pong(m.Data)
		case error:
			return m
		}
	}
}

func (r *Replicator) kickAll() {
	for _, a := range r.Appliers() {
		a.kick()
	}
}
