package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Version is the proxy's version, reported by INFO and HELLO.
const Version = "0.1.0"

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// ErrRestartNeeded is returned by Reload when settings that only a restart
// changes differ; the others were applied.
var ErrRestartNeeded = errors.New("proxy: reload: a restart is needed to change")

// Server is a syncproxy instance: the client listener, the backends and the
// replicator.
type Server struct {
	// cfg is the configuration at start; cur is the one in force, cfg with the
	// settings Reload changed: read those through config().
	cfg     Config
	cur     atomic.Pointer[Config]
	limits  atomic.Pointer[Limits] // read by every client connection
	metrics *metrics
	log     zerolog.Logger
	router  *router.Router
	repl    *replicate.Replicator
	start   time.Time

	ln net.Listener // the client listener, closed by Shutdown

	serverTLS  *tls.Config // the client listener's, nil without TLS
	backendTLS *tls.Config // shared by the backend connections, nil without TLS

	// master is the master's address (and TLS settings for it): the one source of
	// truth, which a Sentinel failover changes (switchMaster).
	master    atomic.Pointer[masterTarget]
	sentinel  *sentinelWatch // nil without Sentinel
	switchMu  sync.Mutex     // serializes switchMaster
	dedicated dedicatedConns // WATCH and SUBSCRIBE connections to the master (dial.go)

	// clientSet: the connected clients, counted, and the shutdown's wait for
	// the last (clients.go).
	clientSet
	commands atomic.Int64
	version  string // the master's redis_version at start, which HELLO gives ("" unknown)

	waiters    waiters             // clients blocked in BLPOP & co.
	feed       *keyFeed            // the keys the sync stream's writes touched (keyfeed.go)
	near       *nearCache          // nil unless --near-cache (nearcache.go)
	tracker    *tracker            // CLIENT TRACKING's table (tracking.go)
	detachedWG sync.WaitGroup      // goroutines of detached (subscribed) sessions, tracking pushers
	bgWG       sync.WaitGroup      // background requests of the server's own (memory.go)
	script     *router.WriteScript // the replication script, for WATCH connections
	scripts    scripts             // client scripts (EVAL), composed
	functions  functions           // FCALL's functions, as composed scripts
	writesOnce sync.Once           // writes is set once (writeNames)
	writes     string              // the write commands, for no-writes functions
	masterPos  *masterPosition     // the master's position, for global reads
	mem        masterMemory        // the master's memory, for transactions (memory.go)
	pause      clientPause         // CLIENT PAUSE (clientadmin.go)
	monitors   monitors            // MONITOR clients (monitor.go)

	// reloadMu serializes Reload, and Shutdown's stop of the backends with it;
	// slaveNames counts the slave names given ("slave-<n>"), under reloadMu.
	reloadMu   sync.Mutex
	slaveNames int

	admin  []*http.Server // admin listeners, closed by Shutdown; under clientSet's mu
	series *sampler       // the status page's samples, started by AdminHandler (series.go)
}

// drainIdle is how long, during a shutdown, a client may stay idle before its
// connection is closed: commands it already sent are still read and answered.
const drainIdle = 100 * time.Millisecond

// NewServer connects to the backends described by cfg (which must name a master)
// and starts replication; Serve then accepts clients.
func NewServer(cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Master == "" && len(cfg.Sentinels) == 0 {
		return nil, errors.New("proxy: no master configured")
	}
	s := &Server{cfg: cfg, log: log, start: time.Now(),
		dedicated: dedicatedConns{conns: map[*masterConn]struct{}{}}, masterPos: newMasterPosition()}
	s.clientSet.init()
	s.cur.Store(&cfg)
	s.limits.Store(limitsOf(&cfg))
	var err error
	if s.serverTLS, err = cfg.ServerTLS(); err != nil {
		return nil, err
	}
	if s.backendTLS, err = cfg.BackendTLSConfig(); err != nil {
		return nil, err
	}
	masterAddr, configEpoch, err := s.resolveMaster()
	if err != nil {
		return nil, err
	}
	s.master.Store(s.newTarget(masterAddr))
	table := s.loadTable()
	s.metrics = newMetrics(table)
	s.feed = newKeyFeed(table)
	s.near = newNearCache(&cfg, s.feed)
	s.tracker = newTracker(s, cfg.TrackingMaxKeys)
	s.feed.add(s.tracker)
	s.repl = s.newReplicator(table)
	// A proxy that applies to no slave subscribes to the sync stream only while
	// a client needs it: wake it when one starts to.
	s.feed.onWant, s.waiters.onFirst = s.repl.WakeStream, s.repl.WakeStream
	master := s.newMasterBackend(masterAddr)
	var slaves []*router.Slave
	for _, a := range s.repl.Appliers() {
		slaves = append(slaves, s.newSlave(a))
	}
	s.router = router.New(table, master, slaves)
	s.router.SetSlaves(slaves, weightsOf(&cfg, slaves))
	s.router.SetReadOptions(readOptionsOf(&cfg))
	s.scripts.guard = scriptGuard(s.router)
	if err := s.startBackends(master, slaves); err != nil {
		return nil, err
	}
	if s.sentinel != nil {
		s.sentinel.start(configEpoch)
	}
	return s, nil
}

