package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/replicate"
)

// With Sentinel, the master's address comes from the sentinels: NewServer asks
// them in turn (resolve) and fails if none answers; then sentinelWatch follows
// them. Per sentinel, a goroutine (follow) subscribes to its events and asks it
// for the master's address (query) every sentinelPoll, after every (re)connection
// and after every event that announces a new master, so that a missed message
// costs at most sentinelPoll. The answers go to one goroutine (run), which owns
// the decisions:
//
//   - a sentinel starting to promote a replica (+failover-state-send-slaveof-noone)
//     pauses the master backend: writes wait in its queues instead of reaching a
//     master that is about to lose them. The pause ends with the switch, with an
//     aborted failover (-failover-abort-*), or after the backend timeout.
//   - an address that differs from the current one, with a greater config epoch
//     (Sentinel's version of its configuration), is switched to (switchMaster).
//     A sentinel that has not heard of the failover yet still reports the old
//     address, with the old epoch: it is not followed back.

// Sentinel timings.
const (
	sentinelPing       = time.Second           // PING on the subscription
	sentinelPoll       = 3 * time.Second       // address query on each sentinel
	sentinelMinBackoff = 50 * time.Millisecond // reconnection backoff, doubled up to
	sentinelMaxBackoff = 2 * time.Second       // this bound
)

// Sentinel's pub/sub channels the proxy listens to.
const (
	chSwitchMaster = "+switch-master"                     // <name> <old-ip> <old-port> <new-ip> <new-port>
	chPromoting    = "+failover-state-send-slaveof-noone" // slave <id> <ip> <port> @ <name> <ip> <port>
	chFailoverEnd  = "+failover-end"                      // master <name> <ip> <port>
	chAbortPattern = "-failover-abort-*"                  // master <name> <ip> <port>
)

type sentinelEventKind uint8

const (
	evAddr  sentinelEventKind = iota // a query's answer: addr at epoch
	evFence                          // a replica is being promoted
	evAbort                          // the failover was aborted
)

type sentinelEvent struct {
	kind     sentinelEventKind
	sentinel string
	addr     string
	epoch    int64
}

// sentinelWatch follows the sentinels' view of the master.
type sentinelWatch struct {
	s      *Server
	addrs  []string
	name   string
	log    zerolog.Logger
	events chan sentinelEvent

	epoch    atomic.Int64 // config epoch of the current master address
	switches atomic.Int64 // switches made

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newSentinelWatch(s *Server) *sentinelWatch {
	return &sentinelWatch{
		s:      s,
		addrs:  s.cfg.Sentinels,
		name:   s.cfg.SentinelMaster,
		log:    s.log.With().Str("component", "sentinel").Str("sentinel_master", s.cfg.SentinelMaster).Logger(),
		events: make(chan sentinelEvent, 16),
	}
}

// dial connects to a sentinel with the backend timeouts, its credentials, and
// the backend TLS settings when they are on.
func (w *sentinelWatch) dial(ctx context.Context, addr string, readTimeout time.Duration) (redis.Conn, error) {
	cfg := &w.s.cfg
	e := replicate.Endpoint{Name: "sentinel", Addr: addr, Username: cfg.SentinelUser, Password: cfg.SentinelPassword, TLS: backendTLSFor(w.s.backendTLS, addr)}
	return replicate.Dial(ctx, e, cfg.DialTimeout(), readTimeout, cfg.WriteTimeout())
}

// query asks one sentinel for the master's address and the config epoch it
// knows. The epoch is asked first: an answer is never paired with an epoch newer
// than the address (GET-MASTER-ADDR-BY-NAME gives the promoted replica as soon
// as its promotion is confirmed, before SENTINEL MASTER's ip and port change).
func (w *sentinelWatch) query(ctx context.Context, sentinel string) (addr string, epoch int64, err error) {
	c, err := w.dial(ctx, sentinel, w.s.cfg.BackendTimeout)
	if err != nil {
		return "", 0, err
	}
	defer c.Close()
	c.Send("SENTINEL", "MASTER", w.name)
	c.Send("SENTINEL", "GET-MASTER-ADDR-BY-NAME", w.name)
	if err := c.Flush(); err != nil {
		return "", 0, err
	}
	fields, err := redis.StringMap(c.Receive())
	hp, err2 := redis.Strings(c.Receive())
	if err == nil {
		err = err2
	}
	var re redis.Error
	switch {
	case errors.Is(err, redis.ErrNil) || errors.As(err, &re) && strings.Contains(string(re), "No such master"):
		return "", 0, fmt.Errorf("sentinel does not know a master named %q", w.name)
	case err != nil:
		return "", 0, err
	case len(hp) != 2:
		return "", 0, fmt.Errorf("unexpected GET-MASTER-ADDR-BY-NAME reply %q", hp)
	}
	epoch, _ = strconv.ParseInt(fields["config-epoch"], 10, 64)
	return net.JoinHostPort(hp[0], hp[1]), epoch, nil
}

// resolve asks the sentinels in turn for the master's address; the first that
// answers is believed (the watch then follows the newest configuration).
func (w *sentinelWatch) resolve(ctx context.Context) (string, int64, error) {
	var fails []string
	for _, sentinel := range w.addrs {
		addr, epoch, err := w.query(ctx, sentinel)
		if err == nil {
			w.log.Info().Str("sentinel", sentinel).Str("master", addr).Int64("config_epoch", epoch).Msg("master found through Sentinel")
			return addr, epoch, nil
		}
		fails = append(fails, sentinel+": "+err.Error())
	}
	return "", 0, fmt.Errorf("proxy: no sentinel gave the address of master %q (%s)", w.name, strings.Join(fails, "; "))
}

// start runs the watch until stop.
func (w *sentinelWatch) start(epoch int64) {
	w.epoch.Store(epoch)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.goFunc(func() { w.run(ctx) })
	for _, addr := range w.addrs {
		addr := addr
		w.goFunc(func() { w.follow(ctx, addr) })
	}
}

func (w *sentinelWatch) goFunc(f func()) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		f()
	}()
}

