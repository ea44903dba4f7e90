package e2e

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Values used by the differential table.
const (
	// farFuture is an absolute expiry (2100-01-01) that is the same on every server,
	// so that EXPIRETIME and PEXPIRETIME replies and the expiry compared by Diff are
	// exact; relative TTLs would differ by the milliseconds between two servers.
	farFuture   = "4102444800"
	farFutureMs = "4102444800123"
	binValue    = "a\x00b\r\nc\xff\r\n$-1\r\n"
	// dumpArg is replaced by the DUMP payload of the string "dumped".
	dumpArg = "<dump>"
)

// bigValue is a 1 MB value, not repetitive enough to hide an off-by-one.
var bigValue = func() string {
	var b strings.Builder
	for i := 0; b.Len() < 1<<20; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(' ')
	}
	return b.String()[:1<<20]
}()

// differentialTable returns commands over every data type whose replies are
// deterministic: the same on two servers that ran the same commands. It avoids what
// depends on the clock (relative TTLs), on randomness (SPOP and SRANDMEMBER of
// several members, XADD *), and on hash-table order (SMEMBERS of non-integer sets,
// KEYS of several keys), and DB 0 aggregates that would count the proxy's own
// syncproxy:* keys (DBSIZE, KEYS *, RANDOMKEY).
func differentialTable() [][]string {
	var t [][]string
	add := func(lines ...string) {
		for _, l := range lines {
			t = append(t, cmd(l))
		}
	}
	raw := func(args ...string) { t = append(t, args) }

	// Connection and errors answered without data.
	add("PING", "PING hello", "ECHO hi", "COMMAND COUNT", "COMMAND DOCS GET", "COMMAND INFO GET ZADD",
		"COMMAND GETKEYS SET k v")
	raw("ECHO", "")
	raw("ECHO", binValue)
	add("GET", "FOO a b", "FOO", "SET onlykey", "HSET h f", "ZADD z 1",
		"SELECT 16", "SELECT x", "SELECT -1", "OBJECT FOO", "XADD")

	// Strings.
	add("SET s hello", "GET s", "GET missing", "SET s world XX GET", "GET s",
		"SET s2 v NX", "SET s2 v NX", "SET s2 w XX", "SETNX s2 x", "SETNX s3 x",
		"APPEND s !!", "APPEND s4 new", "STRLEN s", "STRLEN missing",
		"GETRANGE s 0 2", "GETRANGE s -3 -1", "GETRANGE s 100 200", "SUBSTR s 1 3",
		"SETRANGE s 1 EE", "SETRANGE s 10 pad", "GET s",
		"MSET a 1 b 2 c 3", "MGET a b c missing", "MSETNX a 1 z 26", "MSETNX y 25 z 26", "MGET y z",
		"INCR a", "INCRBY a 10", "DECR a", "DECRBY a 5", "INCRBY a -100", "GET a",
		"INCR s", "INCRBY a abc", "INCRBYFLOAT f 1.5", "INCRBYFLOAT f 0.25", "INCRBYFLOAT s 1",
		"GETDEL b", "GETDEL b", "GETEX c", "GETEX missing", "GETEX c PERSIST",
		"GETEX c PXAT "+farFutureMs, "PEXPIRETIME c", "EXPIRETIME c", "GET c",
		"SET k v KEEPTTL", "SET c 33 KEEPTTL", "PEXPIRETIME c",
		"SET x 1 XX NX", "SET x 1 EX abc", "SET x 1 EX -1", "SET x 1 PX 0", "GETRANGE s a b",
		"LCS s s2", "SET lcs1 ohmytext", "SET lcs2 mynewtext", "LCS lcs1 lcs2", "LCS lcs1 lcs2 LEN",
		"LCS lcs1 lcs2 IDX MINMATCHLEN 4 WITHMATCHLEN")
	raw("SET", "empty", "")
	add("GET empty", "STRLEN empty", "EXISTS empty", "APPEND empty x", "GET empty")
	raw("SET", "bin", binValue)
	add("GET bin", "STRLEN bin", "GETRANGE bin 1 5")
	raw("SET", "key with space\r\nand CRLF\x00", "v")
	raw("GET", "key with space\r\nand CRLF\x00")
	raw("APPEND", "bin", "\x00\x00")
	add("GET bin")
	raw("SET", "big", bigValue)
	add("STRLEN big", "GETRANGE big 1048570 -1", "GET big", "OBJECT ENCODING big")
	raw("APPEND", "big", bigValue[:1000])
	add("STRLEN big")

	// Integers near the 64-bit limits.
	add("SET n 9223372036854775800", "INCRBY n 6", "INCR n", "GET n", "INCR n", "INCRBY n 1",
		"GET n", "DECRBY n -1", "SET neg -9223372036854775807", "DECR neg", "GET neg", "DECR neg",
		"INCRBY neg -1", "SET big2 9223372036854775808", "INCR big2", "DECRBY neg 9223372036854775808",
		"SET n2 4611686018427387904", "INCRBY n2 4611686018427387903", "GET n2",
		"SET p53 9007199254740992", "INCR p53", "GET p53", "INCRBY p53 2", "DECRBY p53 -9000000000000000000")

	// Lists.
	add("RPUSH L a b c d e", "LPUSH L z", "LRANGE L 0 -1", "LLEN L", "LINDEX L 2", "LINDEX L 100",
		"LSET L 0 Z", "LSET L 100 x", "LSET nolist 0 x", "LINSERT L BEFORE c bb", "LINSERT L AFTER nope x",
		"LRANGE L 0 -1", "LREM L 1 bb", "RPUSH L a a", "LPOS L c", "LPOS L a RANK -1",
		"LPOS L nope", "LPOS L a COUNT 0", "LPOS L a COUNT 2 MAXLEN 10", "LPOS L a RANK 0",
		"LTRIM L 0 6", "LRANGE L 0 -1", "LPOP L", "RPOP L", "LPOP L 2", "RPOP L 0",
		"LPOP nolist", "LPOP nolist 2", "RPOP nolist 2", "RPOPLPUSH L L2", "LMOVE L L2 LEFT RIGHT",
		"LRANGE L2 0 -1", "LMPOP 2 nolist L LEFT COUNT 2", "LMPOP 1 nolist LEFT", "LPUSHX nolist a",
		"RPUSHX L q", "LINDEX s 0", "LPUSH s x", "LRANGE L 0 -1", "LRANGE nolist 0 -1",
		"RPUSH nums 3 10 1 22 7", "SORT nums", "SORT nums DESC LIMIT 0 2", "SORT_RO nums",
		"RPUSH words pear apple fig", "SORT words ALPHA", "SORT words", "SORT nums STORE sorted",
		"LRANGE sorted 0 -1", "OBJECT ENCODING L")
	raw("RPUSH", "L3", "", binValue, bigValue[:70000])
	add("LRANGE L3 0 -1", "LLEN L3")

	// Hashes (small, so that their order is insertion order on every server).
	add("HSET H f1 v1 f2 v2", "HSET H f1 v1b", "HGET H f1", "HGET H nofield", "HGET nohash f",
		"HMGET H f1 nofield f2", "HMSET H f3 v3", "HGETALL H", "HKEYS H", "HVALS H", "HLEN H",
		"HEXISTS H f1", "HEXISTS H nope", "HDEL H f2 nope", "HSETNX H f1 x", "HSETNX H f4 v4",
		"HINCRBY H cnt 5", "HINCRBY H cnt -7", "HINCRBY H f1 1", "HINCRBYFLOAT H fl 2.5",
		"HINCRBYFLOAT H fl 1e3", "HSTRLEN H f1", "HGETALL H", "HGETALL nohash", "HSET H1 only one",
		"HRANDFIELD H1", "HRANDFIELD H1 -3 WITHVALUES", "HRANDFIELD nohash", "HGET s f",
		"OBJECT ENCODING H")
	raw("HSET", "H", "", "", "bin", binValue)
	add("HGETALL H")

	// Sets: integer members, kept sorted by the intset encoding; other sets are only
	// queried by membership and size.
	add("SADD S 3 1 2", "SADD S 2", "SMEMBERS S", "SISMEMBER S 1", "SISMEMBER S 9",
		"SMISMEMBER S 1 9 2", "SCARD S", "SREM S 3 7", "SADD S2 2 5 7 1", "SINTER S S2",
		"SUNION S S2", "SDIFF S2 S", "SINTERSTORE D S S2", "SUNIONSTORE D2 S S2",
		"SDIFFSTORE D3 S2 S", "SMEMBERS D2", "SMEMBERS D3", "SINTERCARD 2 S S2",
		"SINTERCARD 2 S S2 LIMIT 1", "SMOVE S S2 1", "SMOVE S S2 nope", "SMEMBERS S2",
		"SADD one x", "SPOP one", "SPOP one", "SPOP noset 3", "SADD one2 y", "SRANDMEMBER one2",
		"SRANDMEMBER one2 -3", "SRANDMEMBER noset", "SADD Sw apple pear", "SCARD Sw",
		"SISMEMBER Sw pear", "SADD s x", "SMEMBERS noset", "OBJECT ENCODING S", "OBJECT ENCODING Sw")

	// Sorted sets.
	add("ZADD Z 1 a 2 b 3 c", "ZADD Z 1.5 x", "ZADD Z INCR 10 a", "ZADD Z NX XX 1 a",
		"ZADD Z GT CH 0.5 b 4 c", "ZADD Z x m", "ZSCORE Z a", "ZSCORE Z nope", "ZMSCORE Z a nope c",
		"ZRANGE Z 0 -1 WITHSCORES", "ZRANGE Z 0 -1 REV", "ZRANGE Z (1 3 BYSCORE",
		"ZRANGE Z +inf -inf BYSCORE REV LIMIT 0 2 WITHSCORES", "ZRANGEBYSCORE Z -inf +inf WITHSCORES LIMIT 1 2",
		"ZREVRANGE Z 0 1 WITHSCORES", "ZREVRANGEBYSCORE Z 100 0", "ZRANK Z c", "ZRANK Z nope",
		"ZREVRANK Z c", "ZCARD Z", "ZCOUNT Z 1 3", "ZCOUNT Z (1 +inf", "ZINCRBY Z 0.5 b",
		"ZINCRBY Zf 0.1 m", "ZINCRBY Zf 0.2 m", "ZSCORE Zf m", "ZREM Z x nope", "ZPOPMIN Z",
		"ZPOPMAX Z 2", "ZPOPMIN nozset", "ZPOPMAX nozset 3", "ZADD Z 5 d 6 e 7 f",
		"ZADD Zl 0 a 0 b 0 c 0 d", "ZRANGEBYLEX Zl [a (c", "ZRANGE Zl [b + BYLEX", "ZLEXCOUNT Zl - +",
		"ZREVRANGEBYLEX Zl + - LIMIT 0 2", "ZREMRANGEBYLEX Zl [a [a", "ZREMRANGEBYSCORE Z 0 5.5",
		"ZREMRANGEBYRANK Zl 0 0", "ZRANGE Zl 0 -1", "ZADD Z2 1 e 2 g", "ZUNIONSTORE U 2 Z Z2",
		"ZRANGE U 0 -1 WITHSCORES", "ZINTERSTORE I 2 Z Z2 WEIGHTS 2 3 AGGREGATE MAX",
		"ZRANGE I 0 -1 WITHSCORES", "ZUNION 2 Z Z2 WITHSCORES", "ZINTER 2 Z Z2", "ZDIFF 2 Z Z2 WITHSCORES",
		"ZDIFFSTORE Zd 2 Z Z2", "ZINTERCARD 2 Z Z2", "ZRANGESTORE Zr Z 0 0", "ZRANGE Zr 0 -1",
		"ZMPOP 1 nozset MIN", "ZMPOP 2 nozset Z MAX COUNT 1", "ZADD Zone 1 only", "ZRANDMEMBER Zone",
		"ZRANDMEMBER Zone -2 WITHSCORES", "ZADD Zi +inf a -inf b 0 c", "ZRANGE Zi 0 -1 WITHSCORES",
		"ZINCRBY Zi 1 a", "ZADD Zi nan x", "ZSCORE s m", "OBJECT ENCODING Z")

	// Streams, with explicit IDs so that replies do not depend on the clock.
	add("XADD X 1-1 f v", "XADD X 1-2 a b c d", "XADD X 2-0 f v", "XADD X 1-0 f v", "XADD X 0-0 f v",
		"XADD X NOMKSTREAM 3-0 f v", "XADD nostream NOMKSTREAM 1-1 f v", "XLEN X", "XLEN nostream",
		"XRANGE X - +", "XRANGE X - + COUNT 1", "XREVRANGE X + -", "XRANGE X (1-1 +", "XRANGE X 5 6",
		"XREAD COUNT 2 STREAMS X 0-0", "XREAD STREAMS X 9-0", "XREAD STREAMS X nostream 0-0 0-0",
		"XDEL X 1-2 7-7", "XTRIM X MAXLEN 2", "XRANGE X - +", "XADD X MAXLEN 2 4-0 f v", "XRANGE X - +",
		"XADD X 4-* f v", "XGROUP CREATE X g 0", "XGROUP CREATE X g 0", "XREADGROUP GROUP g c1 COUNT 1 STREAMS X >",
		"XPENDING X g", "XACK X g 3-0 9-9", "XPENDING X g", "XINFO GROUPS X", "XGROUP CREATECONSUMER X g c2",
		"XGROUP DELCONSUMER X g c2", "XGROUP SETID X g 0", "XGROUP DESTROY X g", "XSETID X 10-0",
		"XADD X 5-0 f v", "XADD X 11-0 f v", "XLEN X", "XINFO STREAM X", "XREAD STREAMS s 0", "XADD X 12-0")

	// Bitmaps.
	add("SETBIT B 7 1", "SETBIT B 7 0", "SETBIT B 100 1", "SETBIT B 7 1", "GETBIT B 100", "GETBIT B 5000",
		"GETBIT nobit 1", "BITCOUNT B", "BITCOUNT B 0 0", "BITCOUNT B 0 7 BIT", "BITPOS B 1", "BITPOS B 0",
		"BITPOS B 1 2 -1 BYTE", "SETBIT B -1 1", "SETBIT B 1 2", "BITOP AND Band B s", "BITOP OR Bor B s",
		"BITOP XOR Bxor B s", "BITOP NOT Bnot B", "GET Bnot", "BITOP NOT Bx B s", "GET Band",
		"BITFIELD BF SET u8 0 255 GET u8 0 INCRBY u8 0 10 OVERFLOW FAIL INCRBY u8 0 300",
		"BITFIELD BF SET i16 #1 -300 GET i16 #1", "BITFIELD_RO BF GET u4 0", "BITFIELD BF GET u99 0",
		"GET BF", "BITCOUNT nobit", "BITPOS nobit 0")
	raw("SET", "B2", "\xff\xf0\x00")
	add("BITPOS B2 0", "BITPOS B2 1 1", "BITCOUNT B2")

	// HyperLogLog.
	add("PFADD HL a b c", "PFADD HL a", "PFADD HL", "PFCOUNT HL", "PFADD HL2 c d e", "PFCOUNT HL HL2",
		"PFMERGE HL3 HL HL2", "PFCOUNT HL3", "PFCOUNT nohll", "PFADD s x", "PFCOUNT s", "GET HL3")

	// Geo.
	add("GEOADD G 13.361389 38.115556 Palermo 15.087269 37.502669 Catania", "GEOADD G 200 100 bad",
		"GEOADD G XX CH 13.5 38.2 Palermo", "GEODIST G Palermo Catania", "GEODIST G Palermo Catania km",
		"GEODIST G Palermo nowhere", "GEOPOS G Palermo nowhere Catania", "GEOHASH G Palermo Catania nowhere",
		"GEOSEARCH G FROMLONLAT 15 37 BYRADIUS 200 km ASC WITHCOORD WITHDIST WITHHASH",
		"GEOSEARCH G FROMMEMBER Palermo BYBOX 400 400 km DESC COUNT 1", "GEOSEARCH G FROMMEMBER nowhere BYRADIUS 1 m",
		"GEOSEARCHSTORE G2 G FROMLONLAT 15 37 BYRADIUS 500 km ASC", "ZRANGE G2 0 -1 WITHSCORES",
		"GEOSEARCHSTORE G3 G FROMLONLAT 15 37 BYRADIUS 500 km ASC STOREDIST", "ZRANGE G3 0 -1 WITHSCORES",
		"GEORADIUS_RO G 15 37 200 km ASC WITHDIST", "GEORADIUSBYMEMBER G Palermo 300 km ASC",
		"GEOSEARCH nogeo FROMLONLAT 0 0 BYRADIUS 1 km")

	// Keys and expiry.
	add("EXISTS s a missing s", "TYPE s", "TYPE L", "TYPE H", "TYPE S", "TYPE Z", "TYPE X", "TYPE HL",
		"TYPE missing", "RENAME a a2", "RENAME missing x", "RENAMENX a2 s", "RENAMENX a2 a3", "GET a3",
		"DEL a3 y missing", "UNLINK z missing", "TOUCH s L missing", "EXPIREAT s "+farFuture,
		"EXPIRETIME s", "PEXPIRETIME s", "PEXPIREAT L "+farFutureMs, "PEXPIRETIME L", "EXPIRETIME L",
		"EXPIREAT missing "+farFuture, "EXPIREAT H "+farFuture+" XX", "EXPIREAT H "+farFuture+" NX",
		"EXPIRETIME H", "TTL s2", "PTTL s2", "TTL missing", "PTTL missing", "EXPIRETIME s2",
		"PERSIST L", "PERSIST L", "PEXPIRETIME L", "EXPIRE s2 100", "PERSIST s2", "TTL s2",
		"SET tmp v", "EXPIRE tmp 0", "EXISTS tmp", "SET tmp v", "PEXPIREAT tmp 1000", "EXISTS tmp",
		"SET tmp2 v PXAT "+farFutureMs, "PEXPIRETIME tmp2", "SET tmp3 v EXAT "+farFuture, "EXPIRETIME tmp3",
		"EXPIRE s abc", "OBJECT ENCODING s2", "OBJECT ENCODING a2", "OBJECT ENCODING missing",
		"OBJECT ENCODING HL", "COPY s s5", "COPY s s5", "COPY s s5 REPLACE", "EXPIRETIME s5",
		"COPY H Hcopy", "HGETALL Hcopy", "COPY s s DB 1", "COPY missing m2", "MOVE s2 2", "MOVE s2 2",
		"SET dumped dumped", "DUMP dumped", "DUMP missing", "DUMP L3")
	raw("RESTORE", "restored", "0", dumpArg)
	raw("RESTORE", "restored", "0", dumpArg)
	raw("RESTORE", "restored", "0", dumpArg, "REPLACE")
	raw("RESTORE", "restored2", "0", dumpArg, "ABSTTL")
	raw("RESTORE", "restored3", farFutureMs, dumpArg, "ABSTTL")
	add("GET restored", "PEXPIRETIME restored3", "RESTORE bad 0 garbage", "OBJECT FREQ s",
		"SORT L3 BY nosort", "TYPE restored")

	// Databases: each holds its own data; the proxy keeps the selected DB per client.
	for db := 1; db < 16; db++ {
		n := strconv.Itoa(db)
		add("SELECT "+n, "GET s", "SET dbkey "+n)
		if db > 2 { // DB 1 and 2 hold another key (COPY, MOVE above)
			add("RANDOMKEY")
		}
		add("RPUSH dblist "+n+" "+n, "GET dbkey", "DBSIZE", "EXISTS dbkey dblist")
		if db%5 == 0 {
			add("FLUSHDB", "DBSIZE", "RANDOMKEY", "SET after "+n, "KEYS *", "RANDOMKEY")
		}
	}
	add("SELECT 2", "GET s2", "SELECT 1", "GET s", "MOVE s 0", "SELECT 0", "GET dbkey", "GET s",
		"COPY L3 L3 DB 7", "SELECT 7", "LLEN L3", "SELECT 0", "GET s2")
	return t
}

