package e2e

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// rolib's functions: rget reads its key; peek reads the key named by its
// argument (undeclared, as an attacker would); rnil returns nothing; rerr
// fails; rsneak says no-writes and writes; wput writes (no no-writes flag).
const rolib = "#!lua name=rolib\n" +
	"redis.register_function{function_name='rget', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='peek', callback=function(keys, args)\n  return redis.call('GET', args[1])\nend, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='peekx', callback=function(keys, args)\n  local r = redis.call('XRANGE', args[1], '-', '+')\n  return r\nend, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='peekp', callback=function(keys, args)\n  local r = redis.pcall('GET', args[1])\n  return r\nend, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='peekm', callback=function(keys, args)\n  local m = getmetatable(redis)\n  return m and m.__index.call('SET', args[1], 'x')\nend, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='rnil', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='rmix', callback=function(keys) return {1, 'two', {3}, false, redis.call('HGETALL', keys[1])} end, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='rerr', callback=function(keys)\n  return redis.error_reply('MY failure')\nend, flags={'no-writes'}}\n" +
	"redis.register_function{function_name='rsneak', callback=function(keys)\n  local r = redis.call('SET', keys[1], 'x')\n  return r\nend, flags={'no-writes'}}\n" +
	"redis.register_function('wput', function(keys, args) return redis.call('SET', keys[1], args[1]) end)"

