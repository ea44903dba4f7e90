package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestSwapDBAndFunctions: SWAPDB of two DBs other than 0 is replicated; with DB 0
// it is refused; FUNCTION LOAD, FCALL_RO and FCALL work, the writes of functions
// reach the slaves; CLIENT LIST shows every client.
func TestSwapDBAndFunctions(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SELECT", "1")
	mustReply(t, c, "+OK\r\n", "SET", "one", "1")
	mustReply(t, c, "+OK\r\n", "SWAPDB", "1", "2")
	mustReply(t, c, "$-1\r\n", "GET", "one")
	if r := string(c.Do("SWAPDB", "0", "3")); !strings.HasPrefix(r, "-ERR syncproxy: SWAPDB with DB 0") {
		t.Fatalf("SWAPDB 0 3: %q", r)
	}
	lib := "#!lua name=mylib\nredis.register_function{function_name='myget', callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}"
	mustReply(t, c, "$5\r\nmylib\r\n", "FUNCTION", "LOAD", lib)
	mustReply(t, c, "+OK\r\n", "SELECT", "2")
	mustReply(t, c, "$1\r\n1\r\n", "FCALL_RO", "myget", "1", "one")
	mustReply(t, c, "$1\r\n1\r\n", "FCALL", "myget", "1", "one")
	// A function that writes, with a non-deterministic command: replicated as effects.
	wlib := "#!lua name=wlib\nredis.register_function('fill', function(keys, args)\n" +
		"  redis.call('SADD', keys[1], 'a', 'b', 'c')\n  redis.call('SPOP', keys[1])\n" +
		"  redis.call('INCRBY', keys[2], args[1])\n  return redis.call('SCARD', keys[1])\nend)"
	mustReply(t, c, "$4\r\nwlib\r\n", "FUNCTION", "LOAD", wlib)
	mustReply(t, c, ":2\r\n", "FCALL", "fill", "2", "s", "n", "5")
	mustReply(t, c, ":2\r\n", "FCALL", "fill", "2", "s2", "n", "5")
	mustReply(t, c, "$2\r\n10\r\n", "GET", "n")
	mustReply(t, c, "-ERR Function not found\r\n", "FCALL", "nope", "0")
	other := redistest.DialRaw(t, addr)
	mustReply(t, other, "+OK\r\n", "CLIENT", "SETNAME", "second")
	list := string(c.Do("CLIENT", "LIST"))
	if strings.Count(list, "id=") != 2 || !strings.Contains(list, "name=second") || !strings.Contains(list, "db=2") {
		t.Fatalf("CLIENT LIST: %q", list)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestConfigSet: refused by default; with --config-set broadcast it reaches the
// master and every slave.
func TestConfigSet(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	addr, _ := startProxy(t, servers[0], servers[1:]...)
	c := redistest.DialRaw(t, addr)
	if r := string(c.Do("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")); !strings.HasPrefix(r, "-ERR syncproxy: CONFIG SET") {
		t.Fatalf("CONFIG SET refused: %q", r)
	}
	addr2, _ := startProxyWith(t, func(cfg *proxy.Config) { cfg.ConfigSet = "broadcast" }, servers[0], servers[1:]...)
	c2 := redistest.DialRaw(t, addr2)
	mustReply(t, c2, "+OK\r\n", "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	for _, s := range servers {
		if v := s.Do(t, "CONFIG", "GET", "maxmemory-policy").([]interface{}); string(v[1].([]byte)) != "allkeys-lru" {
			t.Errorf("%s: maxmemory-policy %s", s.Addr, v[1])
		}
	}
	if r := string(c2.Do("CONFIG", "SET", "nosuchparam", "1")); r[0] != '-' {
		t.Fatalf("CONFIG SET of an unknown parameter: %q", r)
	}
}

// TestScanAndKeys: SCAN over 10k keys through the proxy returns every key and
// nothing else (the replication metadata keys stay hidden), as KEYS does.
func TestScanAndKeys(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	addr, _ := startProxy(t, servers[0], servers[1:]...)
	c := redistest.DialRaw(t, addr)
	const n = 10000
	for i := 0; i < n; i++ {
		c.Send("SET", "key:"+strconv.Itoa(i), "v")
	}
	c.Flush()
	for i := 0; i < n; i++ {
		c.Read()
	}
	seen := map[string]bool{}
	cursor := "0"
	for {
		reply := string(c.Do("SCAN", cursor, "COUNT", "500"))
		parts := strings.Split(reply, "\r\n")
		// *2, $len, cursor, *N, then $len/key pairs
		cursor = parts[2]
		for j := 4; j+1 < len(parts); j += 2 {
			seen[parts[j+1]] = true
		}
		if cursor == "0" {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("SCAN returned %d distinct keys, want %d", len(seen), n)
	}
	for k := range seen {
		if !strings.HasPrefix(k, "key:") {
			t.Fatalf("SCAN returned %q", k)
		}
	}
	keys := string(c.Do("KEYS", "*"))
	if strings.Contains(keys, "syncproxy:") || !strings.HasPrefix(keys, "*10000\r\n") {
		t.Fatalf("KEYS: %.80q", keys)
	}
}

// TestMetadataHidden: DBSIZE and RANDOMKEY in DB 0 answer as Redis would without
// the replication metadata keys.
func TestMetadataHidden(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master := servers[0], servers[1]
	addr, _ := startProxy(t, master, servers[2:]...)
	cmds := [][]string{{"DBSIZE"}, {"RANDOMKEY"}, {"SET", "only", "1"}, {"DBSIZE"}, {"RANDOMKEY"}, {"DEL", "only"}, {"DBSIZE"}, {"RANDOMKEY"}}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		var out []string
		for _, cmd := range cmds {
			out = append(out, string(c.Do(cmd...)))
		}
		want := []string{":0\r\n", "$-1\r\n", "+OK\r\n", ":1\r\n", "$4\r\nonly\r\n", ":1\r\n", ":0\r\n", "$-1\r\n"}
		for i := range want {
			if out[i] != want[i] {
				t.Errorf("%s %q: %q, want %q", name, cmds[i], out[i], want[i])
			}
		}
	}
}
