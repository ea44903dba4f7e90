// Package e2e holds the end-to-end tests of syncproxy: real redis-server processes,
// the proxy in-process or as the built binary, and unmodified Redis clients
// (redis-cli, redis-benchmark) or raw RESP connections.
package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// Bounds of the waits of this package.
const (
	onlineTimeout   = 10 * time.Second // from NewServer to every slave online
	convergeTimeout = 20 * time.Second // from the last write to slaves equal to the master
	poll            = 5 * time.Millisecond
	closeTimeout    = 15 * time.Second // from Server.Close to its return
)

// testLog is a zerolog writer that forwards to t.Log while the test runs and drops
// lines once it has ended: the proxy's goroutines may log while they stop, and
// t.Log after the end of a test panics.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// newLogger returns a warn-level logger writing to the test's log.
func newLogger(t testing.TB) zerolog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return zerolog.New(zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: "15:04:05.000"}).
		Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// startProxy runs a proxy in-process in front of master and slaves, with a 2s
// backend timeout, and returns once every slave is online.
func startProxy(t testing.TB, master *redistest.Server, slaves ...*redistest.Server) (string, *proxy.Server) {
	t.Helper()
	return startProxyWith(t, nil, master, slaves...)
}

// startProxyWith is startProxy with a hook that adjusts the configuration.
func startProxyWith(t testing.TB, adjust func(*proxy.Config), master *redistest.Server, slaves ...*redistest.Server) (string, *proxy.Server) {
	t.Helper()
	addr, srv := serveProxy(t, newLogger(t), adjust, master, slaves...)
	waitOnline(t, srv)
	return addr, srv
}

// serveProxy is startProxyWith logging to log, and returning without waiting for
// the slaves to be online.
func serveProxy(t testing.TB, log zerolog.Logger, adjust func(*proxy.Config), master *redistest.Server, slaves ...*redistest.Server) (string, *proxy.Server) {
	t.Helper()
	cfg := proxy.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Master = master.Addr
	for _, s := range slaves {
		cfg.Slaves = append(cfg.Slaves, s.Addr)
	}
	cfg.BackendTimeout = 2 * time.Second
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := proxy.NewServer(cfg, log)
	if err != nil {
		t.Fatalf("proxy.NewServer: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if !closeBounded(t, srv) {
			return
		}
		select {
		case err := <-served:
			if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(closeTimeout):
			t.Errorf("Serve did not return within %v of Close", closeTimeout)
		}
	})
	return ln.Addr().String(), srv
}

// closeBounded closes srv and reports whether Close returned within closeTimeout.
// A Close that hangs fails the test with the stacks of the proxy's goroutines
// instead of hanging the whole test binary until its timeout.
func closeBounded(t testing.TB, srv *proxy.Server) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		srv.Close()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(closeTimeout):
		t.Errorf("proxy.Server.Close did not return within %v; proxy goroutines:\n%s", closeTimeout, proxyStacks())
		return false
	}
}

// proxyStacks returns the stacks of the goroutines running proxy code.
func proxyStacks() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "syncproxy/proxy.") || strings.Contains(g, "syncproxy/router.") ||
			strings.Contains(g, "syncproxy/replicate.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// waitOnline waits until every slave of srv applies live messages.
func waitOnline(t testing.TB, srv *proxy.Server) {
	t.Helper()
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		for _, a := range srv.Replicator().Appliers() {
			if !a.Online() {
				return fmt.Errorf("slave %s %s is %v", a.Name(), a.Addr(), a.State())
			}
		}
		return nil
	})
}

// cmd splits a command line on spaces; arguments that need spaces, CR, LF or NUL
// are written as separate strings in the table instead.
func cmd(line string) []string { return strings.Fields(line) }

// bulk returns the RESP encoding of s as a bulk string.
func bulk(s string) []byte { return []byte(fmt.Sprintf("$%d\r\n%s\r\n", len(s), s)) }

// mustReply sends args on c and fails the test unless the reply is want.
func mustReply(t testing.TB, c *redistest.RawConn, want string, args ...string) {
	t.Helper()
	if got := c.Do(args...); string(got) != want {
		t.Fatalf("%s: got %q, want %q", showCmd(args), got, want)
	}
}

// showCmd renders a command for a failure message, long arguments cut.
func showCmd(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if len(a) > 40 {
			parts[i] = fmt.Sprintf("%q...(%d bytes)", a[:40], len(a))
		} else {
			parts[i] = fmt.Sprintf("%q", a)
		}
	}
	return strings.Join(parts, " ")
}

// showReply renders a reply for a failure message, long replies cut.
func showReply(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q...(%d bytes)", b[:300], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// lockedBuffer is a bytes.Buffer safe for a process writing while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var _ io.Writer = (*lockedBuffer)(nil)

// infoField returns the value of field in the INFO reply c gets, and whether it
// is there.
func infoField(c *redistest.RawConn, field string) (string, bool) {
	for _, line := range strings.Split(string(c.Do("INFO")), "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, true
		}
	}
	return "", false
}
