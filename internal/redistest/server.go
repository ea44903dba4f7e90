package redistest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Bounds on every wait of the package, so that a broken server fails a test instead of
// hanging it.
const (
	readyTimeout  = 10 * time.Second       // from exec to a server answering PING
	readyPoll     = 5 * time.Millisecond   // between two readiness probes
	stopTimeout   = 5 * time.Second        // from SIGTERM to SIGKILL
	killTimeout   = 5 * time.Second        // from SIGKILL to giving up
	ioTimeout     = 10 * time.Second       // connect, read and write on test connections
	probeTimeout  = 500 * time.Millisecond // connect, read and write of a readiness probe
	startAttempts = 5                      // ports tried when the chosen one is taken
	logTailLines  = 30                     // log lines shown when a server misbehaves
)

// notFoundMsg is the failure when redis-server is missing; the Makefile installs it.
const notFoundMsg = "redis-server not found: run `make test`, which installs it"

// errAddrInUse reports that redis-server could not bind its port: another process took
// it between freePort and exec, so Start tries another one.
var errAddrInUse = errors.New("redistest: port already in use")

// Server is one redis-server process started for a test.
type Server struct {
	Addr string // "127.0.0.1:PORT"
	Port int    // TCP port, kept across Stop and Restart
	Dir  string // working directory (from t.TempDir), holds redis.log

	bin      string      // path of redis-server
	extra    []string    // caller's extra arguments
	password string      // from --requirepass in extra, used by the readiness probe
	certs    *Certs      // TLS only, with these certificates; nil for plain TCP
	tls      *tls.Config // how the package's own connections reach a TLS server
	sentinel string      // a sentinel's initial config file; "" for a server

	mu     sync.Mutex
	proc   *process // nil when not running
	paused bool     // SIGSTOP sent and not yet undone
}

// process is one run of redis-server; a Server has one per Start or Restart.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed by the waiter goroutine once the process has exited
	err  error         // exit status, valid once done is closed
}

// Start runs a redis-server on a free loopback port with persistence off and DEBUG
// enabled for loopback clients, waits until it answers, and stops it at t.Cleanup.
// extraArgs are appended to the command line ("--maxmemory", "10mb", ...).
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return StartWith(t, Options{Args: extraArgs})
}

// Options are the settings of StartWith.
type Options struct {
	// Args are appended to the command line. A --requirepass among them is used
	// by the package's own connections (readiness, shutdown, WaitConverged).
	Args []string
	// TLS, when set, makes the port a TLS port (--tls-port, and --port 0) with
	// the server certificate of TLS and its CA; clients need no certificate
	// unless Args say --tls-auth-clients yes. Dial, Do and the package's own
	// connections then use TLS and present the client certificate of TLS.
	TLS *Certs
}

// StartWith is Start with options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal(notFoundMsg)
	}
	s := &Server{
		Dir:      t.TempDir(),
		bin:      bin,
		extra:    append([]string(nil), opts.Args...),
		password: passwordArg(opts.Args),
		certs:    opts.TLS,
	}
	if opts.TLS != nil {
		s.tls = opts.TLS.ClientTLS(true)
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() { s.cleanup(t) })

	s.startOnFreePort(t, "redis-server")
	return s
}

// StartN starts n servers with the same extra arguments.
func StartN(t testing.TB, n int, extraArgs ...string) []*Server {
	t.Helper()
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = Start(t, extraArgs...)
	}
	return servers
}

// Stop terminates the server gracefully (SHUTDOWN NOSAVE and SIGTERM, then SIGKILL after
// a bound) and waits for it to exit. Port and directory are kept for Restart. Stopping a
// stopped server does nothing.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(syscall.SIGTERM); err != nil {
		t.Fatalf("redistest: stop %s: %v", s.Addr, err)
	}
}

// Kill sends SIGKILL and waits for the process to exit, as a crash would end it.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(syscall.SIGKILL); err != nil {
		t.Fatalf("redistest: kill %s: %v", s.Addr, err)
	}
}

// Restart stops the server if it runs and starts it again on the same port. The new
// process starts empty, since nothing is persisted.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	err := s.stopLocked(syscall.SIGTERM)
	s.mu.Unlock()
	if err != nil {
		t.Fatalf("redistest: restart %s: %v", s.Addr, err)
	}
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart %s: %v\n%s", s.Addr, err, s.LogTail(logTailLines))
	}
}

// Pause freezes the server with SIGSTOP: connections are accepted by the kernel but
// nothing is answered, as with a hung or partitioned server. Resume undoes it.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGSTOP, true)
}

// Resume continues a server frozen by Pause.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.signal(t, syscall.SIGCONT, false)
}

// signal sends SIGSTOP or SIGCONT and waits until the process is in the wanted state,
// so that the test's next command meets a frozen (or running) server.
func (s *Server) signal(t testing.TB, sig syscall.Signal, pause bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatalf("redistest: %v %s: server is not running", sig, s.Addr)
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("redistest: %v %s: %v", sig, s.Addr, err)
	}
	s.paused = pause
	if err := waitStopped(s.proc.cmd.Process.Pid, pause, readyTimeout); err != nil {
		t.Fatalf("redistest: %v %s: %v", sig, s.Addr, err)
	}
}

