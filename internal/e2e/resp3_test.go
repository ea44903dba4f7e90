package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// resp3Table adds to the differential table the commands whose RESP3 reply type
// differs from RESP2 (maps, sets, doubles, pairs, pushes aside), with
// deterministic replies; run after differentialTable on the same data.
func resp3Table() [][]string {
	var t [][]string
	add := func(lines ...string) {
		for _, l := range lines {
			t = append(t, cmd(l))
		}
	}
	raw := func(args ...string) { t = append(t, args) }
	add("SELECT 3", "HSET r3h a 1 b 2", "HGETALL r3h", "HGETALL nohash", "HRANDFIELD r3h 0 WITHVALUES",
		"HSET r3one f v", "HRANDFIELD r3one -2 WITHVALUES", "HRANDFIELD r3one 1",
		"SADD r3s 1 2 3", "SMEMBERS r3s", "SINTER r3s r3s", "SUNION r3s nos", "SDIFF r3s nos", "SMEMBERS nos",
		"SADD r3one1 7", "SPOP r3one1 1", "SPOP nos 2", "SPOP nos",
		"ZADD r3z 1.5 a 2 b 3.25 c", "ZSCORE r3z a", "ZSCORE r3z none", "ZINCRBY r3z 0.1 a", "ZADD r3z INCR 1 b",
		"ZADD r3z NX INCR 1 b", "ZADD r3z 9 d", "ZMSCORE r3z a none c", "ZRANGE r3z 0 -1 WITHSCORES", "ZRANGE r3z 0 -1",
		"ZRANGEBYSCORE r3z -inf +inf WITHSCORES", "ZREVRANGE r3z 0 1 WITHSCORES", "ZREVRANGEBYSCORE r3z +inf 2 WITHSCORES",
		"ZUNION 1 r3z WITHSCORES", "ZINTER 1 r3z WITHSCORES", "ZDIFF 1 r3z WITHSCORES", "ZPOPMIN r3z", "ZPOPMAX r3z 1",
		"ZPOPMIN r3z 5", "ZPOPMIN r3z", "ZADD r3z 1 x 2 y 3 z", "ZMPOP 1 r3z MIN", "ZMPOP 1 r3z MAX COUNT 5",
		"ZMPOP 1 r3z MIN", "ZADD r3z 4 w", "BZPOPMIN r3z 1", "ZADD r3z 4 w 5 v", "BZPOPMAX r3z 1",
		"BZMPOP 1 1 r3z MIN COUNT 3", "ZADD r3zi 1 m", "ZRANDMEMBER r3zi -2 WITHSCORES",
		"GEOADD r3g 13.361389 38.115556 Palermo", "GEOPOS r3g Palermo nowhere", "GEODIST r3g Palermo Palermo",
		"GEOSEARCH r3g FROMLONLAT 13 38 BYRADIUS 100 km WITHCOORD", "GEORADIUS_RO r3g 13 38 100 km WITHDIST WITHCOORD",
		"XADD r3x 1-1 f v", "XADD r3x 2-1 g w", "XREAD STREAMS r3x 0", "XREAD COUNT 1 STREAMS r3x nox 0 0",
		"XREAD STREAMS r3x 5", "XGROUP CREATE r3x grp 0", "XREADGROUP GROUP grp c1 COUNT 1 STREAMS r3x >",
		"XINFO GROUPS r3x", "XINFO STREAM r3x", "XINFO STREAM nox", "XREADGROUP GROUP grp c1 STREAMS r3x 0",
		"XREAD BLOCK 10 STREAMS r3x 9", "BLPOP nolist 0.01", "BLMPOP 0.01 1 nolist LEFT",
		"LCS r3x r3x", "SET lcsa ohmytext", "SET lcsb mynewtext", "LCS lcsa lcsb IDX", "LCS lcsa lcsb IDX WITHMATCHLEN",
		"CONFIG GET maxmemory", "CONFIG GET nosuchparam", "GET nokey", "MGET nokey lcsa", "LPOS nolist a",
		"COMMAND DOCS GET", "COMMAND INFO GET xinfo|stream NOSUCH", "COMMAND GETKEYSANDFLAGS SET a b",
		"MULTI", "ZSCORE r3z w", "HGETALL r3h", "SMEMBERS r3s", "GET nokey", "ZINCRBY r3z 1 w", "EXEC",
		"MULTI", "ZADD r3z 1 q", "ZPOPMIN r3z 1", "XREAD STREAMS r3x 0", "EXEC",
		"WATCH r3h", "MULTI", "HGETALL r3h", "EXEC", "PING", "PING hi", "ECHO x", "LOLWUT VERSION 5 1 1 1",
		"CLIENT GETNAME", "SELECT 0")
	raw("EVAL", "return {1, false, 'x', {ok='fine'}}", "0")
	raw("EVAL", "return redis.call('zscore', KEYS[1], 'w')", "1", "r3z")
	raw("EVAL", "return nil", "0")
	raw("EVAL_RO", "return redis.call('get', KEYS[1])", "1", "nokey")
	return t
}

