package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestClientTLS: with --tls-cert and --tls-key, clients speak TLS to the proxy —
// raw RESP, redigo, redis-cli --tls — and everything works as over TCP; a client
// that speaks plain TCP gets nothing; a TLS client that leaves while blocked is
// noticed.
func TestClientTLS(t *testing.T) {
	t.Parallel()
	certs := redistest.NewCerts(t)
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.TLSCert, c.TLSKey = certs.ServerCert, certs.ServerKey
	}, master, slaves...)
	dial := func() *redistest.RawConn { return redistest.DialRawTLS(t, addr, certs.ClientTLS(false)) }
	backendWorkload(t, dial, master, slaves...)

	rc, err := redis.Dial("tcp", addr, redis.DialUseTLS(true), redis.DialTLSConfig(certs.ClientTLS(false)),
		redis.DialConnectTimeout(5*time.Second), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("redigo over TLS: %v", err)
	}
	defer rc.Close()
	if _, err := rc.Do("SET", "redigo", "yes"); err != nil {
		t.Fatalf("redigo SET: %v", err)
	}
	if got, err := redis.String(rc.Do("GET", "redigo")); got != "yes" {
		t.Fatalf("redigo GET: %q %v", got, err)
	}

	// Plain TCP: the proxy answers no command, and closes the connection.
	if got := plainExchange(t, addr); strings.Contains(got, "PONG") {
		t.Errorf("a plain TCP client got %q", got)
	}

	// A TLS client that closes while blocked (its close_notify comes before its
	// FIN) is noticed: it is neither blocked nor connected any more.
	mon := dial()
	before := infoInt(t, mon, "connected_clients")
	blocked := dial()
	blocked.Send("BLPOP", "nothing", "0")
	blocked.Flush()
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if n := infoInt(t, mon, "blocked_clients"); n != 1 {
			return fmt.Errorf("%d blocked clients", n)
		}
		return nil
	})
	blocked.Close()
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		b, c := infoInt(t, mon, "blocked_clients"), infoInt(t, mon, "connected_clients")
		if b != 0 || c != before {
			return fmt.Errorf("%d blocked, %d connected clients, want 0 and %d", b, c, before)
		}
		return nil
	})

	cli := redisCLI(t, addr, "--tls", "--cacert", certs.CAFile)
	if cli == nil {
		return
	}
	if out, err := cli("SET", "cli", "tls"); err != nil || out != "OK" {
		t.Errorf("redis-cli --tls SET: %q %v", out, err)
	}
	if out, err := cli("GET", "cli"); err != nil || out != "tls" {
		t.Errorf("redis-cli --tls GET: %q %v", out, err)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestClientTLSCertificates: with --tls-ca, a client must present a certificate
// that CA signed; without one, or with another CA's, it is refused.
func TestClientTLSCertificates(t *testing.T) {
	t.Parallel()
	certs, other := redistest.NewCerts(t), redistest.NewCerts(t)
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.TLSCert, c.TLSKey, c.TLSCA = certs.ServerCert, certs.ServerKey, certs.CAFile
	}, servers[0], servers[1])

	c := redistest.DialRawTLS(t, addr, certs.ClientTLS(true))
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	mustReply(t, c, "$1\r\nv\r\n", "GET", "k")

	foreign := certs.ClientTLS(false)
	foreign.Certificates = []tls.Certificate{other.Client}
	for name, conf := range map[string]*tls.Config{"no certificate": certs.ClientTLS(false), "another CA's": foreign} {
		if got, err := tlsExchange(addr, conf); err == nil {
			t.Errorf("%s: the proxy answered %q", name, got)
		}
	}
	// A client that does not trust the proxy's CA refuses it.
	if _, err := tlsExchange(addr, other.ClientTLS(true)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client of another CA: %v, want a certificate error", err)
	}

	cli := redisCLI(t, addr, "--tls", "--cacert", certs.CAFile, "--cert", certs.ClientCert, "--key", certs.ClientKey)
	if cli == nil {
		return
	}
	if out, err := cli("GET", "k"); err != nil || out != "v" {
		t.Errorf("redis-cli --tls with a certificate: %q %v", out, err)
	}
	noCert := redisCLI(t, addr, "--tls", "--cacert", certs.CAFile)
	if out, err := noCert("GET", "k"); err == nil && out == "v" {
		t.Errorf("redis-cli --tls without a certificate got %q", out)
	}
}

