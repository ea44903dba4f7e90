package e2e

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// bigSetup is diffSetup with the proxy's default backend timeout: a slave
// applies large messages in script calls of up to 8 MB, which may take more than
// the tests' usual 2s on a loaded machine.
func bigSetup(t *testing.T) (ref, master *redistest.Server, slaves []*redistest.Server, proxyAddr string) {
	t.Helper()
	servers := redistest.StartN(t, 4)
	ref, master, slaves = servers[0], servers[1], servers[2:]
	proxyAddr, _ = startProxyWith(t, bigTimeout, master, slaves...)
	return ref, master, slaves, proxyAddr
}

func bigTimeout(c *proxy.Config) { c.BackendTimeout = proxy.DefaultConfig().BackendTimeout }

// bigIOTimeout bounds one read or write of a large command or transaction on a
// test connection: a loaded machine, with the race detector, may take more than
// the usual 10s to parse, run and replicate 100,000 arguments.
const bigIOTimeout = 60 * time.Second

// bigCmd returns the command name, then head, then n groups made by group(i).
func bigCmd(n int, group func(i int) []string, head ...string) []string {
	args := append([]string(nil), head...)
	for i := 0; i < n; i++ {
		args = append(args, group(i)...)
	}
	return args
}

// shortCmd shows a command's name, first arguments and length.
func shortCmd(args []string) string {
	if len(args) <= 6 {
		return showCmd(args)
	}
	return showCmd(args[:4]) + " ... (" + strconv.Itoa(len(args)) + " arguments)"
}

func members(prefix string) func(int) []string {
	return func(i int) []string { return []string{prefix + strconv.Itoa(i)} }
}

func pairs(prefix, vprefix string) func(int) []string {
	return func(i int) []string { return []string{prefix + strconv.Itoa(i), vprefix + strconv.Itoa(i)} }
}

func scored(prefix string) func(int) []string {
	return func(i int) []string { return []string{strconv.Itoa(i % 977), prefix + strconv.Itoa(i)} }
}

func geo(i int) []string {
	return []string{strconv.FormatFloat(-179+float64(i%3580)/10, 'f', 1, 64),
		strconv.FormatFloat(-85+float64(i%1700)/10, 'f', 1, 64), "p" + strconv.Itoa(i)}
}

// bigTable returns writes of 50,000 to 200,000 arguments, far over what the
// master script can unpack (replicate.MaxScriptArgs), and the reads that show
// their outcome: successes, options, and failures (which must not be replicated).
func bigTable() [][]string {
	const n = 100000
	t := [][]string{
		bigCmd(n, members("m"), "SADD", "set"),
		{"SCARD", "set"},
		bigCmd(n, members("m"), "SADD", "set"), // nothing new
		bigCmd(n/2, members("m"), "SREM", "set"),
		{"SCARD", "set"},
		bigCmd(n, pairs("f", "v"), "HSET", "hash"),
		{"HLEN", "hash"}, {"HGET", "hash", "f99999"},
		bigCmd(n/2, pairs("f", "w"), "HMSET", "hash"),
		bigCmd(n/4, members("f"), "HDEL", "hash"),
		bigCmd(n, members("e"), "RPUSH", "list"),
		bigCmd(n, members("l"), "LPUSH", "list"),
		{"LRANGE", "list", "99998", "100001"},
		bigCmd(n, members("x"), "RPUSHX", "nolist"),
		bigCmd(n, members("x"), "LPUSHX", "list"),
		{"LLEN", "list"},
		bigCmd(n, scored("z"), "ZADD", "zset"),
		{"ZCARD", "zset"}, {"ZRANGE", "zset", "0", "5", "WITHSCORES"},
		bigCmd(n, scored("z"), "ZADD", "zset", "GT", "CH"),
		bigCmd(n, func(i int) []string { return []string{strconv.Itoa(i), "z" + strconv.Itoa(i)} }, "ZADD", "zset", "XX", "CH"),
		{"ZRANGE", "zset", "-3", "-1", "WITHSCORES"},
		bigCmd(n/2, members("z"), "ZREM", "zset"),
		{"ZCARD", "zset"},
		bigCmd(n, geo, "GEOADD", "geo"),
		bigCmd(n, geo, "GEOADD", "geo", "NX", "CH"),
		{"GEOPOS", "geo", "p0", "p99999"},
		bigCmd(n/2, pairs("k", "v"), "MSET"),
		{"MGET", "k0", "k49999", "k50000"},
		bigCmd(n/2, members("k"), "DEL"),
		bigCmd(n/2, pairs("u", "v"), "MSET"),
		bigCmd(n/2, members("u"), "UNLINK"),
		{"EXISTS", "k0", "u1", "k2"},
		bigCmd(n, members("h"), "PFADD", "hll"),
		{"PFCOUNT", "hll"},
		// Failures: Redis' own errors, nothing replicated.
		bigCmd(n, members("m"), "SADD", "hash"),
		bigCmd(n, members("m"), "RPUSH", "set"),
		append(bigCmd(n/2, scored("y"), "ZADD", "zset"), append([]string{"notafloat", "bad"}, bigCmd(n/2, scored("w"))...)...),
		append(bigCmd(n/2, geo, "GEOADD", "geo"), "200", "100", "far"),
		append(bigCmd(n/2, pairs("g", "v"), "HSET", "hash"), "odd"),
		append(bigCmd(n/2, pairs("q", "v"), "MSET"), "odd"),
		bigCmd(n, scored("z"), "ZADD", "zset", "NX", "XX"),
		{"ZCARD", "zset"}, {"HLEN", "hash"}, {"EXISTS", "q0", "g0", "y0", "w0"},
	}
	return t
}