// substitute replaces dumpArg in args by payload.
func substitute(args []string, payload string) []string {
	for i, a := range args {
		if a == dumpArg {
			args = append([]string(nil), args...) // the table is shared: copy
			args[i] = payload
		}
	}
	return args
}

// dumpPayload returns the DUMP serialization of the string "dumped", made by s.
func dumpPayload(t *testing.T, s *redistest.Server) string {
	t.Helper()
	c := redistest.DialRaw(t, s.Addr)
	c.Send("SELECT", "9")
	c.Send("SET", "dumpsrc", "dumped")
	c.Send("DUMP", "dumpsrc")
	c.Send("DEL", "dumpsrc")
	c.Flush()
	c.Read()
	c.Read()
	frame := c.Read()
	c.Read()
	// "$<len>\r\n<payload>\r\n"
	i := bytes.Index(frame, []byte("\r\n"))
	if frame[0] != '$' || i < 0 {
		t.Fatalf("DUMP reply %q", frame)
	}
	return string(frame[i+2 : len(frame)-2])
}

// diffSetup starts a reference server and, separately, a master with two slaves
// behind a proxy.
func diffSetup(t *testing.T) (ref, master *redistest.Server, slaves []*redistest.Server, proxyAddr string) {
	t.Helper()
	servers := redistest.StartN(t, 4)
	ref, master, slaves = servers[0], servers[1], servers[2:]
	proxyAddr, _ = startProxy(t, master, slaves...)
	return ref, master, slaves, proxyAddr
}