// slaveCalls returns how many EVALSHA_RO the slaves ran (INFO commandstats):
// FCALL_RO served by a slave.
func slaveCalls(t *testing.T, slaves []*redistest.Server) int {
	t.Helper()
	total := 0
	for _, s := range slaves {
		info, err := redis.String(s.Do(t, "INFO", "commandstats"), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(info, "\r\n") {
			rest, ok := strings.CutPrefix(line, "cmdstat_evalsha_ro:calls=")
			if !ok {
				continue
			}
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			total += n
		}
	}
	return total
}

// TestFcallROOnSlaves: FCALL_RO through the proxy is served by the slaves, with
// replies byte for byte Redis' (RESP2 and RESP3, errors included), reads its own
// writes, and leaves the slaves equal to the master.
func TestFcallROOnSlaves(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	for _, proto := range []string{"2", "3"} {
		rc, pc := protoConns(t, ref.Addr, addr, proto)
		before := slaveCalls(t, slaves)
		diffEach(t, "RESP"+proto, rc, pc, [][]string{
			{"FUNCTION", "LOAD", "REPLACE", rolib},
			{"SET", "k", "v" + proto}, {"HSET", "h", "f", "1"},
			{"FCALL_RO", "rget", "1", "k"},
			{"FCALL_RO", "rnil", "1", "nokey"},
			{"FCALL_RO", "rmix", "1", "h"},
			{"FCALL_RO", "rerr", "0"},
			{"FCALL_RO", "rsneak", "1", "k"},
			{"FCALL_RO", "wput", "1", "k", "w"},
			{"FCALL_RO", "nosuch", "0"},
			{"FCALL_RO", "rget", "2", "k"},
			{"FCALL_RO", "rget", "-1"},
			{"FCALL_RO", "rget", "x"},
			{"FCALL_RO", "rget"},
			{"GET", "k"},
		})
		if n := slaveCalls(t, slaves); n < before+4 {
			t.Errorf("RESP%s: the slaves ran %d EVALSHA_RO, want at least 4", proto, n-before)
		}
	}
	// Read-your-writes: the write, then FCALL_RO, in one batch and in two.
	c := redistest.DialRaw(t, addr)
	for i := 0; i < 20; i++ {
		v := "v" + strconv.Itoa(i)
		c.Send("SET", "k", v)
		c.Send("FCALL_RO", "rget", "1", "k")
		c.Flush()
		if r1, r2 := string(c.Read()), string(c.Read()); r1 != "+OK\r\n" || r2 != string(bulk(v)) {
			t.Fatalf("pipelined SET, FCALL_RO: %q %q", r1, r2)
		}
		mustReply(t, c, "+OK\r\n", "SET", "k", v+"b")
		mustReply(t, c, string(bulk(v+"b")), "FCALL_RO", "rget", "1", "k")
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestFcallROReservedKeys: an attacker's read-only function reading the proxy's
// keys (the counter, the backlog, a slave's position) through FCALL_RO gets the
// refusal FCALL gets on the master, alone, pipelined and inside MULTI; the slaves
// did serve the calls; no slave was written.
func TestFcallROReservedKeys(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "$5\r\nrolib\r\n", "FUNCTION", "LOAD", rolib)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	before := slaveCalls(t, slaves)
	attacks := [][]string{
		{"peek", "0", "syncproxy:seq"},
		{"peek", "0", "syncproxy:applied"},
		{"peek", "0", "syncproxy:epoch"},
		{"peekx", "0", "syncproxy:backlog"},
		{"peekp", "0", "syncproxy:applied"},
		{"peekm", "0", "syncproxy:applied"},
		{"rget", "1", "syncproxy:applied"},
	}
	for _, a := range attacks {
		onMaster := string(c.Do(append([]string{"FCALL"}, a...)...))
		if !strings.HasPrefix(onMaster, msgReserved) && a[0] != "peekm" {
			t.Fatalf("FCALL %q on the master: %q", a, onMaster)
		}
		got := string(c.Do(append([]string{"FCALL_RO"}, a...)...))
		if a[0] == "peekm" {
			onMaster = "$-1\r\n" // no metatable handed out: nothing written, nothing read
		}
		if got != onMaster {
			t.Errorf("FCALL_RO %q: %q, FCALL on the master: %q", a, got, onMaster)
		}
		// Pipelined, behind a read.
		c.Send("GET", "k")
		c.Send(append([]string{"FCALL_RO"}, a...)...)
		c.Flush()
		if r1, r2 := string(c.Read()), string(c.Read()); r1 != "$1\r\nv\r\n" || r2 != onMaster {
			t.Errorf("pipelined FCALL_RO %q: %q %q, want %q", a, r1, r2, onMaster)
		}
		// Inside MULTI: the refusal is the command's reply in EXEC's array.
		mustReply(t, c, "+OK\r\n", "MULTI")
		if a[1] == "1" { // a declared reserved key is refused while queuing
			mustReply(t, c, msgReserved+"\r\n", append([]string{"FCALL_RO"}, a...)...)
			mustReply(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
			continue
		}
		mustReply(t, c, "+QUEUED\r\n", append([]string{"FCALL_RO"}, a...)...)
		if got := string(c.Do("EXEC")); got != "*1\r\n"+onMaster {
			t.Errorf("FCALL_RO %q in MULTI: %q, want %q", a, got, "*1\r\n"+onMaster)
		}
	}
	if n := slaveCalls(t, slaves); n < before+2*(len(attacks)-1) { // rget's key is refused by the proxy
		t.Errorf("the slaves ran %d EVALSHA_RO, want at least %d", n-before, 2*(len(attacks)-1))
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestFcallROBehindBack: a library loaded on the master directly (not on any
// slave) is served by FCALL_RO on the slaves; a slave that lost the composed
// script (SCRIPT FLUSH on it) is replaced by the master for that call, then
// served again.
func TestFcallROBehindBack(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	m := redistest.DialRaw(t, master.Addr)
	mustReply(t, m, "$2\r\nbb\r\n", "FUNCTION", "LOAD",
		"#!lua name=bb\nredis.register_function{function_name='bbget', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}")
	mustReply(t, c, "+OK\r\n", "SET", "k", "v")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	before := slaveCalls(t, slaves)
	for i := 0; i < 4; i++ {
		mustReply(t, c, "$1\r\nv\r\n", "FCALL_RO", "bbget", "1", "k")
	}
	if n := slaveCalls(t, slaves); n < before+4 {
		t.Fatalf("the slaves ran %d EVALSHA_RO, want 4", n-before)
	}
	for _, s := range slaves {
		if r := string(redistest.DialRaw(t, s.Addr).Do("FCALL_RO", "bbget", "1", "k")); r != "-ERR Function not found\r\n" {
			t.Fatalf("slave %s has the library loaded behind the proxy's back: %q", s.Addr, r)
		}
		mustReply(t, redistest.DialRaw(t, s.Addr), "+OK\r\n", "SCRIPT", "FLUSH")
	}
	for i := 0; i < 4; i++ {
		mustReply(t, c, "$1\r\nv\r\n", "FCALL_RO", "bbget", "1", "k")
	}
	before = slaveCalls(t, slaves)
	mustReply(t, c, "$1\r\nv\r\n", "FCALL_RO", "bbget", "1", "k")
	if n := slaveCalls(t, slaves); n != before+1 {
		t.Errorf("after the fallback, the slaves ran %d EVALSHA_RO, want 1", n-before)
	}
	// Lost again, with a write behind the call in the same pipeline: the call
	// is not retried on the master, where it would see that write.
	for _, s := range slaves {
		mustReply(t, redistest.DialRaw(t, s.Addr), "+OK\r\n", "SCRIPT", "FLUSH")
	}
	for i := 0; i < 4; i++ {
		c.Send("FCALL_RO", "bbget", "1", "k")
		c.Send("SET", "k", fmt.Sprint("w", i))
		c.Flush()
		got, set := string(c.Read()), string(c.Read())
		if set != "+OK\r\n" || (got != fmt.Sprintf("$%d\r\n%s\r\n", len(prev(i)), prev(i)) && !strings.HasPrefix(got, "-ERR syncproxy: this FCALL_RO could not run where it was sent")) {
			t.Fatalf("pipeline FCALL_RO k, SET k w%d: %q, %q (the call must see k before the SET)", i, got, set)
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// prev is k's value before the i-th SET of TestFcallROBehindBack's pipelines.
func prev(i int) string {
	if i == 0 {
		return "v"
	}
	return fmt.Sprint("w", i-1)
}

// clientField returns the field of the client id in CLIENT LIST, asked on c.
func clientField(t *testing.T, c *redistest.RawConn, id, field string) string {
	t.Helper()
	list := string(bulkData(t, c.Do("CLIENT", "LIST")))
	for _, line := range strings.Split(list, "\n") {
		if !strings.HasPrefix(line, "id="+id+" ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, field+"="); ok {
				return v
			}
		}
	}
	t.Fatalf("no client %s with %s in %q", id, field, list)
	return ""
}

// bulkData returns a bulk reply's content.
func bulkData(t *testing.T, frame []byte) []byte {
	t.Helper()
	i := bytes.Index(frame, []byte("\r\n"))
	if len(frame) == 0 || frame[0] != '$' || i < 0 {
		t.Fatalf("not a bulk reply: %q", frame)
	}
	return frame[i+2 : len(frame)-2]
}

// TestClientListSubCounts: CLIENT LIST and CLIENT INFO give a subscribed
// client's channel, pattern and shard channel counts (sub, psub, ssub), as Redis.
func TestClientListSubCounts(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1:]...)
	a, b := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	id := strings.TrimSuffix(strings.TrimPrefix(string(a.Do("CLIENT", "ID")), ":"), "\r\n")
	counts := func() string {
		return clientField(t, b, id, "sub") + " " + clientField(t, b, id, "psub") + " " + clientField(t, b, id, "ssub")
	}
	a.Do("SUBSCRIBE", "c1", "c2")
	a.Read()
	a.Do("PSUBSCRIBE", "p*")
	a.Do("SSUBSCRIBE", "s1")
	if got := counts(); got != "2 1 1" {
		t.Fatalf("sub psub ssub: %s, want 2 1 1", got)
	}
	a.Do("UNSUBSCRIBE", "c1")
	a.Do("PUNSUBSCRIBE")
	if got := counts(); got != "1 0 1" {
		t.Fatalf("after UNSUBSCRIBE c1, PUNSUBSCRIBE: %s, want 1 0 1", got)
	}
	mustReply(t, a, "+RESET\r\n", "RESET")
	if got := counts(); got != "0 0 0" {
		t.Fatalf("after RESET: %s, want 0 0 0", got)
	}
}

// TestFunctionLoadInMulti: FUNCTION LOAD, DELETE and FLUSH alone inside MULTI
// run as in Redis (the same replies, errors in EXEC's array) and replicate to
// the slaves; with other commands in the transaction they are refused (aborting
// it), not run out of order.
func TestFunctionLoadInMulti(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	for _, tx := range [][][]string{
		{{"FUNCTION", "LOAD", rolib}},
		{{"FUNCTION", "LOAD", rolib}},
		{{"FUNCTION", "LOAD", "#!lua name=bad\nreturn 1 +"}},
		{{"FUNCTION", "DELETE", "rolib"}},
		{{"FUNCTION", "LOAD", "REPLACE", rolib}},
	} {
		for _, args := range append(append([][]string{{"MULTI"}}, tx...), []string{"EXEC"}) {
			want, got := rc.Do(args...), pc.Do(args...)
			if !bytes.Equal(got, want) {
				t.Errorf("%s:\n\tproxy: %s\n\tredis: %s", showCmd(args), showReply(got), showReply(want))
			}
		}
	}
	mustReply(t, pc, "+OK\r\n", "SET", "k", "v")
	mustReply(t, pc, "$1\r\nv\r\n", "FCALL_RO", "rget", "1", "k")
	waitSameFunctions(t, master, slaves...)
	mustReply(t, pc, "+OK\r\n", "MULTI")
	mustReply(t, pc, "+QUEUED\r\n", "FUNCTION", "FLUSH")
	if r := string(pc.Do("SET", "k", "w")); !strings.HasPrefix(r, "-ERR syncproxy: FUNCTION LOAD") {
		t.Fatalf("a command after FUNCTION FLUSH in MULTI: %q", r)
	}
	mustReply(t, pc, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	waitSameFunctions(t, master, slaves...)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
