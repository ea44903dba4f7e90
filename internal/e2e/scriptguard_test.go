package e2e

import (
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/syncproxy/syncproxy/internal/redistest"
)

const msgReserved = "-ERR syncproxy: keys starting with 'syncproxy:' are reserved for replication metadata"

// masterSeq returns the master's sequence counter.
func masterSeq(t *testing.T, master *redistest.Server) string {
	t.Helper()
	c, err := redis.Dial("tcp", master.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v, err := redis.String(c.Do("GET", "syncproxy:seq"))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestScriptReservedKeys: no client script or function reads or writes a
// syncproxy: key, whatever it declares and however it reaches the server's redis
// table; a value that merely starts with syncproxy: is no key; the counter is
// left alone and the slaves equal the master afterwards.
func TestScriptReservedKeys(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	mustReply(t, c, "$4\r\nwlib\r\n", "FUNCTION", "LOAD",
		"#!lua name=wlib\nredis.register_function('rewind', function(keys, args)\n"+
			"  return redis.call('SET', 'syncproxy:seq', '5')\nend)")
	seq := masterSeq(t, master)
	// Each reply starts with want: the reserved-key error, or no access at all.
	for _, tc := range []struct {
		want string
		cmd  []string
	}{
		{msgReserved, []string{"EVAL", "return redis.call('SET', KEYS[1], '5')", "1", "syncproxy:seq"}},
		{msgReserved + " script: ", []string{"EVAL", "return redis.call('SET', 'syncproxy:seq', '5')", "0"}},
		{msgReserved + " script: ", []string{"EVAL", "return redis.call('set', 'syncproxy:seq', '5')", "1", "k"}},
		{msgReserved + "\r\n", []string{"EVAL", "local r = redis.pcall('INCR', 'syncproxy:seq') return r", "0"}},
		{msgReserved, []string{"EVAL", "return redis.call('GET', 'syncproxy:seq')", "0"}},
		{msgReserved, []string{"EVAL", "return redis.call('XRANGE', 'syncproxy:backlog', '-', '+')", "0"}},
		{msgReserved, []string{"EVAL", "return redis.call('RENAME', KEYS[1], 'syncproxy:seq')", "1", "k"}},
		{msgReserved, []string{"EVAL", "return redis.call('MSET', 'a', '1', 'syncproxy:seq', '5')", "0"}},
		{msgReserved, []string{"EVAL", "return redis.call('OBJECT', 'ENCODING', 'syncproxy:seq')", "0"}},
		{msgReserved, []string{"EVAL", "return redis.call('SORT', KEYS[1], 'STORE', 'syncproxy:seq')", "1", "k"}},
		{msgReserved, []string{"EVAL", "return redis.call('ZUNIONSTORE', 'syncproxy:seq', 1, KEYS[1])", "1", "k"}},
		{msgReserved, []string{"EVAL", "return _G.redis.call('SET', 'syncproxy:seq', '5')", "0"}},
		{"-ERR", []string{"EVAL", "return rawget(_G, 'redis').call('SET', 'syncproxy:seq', '5')", "0"}},
		{msgReserved, []string{"EVAL", "return loadstring('return redis')().call('SET', 'syncproxy:seq', '5')", "0"}},
		{msgReserved, []string{"EVAL", "return loadstring(\"return redis.call('SET', 'syncproxy:seq', '5')\")()", "0"}},
		{msgReserved, []string{"EVAL", "local f = load(function() return nil end) return load(function() if f then f = nil return 'return redis' end end)().call('DEL', 'syncproxy:seq')", "0"}},
		{"$-1", []string{"EVAL", "local m = getmetatable(redis) return m and m.__index.call('SET', 'syncproxy:seq', '5')", "0"}},
		{msgReserved, []string{"FCALL", "rewind", "0"}},
	} {
		if r := string(c.Do(tc.cmd...)); !strings.HasPrefix(r, tc.want) {
			t.Errorf("%.70q: %q, want %q", tc.cmd, r, tc.want)
		}
	}
	// A body that ends the function it is put in, to run code outside it.
	r := string(c.Do("EVAL", "return 1 end redis.call('SET', 'syncproxy:seq', '5') local function f()", "0"))
	if !strings.HasPrefix(r, "-ERR Error compiling script") {
		t.Errorf("escaping body: %q", r)
	}
	if got := masterSeq(t, master); got != seq {
		t.Fatalf("syncproxy:seq went from %s to %s", seq, got)
	}
	// Values, patterns and non-key arguments that start with syncproxy: are no keys.
	mustReply(t, c, "+OK\r\n", "EVAL", "return redis.call('SET', KEYS[1], 'syncproxy:value')", "1", "v")
	mustReply(t, c, "+OK\r\n", "EVAL", "return redis.call('MSET', 'a', 'syncproxy:1', 'b', 'syncproxy:2')", "0")
	mustReply(t, c, ":1\r\n", "EVAL", "return redis.call('HSET', 'h', 'syncproxy:field', 'syncproxy:v')", "0")
	mustReply(t, c, ":1\r\n", "EVAL", "return redis.call('RPUSH', 'l', '3')", "0")
	mustReply(t, c, "*1\r\n$1\r\n3\r\n", "EVAL", "return redis.call('SORT', 'l', 'BY', 'syncproxy:nosort', 'GET', '#')", "0")
	mustReply(t, c, ":1\r\n", "EVAL", "return redis.call('SORT', 'l', 'BY', 'syncproxy:nosort', 'STORE', 'sorted')", "0")
	// A FLUSHALL from a script keeps the counter, as outside scripts.
	mustReply(t, c, "+OK\r\n", "EVAL", "return redis.call('FLUSHALL')", "0")
	mustReply(t, c, "+OK\r\n", "SET", "after", "1")
	mustReply(t, c, "$1\r\n1\r\n", "GET", "after")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestScriptRefusals: what the proxy refuses outside scripts it refuses inside:
// PUBLISH and SPUBLISH to the sync channel, SWAPDB with DB 0, denied commands.
func TestScriptRefusals(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	for _, tc := range []struct {
		script, want string
	}{
		{"return redis.call('PUBLISH', 'syncproxy:sync', 'x')", "-ERR syncproxy: the sync channel is reserved for replication script: "},
		{"return redis.call('SPUBLISH', 'syncproxy:sync', 'x')", "-ERR syncproxy: the sync channel is reserved for replication script: "},
		{"return redis.call('SWAPDB', 0, 1)", "-ERR syncproxy: SWAPDB with DB 0 is refused"},
		// CLIENT KILL acts on the proxy's clients; scripts may not run it, as in Redis.
		{"return redis.call('CLIENT', 'KILL', 'ID', '1')", "-ERR This Redis command is not allowed from script script: "},
		{"return redis.call('PUBLISH', 'other', 'x')", ":0\r\n"},
	} {
		if r := string(c.Do("EVAL", tc.script, "0")); !strings.HasPrefix(r, tc.want) {
			t.Errorf("%q: %q, want %q", tc.script, r, tc.want)
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestScriptNumbers: numbers a script passes to commands reach the master and
// the slaves as the same string, the one Redis itself makes (%.17g); replies
// are those of Redis.
func TestScriptNumbers(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	cmds := [][]string{
		{"EVAL", "return redis.call('SET', KEYS[1], 12345678901234567)", "1", "n"},
		{"GET", "n"},
		{"EVAL", "return redis.call('ZADD', KEYS[1], 1700000000.123456, 'm')", "1", "z"},
		{"ZSCORE", "z", "m"},
		{"EVAL", "return redis.call('HSET', KEYS[1], 'f', 2/3)", "1", "h"},
		{"HGET", "h", "f"},
		{"EVAL", "redis.call('SET', KEYS[1], '1') return redis.call('INCRBY', KEYS[1], 2^53+1)", "1", "i"},
		{"GET", "i"},
		{"EVAL", "return redis.call('RPUSH', KEYS[1], 1e300, -0.0, 0.1, 1/0, -1/0, 5)", "1", "l"},
		{"LRANGE", "l", "0", "-1"},
		{"EVAL", "return redis.call('SET', KEYS[1], '1e2')", "1", "s"},
		{"GET", "s"},
	}
	sameReplies(t, ref.Addr, addr, cmds)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