// checkSameData fails the test unless the proxy's master holds exactly the
// reference's data and the slaves converge to it.
func checkSameData(t *testing.T, ref, master *redistest.Server, slaves []*redistest.Server) {
	t.Helper()
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	diffs, err := redistest.Diff(ref.Addr, master.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("the proxy's master differs from the reference (reference shown as master):\n\t%s",
			strings.Join(diffs, "\n\t"))
	}
}

// TestDifferential sends every command of the table, one at a time, to a reference
// Redis and through the proxy, and compares the raw replies byte for byte; then the
// master must hold exactly the reference's data, and the slaves the master's.
func TestDifferential(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	payload := dumpPayload(t, ref)
	table := differentialTable()
	if len(table) < 150 {
		t.Fatalf("table has only %d commands", len(table))
	}
	rc := redistest.DialRaw(t, ref.Addr)
	pc := redistest.DialRaw(t, addr)
	mismatches := sendBoth(t, rc, pc, table, payload)
	t.Logf("%d commands, %d mismatches", len(table), mismatches)
	checkSameData(t, ref, master, slaves)
}

// sendBoth sends each command of table to Redis (rc) and to the proxy (pc), one
// at a time, and reports every reply that differs; it returns how many did.
func sendBoth(t *testing.T, rc, pc *redistest.RawConn, table [][]string, payload string) int {
	t.Helper()
	mismatches := 0
	for i, args := range table {
		args = substitute(args, payload)
		want := rc.Do(args...)
		got := pc.Do(args...)
		if !bytes.Equal(got, want) {
			mismatches++
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, showCmd(args), showReply(got), showReply(want))
		}
	}
	return mismatches
}

