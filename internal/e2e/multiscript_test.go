package e2e

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestMultiScriptDifferential: EVAL, EVALSHA and FCALL inside MULTI, against
// Redis directly and through the proxy, one at a time and pipelined: same
// replies byte for byte (NOSCRIPT, numkeys, compile and runtime errors included),
// and the slaves converge.
func TestMultiScriptDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	const set2 = "redis.call('SET', KEYS[1], ARGV[1])\nredis.call('INCRBY', KEYS[2], ARGV[2])\nreturn {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"
	const set2SHA = "c7d3a9d9bc1b6d5b0f4b4e3a5f0a8a2c1e4a7b61" // not loaded: NOSCRIPT
	const lib = "#!lua name=txlib\nredis.register_function('bump', function(keys, args)\n  return redis.call('INCRBY', keys[1], args[1])\nend)"
	script := [][]string{
		{"FUNCTION", "LOAD", "REPLACE", lib},
		{"SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"},
		{"MULTI"},
		{"SET", "a", "1"},
		{"EVAL", set2, "2", "a", "b", "va", "5"},
		{"EVALSHA", "sha of the GET script", "1", "a"},
		{"EVALSHA", set2SHA, "0"},
		{"EVAL", "return 1", "-1"},
		{"EVAL", "return 1", "3", "a"},
		{"EVAL", "return 1 +", "0"},
		{"EVAL", "local x = 1\nerror('boom')", "0"},
		{"EVAL", "redis.call('SET', KEYS[1], 'p')\nlocal r = redis.call('LPUSH', KEYS[1], 'x')\nreturn r", "1", "p"},
		{"EVAL", "redis.call('SPOP', KEYS[1])\nredis.call('SADD', KEYS[1], 'm1', 'm2')\nreturn redis.call('EXPIRE', KEYS[1], 100)", "1", "s"},
		{"EVAL", "redis.call('SELECT', 3)\nreturn redis.call('SET', 'in3', 'v')", "0"},
		{"SET", "after", "x"},
		{"FCALL", "bump", "1", "n", "7"},
		{"FCALL", "nosuchfn", "0"},
		{"INCRBYFLOAT", "f", "1.5"},
		{"EXEC"},
		{"GET", "after"},
		{"MULTI"},
		{"EVAL", "return redis.call('INCR', KEYS[1])", "1", "n"},
		{"EVAL", "return redis.call('INCR', KEYS[1])", "1", "n"},
		{"DISCARD"},
		{"GET", "n"},
		{"EVAL", set2, "2", "a", "b", "vb", "1"},
		{"MULTI"},
		{"EVALSHA", "SHA OF set2", "2", "a", "b", "vc", "1"},
		{"EXEC"},
		{"SELECT", "3"},
		{"GET", "in3"},
		{"SELECT", "0"},
	}
	script[5][1] = sha1Hex("return redis.call('GET', KEYS[1])")
	script[27][1] = strings.ToUpper(sha1Hex(set2))
	sameScript(t, ref.Addr, addr, "FLUSHALL", script)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestMultiScriptAttacker: a script inside MULTI gets the refusals scripts get
// outside: reserved keys, the sync channel, denied commands; the transaction's
// other commands run, and the replication counter does not move but by the
// transaction's own message.
func TestMultiScriptAttacker(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	seq := masterSeq(t, master)
	mustReply(t, c, "+OK\r\n", "MULTI")
	attacks := []struct{ want, script string }{
		{msgReserved, "return redis.call('SET', 'syncproxy:seq', '1')"},
		{msgReserved, "return redis.pcall('DEL', 'syncproxy:backlog')"},
		{msgReserved, "return loadstring(\"return redis.call('SET', 'syncproxy:epoch', 'x')\")()"},
		{"-ERR syncproxy: the sync channel is reserved for replication", "return redis.call('PUBLISH', 'syncproxy:sync', 'forged')"},
		{"-ERR syncproxy: SWAPDB with DB 0 is refused", "return redis.call('SWAPDB', 0, 1)"},
		// As Redis refuses it in any script (CLIENT is flagged noscript).
		{"-ERR This Redis command is not allowed from script", "return redis.call('CLIENT', 'KILL', 'ID', '1')"},
	}
	for _, a := range attacks {
		mustReply(t, c, "+QUEUED\r\n", "EVAL", a.script, "0")
	}
	mustReply(t, c, "+QUEUED\r\n", "SET", "k", "w")
	exec := string(c.Do("EXEC"))
	for _, a := range attacks {
		i := strings.Index(exec, a.want)
		if i < 0 {
			t.Errorf("EXEC %q lacks %q (for %q)", exec, a.want, a.script)
			continue
		}
		exec = exec[i+len(a.want):]
	}
	if !strings.HasSuffix(exec, "+OK\r\n") {
		t.Errorf("EXEC ends %q, want the SET's +OK", exec)
	}
	// KEYS naming a reserved key: refused while queuing, as outside scripts.
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, msgReserved+"\r\n", "EVAL", "return redis.call('SET', KEYS[1], '1')", "1", "syncproxy:seq")
	mustReply(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	if got, want := masterSeq(t, master), seq; got != incr(want) {
		t.Fatalf("syncproxy:seq went from %s to %s, want one message more", want, got)
	}
	mustReply(t, c, "$1\r\nw\r\n", "GET", "k")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// incr returns the decimal n + 1.
func incr(n string) string {
	v, _ := strconv.Atoi(n)
	return strconv.Itoa(v + 1)
}

// redisPyScripts uses redis-py's Script objects in transactional pipelines
// (MULTI ... EVALSHA ... EXEC, WATCHed too) and prints the results.
const redisPyScripts = `
import json, sys, redis
host, port = sys.argv[1].rsplit(':', 1)
r = redis.Redis(host=host, port=int(port), decode_responses=True)
r.flushall()
incr = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
setget = r.register_script("redis.call('SET', KEYS[1], ARGV[1])\nreturn redis.call('GET', KEYS[1])")
out = []
p = r.pipeline()
p.set('a', 1)
incr(keys=['a'], args=[5], client=p)
setget(keys=['b'], args=['x'], client=p)
p.get('a')
out.append(p.execute())
with r.pipeline() as p:
    p.watch('a')
    v = int(p.get('a'))
    p.multi()
    incr(keys=['a'], args=[v], client=p)
    setget(keys=['c'], args=[str(v)], client=p)
    out.append(p.execute())
out.append([r.get('a'), r.get('b'), r.get('c')])
print(json.dumps(out))
`

// TestMultiScriptRedisPy: redis-py's Script objects in transactional pipelines
// through the proxy give what they give against Redis, and the slaves converge.
func TestMultiScriptRedisPy(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	want := runTool(t, redisPyScripts, "/usr/bin/python3", "-", ref.Addr)
	got := runTool(t, redisPyScripts, "/usr/bin/python3", "-", addr)
	if got != want {
		t.Fatalf("through the proxy:\n%s\nagainst Redis:\n%s", got, want)
	}
	t.Logf("redis-py: %s", got)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
