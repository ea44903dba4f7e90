package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// errTimeout bounds how long a client waits for the -ERR of a backend that
// refuses the proxy: an error, never a hang.
const errTimeout = 5 * time.Second

// backendWorkload runs, through the proxy at addr (dial connects a client), what
// must work whatever the transport and the credentials: writes, a pipeline,
// reads, EVAL, WATCH/MULTI/EXEC, a subscription, a blocked BLPOP; then waits for
// the slaves to converge.
func backendWorkload(t *testing.T, dial func() *redistest.RawConn, master *redistest.Server, slaves ...*redistest.Server) {
	t.Helper()
	c := dial()
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	mustReply(t, c, ":1\r\n", "INCR", "n")
	mustReply(t, c, ":2\r\n", "RPUSH", "l", "a", "b")
	mustReply(t, c, ":1\r\n", "EXPIRE", "l", "100")
	mustReply(t, c, "$1\r\nv\r\n", "GET", "k")
	for i := 0; i < 50; i++ {
		c.Send("SET", "p"+strconv.Itoa(i), strconv.Itoa(i))
	}
	c.Send("GET", "p49")
	c.Flush()
	for i := 0; i < 50; i++ {
		if r := string(c.Read()); r != "+OK\r\n" {
			t.Fatalf("pipelined SET %d: %q", i, r)
		}
	}
	if r := string(c.Read()); r != "$2\r\n49\r\n" {
		t.Fatalf("pipelined GET: %q", r)
	}
	mustReply(t, c, "+OK\r\n", "EVAL", "return redis.call('SET', KEYS[1], ARGV[1])", "1", "ek", "ev")
	mustReply(t, c, "$2\r\nev\r\n", "GET", "ek")

	mustReply(t, c, "+OK\r\n", "WATCH", "w")
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, "+QUEUED\r\n", "SET", "w", "1")
	mustReply(t, c, "*1\r\n+OK\r\n", "EXEC")
	other := dial()
	mustReply(t, c, "+OK\r\n", "WATCH", "w")
	mustReply(t, other, "+OK\r\n", "SET", "w", "2") // the watched key changes: EXEC aborts
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, "+QUEUED\r\n", "SET", "w", "3")
	mustReply(t, c, "*-1\r\n", "EXEC")

	sub := dial()
	mustReply(t, sub, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", "SUBSCRIBE", "ch")
	mustReply(t, other, ":1\r\n", "PUBLISH", "ch", "hello")
	if r := string(sub.Read()); r != "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n" {
		t.Fatalf("message: %q", r)
	}
	mustReply(t, sub, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", "PING")

	blocked := dial()
	blocked.Send("BLPOP", "bl", "5")
	blocked.Flush()
	mustReply(t, other, ":1\r\n", "LPUSH", "bl", "x")
	if r := string(blocked.Read()); r != "*2\r\n$2\r\nbl\r\n$1\r\nx\r\n" {
		t.Fatalf("BLPOP: %q", r)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestBackendRequirePass: master and slaves with requirepass (the master's and the
// slaves' passwords differ); the proxy, given both, serves everything and the
// slaves converge.
func TestBackendRequirePass(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, "--requirepass", "master-pw")
	slaves := redistest.StartN(t, 2, "--requirepass", "slave-pw")
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.MasterPassword = "master-pw"
		c.SlavePassword = "slave-pw"
	}, master, slaves...)
	backendWorkload(t, func() *redistest.RawConn { return redistest.DialRaw(t, addr) }, master, slaves...)
}

// TestBackendACLUser: the proxy logs in to the master and the slaves as an ACL
// user (the default user has another password), and every one of its
// connections to the master is that user's.
func TestBackendACLUser(t *testing.T) {
	t.Parallel()
	args := []string{"--requirepass", "admin-pw", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all"}
	master := redistest.Start(t, args...)
	slaves := redistest.StartN(t, 2, args...)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.MasterUser, c.MasterPassword = "app", "app-pw"
		c.SlaveUser, c.SlavePassword = "app", "app-pw"
	}, master, slaves...)
	dial := func() *redistest.RawConn { return redistest.DialRaw(t, addr) }
	backendWorkload(t, dial, master, slaves...)

	// A subscriber and a watcher hold dedicated connections: they are the user's too.
	sub := dial()
	sub.Do("SUBSCRIBE", "ch")
	w := dial()
	mustReply(t, w, "+OK\r\n", "WATCH", "k")
	for _, s := range append([]*redistest.Server{master}, slaves...) {
		c, err := redis.Dial("tcp", s.Addr, redis.DialPassword("admin-pw"), redis.DialReadTimeout(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		list, err := redis.String(c.Do("CLIENT", "LIST"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
			if strings.Contains(line, "cmd=client|list") {
				continue // this connection
			}
			if !strings.Contains(line, " user=app ") {
				t.Errorf("%s: a connection of another user than app: %s", s.Addr, line)
			}
		}
		if s == master && strings.Count(list, " user=app ") < 4 {
			t.Errorf("master: expected the links, the sync subscription, a subscriber and a watcher as app:\n%s", list)
		}
	}
}

// TestBackendWrongPassword: a master that refuses the proxy's password is a
// configuration error, said once in the log at error level; clients get a -ERR
// at once — for writes, subscriptions and WATCH — and never hang. Slaves given
// no password while they need one are reported the same way.
func TestBackendWrongPassword(t *testing.T) {
	t.Parallel()
	master := redistest.Start(t, "--requirepass", "right")
	slave := redistest.Start(t, "--requirepass", "slave-pw")
	var logs lockedBuffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	addr, _ := serveProxy(t, log, func(c *proxy.Config) { c.MasterPassword = "wrong" }, master, slave)

	c := redistest.DialRaw(t, addr)
	c.SetTimeout(errTimeout)
	for _, args := range [][]string{{"SET", "k", "v"}, {"GET", "k"}, {"EVAL", "return 1", "0"}} {
		if r := string(c.Do(args...)); !strings.HasPrefix(r, "-ERR syncproxy: master "+master.Addr+" is unavailable") {
			t.Errorf("%v: %q, want the master unavailable", args, r)
		}
	}
	for _, args := range [][]string{{"SUBSCRIBE", "ch"}, {"WATCH", "k"}} {
		r := string(c.Do(args...))
		if !strings.HasPrefix(r, "-ERR syncproxy: master "+master.Addr+" is unavailable") || !strings.Contains(r, "WRONGPASS") {
			t.Errorf("%v: %q, want the master unavailable because of WRONGPASS", args, r)
		}
	}
	mustReply(t, c, "+PONG\r\n", "PING") // the client is still served
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		text := logs.String()
		for _, want := range []string{
			`"level":"error","backend":"master"`,
			`"error":"master ` + master.Addr + `: auth: WRONGPASS`,
			`"backend":"slave-1"`,
			`"error":"slave-1 ` + slave.Addr + `: ping: NOAUTH`,
		} {
			if !strings.Contains(text, want) {
				return fmt.Errorf("no %q in the log:\n%s", want, text)
			}
		}
		return nil
	})
	// The link keeps retrying, with backoff; the refusal is not logged again.
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if n := strings.Count(logs.String(), `"backend":"master","addr":"`+master.Addr+`","conn":0,"error":"master `+master.Addr+`: auth: WRONGPASS`); n < 4 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	})
	if n := strings.Count(logs.String(), `"level":"error","backend":"master"`); n != 1 {
		t.Errorf("the master's refusal logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestSecretsNotShown: the passwords of the clients, the master and the slaves
// appear in no log line (at debug level, from start to shutdown, with failures
// on the way) and in nothing the proxy answers itself: INFO (every section),
// CLIENT LIST, CLIENT INFO, HELLO, the refusal of CONFIG SET, a user's NOPERM;
// CONFIG GET shows the clients' password (requirepass) only, as Redis does.
func TestSecretsNotShown(t *testing.T) {
	t.Parallel()
	const clientPW, masterPW, slavePW = "client-Secret-9f1", "master-Secret-7c2", "slave-Secret-3d8"
	const userPW = "user-Secret-5e4"
	master := redistest.Start(t, "--requirepass", masterPW)
	slaves := redistest.StartN(t, 2, "--requirepass", slavePW)
	var logs lockedBuffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	addr, srv := serveProxy(t, log, func(c *proxy.Config) {
		c.RequirePass = clientPW
		c.Users = []proxy.User{{Name: "dash", Password: userPW, Access: proxy.AccessReadOnly}}
		c.MasterPassword, c.SlavePassword = masterPW, slavePW
	}, master, slaves...)
	waitOnline(t, srv)

	c := redistest.DialRaw(t, addr)
	var replies []string
	do := func(args ...string) { replies = append(replies, string(c.Do(args...))) }
	do("AUTH", "wrong")
	do("AUTH", clientPW)
	do("HELLO", "2", "AUTH", "default", clientPW, "SETNAME", "me")
	do("SET", "k", "v")
	for _, section := range []string{"", "all", "everything", "proxy", "sync", "server", "clients"} {
		if section == "" {
			do("INFO")
		} else {
			do("INFO", section)
		}
	}
	do("CLIENT", "LIST")
	do("CLIENT", "INFO")
	do("CONFIG", "SET", "maxmemory", "0")
	do("CONFIG", "GET", "requirepass")
	do("CONFIG", "GET", "*pass*")
	do("CONFIG", "GET", "*")
	do("WATCH", "k")
	do("UNWATCH")
	do("SUBSCRIBE", "ch")
	do("UNSUBSCRIBE")
	ro := redistest.DialRaw(t, addr)
	mustReply(t, ro, "+OK\r\n", "AUTH", "dash", userPW)
	replies = append(replies, string(ro.Do("CLIENT", "LIST")), string(ro.Do("ACL", "WHOAMI")), string(ro.Do("SET", "k", "x")))
	// CONFIG GET requirepass shows the proxy's own password, as Redis shows its
	// own to its authenticated clients (issue 13): never the master's.
	if want := "*2\r\n$11\r\nrequirepass\r\n$17\r\n" + clientPW + "\r\n"; replies[14] != want {
		t.Errorf("CONFIG GET requirepass: %q, want %q", replies[14], want)
	}
	for i := 14; i <= 16; i++ {
		replies[i] = strings.ReplaceAll(replies[i], clientPW, "(the proxy's)")
	}
	if replies[1] != "+OK\r\n" || replies[3] != "+OK\r\n" || !strings.Contains(replies[4], "# Proxy") ||
		!strings.Contains(replies[4], "# Server") || !strings.Contains(replies[11], "name=me") {
		t.Fatalf("AUTH, SET, INFO or CLIENT LIST did not work: %q", replies)
	}

	// A failure on the way: a slave restarts (empty, so it is resynced) and the
	// proxy reconnects to it with the password.
	slaves[0].Restart(t)
	mustReply(t, c, "+OK\r\n", "SET", "k2", "v2")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if !closeBounded(t, srv) {
		return
	}
	text := logs.String() + strings.Join(replies, "")
	if !strings.Contains(text, `"master_auth":true`) || !strings.Contains(text, `"slave_auth":true`) {
		t.Errorf("the start line does not say that backend credentials are set:\n%s", logs.String())
	}
	for _, secret := range []string{clientPW, masterPW, slavePW, userPW} {
		if strings.Contains(text, secret) {
			t.Errorf("%q is shown:\n%s", secret, text)
		}
	}
}