// stop ends every goroutine of the watch and waits for them; a paused master
// is resumed.
func (w *sentinelWatch) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// send hands ev to run, unless ctx ended.
func (w *sentinelWatch) send(ctx context.Context, ev sentinelEvent) {
	select {
	case w.events <- ev:
	case <-ctx.Done():
	}
}

// run makes the decisions (see the top of the file); it owns the pause.
func (w *sentinelWatch) run(ctx context.Context) {
	master := w.s.router.Master()
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()
	// (At shutdown a pause stays: the closing backend fails what it holds.)
	paused := false
	resume := func(why string) {
		if paused {
			paused = false
			master.Resume()
			w.log.Warn().Str("master", w.s.MasterAddr()).Str("reason", why).Msg("writes to the master resumed")
		}
	}
	ignored := map[string]string{} // per sentinel, the stale answer last reported
	for {
		select {
		case <-ctx.Done():
			return
		case <-hold.C:
			resume("no new master within the backend timeout")
		case ev := <-w.events:
			switch ev.kind {
			case evFence:
				if !paused {
					paused = true
					master.Pause()
					w.log.Warn().Str("sentinel", ev.sentinel).Str("master", w.s.MasterAddr()).Str("promoting", ev.addr).
						Msg("Sentinel is promoting a replica: writes to the master are held until it is followed")
				}
				hold.Reset(w.s.cfg.BackendTimeout)
			case evAbort:
				resume("failover aborted (" + ev.addr + ")")
			case evAddr:
				cur := w.s.MasterAddr()
				switch {
				case ev.addr == cur:
					delete(ignored, ev.sentinel)
					if ev.epoch > w.epoch.Load() {
						w.epoch.Store(ev.epoch)
					}
				case ev.epoch <= w.epoch.Load():
					// Normal for a few seconds after a failover (a sentinel that has
					// not heard of it yet); lasting, it needs the operator (a
					// sentinel that lost its configuration, or a re-monitored
					// master: restart the proxy). Logged once per answer.
					if seen := ev.addr + "@" + strconv.FormatInt(ev.epoch, 10); ignored[ev.sentinel] != seen {
						ignored[ev.sentinel] = seen
						w.log.Warn().Str("sentinel", ev.sentinel).Str("addr", ev.addr).Int64("config_epoch", ev.epoch).
							Int64("current_epoch", w.epoch.Load()).Str("master", cur).
							Msg("a sentinel reports another master with a configuration that is not newer: not followed")
					}
				default:
					if w.s.switchMaster(ev.addr, ev.sentinel, ev.epoch) {
						w.epoch.Store(ev.epoch)
						w.switches.Add(1)
						paused = false // switchMaster resumed the backend
						hold.Stop()
					}
				}
			}
		}
	}
}

// follow keeps a subscription to one sentinel, reconnecting with capped backoff.
func (w *sentinelWatch) follow(ctx context.Context, sentinel string) {
	backoff := sentinelMinBackoff
	lastErr := ""
	for ctx.Err() == nil {
		live, err := w.session(ctx, sentinel)
		if ctx.Err() != nil {
			return
		}
		if live {
			backoff = sentinelMinBackoff
		}
		// A sentinel that stays down is reported once, not at every retry.
		if live || err.Error() != lastErr {
			w.log.Warn().Err(err).Str("sentinel", sentinel).Msg("sentinel unreachable; retrying with backoff")
		}
		lastErr = err.Error()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(backoff*2, sentinelMaxBackoff)
	}
}