// resolveMaster returns the master's address: the configured one, or the one
// the sentinels give, with their config epoch.
func (s *Server) resolveMaster() (addr string, configEpoch int64, err error) {
	cfg := &s.cfg
	if len(cfg.Sentinels) == 0 {
		return cfg.Master, 0, nil
	}
	s.sentinel = newSentinelWatch(s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(len(cfg.Sentinels))*(cfg.DialTimeout()+cfg.BackendTimeout))
	defer cancel()
	if addr, configEpoch, err = s.sentinel.resolve(ctx); err != nil {
		return "", 0, err
	}
	for _, sl := range cfg.Slaves {
		if sl == addr {
			return "", 0, fmt.Errorf("proxy: Sentinel gives %s as master %q, which is also a slave", addr, cfg.SentinelMaster)
		}
	}
	return addr, configEpoch, nil
}

// newReplicator makes the replicator of the master and the slaves configured;
// table gives it the keys of each command.
func (s *Server) newReplicator(table *router.Table) *replicate.Replicator {
	cfg := &s.cfg
	var slaveEPs []replicate.Endpoint
	for _, addr := range cfg.Slaves {
		slaveEPs = append(slaveEPs, s.slaveEndpoint(addr))
	}
	return replicate.New(replicate.Config{
		Master:        s.masterEndpoint(s.master.Load()),
		Slaves:        slaveEPs,
		Channel:       cfg.SyncChannel,
		BacklogLen:    cfg.BacklogLen,
		QueueLen:      cfg.ApplierQueue,
		Timeout:       cfg.BackendTimeout,
		DialTimeout:   cfg.BackendDialTimeout,
		WriteTimeout:  cfg.BackendWriteTimeout,
		PollInterval:  cfg.HealthInterval,
		FailThreshold: cfg.HealthFailures,
		Keys: func(args [][]byte, dst []int) []int {
			if ci := table.Lookup(args); ci != nil {
				return ci.KeyIndexes(args, dst)
			}
			return dst
		},
		OnEffect:      s.wakeBlocked(table),
		OnMessage:     s.feed.message,
		OnStreamStart: s.streamStarted,
		OnStreamLost:  s.feed.lost,
		WantEffects:   func() bool { return s.waiters.n.Load() > 0 || s.feed.wants() },
		OnMasterReset: cfg.OnMasterReset,
		Log:           s.log,
	})
}

// newMasterBackend connects the master's links, which load the replication
// script.
func (s *Server) newMasterBackend(addr string) *router.Backend {
	cfg := &s.cfg
	ms := replicate.MasterScript()
	s.script = &router.WriteScript{SHA: ms.SHA, Body: ms.Body, Args: [][]byte{
		[]byte(s.repl.EpochCandidate()),
		[]byte(strconv.Itoa(cfg.BacklogLen)),
		[]byte(cfg.SyncChannel),
	}}
	return router.NewBackend(router.BackendOptions{
		Name:         "master",
		Addr:         addr,
		Conns:        cfg.BackendConns,
		ScriptConns:  scriptConns,
		Timeout:      cfg.BackendTimeout,
		DialTimeout:  cfg.BackendDialTimeout,
		WriteTimeout: cfg.BackendWriteTimeout,
		ReplyTimeout: cfg.WriteReplyTimeout,
		MaxGroup:     cfg.WriteGroup,
		Script:       s.script,
		Username:     cfg.MasterUser,
		Password:     cfg.MasterPassword,
		TLS:          s.backendTLS, // for the address of the moment
		Log:          s.log,
	})
}

// startBackends checks the servers, starts the replicator and waits for the
// first connection attempt of every backend: clients that come right away
// should not find the links still dialing. A check that fails closes the
// backends.
func (s *Server) startBackends(master *router.Backend, slaves []*router.Slave) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.BackendTimeout)
	defer cancel()
	if err := s.repl.CheckServers(ctx, s.cfg.AllowSlaveEviction); err != nil {
		master.Close()
		for _, sl := range slaves {
			sl.Backend.Close()
		}
		return err
	}
	s.repl.Start()
	if !master.WaitFirstAttempt(ctx) {
		s.log.Warn().Str("master", master.Addr()).Msg("master unreachable at start; writes fail until it is back")
	}
	for _, sl := range slaves {
		sl.Backend.WaitFirstAttempt(ctx)
	}
	return nil
}

