package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/router"
)

// shebangCases are scripts with Redis 7's #! line, and read-only scripts, each
// sent directly and through the proxy (alone, pipelined and in MULTI).
var shebangCases = [][]string{
	{"SET", "a", "1"},
	{"EVAL_RO", "return redis.call('get', KEYS[1])", "1", "a"},
	{"EVAL_RO", "return redis.call('set', 'a', '2')", "0"},
	{"EVAL_RO", "local r = redis.pcall('set', 'a', '2')\nreturn r", "0"},
	{"EVAL_RO", "local x = 1\nlocal r = redis.call('set', 'a', '2')\nreturn r", "0"},
	{"EVAL", "#!lua flags=no-writes\nreturn redis.call('get', KEYS[1])", "1", "a"},
	{"EVAL", "#!lua\nreturn redis.call('incr', KEYS[1])", "1", "a"},
	{"EVAL", "#!lua flags=no-writes\nreturn redis.call('set', 'x', 1)", "0"},
	{"EVAL", "#!lua flags=no-writes,allow-oom\nlocal r = redis.pcall('set', 'x', 1)\nreturn r", "0"},
	{"EVAL", "#!lua flags=allow-oom,allow-stale\nlocal r = redis.call('set', 'x', 2)\nreturn r", "0"},
	{"EVAL", "#!lua\nlocal y = nil\nerror('boom')", "0"},
	{"EVAL", "#!python\nreturn 1", "0"},
	{"EVAL", "#!lua flags=bogus\nreturn 1", "0"},
	{"EVAL", "#!lua foo=bar\nreturn 1", "0"},
	{"EVAL", "#!lua", "0"},
	{"EVAL_RO", "#!lua\nreturn 1", "0"},
	{"EVAL_RO", "#!lua flags=no-writes\nreturn redis.call('get', 'a')", "0"},
	{"EVALSHA_RO", "6c0ec3c0bbad31c6d02abe1e63bfed82ab22c466", "0"}, // EVAL_RO "#!lua flags=no-writes\nreturn redis.call('get', 'a')"
	{"EVALSHA_RO", "0000000000000000000000000000000000000000", "0"},
	{"EVAL_RO", "return 1", "x"},
	{"EVAL_RO", "return 1", "2", "a"},
	{"GET", "a"}, {"GET", "x"},
}

// TestShebangAndEvalRO: scripts with a #! line (flags) and EVAL_RO / EVALSHA_RO
// give Redis' replies byte for byte, RESP2 and RESP3, alone, pipelined and
// inside MULTI; EVAL_RO is served by the slaves; the data ends as the
// reference's on the master and every slave.
func TestShebangAndEvalRO(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	for _, proto := range []string{"2", "3"} {
		rc, pc := protoConns(t, ref.Addr, addr, proto)
		before := slaveCalls(t, slaves)
		diffEach(t, "RESP"+proto, rc, pc, shebangCases)
		if n := slaveCalls(t, slaves); n < before+4 {
			t.Errorf("RESP%s: the slaves ran %d EVALSHA_RO, want at least 4", proto, n-before)
		}
		diffBatches(t, "RESP"+proto, rc, pc, shebangCases, shebangCases)
	}
	checkSameData(t, ref, master, slaves)
}

// protoConns returns a connection to the reference and one to the proxy, both
// speaking RESP proto ("2" or "3").
func protoConns(t *testing.T, refAddr, addr, proto string) (rc, pc *redistest.RawConn) {
	t.Helper()
	rc, pc = redistest.DialRaw(t, refAddr), redistest.DialRaw(t, addr)
	if proto == "3" {
		rc.Do("HELLO", "3")
		pc.Do("HELLO", "3")
	}
	return rc, pc
}

// diffEach sends each case to the reference (rc) and through the proxy (pc)
// and reports the replies that differ.
func diffEach(t *testing.T, label string, rc, pc *redistest.RawConn, cases [][]string) {
	t.Helper()
	for i, args := range cases {
		want, got := rc.Do(args...), pc.Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("%s #%d %s:\n\tproxy: %s\n\tredis: %s", label, i, showCmd(args), showReply(got), showReply(want))
		}
	}
}