// Running reports whether the server process is alive (a paused one is). It is false
// after Stop or Kill, and after the server ended by itself (SHUTDOWN, a crash).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	select {
	case <-s.proc.done:
		return false
	default:
		return true
	}
}

// Dial opens a redigo connection with timeouts, closed at t.Cleanup.
func (s *Server) Dial(t testing.TB) redis.Conn {
	t.Helper()
	c, err := s.dial(ioTimeout, "")
	if err != nil {
		t.Fatalf("redistest: dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Do runs one command on a fresh connection. A Redis error reply is returned as a
// redis.Error value; a network failure fails the test.
func (s *Server) Do(t testing.TB, cmd string, args ...interface{}) interface{} {
	t.Helper()
	c, err := s.dial(ioTimeout, "")
	if err != nil {
		t.Fatalf("redistest: dial %s: %v", s.Addr, err)
	}
	defer c.Close()
	reply, err := c.Do(cmd, args...)
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return rerr
	}
	if err != nil {
		t.Fatalf("redistest: %s on %s: %v", cmd, s.Addr, err)
	}
	return reply
}

// Info returns one field of INFO section ("server", "replication", ...); the test fails
// if the field is absent.
func (s *Server) Info(t testing.TB, section, field string) string {
	t.Helper()
	reply := s.Do(t, "INFO", section)
	text, err := redis.String(reply, nil)
	if err != nil {
		t.Fatalf("redistest: INFO %s on %s: %v", section, s.Addr, reply)
	}
	v, ok := infoField(text, field)
	if !ok {
		t.Fatalf("redistest: INFO %s on %s has no field %q", section, s.Addr, field)
	}
	return v
}

// LogTail returns the last n lines of the server's log, which also receives what
// redis-server writes to stdout and stderr (configuration errors, for instance).
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "redis.log tail:\n" + strings.Join(lines, "\n")
}

func (s *Server) logPath() string { return filepath.Join(s.Dir, "redis.log") }

// start runs redis-server on s.Port and waits until it is ready. On failure the process
// is gone and the error wraps errAddrInUse if the port was taken.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	logFile, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	logStart, err := logFile.Seek(0, 2)
	if err != nil {
		logFile.Close()
		return err
	}
	args := []string{"--port", strconv.Itoa(s.Port)}
	if s.sentinel != "" {
		args, err = s.sentinelArgs()
		if err != nil {
			logFile.Close()
			return err
		}
	} else if s.certs != nil {
		args = []string{
			"--port", "0",
			"--tls-port", strconv.Itoa(s.Port),
			"--tls-cert-file", s.certs.ServerCert,
			"--tls-key-file", s.certs.ServerKey,
			"--tls-ca-cert-file", s.certs.CAFile,
			"--tls-auth-clients", "no",
		}
	}
	args = append(args, "--bind", "127.0.0.1")
	if s.sentinel == "" {
		args = append(args,
			"--save", "",
			"--appendonly", "no",
			"--enable-debug-command", "local")
	}
	args = append(args,
		"--dir", s.Dir,
		"--logfile", s.logPath(),
	)
	cmd := exec.Command(s.bin, append(args, s.extra...)...)
	cmd.Dir = s.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	logFile.Close() // the child holds its own descriptor
	if err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.proc = p

	if err := s.waitReady(p); err != nil {
		if stopErr := s.stopLocked(syscall.SIGKILL); stopErr != nil {
			err = fmt.Errorf("%w (and %v)", err, stopErr)
		}
		if s.logSince(logStart, "Address already in use") {
			err = fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return err
	}
	return nil
}

// waitReady polls until the server answers PING and reports p's pid, or p exits, or
// readyTimeout passes.
func (s *Server) waitReady(p *process) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	for {
		last := s.probe(p.cmd.Process.Pid)
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("redis-server exited before it was ready: %v", p.err)
		case <-deadline.C:
			return fmt.Errorf("redis-server not ready after %v: %v", readyTimeout, last)
		case <-tick.C:
		}
	}
}

// probe checks that the server on s.Addr answers and is the process pid, not another
// test's server that bound the port first.
func (s *Server) probe(pid int) error {
	c, err := s.dialProbe()
	if err != nil {
		return err
	}
	defer c.Close()
	pong, err := redis.String(c.Do("PING"))
	if err != nil {
		return err
	}
	if pong != "PONG" {
		return fmt.Errorf("PING replied %q", pong)
	}
	text, err := redis.String(c.Do("INFO", "server"))
	if err != nil {
		return err
	}
	if v, _ := infoField(text, "process_id"); v != strconv.Itoa(pid) {
		return fmt.Errorf("%s is served by process %q, not %d", s.Addr, v, pid)
	}
	return nil
}

