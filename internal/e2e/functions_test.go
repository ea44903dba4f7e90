package e2e

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/router"
)

// The libraries of the FUNCTION tests: flib's rget may not write (no-writes),
// wset writes, sneaky says no-writes and tries to write.
const (
	flib = "#!lua name=flib\n" +
		"redis.register_function{function_name='rget', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n" +
		"redis.register_function('wset', function(keys, args) return redis.call('SET', keys[1], args[1]) end)\n" +
		"redis.register_function{function_name='sneaky', callback=function(keys) local r = redis.call('SET', keys[1], 'x'); return r end, flags={'no-writes'}}\n" +
		"redis.register_function{function_name='sneakyp', callback=function(keys)\n  local r = redis.pcall('set', keys[1], 'x')\n  return {r, redis.call('GET', keys[1])}\nend, flags={'no-writes'}}\n" +
		"redis.register_function('bad', function(keys)\n  local r = redis.call('INCR', keys[1])\n  return r\nend)"
	glib = "#!lua name=glib\nredis.register_function{function_name='glen', callback=function(keys) return redis.call('STRLEN', keys[1]) end, flags={'no-writes'}}"
	// funcDumpArg stands for the reference's FUNCTION DUMP payload.
	funcDumpArg = "<function dump>"
)

// functionTable is the FUNCTION family, FCALL and FCALL_RO, Redis' errors included.
func functionTable() [][]string {
	return [][]string{
		{"FUNCTION", "FLUSH"},
		{"FUNCTION", "LOAD", flib},
		{"FUNCTION", "LOAD", flib},
		{"FUNCTION", "LOAD", "REPLACE", flib},
		{"FUNCTION", "LOAD", "#!lua name=bad\nreturn 1 +"},
		{"FUNCTION", "LOAD", "#!lua\nreturn 1"},
		{"FUNCTION", "LOAD", glib},
		{"FUNCTION", "LIST", "LIBRARYNAME", "glib"},
		{"FUNCTION", "LIST", "LIBRARYNAME", "fl"},
		{"FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "g"},
		{"FUNCTION", "LIST", "BADARG"},
		{"FCALL", "wset", "1", "k", "v1"},
		{"FCALL", "rget", "1", "k"},
		{"FCALL_RO", "rget", "1", "k"},
		{"FCALL_RO", "glen", "1", "k"},
		{"FCALL_RO", "wset", "1", "k", "v2"},
		{"FCALL", "sneaky", "1", "k"},
		{"FCALL", "sneakyp", "1", "k"},
		{"FCALL", "bad", "1", "k"},
		{"FCALL_RO", "sneaky", "1", "k"},
		{"FCALL_RO", "nosuch", "0"},
		{"FCALL", "rget", "2", "k"},
		{"GET", "k"},
		{"FUNCTION", "STATS"},
		{"FUNCTION", "KILL"},
		{"FUNCTION", "DELETE", "glib"},
		{"FUNCTION", "DELETE", "glib"},
		{"FCALL_RO", "glen", "1", "k"},
		{"FUNCTION", "RESTORE", funcDumpArg},
		{"FUNCTION", "RESTORE", funcDumpArg, "BADPOLICY"},
		{"FUNCTION", "RESTORE", "garbage"},
		{"FUNCTION", "RESTORE", funcDumpArg, "REPLACE"},
		{"FUNCTION", "LIST", "LIBRARYNAME", "g"},
		{"FUNCTION", "FLUSH", "ASYNC"},
		{"FUNCTION", "RESTORE", funcDumpArg, "APPEND"},
		{"FUNCTION", "RESTORE", funcDumpArg, "FLUSH"},
		{"FCALL_RO", "glen", "1", "k"},
		{"FUNCTION", "FLUSH", "SYNC"},
		{"FUNCTION", "FLUSH", "LAZY"},
		{"FUNCTION", "LIST"},
		{"FUNCTION", "RESTORE", funcDumpArg},
		{"FCALL_RO", "rget", "1", "k"},
		{"FUNCTION", "DELETE", "glib"},
		{"FUNCTION", "DUMP"},
	}
}

// functionDump returns the FUNCTION DUMP payload of flib and glib, made by s.
func functionDump(t *testing.T, s *redistest.Server) string {
	t.Helper()
	c := redistest.DialRaw(t, s.Addr)
	mustReply(t, c, "+OK\r\n", "FUNCTION", "FLUSH")
	c.Do("FUNCTION", "LOAD", flib)
	c.Do("FUNCTION", "LOAD", glib)
	frame := c.Do("FUNCTION", "DUMP")
	mustReply(t, c, "+OK\r\n", "FUNCTION", "FLUSH")
	i := bytes.Index(frame, []byte("\r\n"))
	if frame[0] != '$' || i < 0 {
		t.Fatalf("FUNCTION DUMP reply %q", frame)
	}
	return string(frame[i+2 : len(frame)-2])
}

// TestFunctionDifferential: the FUNCTION family, FCALL and FCALL_RO against
// Redis directly and through the proxy: the same replies byte for byte (no-writes
// enforced by FCALL, errors named after the function and its library's line);
// the slaves end with the master's data.
func TestFunctionDifferential(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	payload := functionDump(t, ref)
	rc := redistest.DialRaw(t, ref.Addr)
	pc := redistest.DialRaw(t, addr)
	for i, args := range functionTable() {
		for j, a := range args {
			if a == funcDumpArg {
				args[j] = payload
			}
		}
		want := rc.Do(args...)
		got := pc.Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, showCmd(args), showReply(got), showReply(want))
		}
	}
	checkSameData(t, ref, master, slaves)
}

