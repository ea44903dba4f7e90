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
	"runtime"
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

// usageError is a bad flag or setting: one line on stderr, exit status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }

// parseConfig builds the configuration from defaults, the config file and flags,
// in that order of precedence (flags win); passwords still empty then come from
// the environment.
func parseConfig(args []string, stdout io.Writer) (cfg proxy.Config, help bool, err error) {
	cfg = proxy.DefaultConfig()
	fs, file := newFlagSet(&cfg)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stdout)
			return cfg, true, nil
		}
		return cfg, false, usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, false, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *file != "" {
		cfg = proxy.DefaultConfig()
		if err := proxy.LoadConfigFile(*file, &cfg); err != nil {
			return cfg, false, usageError{err}
		}
		// The flags again, over the file: they parsed once, they parse again.
		fs, _ = newFlagSet(&cfg)
		if err := fs.Parse(args); err != nil {
			return cfg, false, usageError{err}
		}
	}
	cfg.ApplyEnv(os.Getenv)
	if err := cfg.Validate(); err != nil {
		return cfg, false, usageError{err}
	}
	return cfg, false, nil
}

// newFlagSet returns the flags: --config, and one per setting, writing into cfg.
func newFlagSet(cfg *proxy.Config) (fs *flag.FlagSet, configFile *string) {
	fs = flag.NewFlagSet("syncproxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // a parse error is one line on stderr, printed by run
	configFile = fs.String("config", "", "YAML config file with the same settings as the flags (flags win over the file)")
	cfg.BindFlags(fs)
	return fs, configFile
}

// printUsage prints --help.
func printUsage(fs *flag.FlagSet, stdout io.Writer) {
	fmt.Fprintf(stdout, "Usage: syncproxy [flags]\n\n"+
		"A Redis proxy: writes go to --master and are replicated to every --slaves\n"+
		"server; reads are balanced across the slaves. With no --master it runs a\n"+
		"self-contained demo on in-process servers. SIGHUP reloads the --config\n"+
		"file (flags still win); see README.md for what a reload changes.\n\nFlags:\n")
	fs.SetOutput(stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
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
	if cfg.Threads > 0 {
		runtime.GOMAXPROCS(cfg.Threads)
	}

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
	if err := serveAdmin(srv, cfg.Admin, log); err != nil {
		ln.Close()
		srv.Close()
		return 1
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
	return serve(srv, ln, args, cfg, logOut, log)
}

// serve runs srv on ln until it stops or a signal stops it; SIGHUP reloads the
// configuration, cfg being the one in force.
func serve(srv *proxy.Server, ln net.Listener, args []string, cfg proxy.Config, logOut *logOutput, log zerolog.Logger) int {
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

// serveAdmin starts the admin HTTP listener on addr, unless addr is empty.
func serveAdmin(srv *proxy.Server, addr string, log zerolog.Logger) error {
	if addr == "" {
		return nil
	}
	aln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error().Err(err).Str("admin", addr).Msg("cannot listen")
		return err
	}
	go func() {
		if err := srv.ServeAdmin(aln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			log.Error().Err(err).Msg("admin listener stopped")
		}
	}()
	return nil
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