// dialProbe connects for the package's own short commands, authenticated with the
// --requirepass of the extra arguments if any.
func (s *Server) dialProbe() (redis.Conn, error) {
	return s.dial(probeTimeout, s.password)
}

// dial opens a redigo connection to s with every timeout set to d, over TLS if s
// speaks TLS, authenticated when password is not empty.
func (s *Server) dial(d time.Duration, password string) (redis.Conn, error) {
	opts := []redis.DialOption{
		redis.DialConnectTimeout(d),
		redis.DialReadTimeout(d),
		redis.DialWriteTimeout(d),
	}
	if password != "" {
		opts = append(opts, redis.DialPassword(password))
	}
	if s.tls != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(s.tls))
	}
	return redis.Dial("tcp", s.Addr, opts...)
}

// stopLocked sends sig to the running process (resuming it if paused, so that SIGTERM
// is handled), escalates to SIGKILL after stopTimeout and waits for the exit.
func (s *Server) stopLocked(sig syscall.Signal) error {
	p := s.proc
	if p == nil {
		return nil
	}
	if sig == syscall.SIGTERM && !s.paused {
		// Redis acts on SIGTERM only at its next cron tick (up to 100ms with the
		// default hz); SHUTDOWN is immediate. SIGTERM follows in case it failed.
		s.shutdown(p)
	}
	// Errors from Signal only mean the process has already exited; done tells.
	_ = p.cmd.Process.Signal(sig)
	if s.paused {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
	if sig != syscall.SIGKILL {
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		return fmt.Errorf("pid %d did not exit %v after SIGKILL", p.cmd.Process.Pid, killTimeout)
	}
	s.proc = nil
	s.paused = false
	return nil
}

// shutdown asks p to exit at once, without saving or waiting for replicas. It is best
// effort: the server may have renamed the command or require another password, and on
// success the connection just closes, so the reply is ignored. It checks the pid first:
// if p has exited, the port may already belong to another test's server.
func (s *Server) shutdown(p *process) {
	select {
	case <-p.done:
		return
	default:
	}
	c, err := s.dialProbe()
	if err != nil {
		return
	}
	defer c.Close()
	text, err := redis.String(c.Do("INFO", "server"))
	if err != nil {
		return
	}
	if v, _ := infoField(text, "process_id"); v != strconv.Itoa(p.cmd.Process.Pid) {
		return
	}
	_, _ = c.Do("SHUTDOWN", "NOSAVE", "NOW", "FORCE")
}

// cleanup stops the server at the end of its test; it reports with Errorf, since
// cleanups should not call FailNow.
func (s *Server) cleanup(t testing.TB) {
	s.mu.Lock()
	err := s.stopLocked(syscall.SIGTERM)
	s.mu.Unlock()
	if err != nil {
		t.Errorf("redistest: stop %s: %v", s.Addr, err)
	}
	if t.Failed() {
		t.Logf("redistest: server %s %s", s.Addr, s.LogTail(logTailLines))
	}
}

// logSince reports whether the log, from byte offset off on, contains substr.
func (s *Server) logSince(off int64, substr string) bool {
	b, err := os.ReadFile(s.logPath())
	if err != nil || int64(len(b)) < off {
		return false
	}
	return strings.Contains(string(b[off:]), substr)
}

// dial opens a redigo connection with every timeout set to d.
func dial(addr string, d time.Duration) (redis.Conn, error) {
	return redis.Dial("tcp", addr,
		redis.DialConnectTimeout(d),
		redis.DialReadTimeout(d),
		redis.DialWriteTimeout(d))
}

// freePort asks the kernel for a free loopback port. Another process may take it before
// redis-server binds it; Start then tries again.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// passwordArg returns the value of --requirepass in args, or "".
func passwordArg(args []string) string {
	pw := ""
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--requirepass" {
			pw = args[i+1]
		}
	}
	return pw
}

// infoField finds "field:value" in the text of an INFO reply.
func infoField(info, field string) (string, bool) {
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok && k == field {
			return v, true
		}
	}
	return "", false
}

// dialProbeIO is dialProbe with the longer timeouts of test I/O.
func (s *Server) dialProbeIO() (redis.Conn, error) {
	return s.dial(ioTimeout, s.password)
}

// startOnFreePort starts s on a free loopback port, trying another when the one
// picked was taken meanwhile.
func (s *Server) startOnFreePort(t testing.TB, what string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err = s.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || attempt == startAttempts {
			t.Fatalf("redistest: %s on %s did not start: %v\n%s", what, s.Addr, err, s.LogTail(logTailLines))
		}
	}
}

// CommandCalls returns the calls of cmd (lower case; "cmd|sub" for a
// subcommand) in the server's INFO commandstats, 0 when it has none.
func (s *Server) CommandCalls(t testing.TB, cmd string) int {
	t.Helper()
	info, ok := s.Do(t, "INFO", "commandstats").([]byte)
	if !ok {
		t.Fatalf("redistest: INFO commandstats on %s: not a bulk string", s.Addr)
	}
	for _, line := range strings.Split(string(info), "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			return n
		}
	}
	return 0
}