// TestFunctionBehindBack: libraries loaded, replaced or deleted on the master
// directly (not through the proxy) are what FCALL through the proxy runs,
// within a second.
func TestFunctionBehindBack(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	m := redistest.DialRaw(t, master.Addr)
	lib := func(v string) string {
		return "#!lua name=bb\nredis.register_function('ver', function() return " + v + " end)"
	}
	mustReply(t, m, "$2\r\nbb\r\n", "FUNCTION", "LOAD", lib("1"))
	mustReply(t, c, ":1\r\n", "FCALL", "ver", "0")
	mustReply(t, m, "$2\r\nbb\r\n", "FUNCTION", "LOAD", "REPLACE", lib("2"))
	waitReply(t, c, ":2\r\n", "FCALL", "ver", "0")
	mustReply(t, m, "+OK\r\n", "FUNCTION", "DELETE", "bb")
	waitReply(t, c, "-ERR Function not found\r\n", "FCALL", "ver", "0")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// waitReply sends args on c until the reply is want, for up to two seconds.
func waitReply(t *testing.T, c *redistest.RawConn, want string, args ...string) {
	t.Helper()
	redistest.CheckFor(t, 2*time.Second, poll, func() error {
		if got := c.Do(args...); string(got) != want {
			return fmt.Errorf("%s: got %q, want %q", showCmd(args), got, want)
		}
		return nil
	})
}

// TestFunctionBusyRO: a runaway FCALL_RO through the proxy holds no other client
// behind it, on the master (read policy master: they get Redis' BUSY error) and
// on the slave that serves it (reads by the default policy); FUNCTION KILL ends
// it, on the slave too, its client gets Redis' reply, and service returns within
// a second.
func TestFunctionBusyRO(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"master", "prefer-slave"} {
		t.Run(policy, func(t *testing.T) {
			master := redistest.Start(t, "--busy-reply-threshold", "100")
			slaves := redistest.StartN(t, 2, "--busy-reply-threshold", "100")
			addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ReadPolicy = policy }, master, slaves...)
			a, b, k := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
			mustReply(t, b, "$6\r\nspinro\r\n", "FUNCTION", "LOAD",
				"#!lua name=spinro\nredis.register_function{function_name='spinro', callback=function()\n  while true do end\nend, flags={'no-writes'}}")
			sendOnly(a, "FCALL_RO", "spinro", "0")
			if policy == "master" {
				// The master runs the function in the proxy's composed script:
				// its BUSY error names SCRIPT KILL (Redis' names FUNCTION KILL).
				waitReply(t, b, busyReply, "SET", "probe", "1")
			} else {
				waitSlaveBusy(t, slaves)
				mustReply(t, b, "+OK\r\n", "SET", "probe", "1")
			}
			killFunction(t, "spinro", a, b, k)
			redistest.WaitConverged(t, convergeTimeout, master, slaves...)
		})
	}
}