// TestDifferentialPipelined sends the whole table as one pipeline: same replies,
// same data.
func TestDifferentialPipelined(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	payload := dumpPayload(t, ref)
	table := differentialTable()
	cmds := make([][]string, len(table))
	for i, args := range table {
		cmds[i] = substitute(args, payload)
	}
	mismatches := pipelineDiff(t, redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr), cmds, showCmd)
	t.Logf("%d pipelined commands, %d mismatches", len(table), mismatches)
	checkSameData(t, ref, master, slaves)
}

// pipelineDiff sends cmds as one pipeline to the reference Redis (rc) and to the
// proxy (pc), each written while its replies are read (the replies, megabytes,
// must not wait in socket buffers for the whole pipeline to be written), and
// reports each reply that differs, named by show; it returns how many did.
func pipelineDiff(t *testing.T, rc, pc *redistest.RawConn, cmds [][]string, show func([]string) string) int {
	t.Helper()
	sent := make(chan struct{}, 2)
	for _, c := range []*redistest.RawConn{rc, pc} {
		go func() {
			defer func() { sent <- struct{}{} }()
			for _, args := range cmds {
				c.Send(args...)
			}
			c.Flush()
		}()
	}
	defer func() { <-sent; <-sent }()
	mismatches := 0
	for i, args := range cmds {
		want, got := rc.Read(), pc.Read()
		if !bytes.Equal(got, want) {
			mismatches++
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, show(args), showReply(got), showReply(want))
		}
	}
	return mismatches
}