// diffBatches sends the cases pipelined in one write, then txCases inside
// MULTI/EXEC, to rc and pc, and reports replies that differ.
func diffBatches(t *testing.T, label string, rc, pc *redistest.RawConn, cases, txCases [][]string) {
	t.Helper()
	if got, want := pipelineReplies(pc, cases), pipelineReplies(rc, cases); !bytes.Equal(got, want) {
		t.Errorf("%s pipelined:\n\tproxy: %s\n\tredis: %s", label, showReply(got), showReply(want))
	}
	tx := append(append([][]string{{"MULTI"}}, txCases...), []string{"EXEC"})
	if got, want := pipelineReplies(pc, tx), pipelineReplies(rc, tx); !bytes.Equal(got, want) {
		t.Errorf("%s in MULTI:\n\tproxy: %s\n\tredis: %s", label, showReply(got), showReply(want))
	}
}

// pipelineReplies sends cmds in one write and returns their replies, concatenated.
func pipelineReplies(c *redistest.RawConn, cmds [][]string) []byte {
	for _, args := range cmds {
		c.Send(args...)
	}
	c.Flush()
	var out []byte
	for range cmds {
		out = append(out, c.Read()...)
	}
	return out
}

// TestEvalROReservedKeys: a read-only script (EVAL_RO, EVALSHA_RO) reading the
// proxy's keys gets the refusal EVAL gets — alone, pipelined behind a read,
// inside MULTI — where it used to go to the master unguarded and read them.
func TestEvalROReservedKeys(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	for _, body := range []string{
		"return redis.call('GET', 'syncproxy:seq')",
		"return redis.call('GET', 'syncproxy:epoch')",
		"return redis.call('HGETALL', 'syncproxy:applied')",
		"local r = redis.pcall('XRANGE', 'syncproxy:backlog', '-', '+')\nreturn r",
		"#!lua flags=no-writes\nreturn redis.call('GET', 'syncproxy:seq')",
		"local m = getmetatable(redis)\nreturn m and m.__index.call('GET', 'syncproxy:seq')",
	} {
		onMaster := string(c.Do("EVAL", body, "0"))
		if !strings.HasPrefix(onMaster, msgReserved) && !strings.HasPrefix(body, "local m") {
			t.Fatalf("EVAL %q: %q", body, onMaster)
		}
		sha := strings.TrimSpace(strings.Split(string(c.Do("SCRIPT", "LOAD", body)), "\r\n")[1])
		for _, cmd := range [][]string{{"EVAL_RO", body, "0"}, {"EVALSHA_RO", sha, "0"}} {
			if got := string(c.Do(cmd...)); got != onMaster {
				t.Errorf("%s %q: %q, EVAL: %q", cmd[0], body, got, onMaster)
			}
			c.Send("GET", "k")
			c.Send(cmd...)
			c.Flush()
			if r1, r2 := string(c.Read()), string(c.Read()); r1 != "$1\r\nv\r\n" || r2 != onMaster {
				t.Errorf("pipelined %s %q: %q %q, want %q", cmd[0], body, r1, r2, onMaster)
			}
			mustReply(t, c, "+OK\r\n", "MULTI")
			mustReply(t, c, "+QUEUED\r\n", cmd...)
			if got := string(c.Do("EXEC")); got != "*1\r\n"+onMaster {
				t.Errorf("%s %q in MULTI: %q, want %q", cmd[0], body, got, "*1\r\n"+onMaster)
			}
		}
	}
	// A declared reserved key is refused by the proxy before any server runs it.
	mustReply(t, c, msgReserved+"\r\n", "EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "syncproxy:seq")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// resp3ScriptCases are scripts returning every type a script can return to a
// RESP3 client (Lua tables with double, map, set, big_number, verbatim_string
// fields; booleans with and without redis.setresp(3); RESP3 replies of commands
// returned as they are).
var resp3ScriptCases = [][]string{
	{"HSET", "h", "f", "v"}, {"SADD", "s", "m"}, {"SET", "k", "v"},
	{"EVAL", "return {double=1.5}", "0"},
	{"EVAL", "return {double=0.1}", "0"},
	{"EVAL", "return {double=1/0}", "0"},
	{"EVAL", "return {double=-1/0}", "0"},
	{"EVAL", "return {double=-3}", "0"},
	{"EVAL", "return {map={a=1}}", "0"},
	{"EVAL", "return {map={a={double=2.5}}}", "0"},
	{"EVAL", "return {set={a=true}}", "0"},
	{"EVAL", "return {big_number='1234567890123456789012345678901234567890'}", "0"},
	{"EVAL", "return {verbatim_string={format='txt', string='hello'}}", "0"},
	{"EVAL", "return {1, false, true, {ok='fine'}, {err='ERR inner'}, 'str', {double=3}}", "0"},
	{"EVAL", "return true", "0"}, {"EVAL", "return false", "0"}, {"EVAL", "return nil", "0"},
	{"EVAL", "return 3.99", "0"}, {"EVAL", "return -3.99", "0"},
	{"EVAL", "redis.setresp(3)\nreturn true", "0"},
	{"EVAL", "redis.setresp(3)\nreturn {false, true}", "0"},
	{"EVAL", "redis.setresp(3)\nreturn redis.call('HGETALL', KEYS[1])", "1", "h"},
	{"EVAL", "redis.setresp(3)\nreturn redis.call('SMEMBERS', KEYS[1])", "1", "s"},
	{"EVAL", "redis.setresp(3)\nreturn redis.call('GET', 'nokey')", "0"},
	{"EVAL", "redis.setresp(3)\nreturn redis.call('HRANDFIELD', KEYS[1], 1, 'WITHVALUES')", "1", "h"},
	{"EVAL", "redis.setresp(3)\nreturn {redis.call('ZSCORE', 'nozset', 'm'), redis.call('GET', KEYS[1])}", "1", "k"},
	{"EVAL", "return redis.error_reply('MY err')", "0"},
	{"EVAL", "return {err='bare'}", "0"},
	{"EVAL", "return {ok='OK\r\nX'}", "0"},
	{"EVAL", "return 'a\r\nb'", "0"},
	{"EVAL_RO", "return {map={k={double=1.25}}}", "0"},
	{"EVAL_RO", "redis.setresp(3)\nreturn redis.call('HGETALL', KEYS[1])", "1", "h"},
	{"EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "k"},
	{"FUNCTION", "LOAD", "REPLACE", "#!lua name=r3\n" +
		"redis.register_function{function_name='r3map', callback=function(keys) return {map={x={double=0.5}, y={set={z=true}}}} end, flags={'no-writes'}}\n" +
		"redis.register_function('r3w', function(keys) redis.call('SET', keys[1], 'w') return {double=7} end)"},
	{"FCALL", "r3map", "0"}, {"FCALL_RO", "r3map", "0"}, {"FCALL", "r3w", "1", "k"},
}

// TestScriptRESP3Replies: a RESP3 client gets a script's reply (EVAL, EVAL_RO,
// FCALL, FCALL_RO) with the RESP3 types Redis gives it — doubles, maps, sets,
// big numbers, verbatim strings, booleans — alone, pipelined and inside MULTI,
// while a RESP2 client of the same proxy gets the RESP2 forms, byte for byte.
func TestScriptRESP3Replies(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	diffProtos(t, ref.Addr, addr, []string{"3", "2"}, resp3ScriptCases, resp3ScriptCases[3:len(resp3ScriptCases)-4])
	checkSameData(t, ref, master, slaves)
}

// diffProtos runs diffEach (cases) and diffBatches (cases, and txCases in
// MULTI) on new connections speaking each of protos.
func diffProtos(t *testing.T, refAddr, addr string, protos []string, cases, txCases [][]string) {
	t.Helper()
	for _, proto := range protos {
		rc, pc := protoConns(t, refAddr, addr, proto)
		diffEach(t, "RESP"+proto, rc, pc, cases)
		diffBatches(t, "RESP"+proto, rc, pc, cases, txCases)
	}
}

// TestScriptRESP3Edges: a RESP3 client gets Redis' bytes for a verbatim string
// whose format is shorter than 3 bytes or holds a NUL (padded with spaces: the
// frame stays well formed), and for replies nested as deep as Redis' Lua stack
// allows and deeper (arrays, map keys and values, sets: "-ERR reached lua stack
// limit" where Redis writes it), alone and in MULTI.
func TestScriptRESP3Edges(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	chain := func(depth int, open, close string) string {
		return "local t = 1 for i = 1, " + strconv.Itoa(depth) + " do t = " + open + "t" + close + " end return t"
	}
	cases := [][]string{
		{"EVAL", "return {verbatim_string={format='tx', string='abc'}}", "0"},
		{"EVAL", "return {verbatim_string={format='', string='abc'}}", "0"},
		{"EVAL", "return {verbatim_string={format='a\\0bcd', string='abc'}}", "0"},
		{"EVAL", "return {verbatim_string={format='mkdown', string='a\\r\\nb'}}", "0"},
		{"EVAL", chain(7990, "{", "}"), "0"},
		{"EVAL", chain(7995, "{", "}"), "0"},
		{"EVAL_RO", chain(8100, "{", "}"), "0"},
		{"EVAL", chain(2660, "{map={a=", "}}"), "0"},
		{"EVAL", chain(2700, "{map={a=", "}}"), "0"},
		{"EVAL", chain(1995, "{map={[", "]=1}}"), "0"},
		{"EVAL", chain(2100, "{map={[", "]=1}}"), "0"},
		{"EVAL", chain(2700, "{set={[", "]=true}}"), "0"},
	}
	rc, pc := dialDeep(t, ref.Addr), dialDeep(t, addr)
	for i, args := range cases {
		tx := [][]string{{"MULTI"}, args, {"EXEC"}}
		for _, cmds := range [][][]string{{args}, tx} {
			if got, want := rc.do(t, cmds), pc.do(t, cmds); !bytes.Equal(want, got) {
				t.Errorf("#%d %s (%d commands):\n\tproxy: %s\n\tredis: %s", i, showCmd(args), len(cmds), showReply(got), showReply(want))
			}
		}
	}
	checkSameData(t, ref, master, slaves)
}

// deepConn (dialDeep) is a RESP3 connection that reads replies nested deeper than
// redistest's reader allows.
type deepConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialDeep(t *testing.T, addr string) *deepConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &deepConn{c: c, r: bufio.NewReader(c)}
	d.do(t, [][]string{{"HELLO", "3"}})
	return d
}

// do sends cmds in one write and returns their replies, concatenated.
func (d *deepConn) do(t *testing.T, cmds [][]string) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, args := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	d.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := d.c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for range cmds {
		var err error
		if out, err = router.ReadFrame(d.r, out); err != nil {
			t.Fatalf("%v (read %s)", err, showReply(out))
		}
	}
	return out
}

// pfcountCases call PFCOUNT from scripts after PFADDs: it updates the
// cardinality cached in the HyperLogLog, on the master as on the reference.
var pfcountCases = [][]string{
	{"PFADD", "hll", "x", "y"},
	{"EVAL", "return redis.call('pfcount', KEYS[1])", "1", "hll"},
	{"PFADD", "hll", "z"},
	{"EVAL", "return redis.pcall('pfcount', KEYS[1])", "1", "hll"},
	{"PFADD", "hll", "w"},
	{"EVAL_RO", "return redis.pcall('pfcount', KEYS[1])", "1", "hll"},
	{"EVAL", "#!lua flags=no-writes\nreturn redis.pcall('pfcount', KEYS[1])", "1", "hll"},
	{"FUNCTION", "LOAD", "REPLACE", "#!lua name=pf\nredis.register_function('pfc', function(keys) return redis.call('pfcount', keys[1]) end)"},
	{"PFADD", "hll", "v"},
	{"FCALL", "pfc", "1", "hll"},
	{"FUNCTION", "LOAD", "REPLACE", "#!lua name=pfro\n" +
		"redis.register_function{function_name='pfro', callback=function(keys) return redis.pcall('pfcount', keys[1]) end, flags={'no-writes'}}\n" +
		"redis.register_function{function_name='pubro', callback=function(keys) return redis.pcall('publish', 'ch', 'm') end, flags={'no-writes'}}"},
	{"FCALL", "pfro", "1", "hll"}, {"FCALL", "pubro", "0"}, {"FCALL_RO", "pfro", "1", "hll"},
	{"EVAL_RO", "return redis.pcall('publish', 'ch', 'm')", "0"},
	{"EVAL_RO", "return redis.pcall('spublish', 'ch', 'm')", "0"},
	{"EVAL", "#!lua flags=no-writes\nreturn redis.pcall('publish', 'ch', 'm')", "0"},
	{"EVAL", "return redis.pcall('publish', 'ch', 'm')", "0"},
	{"EVAL_RO", "return redis.pcall('function', 'flush')", "0"}, // noscript first
	{"EVAL_RO", "return redis.pcall('set', 'a')", "0"},          // arity first
	{"EVAL_RO", "return redis.pcall('xgroup', 'create', 's', 'g', '$', 'MKSTREAM')", "0"},
}

// TestScriptPFCountReplicated: PFCOUNT run by a client script (EVAL, FCALL)
// changes the HyperLogLog's cached cardinality on the master, so its effect
// reaches the slaves as outside scripts; read-only scripts (EVAL_RO in MULTI,
// no-writes) get Redis' refusal, as for PUBLISH and SPUBLISH. Alone,
// pipelined and in MULTI, the master and every slave end byte for byte as the
// reference.
func TestScriptPFCountReplicated(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := protoConns(t, ref.Addr, addr, "2")
	diffEach(t, "alone", rc, pc, pfcountCases)
	checkSameData(t, ref, master, slaves)
	diffBatches(t, "batch", rc, pc, pfcountCases, append(pfcountCases[:7:7], pfcountCases[len(pfcountCases)-7:]...))
	checkSameData(t, ref, master, slaves)
}

// metatableCases return (or hold in their reply) tables whose metatable raises
// an error on any field read: Redis reads a reply's fields raw, so must the
// composed script after the client's code ran.
var metatableCases = [][]string{
	{"EVAL", "redis.call('INCR', 'm1') return setmetatable({}, {__index = function() error('boom') end})", "0"},
	{"EVAL", "redis.call('INCR', 'm2') redis.setresp(3) return setmetatable({}, {__index = function() error('boom') end})", "0"},
	{"EVAL", "redis.call('INCR', 'm3') return {1, setmetatable({}, {__index = function() error('boom') end})}", "0"},
	{"EVAL_RO", "return setmetatable({}, {__index = function() error('boom') end})", "0"},
	{"GET", "m1"}, {"GET", "m2"}, {"GET", "m3"},
}

// TestScriptReplyMetatables: a script's reply with a metatable that raises an
// error gets Redis' reply (RESP2 and RESP3, after redis.setresp(3) too, alone and
// in MULTI), where reading it ended the composed script after the client's
// writes ran on the master: an error for an applied write, never replicated.
// An error object whose __tostring raises (Redis itself does not survive one
// whose __index raises) gets an error, and the slaves still equal the master.
func TestScriptReplyMetatables(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	diffProtos(t, ref.Addr, addr, []string{"2", "3"}, metatableCases, metatableCases)
	checkSameData(t, ref, master, slaves)
	pc := redistest.DialRaw(t, addr)
	body := "redis.call('INCR', 'm4') error(setmetatable({}, {__tostring = function() error('boom') end}))"
	if got := pc.Do("EVAL", body, "0"); !bytes.HasPrefix(got, []byte("-ERR ")) {
		t.Errorf("EVAL %q: %q, want an error", body, got)
	}
	mustReply(t, pc, "$1\r\n1\r\n", "GET", "m4")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
