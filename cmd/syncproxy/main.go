// Command syncproxy is a Redis-protocol proxy that sends writes to one master,
// replicates them to independent slave servers, and balances reads across them.
//
// Run it with no master for a self-contained demo; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/proxy"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// Environment variables that give the backend passwords when neither a flag nor
// the config file does.
const (
	masterPasswordEnv   = "SYNCPROXY_MASTER_PASSWORD"
	slavePasswordEnv    = "SYNCPROXY_SLAVE_PASSWORD"
	sentinelPasswordEnv = "SYNCPROXY_SENTINEL_PASSWORD"
)

// usageError is a bad flag or setting: one line on stderr, exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

// parseConfig builds the configuration from defaults, the config file and flags,
// in that order of precedence (flags win).
func parseConfig(args []string, stdout io.Writer) (cfg proxy.Config, help bool, err error) {
	cfg = proxy.DefaultConfig()
	def := proxy.DefaultConfig()
	fs := flag.NewFlagSet("syncproxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		configFile = fs.String("config", "", "YAML config file with the same settings as the flags (flags win over the file)")
		listen     = fs.String("listen", def.Listen, "address to accept Redis clients on")
		admin      = fs.String("admin", "", "HOST:PORT of the admin HTTP listener: /metrics, /healthz, /status.json, / (off when empty)")
		master     = fs.String("master", "", "master Redis HOST:PORT (writes); empty (and no --sentinel) runs the in-process demo")
		sentinels  = fs.String("sentinel", "", "comma-separated Redis Sentinel HOST:PORT list that gives the master (instead of --master) and its failovers")
		sMaster    = fs.String("sentinel-master", "", "name the sentinels monitor the master under (with --sentinel)")
		sUser      = fs.String("sentinel-user", "", "ACL user on the sentinels (needs a password)")
		sPass      = fs.String("sentinel-password", "", "password on the sentinels (AUTH); or env "+sentinelPasswordEnv)
		slaves     = fs.String("slaves", "", "comma-separated slave Redis HOST:PORT list (reads)")
		channel    = fs.String("sync-channel", def.SyncChannel, "pub/sub channel of the sync messages")
		timeout    = fs.Duration("backend-timeout", def.BackendTimeout, "timeout of a slave's reply (the master's: --write-reply-timeout), and of dials and writes unless set on their own)")
		conns      = fs.Int("backend-conns", def.BackendConns, "multiplexed connections per backend")
		backlog    = fs.Int("backlog-len", def.BacklogLen, "sync messages kept in the master's backlog (approximate)")
		queue      = fs.Int("applier-queue", def.ApplierQueue, "sync messages buffered in memory per slave")
		pipeline   = fs.Int("max-pipeline", def.MaxPipeline, "pipelined commands dispatched at once per client")
		group      = fs.Int("write-group", def.WriteGroup, "writes per replication script call at most (group commit; 1 disables it)")
		configSet  = fs.String("config-set", def.ConfigSet, "CONFIG SET from clients: deny, or broadcast to the master and every slave")
		allowEvict = fs.Bool("allow-slave-eviction", def.AllowSlaveEviction, "start even when a slave's maxmemory is below the master's (it leaves the read set while it evicts)")
		onReset    = fs.String("on-master-reset", def.OnMasterReset, "when the master lost the slaves' data: resync (empty the slaves to match), or hold (keep them, refuse writes until SYNCPROXY MASTER-RESET CONFIRM)")
		readPolicy = fs.String("read-policy", def.ReadPolicy, "where reads go: master, prefer-master, replica, prefer-replica, any")
		ryw        = fs.Bool("read-your-writes", def.ReadYourWrites, "false: the same as --read-consistency eventual (kept for older configurations)")
		readCons   = fs.String("read-consistency", def.ReadConsistency, "read consistency level: session (own writes, monotonic reads, tokens), global (every write acknowledged before the read), eventual")
		rywWait    = fs.Duration("ryw-wait", def.RYWWait, "how long a read may wait for a slave to apply the client's last write before going to the master")
		maxLagMsgs = fs.Int64("max-lag-messages", def.MaxLagMessages, "a slave more messages behind serves no reads (0: no bound)")
		maxLagMs   = fs.Int64("max-lag-ms", def.MaxLagMs, "a slave lagging more milliseconds serves no reads (0: no bound)")
		hInterval  = fs.Duration("health-interval", def.HealthInterval, "how often each slave is checked (PING) and its position compared with the master's")
		hFailures  = fs.Int("health-failures", def.HealthFailures, "consecutive failed checks that take a slave out of the read set")
		reqPass    = fs.String("requirepass", "", "password clients must give with AUTH (as Redis' requirepass); empty: none")
		maxClients = fs.Int("max-clients", def.MaxClients, "clients connected at once at most; beyond, Redis' error and the connection closed")
		idle       = fs.Duration("idle-timeout", def.IdleTimeout, "close a client idle this long (0: never; subscribed clients excepted)")
		maxArgs    = fs.Int64("max-args", def.MaxArgs, "arguments in one command at most")
		outTimeout = fs.Duration("client-output-timeout", def.OutputTimeout, "close a client that accepts no reply byte for this long (0: never)")
		tlsShake   = fs.Duration("tls-handshake-timeout", def.TLSHandshakeTimeout, "close a TLS client that has not completed its handshake after this long")
		dialTO     = fs.Duration("backend-dial-timeout", def.BackendDialTimeout, "timeout of backend dials and handshakes (0: --backend-timeout)")
		writeTO    = fs.Duration("backend-write-timeout", def.BackendWriteTimeout, "timeout of backend writes (0: --backend-timeout)")
		replyTO    = fs.Duration("write-reply-timeout", def.WriteReplyTimeout, "how long to wait for the master's reply to a write while its connection is alive; beyond, the write's outcome is unknown")
		grace      = fs.Duration("shutdown-grace", def.ShutdownGrace, "time to finish requests in flight on SIGINT/SIGTERM")
		logLevel   = fs.String("log-level", def.LogLevel, "log level: trace, debug, info, warn, error, disabled")
		logFormat  = fs.String("log-format", def.LogFormat, "log format: json, console, or auto (console on a terminal)")
		tlsCert    = fs.String("tls-cert", "", "certificate (PEM) of the client listener; with --tls-key, clients must use TLS")
		tlsKey     = fs.String("tls-key", "", "private key (PEM) of --tls-cert")
		tlsCA      = fs.String("tls-ca", "", "CA certificates (PEM): clients must present a certificate signed by one")
		bTLS       = fs.Bool("backend-tls", false, "connect to the master and the slaves with TLS")
		bTLSCA     = fs.String("backend-tls-ca", "", "CA certificates (PEM) that verify the backends (default: the system's)")
		bTLSName   = fs.String("backend-tls-server-name", "", "name the backends' certificates are verified for, sent as SNI (default: the host of each address)")
		bTLSCert   = fs.String("backend-tls-cert", "", "client certificate (PEM) presented to the backends")
		bTLSKey    = fs.String("backend-tls-key", "", "private key (PEM) of --backend-tls-cert")
		masterUser = fs.String("master-user", "", "ACL user on the master (needs a password)")
		masterPass = fs.String("master-password", "", "password on the master (AUTH); or env "+masterPasswordEnv)
		slaveUser  = fs.String("slave-user", "", "ACL user on every slave (needs a password)")
		slavePass  = fs.String("slave-password", "", "password on every slave (AUTH); or env "+slavePasswordEnv)
	)
	maxBulk, queryBuf := def.ProtoMaxBulkLen, def.QueryBufferLimit
	fs.Var(&maxBulk, "proto-max-bulk-len", "longest bulk string a client may send (e.g. 512mb)")
	fs.Var(&queryBuf, "client-query-buffer-limit", "bytes of one client command at most (e.g. 1gb)")
	usage := func() {
		fmt.Fprintf(stdout, "Usage: syncproxy [flags]\n\n"+
			"A Redis proxy: writes go to --master and are replicated to every --slaves\n"+
			"server; reads are balanced across the slaves. With no --master it runs a\n"+
			"self-contained demo on in-process servers. SIGHUP reloads the --config\n"+
			"file (flags still win); see README.md for what a reload changes.\n\nFlags:\n")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	fs.Usage = func() {} // a parse error is one line on stderr, printed by run
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return cfg, true, nil
		}
		return cfg, false, usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, false, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *configFile != "" {
		if err := proxy.LoadConfigFile(*configFile, &cfg); err != nil {
			return cfg, false, usageError{err}
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			cfg.Listen = *listen
		case "admin":
			cfg.Admin = *admin
		case "master":
			cfg.Master = *master
		case "sentinel":
			cfg.Sentinels = splitList(*sentinels)
		case "sentinel-master":
			cfg.SentinelMaster = *sMaster
		case "sentinel-user":
			cfg.SentinelUser = *sUser
		case "sentinel-password":
			cfg.SentinelPassword = *sPass
		case "slaves":
			cfg.Slaves = splitList(*slaves)
		case "sync-channel":
			cfg.SyncChannel = *channel
		case "backend-timeout":
			cfg.BackendTimeout = *timeout
		case "backend-conns":
			cfg.BackendConns = *conns
		case "backlog-len":
			cfg.BacklogLen = *backlog
		case "applier-queue":
			cfg.ApplierQueue = *queue
		case "max-pipeline":
			cfg.MaxPipeline = *pipeline
		case "write-group":
			cfg.WriteGroup = *group
		case "config-set":
			cfg.ConfigSet = *configSet
		case "on-master-reset":
			cfg.OnMasterReset = *onReset
		case "allow-slave-eviction":
			cfg.AllowSlaveEviction = *allowEvict
		case "read-policy":
			cfg.ReadPolicy = *readPolicy
		case "read-your-writes":
			cfg.ReadYourWrites = *ryw
		case "read-consistency":
			cfg.ReadConsistency = *readCons
		case "ryw-wait":
			cfg.RYWWait = *rywWait
		case "max-lag-messages":
			cfg.MaxLagMessages = *maxLagMsgs
		case "max-lag-ms":
			cfg.MaxLagMs = *maxLagMs
		case "health-interval":
			cfg.HealthInterval = *hInterval
		case "health-failures":
			cfg.HealthFailures = *hFailures
		case "requirepass":
			cfg.RequirePass = *reqPass
		case "max-clients":
			cfg.MaxClients = *maxClients
		case "idle-timeout":
			cfg.IdleTimeout = *idle
		case "max-args":
			cfg.MaxArgs = *maxArgs
		case "client-output-timeout":
			cfg.OutputTimeout = *outTimeout
		case "tls-handshake-timeout":
			cfg.TLSHandshakeTimeout = *tlsShake
		case "backend-dial-timeout":
			cfg.BackendDialTimeout = *dialTO
		case "backend-write-timeout":
			cfg.BackendWriteTimeout = *writeTO
		case "write-reply-timeout":
			cfg.WriteReplyTimeout = *replyTO
		case "proto-max-bulk-len":
			cfg.ProtoMaxBulkLen = maxBulk
		case "client-query-buffer-limit":
			cfg.QueryBufferLimit = queryBuf
		case "shutdown-grace":
			cfg.ShutdownGrace = *grace
		case "log-level":
			cfg.LogLevel = *logLevel
		case "log-format":
			cfg.LogFormat = *logFormat
		case "tls-cert":
			cfg.TLSCert = *tlsCert
		case "tls-key":
			cfg.TLSKey = *tlsKey
		case "tls-ca":
			cfg.TLSCA = *tlsCA
		case "backend-tls":
			cfg.BackendTLS = *bTLS
		case "backend-tls-ca":
			cfg.BackendTLSCA = *bTLSCA
		case "backend-tls-server-name":
			cfg.BackendTLSServerName = *bTLSName
		case "backend-tls-cert":
			cfg.BackendTLSCert = *bTLSCert
		case "backend-tls-key":
			cfg.BackendTLSKey = *bTLSKey
		case "master-user":
			cfg.MasterUser = *masterUser
		case "master-password":
			cfg.MasterPassword = *masterPass
		case "slave-user":
			cfg.SlaveUser = *slaveUser
		case "slave-password":
			cfg.SlavePassword = *slavePass
		}
	})
	// Passwords given in the environment stay out of ps; a flag or key wins.
	if cfg.MasterPassword == "" {
		cfg.MasterPassword = os.Getenv(masterPasswordEnv)
	}
	if cfg.SlavePassword == "" {
		cfg.SlavePassword = os.Getenv(slavePasswordEnv)
	}
	if cfg.SentinelPassword == "" {
		cfg.SentinelPassword = os.Getenv(sentinelPasswordEnv)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, usageError{err}
	}
	return cfg, false, nil
}