// slaveEndpoint describes the slave at addr to the replicator, under a name
// never given before in this process.
func (s *Server) slaveEndpoint(addr string) replicate.Endpoint {
	s.slaveNames++
	return replicate.Endpoint{
		Name:     "slave-" + strconv.Itoa(s.slaveNames),
		Addr:     addr,
		Username: s.cfg.SlaveUser,
		Password: s.cfg.SlavePassword,
		TLS:      backendTLSFor(s.backendTLS, addr),
	}
}

// newSlave connects the read backend of a's slave.
func (s *Server) newSlave(a *replicate.Applier) *router.Slave {
	cfg := &s.cfg
	sl := &router.Slave{Status: a}
	b := router.NewBackend(router.BackendOptions{
		Name:         a.Name(),
		Addr:         a.Addr(),
		Conns:        cfg.BackendConns,
		Timeout:      cfg.BackendTimeout,
		DialTimeout:  cfg.BackendDialTimeout,
		WriteTimeout: cfg.BackendWriteTimeout,
		Username:     cfg.SlaveUser,
		Password:     cfg.SlavePassword,
		TLS:          backendTLSFor(s.backendTLS, a.Addr()),
		OnReconnect: func() {
			sl.ForgetObserved() // the server may have restarted empty
			a.Suspect()
		},
		Log: s.log,
	})
	sl.Backend = b
	return sl
}

// applierOf returns the applier of a slave of the read set (its Status).
func applierOf(sl *router.Slave) *replicate.Applier { return sl.Status.(*replicate.Applier) }

// config returns the configuration in force.
func (s *Server) config() *Config { return s.cur.Load() }

// Config returns the configuration in force: the one at start with what Reload
// changed.
func (s *Server) Config() Config { return *s.config() }

// loadTable reads the command table from the master's COMMAND reply, falling back
// to the built-in table of Redis 7.0, and the master's version (HELLO's).
func (s *Server) loadTable() *router.Table {
	target := s.master.Load()
	c, err := dial.Redigo(context.Background(), s.masterDialTarget(target), s.cfg.BackendTimeout, s.cfg.WriteTimeout())
	if err == nil {
		defer c.Close()
		if info, err := redis.String(c.Do("INFO", "server")); err == nil {
			s.version, _ = replicate.InfoField(info, "redis_version")
		}
		var reply interface{}
		if reply, err = c.Do("COMMAND"); err == nil {
			var infos []*router.CommandInfo
			if infos, err = router.ParseCommandReply(reply); err == nil && len(infos) > 50 {
				s.log.Info().Int("commands", len(infos)).Msg("command table read from the master")
				return router.NewTable(router.CompleteFromBuiltin(infos))
			}
		}
	}
	s.log.Warn().AnErr("reason", err).Msg("master's COMMAND unavailable; using the built-in command table of Redis 7.0")
	return router.BuiltinTable()
}

// streamStarted is the replicator's OnStreamStart hook: the key feed is live,
// and the blocked clients look at their keys once more (a write between a
// client's last try and the stream's start reached no hook).
func (s *Server) streamStarted(epoch string, seq int64) {
	s.feed.started(epoch, seq)
	s.waiters.wakeAll()
}

// wakeBlocked returns the replicator's hook that wakes the clients blocked on the
// keys of each replicated effect.
func (s *Server) wakeBlocked(table *router.Table) func(db int, args [][]byte) {
	var idx []int
	return func(db int, args [][]byte) {
		if s.waiters.n.Load() == 0 {
			return
		}
		if len(args) > 0 && (bytes.EqualFold(args[0], []byte("flushall")) || bytes.EqualFold(args[0], []byte("flushdb")) ||
			bytes.EqualFold(args[0], []byte("swapdb"))) {
			// Names no key, changes every key of a DB: every blocked client
			// looks again (XREADGROUP's "no longer exists").
			s.waiters.wakeAll()
			return
		}
		if ci := table.Lookup(args); ci != nil && ci.Name != "xreadgroup" {
			// (XREADGROUP adds nothing a blocked client waits for.)
			idx = ci.KeyIndexes(args, idx[:0])
			for _, i := range idx {
				s.waiters.touched(db, args[i])
			}
		}
	}
}

// clientList is CLIENT LIST: one line per client, by id.
func (s *Server) clientList(viewer *Session) string {
	var b strings.Builder
	for _, sess := range s.sessionList() {
		b.WriteString(sess.clientLine(viewer))
	}
	return b.String()
}

// Router returns the server's router (for tests and INFO).
func (s *Server) Router() *router.Router { return s.router }

// Replicator returns the server's replicator.
func (s *Server) Replicator() *replicate.Replicator { return s.repl }