// TestBigArgsDifferential sends writes of 100,000 members (MSET and DEL of 50,000
// keys) to a reference Redis and through the proxy: byte-identical replies, the
// master holding the reference's data and the slaves the master's. The failed
// ones take no sequence number.
func TestBigArgsDifferential(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := bigSetup(t)
	rc := redistest.DialRaw(t, ref.Addr)
	pc := redistest.DialRaw(t, addr)
	rc.SetTimeout(bigIOTimeout)
	pc.SetTimeout(bigIOTimeout)
	for i, args := range bigTable() {
		seq := master.Do(t, "GET", "syncproxy:seq")
		want := rc.Do(args...)
		got := pc.Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, shortCmd(args), showReply(got), showReply(want))
		}
		if want[0] == '-' && len(args) > 1000 {
			if after := master.Do(t, "GET", "syncproxy:seq"); string(after.([]byte)) != string(seq.([]byte)) {
				t.Errorf("#%d %s failed but took a sequence number (%s -> %s)", i, shortCmd(args), seq, after)
			}
		}
	}
	if v := master.Do(t, "EXISTS", "syncproxy:errs"); v != int64(0) {
		t.Errorf("syncproxy:errs left on the master: EXISTS = %v", v)
	}
	checkSameData(t, ref, master, slaves)
}

// TestBigArgsPipelined pipelines large writes between small ones on the same
// keys: every reply in order and as Redis gives it, so every write kept its place.
func TestBigArgsPipelined(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := bigSetup(t)
	const n = 100000
	table := [][]string{
		{"SADD", "s", "first"}, {"SET", "k1", "before"}, {"DEL", "l"}, {"RPUSH", "l", "a"},
		bigCmd(n, members("m"), "SADD", "s"),
		{"SCARD", "s"}, {"SADD", "s", "last"}, {"SCARD", "s"},
		{"RPUSH", "l", "b"},
		bigCmd(n, members("e"), "RPUSH", "l"),
		{"RPUSH", "l", "c"}, {"LINDEX", "l", "-1"}, {"LINDEX", "l", "1"}, {"LLEN", "l"},
		{"SELECT", "3"},
		bigCmd(n/2, pairs("k", "v"), "MSET"),
		{"GET", "k1"}, {"SET", "k1", "after"},
		bigCmd(n/2, members("k"), "DEL"),
		{"GET", "k1"}, {"SELECT", "0"}, {"GET", "k1"},
		{"INCR", "counter"}, bigCmd(n, members("m"), "SREM", "s"), {"SORT", "s", "ALPHA"}, {"INCR", "counter"},
	}
	pipelineDiff(t, redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr), table, shortCmd)
	checkSameData(t, ref, master, slaves)
}