// hello3 switches c to RESP3 and returns HELLO's reply.
func hello3(t *testing.T, c *redistest.RawConn) []byte {
	t.Helper()
	reply := c.Do("HELLO", "3")
	if !bytes.HasPrefix(reply, []byte("%7\r\n")) {
		t.Fatalf("HELLO 3: %q", reply)
	}
	return reply
}

// TestRESP3Differential sends the differential table and the RESP3 table to a
// reference Redis and through the proxy, both with HELLO 3, and compares the
// replies byte for byte: maps, sets, doubles, nulls, verbatim strings as Redis
// gives them to a RESP3 client; then the data must be the same everywhere.
func TestRESP3Differential(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	payload := dumpPayload(t, ref)
	table := append(differentialTable(), resp3Table()...)
	rc := redistest.DialRaw(t, ref.Addr)
	pc := redistest.DialRaw(t, addr)
	hello3(t, rc)
	hello3(t, pc)
	mismatches := sendBoth(t, rc, pc, table, payload)
	t.Logf("%d commands in RESP3, %d mismatches", len(table), mismatches)
	checkSameData(t, ref, master, slaves)
}

// TestRESP3Verbatim checks the replies whose content is the proxy's own (INFO,
// CLIENT INFO, CLIENT LIST) for the type Redis gives them: verbatim text.
func TestRESP3Verbatim(t *testing.T) {
	t.Parallel()
	addr, _ := startProxy(t, redistest.Start(t), redistest.Start(t))
	c := redistest.DialRaw(t, addr)
	hello3(t, c)
	verb := regexp.MustCompile(`^=(\d+)\r\ntxt:`)
	for _, args := range [][]string{{"INFO"}, {"INFO", "server"}, {"CLIENT", "INFO"}, {"CLIENT", "LIST"}, {"MEMORY", "DOCTOR"}} {
		got := c.Do(args...)
		if !verb.Match(got) || !bytes.HasSuffix(got, []byte("\r\n")) {
			t.Errorf("%s: %s, want a verbatim string", showCmd(args), showReply(got))
		}
	}
	mustReply(t, c, "_\r\n", "GET", "nokey")
	mustReply(t, c, "+RESET\r\n", "RESET")
	mustReply(t, c, "$-1\r\n", "GET", "nokey") // RESET: back to RESP2
	if got := c.Do("INFO", "server"); got[0] != '$' {
		t.Errorf("INFO after RESET: %s", showReply(got))
	}
}

// helloIDs blanks what legitimately differs between the proxy's and Redis'
// HELLO replies: the client id and the version.
var helloIDs = regexp.MustCompile(`(\$2\r\nid\r\n:)\d+|(\$7\r\nversion\r\n)\$\d+\r\n[0-9.]+`)

func normHello(b []byte) string { return helloIDs.ReplaceAllString(string(b), "$1$2") }