// ListenAndServe listens on the configured address and serves clients.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Serve accepts clients on ln until Shutdown or Close, and serves each from a
// goroutine of its own (conn.go).
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown || s.ln != nil {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.ln = ln
	cfg := s.config()
	s.mu.Unlock()
	// Passwords are never logged: only whether they are set.
	s.log.Info().Str("addr", ln.Addr().String()).Str("master", s.MasterAddr()).Strs("slaves", cfg.Slaves).
		Strs("sentinels", cfg.Sentinels).
		Bool("tls", s.serverTLS != nil).Bool("tls_client_certs", s.cfg.TLSCA != "").
		Bool("backend_tls", s.backendTLS != nil).Bool("requirepass", cfg.RequirePass != "").
		Bool("master_auth", s.cfg.MasterPassword != "").Bool("slave_auth", s.cfg.SlavePassword != "").
		Msg("syncproxy listening")
	backoff := time.Duration(0)
	for {
		nc, err := ln.Accept()
		switch {
		case err == nil:
			backoff = 0
			go s.serveConn(nc)
		case s.closing.Load():
			return ErrServerClosed
		case errors.Is(err, net.ErrClosed):
			return err
		default:
			// Out of file descriptors, say: wait a little, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accepting a client failed")
			time.Sleep(backoff)
		}
	}
}

// serveConn serves one client: its socket is watched by the output timeout,
// under TLS if configured, and read through the limits.
func (s *Server) serveConn(sock net.Conn) {
	var nc net.Conn = newOutputConn(sock, &s.limits)
	if s.serverTLS != nil {
		nc = tls.Server(nc, s.serverTLS)
	}
	c := newClientConn(s, nc)
	if !s.accept(c) {
		nc.Close()
		return
	}
	err := c.serve(s.handle)
	if err != errDetached {
		c.nc.Close()
	}
	s.closed(c, err)
}

// Addr returns the listener's address, or nil before Serve.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Shutdown stops accepting clients, lets the batches in flight finish (until ctx
// ends), closes every client, then stops replication and the backends. It is safe
// to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.shutdown = true
	s.closing.Store(true)
	ln := s.ln
	s.mu.Unlock()

	if ln != nil {
		ln.Close() // the clients connected are served on
	}
	s.closeAdmin()
	s.waiters.wakeAll()
	s.pause.end() // a CLIENT PAUSE does not hold the drain
	// Clients are served until they have been idle for drainIdle: what they sent
	// before the shutdown is answered. Then their connections close.
	s.mu.Lock()
	for sess := range s.sessions {
		sess.netConn.SetReadDeadline(time.Now().Add(drainIdle))
	}
	s.mu.Unlock()
	var err error
	if s.clients.Load() > 0 {
		select {
		case <-s.lastLeft:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	// The clients still connected are cut: their sockets are closed under any
	// TLS, whose close_notify could wait 5 s for each client that reads nothing.
	s.mu.Lock()
	for sess := range s.sessions {
		socketOf(sess.netConn).Close()
	}
	s.mu.Unlock()
	s.detachedWG.Wait()
	if s.sentinel != nil {
		s.sentinel.stop()
	}
	// A reload in progress finishes first: the slaves it adds are closed too.
	s.reloadMu.Lock()
	s.repl.Close()
	s.router.Master().Close()
	for _, sl := range s.router.Slaves() {
		sl.Backend.Close()
	}
	s.reloadMu.Unlock()
	s.bgWG.Wait() // their requests failed with the closed backends
	s.log.Info().Msg("syncproxy stopped")
	return err
}

// Close shuts down without waiting for requests in flight.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.Shutdown(ctx)
	return nil
}

// accept registers a new client's session, unless the proxy is full or shutting
// down.
func (s *Server) accept(conn *clientConn) bool {
	if s.closing.Load() {
		return false
	}
	if s.clients.Load() >= int64(s.config().MaxClients) {
		s.metrics.rejected.Add(1)
		conn.WriteError(msgMaxClients)
		conn.Flush()
		return false
	}
	s.metrics.connections.Add(1)
	id := s.nextID.Add(1)
	sess := newSession(s, conn, id)
	conn.SetContext(sess)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.clients.Add(1)
	return true
}

// closed unregisters a client whose connection closed (unless its session went
// on serving it itself).
func (s *Server) closed(conn *clientConn, err error) {
	if sess, ok := conn.Context().(*Session); ok {
		if sess.detached.Load() || sess.shown.monitor.Load() {
			return // its own goroutine ends it
		}
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
		sess.close()
		s.logClosed(sess.netConn, sess.id)
	}
	s.clientLeft()
}

// scriptConns is the number of master connections for client scripts (see
// eval.go): a runaway script holds one of them.
const scriptConns = 2