// waitSlaveBusy polls until a slave answers BUSY: it runs a script.
func waitSlaveBusy(t *testing.T, slaves []*redistest.Server) {
	t.Helper()
	conns := make([]*redistest.RawConn, len(slaves))
	for i, s := range slaves {
		conns[i] = redistest.DialRaw(t, s.Addr)
	}
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		for _, c := range conns {
			if router.IsBusy(c.Do("PING")) {
				return nil
			}
		}
		return fmt.Errorf("no slave runs a script")
	})
}

// functionLists returns each server's libraries as sorted "name=code" lines
// (Redis lists libraries and functions in its dicts' order, which differs
// between servers; the code says what each library has).
func functionLists(t *testing.T, servers ...*redistest.Server) []string {
	t.Helper()
	var out []string
	for _, s := range servers {
		libs, err := redis.Values(s.Do(t, "FUNCTION", "LIST", "WITHCODE"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range libs {
			f, _ := redis.Values(l, nil)
			var name, code string
			for k := 0; k+1 < len(f); k += 2 {
				switch key, _ := redis.String(f[k], nil); key {
				case "library_name":
					name, _ = redis.String(f[k+1], nil)
				case "library_code":
					code, _ = redis.String(f[k+1], nil)
				}
			}
			lines = append(lines, name+"="+code)
		}
		sort.Strings(lines)
		out = append(out, strings.Join(lines, "\n"))
	}
	return out
}

// waitSameFunctions polls until every slave holds the master's libraries.
func waitSameFunctions(t *testing.T, master *redistest.Server, slaves ...*redistest.Server) {
	t.Helper()
	redistest.CheckFor(t, convergeTimeout, poll, func() error {
		lists := functionLists(t, append([]*redistest.Server{master}, slaves...)...)
		for i, l := range lists[1:] {
			if l != lists[0] {
				return fmt.Errorf("slave %s's libraries %q, the master's %q", slaves[i].Addr, l, lists[0])
			}
		}
		return nil
	})
}

// TestFunctionsReplicated: FUNCTION LOAD, LOAD REPLACE, DELETE, RESTORE and FLUSH
// through the proxy reach every slave in stream order, a slave serves FCALL_RO
// of a library loaded through the proxy, a failed LOAD reaches no slave, and a
// slave resynced in full gets the master's libraries.
func TestFunctionsReplicated(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	lib := func(name, ret string) string {
		return "#!lua name=" + name + "\nredis.register_function{function_name='" + name + "f', callback=function(keys) redis.call('SET', keys[1], '" + ret + "') return '" + ret + "' end}\n" +
			"redis.register_function{function_name='" + name + "ro', callback=function() return '" + ret + "' end, flags={'no-writes'}}"
	}
	mustReply(t, c, "$4\r\nlib1\r\n", "FUNCTION", "LOAD", lib("lib1", "a"))
	mustReply(t, c, "$4\r\nlib2\r\n", "FUNCTION", "LOAD", lib("lib2", "b"))
	if r := string(c.Do("FUNCTION", "LOAD", lib("lib1", "x"))); !strings.HasPrefix(r, "-ERR Library 'lib1' already exists") {
		t.Fatalf("LOAD of an existing library: %q", r)
	}
	mustReply(t, c, "$1\r\na\r\n", "FCALL", "lib1f", "1", "k1")
	waitSameFunctions(t, master, slaves...)
	for _, s := range slaves {
		if r := string(redistest.DialRaw(t, s.Addr).Do("FCALL_RO", "lib2ro", "0")); r != "$1\r\nb\r\n" {
			t.Fatalf("FCALL_RO on slave %s: %q", s.Addr, r)
		}
	}
	mustReply(t, c, "$4\r\nlib1\r\n", "FUNCTION", "LOAD", "REPLACE", lib("lib1", "c"))
	mustReply(t, c, "+OK\r\n", "FUNCTION", "DELETE", "lib2")
	dump := c.Do("FUNCTION", "DUMP")
	mustReply(t, c, "+OK\r\n", "FUNCTION", "FLUSH")
	waitSameFunctions(t, master, slaves...)
	payload := dump[bytes.IndexByte(dump, '\n')+1 : len(dump)-2]
	mustReply(t, c, "+OK\r\n", "FUNCTION", "RESTORE", string(payload))
	waitSameFunctions(t, master, slaves...)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	// A slave restarted empty is resynced in full: with the libraries.
	slaves[0].Restart(t)
	mustReply(t, c, "$1\r\nc\r\n", "FCALL", "lib1f", "1", "k2")
	waitSameFunctions(t, master, slaves...)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