// TestHelloRESP3 compares HELLO in every form with Redis': HELLO 3, HELLO 2
// back, HELLO alone in each protocol, AUTH and SETNAME, and the errors.
func TestHelloRESP3(t *testing.T) {
	t.Parallel()
	const pass = "s3cret"
	ref := redistest.Start(t, "--requirepass", pass)
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.RequirePass = pass }, redistest.Start(t), redistest.Start(t))
	rc := redistest.DialRaw(t, ref.Addr)
	pc := redistest.DialRaw(t, addr)
	steps := [][]string{
		{"HELLO", "3"}, {"HELLO"}, {"GET", "k"}, {"HELLO", "4"}, {"HELLO", "x"}, {"HELLO", "1"},
		{"HELLO", "3", "AUTH", "default", "wrong"}, {"HELLO", "3", "SETNAME", "n1"},
		{"HELLO", "3", "AUTH", "default", pass, "SETNAME", "bad name"},
		{"CLIENT", "GETNAME"}, {"HELLO", "3", "AUTH", "default", pass, "SETNAME", "n1"}, {"CLIENT", "GETNAME"},
		{"GET", "k"}, {"HELLO"}, {"HELLO", "3", "SETNAME"}, {"HELLO", "3", "FOO"}, {"HELLO", "2"}, {"GET", "k"},
		{"HELLO", "3", "SETNAME", "n2"}, {"CLIENT", "GETNAME"}, {"HELLO", "3", "SETNAME", "n3", "FOO"}, {"CLIENT", "GETNAME"},
		{"HELLO", "2", "AUTH", "default", "wrong", "SETNAME", "n4"}, {"CLIENT", "GETNAME"}, {"HGETALL", "h"}, {"HELLO", "2", "AUTH", "default", pass},
		{"HGETALL", "h"},
	}
	for _, args := range steps {
		want, got := normHello(rc.Do(args...)), normHello(pc.Do(args...))
		if got != want {
			t.Errorf("%s:\n\tproxy: %q\n\tredis: %q", showCmd(args), got, want)
		}
	}
	// CLIENT INFO's resp= follows the protocol, as Redis' does.
	for _, proto := range []string{"3", "2"} {
		pc.Do("HELLO", proto, "AUTH", "default", pass)
		if info := string(pc.Do("CLIENT", "INFO")); !strings.Contains(info, " resp="+proto+" ") {
			t.Errorf("CLIENT INFO after HELLO %s: %q", proto, info)
		}
	}
}

// TestRESP3PubSub compares subscribed mode for a RESP3 client, and a RESP2
// client on the same channels, with Redis': pushes for confirmations and
// messages, and any command served while subscribed.
func TestRESP3PubSub(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t)
	addr, _ := startProxy(t, redistest.Start(t), redistest.Start(t))
	type side struct{ sub3, sub2, pub *redistest.RawConn }
	open := func(a string) side {
		s := side{redistest.DialRaw(t, a), redistest.DialRaw(t, a), redistest.DialRaw(t, a)}
		hello3(t, s.sub3)
		return s
	}
	r, p := open(ref.Addr), open(addr)
	both := func(who func(side) *redistest.RawConn, args ...string) {
		t.Helper()
		want, got := who(r).Do(args...), who(p).Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n\tproxy: %s\n\tredis: %s", showCmd(args), showReply(got), showReply(want))
		}
	}
	read := func(who func(side) *redistest.RawConn, what string) {
		t.Helper()
		want, got := who(r).Read(), who(p).Read()
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n\tproxy: %s\n\tredis: %s", what, showReply(got), showReply(want))
		}
	}
	s3 := func(s side) *redistest.RawConn { return s.sub3 }
	s2 := func(s side) *redistest.RawConn { return s.sub2 }
	pub := func(s side) *redistest.RawConn { return s.pub }
	both(s3, "SUBSCRIBE", "ch1", "ch2")
	read(s3, "second subscribe confirmation")
	both(s2, "SUBSCRIBE", "ch1")
	both(s3, "PSUBSCRIBE", "ch*")
	both(s3, "PING")
	both(s3, "PING", "x")
	both(s3, "SET", "k", "v")
	both(s3, "GET", "k")
	both(s3, "HGETALL", "nohash")
	both(s2, "PING")
	both(pub, "PUBLISH", "ch1", "hello")
	read(s3, "message")
	read(s3, "pmessage")
	read(s2, "RESP2 message")
	both(pub, "PUBLISH", "ch2", "")
	read(s3, "message ch2")
	read(s3, "pmessage ch2")
	both(s3, "UNSUBSCRIBE", "nosuch")
	both(s3, "UNSUBSCRIBE", "ch2", "ch1")
	read(s3, "unsubscribe ch1")
	both(s3, "PUNSUBSCRIBE")
	both(s3, "UNSUBSCRIBE")
	both(s3, "PING")
	both(s3, "GET", "k")
	both(s3, "SUBSCRIBE", "ch3")
	both(s3, "RESET")
	both(s3, "GET", "nokey")
	both(s2, "UNSUBSCRIBE")
	both(s2, "GET", "nokey")
}

