package e2e

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// Commands that must behave as Redis 7.0 does (issue 13): each is sent directly
// to a reference Redis and through the proxy.

// diffSame sends each command to ref and to the proxy and fails the test unless
// the raw replies are byte-identical.
func diffSame(t *testing.T, rc, pc *redistest.RawConn, table [][]string) {
	t.Helper()
	for i, args := range table {
		want := rc.Do(args...)
		got := pc.Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, showCmd(args), showReply(got), showReply(want))
		}
	}
}

// TestPingArity: PING with two arguments or more is Redis' arity error; with
// one, it echoes it as a bulk string (issue 13, item 8).
func TestPingArity(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	diffSame(t, rc, pc, [][]string{
		cmd("PING x y z"), cmd("PING x y"), cmd("PING x"), {"PING", ""}, cmd("PING"),
		cmd("MULTI"), cmd("PING a"), cmd("EXEC"),
	})
	checkSameData(t, ref, master, slaves)
}

// TestScriptFlushForgets: after SCRIPT FLUSH, EVALSHA of a script that EVAL or
// SCRIPT LOAD ran before answers NOSCRIPT and SCRIPT EXISTS answers 0, until
// the script is run or loaded again (issue 13, item 7).
func TestScriptFlushForgets(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	const (
		body1 = "redis.call('INCR', KEYS[1]) return 1"
		body2 = "return 2"
	)
	sha1, sha2 := scriptSHA(body1), scriptSHA(body2)
	table := [][]string{
		{"EVAL", body1, "1", "k"}, {"SCRIPT", "LOAD", body2},
		{"SCRIPT", "EXISTS", sha1, sha2}, {"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"},
		{"SCRIPT", "FLUSH"},
		{"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"}, {"SCRIPT", "EXISTS", sha1, sha2},
		{"EVAL", body1, "1", "k"}, {"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"},
		{"SCRIPT", "EXISTS", sha1, sha2},
		{"SCRIPT", "LOAD", body2}, {"EVALSHA", sha2, "0"}, {"SCRIPT", "FLUSH", "SYNC"},
		{"EVALSHA", strings.ToUpper(sha2), "0"}, {"GET", "k"},
	}
	diffSame(t, rc, pc, table)
	// The same, pipelined: a SCRIPT FLUSH takes effect for what follows it.
	rc.Send("SCRIPT", "LOAD", body2)
	pc.Send("SCRIPT", "LOAD", body2)
	rc.Send("SCRIPT", "FLUSH")
	pc.Send("SCRIPT", "FLUSH")
	rc.Send("EVALSHA", sha2, "0")
	pc.Send("EVALSHA", sha2, "0")
	rc.Flush()
	pc.Flush()
	for i := 0; i < 3; i++ {
		if want, got := rc.Read(), pc.Read(); !bytes.Equal(got, want) {
			t.Errorf("pipelined #%d: proxy %s, redis %s", i, showReply(got), showReply(want))
		}
	}
	checkSameData(t, ref, master, slaves)
}

// scriptSHA is the SHA1 of a script body, as EVALSHA names it.
func scriptSHA(body string) string {
	sum := sha1.Sum([]byte(body))
	return hex.EncodeToString(sum[:])
}

// clientFields returns the field names of one CLIENT INFO / CLIENT LIST line.
func clientFields(line string) []string {
	var out []string
	for _, f := range strings.Fields(line) {
		k, _, _ := strings.Cut(f, "=")
		out = append(out, k)
	}
	return out
}