// logOutput is the log's destination, in the format and at the level in force:
// a reload may change both, although the logger has been copied everywhere.
type logOutput struct {
	w   io.Writer
	cur atomic.Pointer[io.Writer] // w, or a console writer over it
}

func (o *logOutput) Write(p []byte) (int, error) { return (*o.cur.Load()).Write(p) }

// set applies cfg's log format and level. The level is zerolog's global one,
// which every copy of the logger obeys; the process has one log.
func (o *logOutput) set(cfg proxy.Config) {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	zerolog.SetGlobalLevel(level)
	out := o.w
	console := cfg.LogFormat == "console"
	if cfg.LogFormat == "auto" {
		if f, ok := o.w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		out = zerolog.ConsoleWriter{Out: o.w, TimeFormat: time.TimeOnly}
	}
	o.cur.Store(&out)
}

func newLogger(cfg proxy.Config, w io.Writer) (zerolog.Logger, *logOutput) {
	out := &logOutput{w: w}
	out.set(cfg)
	return zerolog.New(out).Level(zerolog.TraceLevel).With().Timestamp().Logger(), out
}

// reload re-reads the configuration as at start (defaults, then the --config
// file, then the flags, which still win) and applies it to srv; running is the
// configuration in force, updated. An invalid configuration changes nothing.
func reload(srv *proxy.Server, args []string, running *proxy.Config, logOut *logOutput, log zerolog.Logger) {
	next, _, err := parseConfig(args, io.Discard)
	if err != nil {
		log.Error().Err(err).Msg("configuration reload failed; keeping the running configuration")
		return
	}
	if next.Demo() {
		// The demo's in-process servers stay.
		next.Master, next.Slaves = running.Master, running.Slaves
	}
	err = srv.Reload(next)
	if err != nil && !errors.Is(err, proxy.ErrRestartNeeded) {
		log.Error().Err(err).Msg("configuration reload failed; keeping the running configuration")
		return
	}
	// Reload logged what it did at the level in force until now.
	*running = srv.Config()
	logOut.set(*running)
}