// TestRESP3RedisCLI compares redis-cli -3's output through the proxy with its
// output from Redis.
func TestRESP3RedisCLI(t *testing.T) {
	t.Parallel()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not installed")
	}
	ref := redistest.Start(t)
	addr, _ := startProxy(t, redistest.Start(t), redistest.Start(t))
	run := func(a string, args ...string) string {
		host, port, _ := strings.Cut(a, ":")
		out, err := exec.Command(cli, append([]string{"-3", "-h", host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	for _, line := range []string{
		"HSET h a 1 b 2", "HGETALL h", "SADD s x", "SMEMBERS s", "ZADD z 1.5 m", "ZSCORE z m",
		"ZRANGE z 0 -1 WITHSCORES", "GET nokey", "XADD x 1-1 f v", "XREAD STREAMS x 0", "CONFIG GET maxmemory",
		"ZINCRBY z 1 m", "HELLO 3",
	} {
		args := cmd(line)
		want, got := run(ref.Addr, args...), run(addr, args...)
		if line == "HELLO 3" {
			want, got = cliHello(want), cliHello(got)
		}
		if got != want {
			t.Errorf("redis-cli -3 %s:\n\tproxy: %q\n\tredis: %q", line, got, want)
		}
	}
}

// cliHello drops the id and version in redis-cli's rendering of HELLO.
func cliHello(s string) string {
	return regexp.MustCompile(`(?m)^(version|id) .*$`).ReplaceAllString(s, "$1")
}

// typePaths lists the RESP3 types of a reply's values by their path (map keys,
// * for array elements), each once: the reply's shape without its values,
// counts or order, for replies that hold times or dict-ordered members.
func typePaths(t *testing.T, reply []byte) []string {
	t.Helper()
	seen := map[string]bool{}
	r := bufio.NewReader(bytes.NewReader(reply))
	var walk func(path string)
	walk = func(path string) {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %q: %v", reply, err)
		}
		typ, n := line[0], 0
		if len(line) > 3 {
			n, _ = strconv.Atoi(line[1 : len(line)-2])
		}
		seen[path+":"+string(typ)] = true
		switch typ {
		case '$', '=', '!':
			if n >= 0 {
				io.CopyN(io.Discard, r, int64(n+2))
			}
		case '*', '~', '>':
			for i := 0; i < n; i++ {
				walk(path + "/*")
			}
		case '%':
			for i := 0; i < n; i++ {
				key := typePathKey(r)
				walk(path + "/" + key)
			}
		}
	}
	walk("")
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// typePathKey reads a map key (a bulk or simple string) for typePaths.
func typePathKey(r *bufio.Reader) string {
	line, _ := r.ReadString('\n')
	key := strings.TrimSpace(line[1:])
	if line[0] == '$' {
		n, _ := strconv.Atoi(key)
		b := make([]byte, n+2)
		io.ReadFull(r, b)
		key = string(b[:n])
	}
	if strings.HasPrefix(key, "db.") { // MEMORY STATS: one map per DB with keys
		key = "db.N"
	}
	if _, err := strconv.Atoi(key); err == nil { // LATENCY HISTOGRAM's buckets
		key = "N"
	}
	return key
}

// TestRESP3Shapes compares, path by path, the RESP3 types of replies whose
// values differ between two servers (times, memory, dict order): XINFO STREAM
// FULL, XINFO CONSUMERS, MEMORY STATS, FUNCTION LIST and STATS, CONFIG GET *,
// COMMAND, COMMAND DOCS, SLOWLOG.
func TestRESP3Shapes(t *testing.T) {
	t.Parallel()
	// Every command in the slow log, on every server: SLOWLOG GET has entries
	// whatever the machine's speed.
	slow := []string{"--slowlog-log-slower-than", "0"}
	ref := redistest.Start(t, slow...)
	addr, _ := startProxy(t, redistest.Start(t, slow...), redistest.Start(t, slow...))
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	hello3(t, rc)
	hello3(t, pc)
	lib := "#!lua name=r3lib\nredis.register_function{function_name='r3f', callback=function() return 1 end, flags={'no-writes'}}"
	for _, c := range []*redistest.RawConn{rc, pc} {
		for _, line := range []string{"XADD sx 1-1 f v", "XGROUP CREATE sx g 0", "XREADGROUP GROUP g c STREAMS sx >", "SET k v"} {
			c.Do(cmd(line)...)
		}
		c.Do("FUNCTION", "LOAD", lib)
	}
	for _, line := range []string{
		"XINFO STREAM sx FULL", "XINFO CONSUMERS sx g", "MEMORY STATS", "FUNCTION LIST", "FUNCTION LIST WITHCODE",
		"FUNCTION STATS", "CONFIG GET *", "COMMAND", "COMMAND DOCS", "SLOWLOG GET", "LATENCY HISTOGRAM config|get",
	} {
		args := cmd(line)
		want, got := typePaths(t, rc.Do(args...)), typePaths(t, pc.Do(args...))
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: types by path differ:\n\tproxy: %v\n\tredis: %v", line, got, want)
		}
	}
}

// TestGoRedisRESP3 drives the proxy with go-redis v9 in RESP3 (Protocol 3): the
// handshake, typed replies read from maps, sets and doubles, pub/sub pushes;
// then the slaves converge.
func TestGoRedisRESP3(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: 3, PoolSize: 4})
	defer rdb.Close()
	hello, err := rdb.Do(ctx, "HELLO", "3").Result()
	if m, ok := hello.(map[interface{}]interface{}); err != nil || !ok || m["proto"] != int64(3) {
		t.Fatalf("HELLO 3: %#v, %v", hello, err)
	}
	rdb.HSet(ctx, "h", "a", "1", "b", "2")
	if m, err := rdb.HGetAll(ctx, "h").Result(); err != nil || len(m) != 2 || m["b"] != "2" {
		t.Errorf("HGETALL: %v, %v", m, err)
	}
	rdb.ZAdd(ctx, "z", goredis.Z{Score: 1.5, Member: "m"}, goredis.Z{Score: 2, Member: "n"})
	if zs, err := rdb.ZRangeWithScores(ctx, "z", 0, -1).Result(); err != nil || len(zs) != 2 || zs[0].Score != 1.5 {
		t.Errorf("ZRANGE WITHSCORES: %v, %v", zs, err)
	}
	if f, err := rdb.ZIncrBy(ctx, "z", 0.25, "m").Result(); err != nil || f != 1.75 {
		t.Errorf("ZINCRBY: %v, %v", f, err)
	}
	if v, err := rdb.Get(ctx, "nokey").Result(); !errors.Is(err, goredis.Nil) {
		t.Errorf("GET nokey: %q, %v", v, err)
	}
	rdb.XAdd(ctx, &goredis.XAddArgs{Stream: "x", ID: "1-1", Values: []string{"f", "v"}})
	if st, err := rdb.XRead(ctx, &goredis.XReadArgs{Streams: []string{"x", "0"}}).Result(); err != nil || len(st) != 1 || st[0].Messages[0].ID != "1-1" {
		t.Errorf("XREAD: %v, %v", st, err)
	}
	ps := rdb.Subscribe(ctx, "news")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	if err := rdb.Publish(ctx, "news", "hi").Err(); err != nil {
		t.Fatalf("PUBLISH: %v", err)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil || msg.Channel != "news" || msg.Payload != "hi" {
		t.Errorf("message: %v, %v", msg, err)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestRESP3DifferentialPipelined sends the RESP3 table as one pipeline, with
// HELLO 3 in front: the same replies as Redis', in order.
func TestRESP3DifferentialPipelined(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	table := append([][]string{{"HELLO", "3"}}, resp3Table()...)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	for _, c := range []*redistest.RawConn{rc, pc} {
		for _, args := range table {
			c.Send(args...)
		}
		c.Flush()
	}
	mismatches := 0
	for i, args := range table {
		want, got := rc.Read(), pc.Read()
		if i == 0 {
			want, got = []byte(normHello(want)), []byte(normHello(got))
		}
		if !bytes.Equal(got, want) {
			mismatches++
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, showCmd(args), showReply(got), showReply(want))
		}
	}
	t.Logf("%d pipelined commands in RESP3, %d mismatches", len(table), mismatches)
	checkSameData(t, ref, master, slaves)
}