// TestBigArgsRefused: a large write that cannot be replicated in parts (alone
// or inside MULTI) gets a clear error and changes nothing; the client's
// argument limit still holds.
func TestBigArgsRefused(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { bigTimeout(c); c.MaxArgs = 150000 }, master, slave)
	pc := redistest.DialRaw(t, addr)
	for _, args := range [][]string{
		bigCmd(10000, pairs("k", "v"), "MSETNX"),
		bigCmd(10000, members("k"), "SUNIONSTORE", "dest"),
		bigCmd(10000, members("a"), "EVAL", "return 1", "0"),
	} {
		if got := string(pc.Do(args...)); !strings.HasPrefix(got, "-ERR syncproxy: too many arguments for a replicated write") {
			t.Errorf("%s: got %s", shortCmd(args), showReply([]byte(got)))
		}
	}
	mustReply(t, pc, "+OK\r\n", "MULTI")
	big := bigCmd(10000, members("k"), "SUNIONSTORE", "dest")
	if got := string(pc.Do(big...)); !strings.HasPrefix(got, "-ERR syncproxy: too many arguments for a replicated write") {
		t.Errorf("%s inside MULTI: got %s", shortCmd(big), showReply([]byte(got)))
	}
	mustReply(t, pc, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	mustReply(t, pc, ":0\r\n", "EXISTS", "s", "dest", "k0")
	// Over the proxy's max-args: Redis' protocol error, and the connection closes.
	pc.WriteRaw([]byte("*150001\r\n$4\r\nSADD\r\n"))
	if got := string(pc.Read()); got != "-ERR Protocol error: invalid multibulk length\r\n" {
		t.Errorf("SADD of 150,000 members over max-args: got %s", showReply([]byte(got)))
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// TestBigArgsInMulti: bigTable's large writes inside transactions, between
// small commands (a failure is its command's reply in EXEC's array, and the
// others apply, as in Redis), and XDEL and XACK of 20,000 IDs: EXEC's replies
// byte for byte Redis', the master holding the reference's data and the slaves
// the master's.
func TestBigArgsInMulti(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := bigSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	rc.SetTimeout(bigIOTimeout)
	pc.SetTimeout(bigIOTimeout)
	ids := func(prefix string) func(int) []string {
		return func(i int) []string { return []string{strconv.Itoa(i+1) + "-" + prefix} }
	}
	table := bigTable()
	for _, c := range [][]string{{"XADD", "st", "1-0", "f", "v"}, {"XADD", "st", "5-0", "f", "v"}, {"XADD", "st", "9-0", "f", "v"},
		{"XGROUP", "CREATE", "st", "g", "0"}, {"XREADGROUP", "GROUP", "g", "c", "COUNT", "2", "STREAMS", "st", ">"}} {
		rc.Do(c...)
		pc.Do(c...)
	}
	table = append(table,
		append(bigCmd(20000, ids("0"), "XACK", "st", "g"), "bad-id"),
		bigCmd(20000, ids("0"), "XACK", "st", "g"),
		append(bigCmd(20000, ids("0"), "XDEL", "st"), "bad-id"),
		bigCmd(20000, ids("0"), "XDEL", "st"),
		append(bigCmd(20000, ids("0"), "XDEL", "nostream"), "bad-id"),
		append(bigCmd(20000, ids("0"), "XACK", "set", "g"), "bad-id"),
		append(bigCmd(20000, ids("0"), "XACK", "nostream", "g"), "bad-id"),
		append(bigCmd(20000, ids("0"), "XACK", "st", "nogroup"), "bad-id"),
		[]string{"XLEN", "st"}, []string{"XPENDING", "st", "g", "-", "+", "10"})
	for i, args := range table {
		tx := [][]string{{"MULTI"}, {"INCR", "ctr"}, args, {"INCR", "ctr"}, {"EXEC"}}
		if got, want := pipelineReplies(pc, tx), pipelineReplies(rc, tx); !bytes.Equal(got, want) {
			t.Errorf("#%d MULTI, INCR, %s, INCR, EXEC:\n\tproxy: %s\n\tredis: %s", i, shortCmd(args), showReply(got), showReply(want))
		}
	}
	checkSameData(t, ref, master, slaves)
}

// TestBigArgsConcurrent: clients pipelining large and small writes to the same
// keys at once, over several backend connections; the slaves end equal to the
// master (sequence order is master order, large writes included).
func TestBigArgsConcurrent(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, bigTimeout, master, slaves...)
	const clients, rounds, n = 3, 4, 20000
	done := make(chan struct{}, clients)
	for c := 0; c < clients; c++ {
		go func(c int) {
			defer func() { done <- struct{}{} }()
			pc := redistest.DialRaw(t, addr)
			tag := strconv.Itoa(c) + "-"
			table := [][]string{}
			for r := 0; r < rounds; r++ {
				table = append(table,
					[]string{"RPUSH", "list", tag + "a"},
					bigCmd(n, members(tag), "RPUSH", "list"),
					[]string{"LPUSH", "list", tag + "b"},
					bigCmd(n, members(tag), "SADD", "set"),
					[]string{"SREM", "set", tag + "1"},
					bigCmd(n/2, members(tag), "SREM", "set"),
					bigCmd(n/2, pairs(tag, "v"), "MSET"),
					[]string{"SET", tag + "1", "small"},
					bigCmd(n/4, members(tag), "DEL"),
					[]string{"INCR", "counter"})
			}
			for _, args := range table {
				pc.Send(args...)
			}
			pc.Flush()
			for _, args := range table {
				got, err := pc.TryRead() // not Read: no Fatal outside the test's goroutine
				if err != nil || got[0] == '-' {
					t.Errorf("client %d: %s: %s %v", c, shortCmd(args), showReply(got), err)
					return
				}
			}
		}(c)
	}
	for c := 0; c < clients; c++ {
		<-done
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