// run is main without os.Exit; ready, when not nil, receives the listening address.
func run(args []string, stdout, stderr io.Writer, ready chan<- net.Addr) int {
	if len(args) > 0 && args[0] == "check" {
		return runCheck(args[1:], stdout, stderr)
	}
	cfg, help, err := parseConfig(args, stdout)
	if help {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "syncproxy: %v (see syncproxy --help)\n", err)
		return 2
	}
	log, logOut := newLogger(cfg, stderr)

	demo := cfg.Demo()
	if demo {
		// The in-process servers speak neither TLS nor AUTH: backend settings
		// (from the environment, say) are for real servers.
		if cfg.BackendTLS || cfg.MasterPassword != "" || cfg.SlavePassword != "" {
			log.Warn().Msg("demo mode ignores the backend TLS and password settings")
			cfg.BackendTLS, cfg.BackendTLSCA, cfg.BackendTLSCert, cfg.BackendTLSKey, cfg.BackendTLSServerName = false, "", "", "", ""
			cfg.MasterUser, cfg.MasterPassword, cfg.SlaveUser, cfg.SlavePassword = "", "", "", ""
		}
		stop, err := startDemo(&cfg)
		if err != nil {
			log.Error().Err(err).Msg("cannot start the demo servers")
			return 1
		}
		defer stop()
	}
	srv, err := proxy.NewServer(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "syncproxy: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error().Err(err).Str("listen", cfg.Listen).Msg("cannot listen")
		srv.Close()
		return 1
	}
	if cfg.Admin != "" {
		aln, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			log.Error().Err(err).Str("admin", cfg.Admin).Msg("cannot listen")
			ln.Close()
			srv.Close()
			return 1
		}
		go func() {
			if err := srv.ServeAdmin(aln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				log.Error().Err(err).Msg("admin listener stopped")
			}
		}()
	}
	if demo {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		log.Warn().Str("master", cfg.Master).Strs("slaves", cfg.Slaves).
			Str("try", "redis-cli -p "+port).
			Msg("DEMO MODE: in-process master and two slaves (miniredis), data is not kept; try: redis-cli -p " + port)
	}
	if ready != nil {
		ready <- ln.Addr()
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	for {
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				log.Error().Err(err).Msg("server stopped")
				srv.Close()
				return 1
			}
			return 0
		case <-hups:
			log.Info().Msg("SIGHUP: reloading the configuration")
			reload(srv, args, &cfg, logOut, log)
		case sig := <-sigs:
			return shutdown(srv, sig, sigs, served, cfg.ShutdownGrace, log)
		}
	}
}

// shutdown stops srv after sig, waiting up to grace for requests in flight (a
// second signal stops waiting).
func shutdown(srv *proxy.Server, sig os.Signal, sigs chan os.Signal, served chan error, grace time.Duration, log zerolog.Logger) int {
	log.Info().Str("signal", sig.String()).Dur("grace", grace).Msg("shutting down")
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() {
		select {
		case <-sigs:
			cancel() // a second signal: stop waiting
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("requests were still in flight at the end of the grace period")
	}
	<-served
	return 0
}

// startDemo starts an in-process master and two slaves and points cfg at them.
func startDemo(cfg *proxy.Config) (stop func(), err error) {
	var servers []*miniredis.Miniredis
	stop = func() {
		for _, m := range servers {
			m.Close()
		}
	}
	for i := 0; i < 3; i++ {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			stop()
			return nil, err
		}
		servers = append(servers, m)
	}
	cfg.Master = servers[0].Addr()
	cfg.Slaves = []string{servers[1].Addr(), servers[2].Addr()}
	return stop, nil
}

// splitList splits a comma-separated flag value, leaving out empty items.
func splitList(v string) []string {
	var list []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	return list
}