// TestBackendTLS: master and slaves accept only TLS and require a client
// certificate; with --backend-tls and its CA and certificate the proxy serves
// everything, and the slaves converge. A server name other than the host's
// (--backend-tls-server-name) is verified as given.
func TestBackendTLS(t *testing.T) {
	t.Parallel()
	certs := redistest.NewCerts(t)
	opts := redistest.Options{TLS: certs, Args: []string{"--tls-auth-clients", "yes"}}
	master := redistest.StartWith(t, opts)
	slaves := []*redistest.Server{redistest.StartWith(t, opts), redistest.StartWith(t, opts)}
	backendTLS := func(c *proxy.Config) {
		c.BackendTLS, c.BackendTLSCA = true, certs.CAFile
		c.BackendTLSCert, c.BackendTLSKey = certs.ClientCert, certs.ClientKey
	}
	addr, _ := startProxyWith(t, backendTLS, master, slaves...)
	backendWorkload(t, func() *redistest.RawConn { return redistest.DialRaw(t, addr) }, master, slaves...)

	addr2, _ := startProxyWith(t, func(c *proxy.Config) {
		backendTLS(c)
		c.BackendTLSServerName = "localhost" // the certificate's DNS name
	}, master)
	c := redistest.DialRaw(t, addr2)
	mustReply(t, c, "+OK\r\n", "SET", "named", "1")
	mustReply(t, c, "$1\r\n1\r\n", "GET", "named")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestBackendTLSRefused: a backend whose certificate the proxy does not trust,
// or that refuses the proxy's missing certificate, is a configuration error said
// at error level; clients get a -ERR at once.
func TestBackendTLSRefused(t *testing.T) {
	t.Parallel()
	certs, other := redistest.NewCerts(t), redistest.NewCerts(t)
	master := redistest.StartWith(t, redistest.Options{TLS: certs, Args: []string{"--tls-auth-clients", "yes"}})
	cases := map[string]struct {
		adjust func(*proxy.Config)
		log    string
	}{
		"unknown CA": {func(c *proxy.Config) {
			c.BackendTLS, c.BackendTLSCA = true, other.CAFile
			c.BackendTLSCert, c.BackendTLSKey = certs.ClientCert, certs.ClientKey
		}, "certificate signed by unknown authority"},
		"wrong name": {func(c *proxy.Config) {
			c.BackendTLS, c.BackendTLSCA, c.BackendTLSServerName = true, certs.CAFile, "redis.example"
			c.BackendTLSCert, c.BackendTLSKey = certs.ClientCert, certs.ClientKey
		}, "not redis.example"},
		"no client certificate": {func(c *proxy.Config) {
			c.BackendTLS, c.BackendTLSCA = true, certs.CAFile
		}, "certificate"}, // "certificate required", or the connection reset: "does it require a client certificate?"
		"no TLS": {func(c *proxy.Config) {}, "does it expect TLS?"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			addr, _ := serveProxy(t, zerolog.New(&logs), tc.adjust, master)
			c := redistest.DialRaw(t, addr)
			c.SetTimeout(errTimeout)
			if r := string(c.Do("SET", "k", "v")); !strings.HasPrefix(r, "-ERR syncproxy: master "+master.Addr+" is unavailable") {
				t.Errorf("SET: %q, want the master unavailable", r)
			}
			for _, args := range [][]string{{"SUBSCRIBE", "ch"}, {"WATCH", "k"}} {
				if r := string(c.Do(args...)); !strings.HasPrefix(r, "-ERR syncproxy: master") || !strings.Contains(r, tc.log) {
					t.Errorf("%v: %q, want the master unavailable because of %q", args, r, tc.log)
				}
			}
			redistest.CheckFor(t, 5*time.Second, poll, func() error {
				text := logs.String()
				if !strings.Contains(text, `"level":"error","backend":"master"`) || !strings.Contains(text, tc.log) {
					return fmt.Errorf("no error about %q in the log:\n%s", tc.log, text)
				}
				return nil
			})
		})
	}
}

// plainExchange sends PING over plain TCP and returns what comes back before the
// connection ends (or 2s pass).
func plainExchange(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	conn.Write([]byte("*1\r\n$4\r\nPING\r\n"))
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return string(got)
		}
	}
}

// tlsExchange sends PING over TLS with conf and returns the reply, or the error
// of the handshake or of the read (with TLS 1.3 a refused client certificate is
// reported after the client's side of the handshake completed).
func tlsExchange(addr string, conf *tls.Config) (string, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: conf}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// infoInt reads one integer field of the proxy's INFO.
func infoInt(t *testing.T, c *redistest.RawConn, field string) int {
	t.Helper()
	v, ok := infoField(c, field)
	n, err := strconv.Atoi(v)
	if !ok || err != nil {
		t.Fatalf("INFO %s: %q", field, v)
	}
	return n
}

// redisCLI returns a function running redis-cli against addr with flags, or nil
// (and logs why) when redis-cli is not installed or has no TLS support.
func redisCLI(t *testing.T, addr string, flags ...string) func(args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Log("redis-cli not found: its TLS checks are skipped")
		return nil
	}
	if help, _ := exec.Command(bin, "--help").CombinedOutput(); !strings.Contains(string(help), "--tls") {
		t.Log("redis-cli has no TLS support: its TLS checks are skipped")
		return nil
	}
	host, port, _ := net.SplitHostPort(addr)
	return func(args ...string) (string, error) {
		all := append(append([]string{"-h", host, "-p", port}, flags...), args...)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, all...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
}

// TestTLSHandshakeTimeout: a client that connects to the TLS listener and never
// completes its handshake is disconnected after --tls-handshake-timeout, while
// others are served; a client that does complete it is not.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	certs := redistest.NewCerts(t)
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.TLSCert, c.TLSKey = certs.ServerCert, certs.ServerKey
		c.TLSHandshakeTimeout = 300 * time.Millisecond
	}, servers[0], servers[1])
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	good := redistest.DialRawTLS(t, addr, certs.ClientTLS(false))
	mustReply(t, good, "+PONG\r\n", "PING")
	start := time.Now()
	silent.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := silent.Read(make([]byte, 16)); err == nil {
		t.Fatalf("the silent client read %d bytes", n)
	} else if isTimeout(err) {
		t.Fatal("the silent client was not disconnected within 10s")
	}
	t.Logf("silent client disconnected %v after it connected", time.Since(start).Round(time.Millisecond))
	// The handshaken client stays, idle for longer than the handshake timeout:
	// the handshake's deadline does not outlive the handshake.
	time.Sleep(time.Until(start.Add(3 * 300 * time.Millisecond)))
	mustReply(t, good, "+PONG\r\n", "PING")
}