// clientValues returns the fields of a CLIENT INFO reply (a bulk string) by name.
func clientValues(t *testing.T, reply []byte) map[string]string {
	t.Helper()
	i := bytes.Index(reply, []byte("\r\n"))
	if len(reply) == 0 || reply[0] != '$' || i < 0 {
		t.Fatalf("CLIENT INFO: %q", reply)
	}
	m := map[string]string{}
	for _, f := range strings.Fields(string(reply[i+2:])) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

// TestClientInfoFields: CLIENT INFO and CLIENT LIST give every field Redis 7.0
// gives, in Redis' order (the proxy's consistency field after them), with the
// session's values; CLIENT LIST TYPE and ID filter as Redis' (issue 13, item 5).
func TestClientInfoFields(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t)
	master, slave := redistest.Start(t), redistest.Start(t)
	addr, _ := startProxy(t, master, slave)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	want := append(clientFields(string(rc.Do("CLIENT", "INFO"))[5:]), "consistency")
	got := clientFields(string(pc.Do("CLIENT", "INFO"))[5:])
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("CLIENT INFO fields:\n\tproxy: %v\n\tredis: %v", got, want)
	}
	mustReply(t, pc, "+OK\r\n", "CLIENT", "SETNAME", "app1")
	mustReply(t, pc, "+OK\r\n", "SELECT", "3")
	id := strings.Trim(string(pc.Do("CLIENT", "ID")), ":\r\n")
	v := clientValues(t, pc.Do("CLIENT", "INFO"))
	for k, w := range map[string]string{"id": id, "name": "app1", "db": "3", "flags": "N", "multi": "-1",
		"cmd": "client|info", "user": "default", "resp": "2", "redir": "-1", "events": "r", "argv-mem": "10"} {
		if v[k] != w {
			t.Errorf("CLIENT INFO %s=%q, want %q", k, v[k], w)
		}
	}
	if v["fd"] == "" || v["fd"] == "-1" || v["laddr"] != addr {
		t.Errorf("CLIENT INFO fd=%q laddr=%q (proxy at %s)", v["fd"], v["laddr"], addr)
	}
	// Another client sees this one queuing in MULTI.
	other := redistest.DialRaw(t, addr)
	mustReply(t, pc, "+OK\r\n", "MULTI")
	mustReply(t, pc, "+QUEUED\r\n", "SET", "a", "1")
	list := string(other.Do("CLIENT", "LIST", "ID", id))
	if !strings.Contains(list, "id="+id+" ") || !strings.Contains(list, " flags=x ") ||
		!strings.Contains(list, " multi=1 ") || !strings.Contains(list, " cmd=set ") {
		t.Errorf("CLIENT LIST ID %s: %q", id, list)
	}
	mustReply(t, pc, "*1\r\n+OK\r\n", "EXEC")
	diffSame(t, rc, other, [][]string{
		cmd("CLIENT LIST TYPE nosuch"), cmd("CLIENT LIST ID x"), cmd("CLIENT LIST ID 1000000"),
		cmd("CLIENT LIST TYPE master"), cmd("CLIENT LIST foo"), cmd("CLIENT LIST TYPE normal x"),
	})
	if l := string(other.Do("CLIENT", "LIST", "TYPE", "normal")); strings.Count(l, " addr=") != 2 {
		t.Errorf("CLIENT LIST TYPE normal: %q, want 2 lines", l)
	}
}