// session subscribes to one sentinel's events and queries it until the
// connection fails or ctx ends; live reports whether it got as far as a query.
// As in redigo's pub/sub example, this goroutine owns the sending side (PING)
// and a receiver goroutine owns Receive.
func (w *sentinelWatch) session(ctx context.Context, sentinel string) (live bool, err error) {
	c, err := w.dial(ctx, sentinel, 3*sentinelPing+w.s.cfg.BackendTimeout)
	if err != nil {
		return false, err
	}
	defer c.Close()
	psc := redis.PubSubConn{Conn: c}
	if err := psc.Subscribe(chSwitchMaster, chPromoting, chFailoverEnd); err != nil {
		return false, err
	}
	if err := psc.PSubscribe(chAbortPattern); err != nil {
		return false, err
	}
	ask := make(chan struct{}, 1)
	ask <- struct{}{} // after every (re)connection
	received := make(chan error, 1)
	go func() { received <- w.receive(ctx, psc, sentinel, ask) }()
	defer func() {
		c.Close() // ends Receive
		<-received
	}()

	ping := time.NewTicker(sentinelPing)
	defer ping.Stop()
	poll := time.NewTicker(sentinelPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return live, nil
		case err := <-received:
			received <- err // for the deferred wait
			return live, err
		case <-ping.C:
			if err := psc.Ping(""); err != nil {
				return live, err
			}
			continue
		case <-poll.C:
		case <-ask:
		}
		addr, epoch, err := w.query(ctx, sentinel)
		if err != nil {
			return live, err
		}
		live = true
		w.send(ctx, sentinelEvent{kind: evAddr, sentinel: sentinel, addr: addr, epoch: epoch})
	}
}

// receive reads the subscription: promotions and aborts go to run at once; the
// end of a failover asks for a query.
func (w *sentinelWatch) receive(ctx context.Context, psc redis.PubSubConn, sentinel string, ask chan struct{}) error {
	query := func() {
		select {
		case ask <- struct{}{}:
		default:
		}
	}
	for {
		var channel, data string
		switch m := psc.Receive().(type) {
		case error:
			return m
		case redis.Message: // (also a pattern's message)
			channel, data = m.Channel, string(m.Data)
		default:
			continue // subscription confirmations, PONG
		}
		f := strings.Fields(data)
		switch {
		case channel == chSwitchMaster && len(f) == 5 && f[0] == w.name:
			w.log.Info().Str("sentinel", sentinel).Str("to", net.JoinHostPort(f[3], f[4])).Msg("+switch-master")
			query()
		case channel == chFailoverEnd && len(f) >= 2 && f[1] == w.name:
			query()
		case channel == chPromoting && len(f) == 8 && f[5] == w.name:
			w.send(ctx, sentinelEvent{kind: evFence, sentinel: sentinel, addr: net.JoinHostPort(f[2], f[3])})
		case strings.HasPrefix(channel, "-failover-abort-") && len(f) >= 2 && f[1] == w.name:
			w.send(ctx, sentinelEvent{kind: evAbort, sentinel: sentinel, addr: channel})
		}
	}
}

// switchMaster moves the proxy to the master at addr, which sentinel reports at
// config epoch epoch; it reports whether it did. In order:
//
//  1. the new master's replication position is read, before any write of this
//     proxy reaches it;
//  2. the master's address changes: the backend's connections to the old master
//     close (what was in flight on them fails with "master switched to ADDR,
//     retry", never sent again), queued and new requests go to the new one, a
//     pause for the promotion ends; WATCH and SUBSCRIBE connections to the old
//     master close;
//  3. replication moves (Replicator.SetMaster), giving the new master a new
//     epoch if it lacks messages that slaves may hold.
func (s *Server) switchMaster(addr, sentinel string, epoch int64) bool {
	s.switchMu.Lock()
	defer s.switchMu.Unlock()
	old := s.MasterAddr()
	if addr == old {
		return false
	}
	for _, sl := range s.config().Slaves {
		if sl == addr {
			s.log.Error().Str("sentinel", sentinel).Str("addr", addr).Str("master", old).
				Msg("Sentinel reports a slave of the proxy as the master: not followed; check the configuration")
			return false
		}
	}
	target := s.newTarget(addr)
	ep := s.masterEndpoint(target)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout()+s.cfg.BackendTimeout)
	pos, err := s.repl.ReadPosition(ctx, ep)
	cancel()
	var at *replicate.Position
	if err == nil {
		at = &pos
	} else {
		s.log.Warn().Err(err).Str("master", addr).Msg("new master's replication position unreadable; read again after the switch")
	}
	s.log.Warn().Str("old", old).Str("new", addr).Str("sentinel", sentinel).Int64("config_epoch", epoch).
		Str("epoch", pos.Epoch).Int64("seq", pos.Seq).Msg("master switched (Sentinel failover): following it")

	s.master.Store(target)
	m := s.router.Master()
	m.SetAddr(addr)
	m.Resume()
	s.closeDedicated(addr)
	// Client scripts are loaded on a master when first used: load them again.
	s.scripts.unload()
	s.functions.reset()

	if _, err := s.repl.SetMaster(ep, at); err != nil {
		s.log.Error().Err(err).Str("master", addr).
			Msg("could not check the new master's replication position; slaves check it themselves when they reconnect")
	}
	return true
}