// TestClientInfoRedisPy: redis-py's client_info() and client_list() parse the
// proxy's replies (issue 13, item 5).
func TestClientInfoRedisPy(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import redis").Run(); err != nil {
		t.Skip("redis-py is not installed for /usr/bin/python3")
	}
	master, slave := redistest.Start(t), redistest.Start(t)
	addr, _ := startProxy(t, master, slave)
	host, port, _ := strings.Cut(addr, ":")
	script := `import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]))
r.client_setname("py")
i = r.client_info()
assert i["name"] == "py" and i["oll"] == 0 and i["db"] == 0 and i["cmd"] == "client|info", i
l = r.client_list()
assert any(c["name"] == "py" for c in l), l
print("ok")
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, host, port).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("redis-py: %v\n%s", err, out)
	}
}

// TestConfigSetRequirePass: CONFIG SET requirepass sets the proxy's password,
// as Redis sets its own (same replies, AUTH after it as Redis'), and never the
// backends' (the proxy keeps reaching them); CONFIG GET requirepass shows it;
// settings that would cut the proxy off its backends are never broadcast
// (issue 13, item 12).
func TestConfigSetRequirePass(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ConfigSet = "broadcast" }, master, slaves...)
	backends := servers[1:]
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	diffSame(t, rc, pc, [][]string{
		cmd("CONFIG SET requirepass"), cmd("CONFIG SET requirepass pw maxmemory"),
		cmd("CONFIG SET requirepass pw"), cmd("CONFIG GET requirepass"), cmd("SET a 1"),
	})
	redistest.WaitConverged(t, convergeTimeout, master, slaves...) // (a new connection may read a slave)
	rc2, pc2 := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	diffSame(t, rc2, pc2, [][]string{
		cmd("GET a"), cmd("AUTH nope"), cmd("AUTH default nope"), cmd("AUTH pw"), cmd("GET a"),
	})
	// The backends kept no password, and the proxy reaches them on new connections.
	for _, b := range backends {
		if v := b.Do(t, "CONFIG", "GET", "requirepass").([]interface{}); len(v[1].([]byte)) != 0 {
			t.Errorf("%s: requirepass %q", b.Addr, v[1])
		}
		b.Do(t, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	}
	rc2.Do("SET", "b", "2")
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		if r := string(pc2.Do("SET", "b", "2")); r != "+OK\r\n" {
			return fmt.Errorf("SET after the backends' connections were killed: %q", r)
		}
		if r := string(pc2.Do("CONFIG", "SET", "maxmemory-policy", "noeviction")); r != "+OK\r\n" {
			return fmt.Errorf("CONFIG SET after the backends' connections were killed: %q", r)
		}
		return nil
	})
	// Settings that would cut the proxy off are refused, with nothing applied.
	for _, args := range [][]string{
		cmd("CONFIG SET masterauth x"), cmd("CONFIG SET port 1"), cmd("CONFIG SET bind 10.0.0.1"),
		cmd("CONFIG SET tls-port 1"), cmd("CONFIG SET maxmemory-policy allkeys-lru masteruser u"),
	} {
		if r := string(pc2.Do(args...)); !strings.HasPrefix(r, "-ERR syncproxy: CONFIG SET "+strings.ToLower(args[len(args)-2])+" is not broadcast") {
			t.Errorf("%s: %q", showCmd(args), r)
		}
	}
	// With another setting: the password is the proxy's, the other broadcast.
	mustReply(t, pc2, "+OK\r\n", "CONFIG", "SET", "requirepass", "pw2", "maxmemory-policy", "allkeys-lru")
	for _, b := range backends {
		v := b.Do(t, "CONFIG", "GET", "*").([]interface{})
		for i := 0; i+1 < len(v); i += 2 {
			switch k, val := string(v[i].([]byte)), string(v[i+1].([]byte)); {
			case k == "maxmemory-policy" && val != "allkeys-lru", k == "requirepass" && val != "",
				k == "masterauth" && val != "", k == "port" && val == "1", k == "masteruser" && val != "":
				t.Errorf("%s: %s %q", b.Addr, k, val)
			}
		}
	}
	mustReply(t, pc2, "*2\r\n$11\r\nrequirepass\r\n$3\r\npw2\r\n", "CONFIG", "GET", "requirepass")
	mustReply(t, redistest.DialRaw(t, addr), "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "pw")
	rc3, pc3 := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	mustReply(t, rc3, "+OK\r\n", "AUTH", "pw")
	mustReply(t, pc3, "+OK\r\n", "AUTH", "pw2")
	diffSame(t, rc3, pc3, [][]string{cmd("CONFIG SET requirepass"), cmd("CONFIG SET requirepass a b"), {"CONFIG", "SET", "requirepass", ""}})
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	diffSame(t, redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr), [][]string{cmd("GET a"), cmd("CONFIG GET requirepass")})
	checkSameData(t, ref, master, slaves)
}

// TestConfigSetRequirePassDeny: with CONFIG SET denied (the default), the
// proxy's own password may still be set; the backends' settings may not.
func TestConfigSetRequirePassDeny(t *testing.T) {
	t.Parallel()
	master, slave := redistest.Start(t), redistest.Start(t)
	addr, _ := startProxy(t, master, slave)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "CONFIG", "SET", "requirepass", "pw")
	if r := string(c.Do("CONFIG", "SET", "requirepass", "pw", "maxmemory", "1mb")); !strings.HasPrefix(r, "-ERR syncproxy: CONFIG SET would change") {
		t.Errorf("CONFIG SET requirepass and maxmemory with CONFIG SET denied: %q", r)
	}
	mustReply(t, redistest.DialRaw(t, addr), "-NOAUTH Authentication required.\r\n", "GET", "a")
	mustReply(t, c, "$-1\r\n", "GET", "a")
}

// TestBackendRefusalLogged: a slave that starts refusing the proxy (a password
// set on it behind the proxy's back) is logged at error level by the backend
// links and by the replicator's connections (applier, health checks), once
// (issue 13, item 12).
func TestBackendRefusalLogged(t *testing.T) {
	t.Parallel()
	master, slave := redistest.Start(t), redistest.Start(t)
	var buf lockedBuffer
	_, srv := serveProxy(t, zerolog.New(&buf).Level(zerolog.ErrorLevel), nil, master, slave)
	waitOnline(t, srv)
	slave.Do(t, "CONFIG", "SET", "requirepass", "behind-its-back")
	t.Cleanup(func() {
		c := redistest.DialRaw(t, slave.Addr)
		c.Do("AUTH", "behind-its-back")
		c.Do("CONFIG", "SET", "requirepass", "")
	})
	c := redistest.DialRaw(t, slave.Addr)
	mustReply(t, c, "+OK\r\n", "AUTH", "behind-its-back")
	c.Do("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		var link, repl int
		for _, line := range strings.Split(buf.String(), "\n") {
			if !strings.Contains(line, `"level":"error"`) || !strings.Contains(line, "refused the connection") ||
				!strings.Contains(line, slave.Addr) {
				continue
			}
			if strings.Contains(line, `"conn":`) {
				link++
			} else {
				repl++
			}
		}
		if link != 1 || repl != 1 {
			return fmt.Errorf("%d refusals logged by the backend link, %d by the replicator; want 1 and 1:\n%s", link, repl, buf.String())
		}
		return nil
	})
}

// TestBitfieldExact: BITFIELD replies of 54 to 64 bits come back exact
// through the master script (a Lua number would round them), alone, pipelined
// and in MULTI, with every overflow mode; the slaves get the same bits (issue
// 13, item 6).
func TestBitfieldExact(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	table := [][]string{
		cmd("BITFIELD bf SET u63 0 6396753603050843136 INCRBY u63 0 2613344896249556480"),
		cmd("BITFIELD bf GET u63 0 GET i64 0 GET u8 0 GET i54 3 GET u54 #1"),
		cmd("BITFIELD b2 SET i64 0 -9223372036854775808 GET i64 0 INCRBY i64 0 -1 OVERFLOW FAIL INCRBY i64 0 -1 GET u8 0"),
		cmd("BITFIELD b2 SET i60 #1 576460752303423487 GET i60 #1 OVERFLOW SAT INCRBY i60 #1 9 INCRBY u63 7 9223372036854775807"),
		cmd("BITFIELD b2 overflow wrap incrby i64 100 9007199254740993 get i64 100 set u62 3 4611686018427387903"),
		cmd("BITFIELD b3 INCRBY u8 0 300 INCRBY i16 8 5"), cmd("BITFIELD nokey GET i64 0 GET u63 1000"),
		cmd("BITFIELD b2 GET u64 0"), cmd("BITFIELD b2 GET i65 0"), cmd("BITFIELD b2 INCRBY u63 0 x"),
		cmd("BITFIELD b2 SET i64 0 1 BADOP"), cmd("BITFIELD b2 OVERFLOW nope GET i64 0"), cmd("SADD s x"),
		cmd("BITFIELD s GET i64 0"), cmd("GET bf"), cmd("GET b2"),
		cmd("MULTI"), cmd("BITFIELD_RO b2 GET i64 0 GET u63 1 GET u8 0"),
		cmd("BITFIELD b4 SET u63 0 9223372036854775807 GET u63 0 INCRBY u63 0 1"), cmd("INCRBY n 9007199254740993"),
		cmd("EXEC"), cmd("BITFIELD_RO b4 GET u63 0"),
	}
	diffSame(t, rc, pc, table)
	for _, c := range []*redistest.RawConn{rc, pc} {
		for _, args := range table[:6] {
			c.Send(args...)
		}
		c.Flush()
	}
	for i := range table[:6] {
		if want, got := rc.Read(), pc.Read(); !bytes.Equal(got, want) {
			t.Errorf("pipelined #%d: proxy %s, redis %s", i, showReply(got), showReply(want))
		}
	}
	if n := master.Do(t, "EXISTS", "syncproxy:bitfield"); n != int64(0) {
		t.Errorf("the master keeps the script's copy: EXISTS %v", n)
	}
	checkSameData(t, ref, master, slaves)
}

// clientID returns the proxy's id of the client on c.
func clientID(t *testing.T, c *redistest.RawConn) string {
	t.Helper()
	return strings.Trim(string(c.Do("CLIENT", "ID")), ":\r\n")
}

// TestClientAdmin: CLIENT KILL, PAUSE, UNPAUSE, UNBLOCK and NO-EVICT act on
// the proxy's clients, with Redis' replies and errors (issue 13, item 11).
func TestClientAdmin(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	ref, master, slave := servers[0], servers[1], servers[2]
	addr, _ := startProxy(t, master, slave)
	rc, a := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	diffSame(t, rc, a, [][]string{
		cmd("CLIENT KILL 1.2.3.4:5"), cmd("CLIENT KILL ID 0"), cmd("CLIENT KILL ID 99999"),
		cmd("CLIENT KILL TYPE nosuch"), cmd("CLIENT KILL TYPE master"), cmd("CLIENT KILL USER nosuch"),
		cmd("CLIENT KILL ID 99999 SKIPME maybe"), cmd("CLIENT KILL ID 99999 FOO bar"), cmd("CLIENT KILL ID 99999 TYPE"),
		cmd("CLIENT PAUSE x"), cmd("CLIENT PAUSE -1"), cmd("CLIENT PAUSE 10 FOO"), cmd("CLIENT PAUSE 10 WRITE x"),
		cmd("CLIENT UNPAUSE"), cmd("CLIENT NO-EVICT maybe"), cmd("CLIENT NO-EVICT on"),
		cmd("CLIENT UNBLOCK x"), cmd("CLIENT UNBLOCK 99999"), cmd("CLIENT UNBLOCK 1 FOO"), cmd("CLIENT NO-EVICT off"),
	})
	// KILL: by id, by address (the old form), itself.
	b, c := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, a, ":1\r\n", "CLIENT", "KILL", "ID", clientID(t, b))
	if r, err := b.TryRead(); err == nil {
		t.Errorf("killed client read %q", r)
	}
	cid := clientID(t, c)
	list := string(a.Do("CLIENT", "LIST", "ID", cid))
	caddr := strings.Fields(list[strings.Index(list, "addr="):])[0][len("addr="):]
	mustReply(t, a, "+OK\r\n", "CLIENT", "KILL", caddr)
	if r, err := c.TryRead(); err == nil {
		t.Errorf("killed client read %q", r)
	}
	mustReply(t, a, ":1\r\n", "CLIENT", "KILL", "ID", clientID(t, a), "SKIPME", "no")
	if r, err := a.TryRead(); err == nil {
		t.Errorf("client that killed itself read %q", r)
	}
	// PAUSE WRITE holds writes only, until UNPAUSE.
	a, b = redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, a, "+OK\r\n", "CLIENT", "PAUSE", "20000", "WRITE")
	mustReply(t, b, "$-1\r\n", "GET", "x")
	b.Send("SET", "x", "1")
	b.Flush()
	b.SetTimeout(300 * time.Millisecond)
	if r, err := b.TryRead(); err == nil {
		t.Errorf("a write during CLIENT PAUSE WRITE answered %q", r)
	}
	b.SetTimeout(10 * time.Second)
	mustReply(t, a, "+OK\r\n", "CLIENT", "UNPAUSE")
	if r := string(b.Read()); r != "+OK\r\n" {
		t.Errorf("the write held by CLIENT PAUSE: %q", r)
	}
	// PAUSE ALL holds every command until it ends.
	mustReply(t, a, "+OK\r\n", "CLIENT", "PAUSE", "300")
	start := time.Now()
	mustReply(t, b, "+PONG\r\n", "PING")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("PING answered %v into a 300ms CLIENT PAUSE", d)
	}
	// UNBLOCK ends a blocking command, as a timeout or with an error.
	for _, tc := range []struct{ how, want string }{{"TIMEOUT", "*-1\r\n"}, {"ERROR", "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"}} {
		bid := clientID(t, b)
		b.Send("BLPOP", "nolist", "0")
		b.Flush()
		redistest.CheckFor(t, onlineTimeout, poll, func() error {
			if r := string(a.Do("CLIENT", "LIST", "ID", bid)); !strings.Contains(r, " flags=b ") {
				return fmt.Errorf("not blocked yet: %q", r)
			}
			return nil
		})
		mustReply(t, a, ":1\r\n", "CLIENT", "UNBLOCK", bid, tc.how)
		if r := string(b.Read()); r != tc.want {
			t.Errorf("BLPOP unblocked with %s: %q, want %q", tc.how, r, tc.want)
		}
		mustReply(t, a, ":0\r\n", "CLIENT", "UNBLOCK", bid)
	}
	mustReply(t, b, "+OK\r\n", "CLIENT", "NO-EVICT", "on")
	if r := string(b.Do("CLIENT", "INFO")); !strings.Contains(r, " flags=e ") {
		t.Errorf("CLIENT INFO after NO-EVICT on: %q", r)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// TestConfigResetStat: CONFIG RESETSTAT resets the proxy's statistics and
// every backend's (issue 13, item 11).
func TestConfigResetStat(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	addr, _ := startProxy(t, servers[0], servers[1:]...)
	misses := func(s *redistest.Server) int {
		n, _ := strconv.Atoi(s.Info(t, "stats", "keyspace_misses"))
		return n
	}
	for _, s := range servers {
		c := redistest.DialRaw(t, s.Addr)
		for i := 0; i < 100; i++ {
			c.Send("GET", "missing")
		}
		c.Flush()
		for i := 0; i < 100; i++ {
			c.Read()
		}
	}
	c := redistest.DialRaw(t, addr)
	for i := 0; i < 100; i++ {
		c.Do("PING")
	}
	mustReply(t, c, "+OK\r\n", "CONFIG", "RESETSTAT")
	for _, s := range servers {
		if n := misses(s); n >= 100 {
			t.Errorf("%s: keyspace_misses %d after CONFIG RESETSTAT", s.Addr, n)
		}
	}
	if v, _ := infoField(c, "total_commands_processed"); v == "" || len(v) > 1 {
		t.Errorf("the proxy's total_commands_processed after CONFIG RESETSTAT: %q", v)
	}
}

// monitorLines reads MONITOR's stream on m until a line ends with last, and
// returns the lines without their time and client address.
func monitorLines(t *testing.T, m *redistest.RawConn, last string) []string {
	t.Helper()
	var out []string
	for {
		line := strings.TrimSuffix(string(m.Read()), "\r\n")
		// +<time> [<db> <addr>] args
		open, closing := strings.IndexByte(line, '['), strings.IndexByte(line, ']')
		if open < 0 || closing < open {
			t.Fatalf("MONITOR line %q", line)
		}
		db, _, _ := strings.Cut(line[open+1:closing], " ")
		out = append(out, "["+db+"]"+line[closing+1:])
		if strings.HasSuffix(line, last) {
			return out
		}
	}
}

// TestMonitor: MONITOR streams the commands the proxy's clients send in
// Redis' format, leaving out what Redis leaves out (refused and administrative
// commands) and redacting passwords (issue 13, item 11); scripts, and
// transactions as Redis shows them when they run.
func TestMonitor(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	ref, master, slave := servers[0], servers[1], servers[2]
	addr, _ := startProxy(t, master, slave)
	table := [][]string{
		{"SET", "a b", "x\"y\n\\"}, {"SET", "k", "\x01\xff\t\r"}, cmd("AUTH foo"), cmd("HELLO 2 AUTH default foo"),
		cmd("CONFIG GET maxmemory"), cmd("CLIENT ID"), cmd("CLIENT LIST"), cmd("SELECT 3"), cmd("GET x"),
		cmd("NOSUCH"), cmd("GET"), cmd("BLPOP nol 0.1"), cmd("SELECT 0"),
		// Scripts show as they start; a transaction's commands when it runs,
		// each in its DB, then EXEC; nothing of a discarded one.
		{"EVAL", "return 1", "0"}, {"eval_ro", "return 2", "0"},
		cmd("MULTI"), cmd("SET t 1"), cmd("SELECT 2"), cmd("INCR t"), cmd("BLPOP nol 0"),
		{"EVAL", "return 3", "0"}, cmd("SELECT 0"), cmd("exec"),
		cmd("MULTI"), cmd("SET t 2"), cmd("DISCARD"),
		cmd("MULTI"), cmd("WATCH x"), cmd("MULTI"), cmd("SET t 4"), cmd("EXEC"), // refused, shown
		cmd("MULTI"), cmd("SET t"), cmd("SET t 3"), cmd("EXEC"),
		cmd("PING end"),
	}
	var got [2][]string
	for i, a := range []string{ref.Addr, addr} {
		m := redistest.DialRaw(t, a)
		mustReply(t, m, "+OK\r\n", "MONITOR")
		c := redistest.DialRaw(t, a)
		for _, args := range table {
			c.Do(args...)
		}
		got[i] = monitorLines(t, m, `"PING" "end"`)
		if a == addr {
			mustReply(t, m, "+PONG\r\n", "PING")
		}
		mustReply(t, m, "+OK\r\n", "QUIT")
	}
	if strings.Join(got[1], "\n") != strings.Join(got[0], "\n") {
		t.Errorf("MONITOR through the proxy:\n\t%s\nRedis':\n\t%s", strings.Join(got[1], "\n\t"), strings.Join(got[0], "\n\t"))
	}
	// The MONITOR client shows as Redis' (flags=O), and leaves when killed.
	m, c := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mid := clientID(t, m)
	mustReply(t, m, "+OK\r\n", "MONITOR")
	if l := string(c.Do("CLIENT", "LIST", "ID", mid)); !strings.Contains(l, " flags=O ") || !strings.Contains(l, " cmd=monitor ") {
		t.Errorf("CLIENT LIST of a MONITOR client: %q", l)
	}
	mustReply(t, c, ":1\r\n", "CLIENT", "KILL", "ID", mid)
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		if l := string(c.Do("CLIENT", "LIST", "ID", mid)); l != "$0\r\n\r\n" {
			return fmt.Errorf("the killed MONITOR client is still listed: %q", l)
		}
		return nil
	})
}

// TestClientListSubscribed: CLIENT LIST shows a subscribed client's last
// command (cmd=subscribe, then psubscribe, ping) and counts as Redis does, so
// that programs that find their subscriber by cmd=subscribe and CLIENT KILL it
// (redis-py's test suite does) find it; the killed subscriber is disconnected.
func TestClientListSubscribed(t *testing.T) {
	t.Parallel()
	refAddr, addr := refAndProxy(t)
	type side struct{ sub, admin *redistest.RawConn }
	sides := []side{
		{redistest.DialRaw(t, refAddr), redistest.DialRaw(t, refAddr)},
		{redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)},
	}
	ids := make([]string, len(sides))
	for i, s := range sides {
		ids[i] = strings.Trim(string(s.sub.Do("CLIENT", "ID")), ":\r\n")
	}
	// field returns the subscriber's fields that must match Redis'.
	field := func(i int) string {
		var out []string
		for _, f := range []string{"cmd", "sub", "psub", "ssub", "argv-mem", "flags"} {
			out = append(out, f+"="+clientField(t, sides[i].admin, ids[i], f))
		}
		return strings.Join(out, " ")
	}
	for _, step := range [][]string{{"SUBSCRIBE", "c1", "c2"}, {"PSUBSCRIBE", "p*"}, {"PING"}, {"UNSUBSCRIBE", "c1"}} {
		for _, s := range sides {
			s.sub.Send(step...)
			s.sub.Flush()
			s.sub.Read()
			if step[0] == "SUBSCRIBE" {
				s.sub.Read()
			}
		}
		if got, want := field(1), field(0); got != want {
			t.Errorf("after %s:\n\tproxy: %s\n\tredis: %s", showCmd(step), got, want)
		}
	}
	for i, s := range sides {
		mustReply(t, s.admin, ":1\r\n", "CLIENT", "KILL", "ID", ids[i])
		if r, err := s.sub.TryRead(); err == nil {
			t.Errorf("side %d: the killed subscriber read %q", i, r)
		}
	}
}

// TestModuleList: MODULE LIST and MODULE HELP answer as the master does
// (clients probe MODULE LIST for RedisJSON, RediSearch, ...); MODULE LOAD,
// LOADEX and UNLOAD stay refused (a module on the master only would break
// replication).
func TestModuleList(t *testing.T) {
	t.Parallel()
	refAddr, addr := refAndProxy(t)
	rc, pc := redistest.DialRaw(t, refAddr), redistest.DialRaw(t, addr)
	diffSame(t, rc, pc, [][]string{
		cmd("MODULE LIST"), cmd("MODULE HELP"), cmd("MODULE LIST x"),
	})
	rc.Do("HELLO", "3")
	pc.Do("HELLO", "3")
	diffSame(t, rc, pc, [][]string{cmd("MODULE LIST")})
	for _, args := range [][]string{cmd("MODULE LOAD /nonexistent.so"), cmd("MODULE UNLOAD x")} {
		if r := string(pc.Do(args...)); !strings.HasPrefix(r, "-ERR syncproxy: ") {
			t.Errorf("%s: %q, want it refused", showCmd(args), r)
		}
	}
}

// TestHelloVersion: HELLO (RESP2 and RESP3) gives the master's version, as
// clients that pick features by it (Lettuce) read it; only the client id differs.
func TestHelloVersion(t *testing.T) {
	t.Parallel()
	refAddr, addr := refAndProxy(t)
	rc, pc := redistest.DialRaw(t, refAddr), redistest.DialRaw(t, addr)
	noID := func(r []byte) string {
		i := bytes.Index(r, []byte("$2\r\nid\r\n:"))
		if i < 0 {
			t.Fatalf("HELLO without id: %q", r)
		}
		j := bytes.Index(r[i+9:], []byte("\r\n"))
		return string(r[:i+9]) + "ID" + string(r[i+9+j:])
	}
	for _, args := range [][]string{cmd("HELLO"), cmd("HELLO 2"), cmd("HELLO 3"), cmd("HELLO 2")} {
		if got, want := noID(pc.Do(args...)), noID(rc.Do(args...)); got != want {
			t.Errorf("%s:\n\tproxy: %q\n\tredis: %q", showCmd(args), got, want)
		}
	}
}

// TestClientListArgvMem: another client sees argv-mem=0 for an idle client
// (Redis frees a command's arguments once it ran) and the blocking command's
// arguments for a client blocked in BLPOP; a client's own CLIENT INFO counts
// its own arguments.
func TestClientListArgvMem(t *testing.T) {
	t.Parallel()
	refAddr, addr := refAndProxy(t)
	conns := [][2]*redistest.RawConn{
		{redistest.DialRaw(t, refAddr), redistest.DialRaw(t, refAddr)},
		{redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)},
	}
	ids := make([]string, 2)
	for i, c := range conns {
		ids[i] = strings.Trim(string(c[0].Do("CLIENT", "ID")), ":\r\n")
	}
	step := func(what string, do func(i int, a *redistest.RawConn)) {
		t.Helper()
		var got [2]string
		for i, c := range conns {
			do(i, c[0])
			got[i] = clientField(t, c[1], ids[i], "argv-mem")
		}
		if got[1] != got[0] {
			t.Errorf("%s: argv-mem=%s, redis %s", what, got[1], got[0])
		}
	}
	step("after SET", func(_ int, a *redistest.RawConn) {
		mustReply(t, a, "+OK\r\n", "SET", "key", "a-longer-value")
	})
	step("after CLIENT SETNAME", func(_ int, a *redistest.RawConn) {
		mustReply(t, a, "+OK\r\n", "CLIENT", "SETNAME", "someone")
	})
	step("blocked in BLPOP", func(i int, a *redistest.RawConn) {
		a.Send("BLPOP", "nokey", "0")
		a.Flush()
		redistest.CheckFor(t, time.Second, poll, func() error {
			if f := clientField(t, conns[i][1], ids[i], "flags"); f != "b" {
				return fmt.Errorf("flags=%s", f)
			}
			return nil
		})
	})
}

// keyspaceSection returns the "# Keyspace" section of an INFO reply, without
// the avg_ttl values (estimates that depend on when expiry cycles ran).
func keyspaceSection(t *testing.T, reply []byte) string {
	t.Helper()
	s := string(reply)
	i := strings.Index(s, "# Keyspace\r\n")
	if i < 0 {
		t.Fatalf("no Keyspace section in %q", s)
	}
	s = s[i:]
	if j := strings.Index(s, "\r\n\r\n"); j >= 0 {
		s = s[:j+2]
	}
	return avgTTL.ReplaceAllString(strings.TrimSuffix(s, "\r\n"), "avg_ttl=N")
}

var avgTTL = regexp.MustCompile(`avg_ttl=\d+`)

// TestInfoKeyspace: INFO's Keyspace section counts DB 0's keys without the
// replication metadata keys, as DBSIZE does (no db0 line when DB 0 holds
// nothing else), whatever the client's DB.
func TestInfoKeyspace(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	check := func(what string) {
		t.Helper()
		for _, args := range [][]string{cmd("INFO keyspace"), cmd("INFO"), cmd("INFO all"), cmd("INFO server keyspace")} {
			if got, want := keyspaceSection(t, pc.Do(args...)), keyspaceSection(t, rc.Do(args...)); got != want {
				t.Errorf("%s, %s:\n\tproxy: %q\n\tredis: %q", what, showCmd(args), got, want)
			}
		}
	}
	diffSame(t, rc, pc, [][]string{cmd("SET a 1"), cmd("SET b 2 EX 100"), cmd("SELECT 2"), cmd("SET c 3")})
	check("keys in DB 0 and DB 2, client in DB 2")
	diffSame(t, rc, pc, [][]string{cmd("SELECT 0"), cmd("DEL a b"), cmd("DBSIZE")})
	check("DB 0 empty but for the metadata")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestInfoOwnClients: every connected_clients, blocked_clients, maxclients,
// tcp_port, uptime_in_seconds and total_commands_processed line of INFO through
// the proxy is the proxy's (its clients, its limit, its port, ...), not the
// master's, in whatever section: a parser that keeps the last value of a field
// reads the proxy's.
func TestInfoOwnClients(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.MaxClients = 77 }, servers[0], servers[1])
	conns := []*redistest.RawConn{redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)}
	sendOnly(conns[2], "BLPOP", "nolist", "0")
	_, port, _ := net.SplitHostPort(addr)
	want := map[string]string{"connected_clients": "3", "blocked_clients": "1", "maxclients": "77", "tcp_port": port}
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		for _, args := range [][]string{cmd("INFO"), cmd("INFO clients"), cmd("INFO server clients")} {
			seen, first := map[string]int{}, map[string]string{}
			for _, line := range strings.Split(string(conns[0].Do(args...)), "\r\n") {
				k, v, _ := strings.Cut(line, ":")
				if w, ok := want[k]; ok {
					seen[k]++
					if v != w {
						return fmt.Errorf("%s: %s:%s, want %s", showCmd(args), k, v, w)
					}
				}
				// Fields of the "# Proxy" section carry one value wherever they stand.
				if k == "uptime_in_seconds" || k == "total_commands_processed" {
					if f, ok := first[k]; ok && f != v {
						return fmt.Errorf("%s: %s both %s and %s", showCmd(args), k, f, v)
					}
					first[k] = v
				}
			}
			if seen["connected_clients"] == 0 || (args[len(args)-1] != "server" && seen["maxclients"] == 0) {
				return fmt.Errorf("%s: fields missing: %v", showCmd(args), seen)
			}
		}
		return nil
	})
}

// refAndProxy starts a reference server and, apart, a proxy over a master and
// one slave; it returns their addresses.
func refAndProxy(t *testing.T) (refAddr, proxyAddr string) {
	t.Helper()
	ref := redistest.Start(t)
	addr, _ := startProxy(t, redistest.Start(t), redistest.Start(t))
	return ref.Addr, addr
}
