package e2e

import (
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestMultiDifferential runs transactions against Redis directly and through the
// proxy, one command at a time and pipelined: same replies byte for byte, and the
// slaves converge.
func TestMultiDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	script := [][]string{
		{"EXEC"},
		{"DISCARD"},
		{"MULTI"},
		{"SET", "a", "1"},
		{"INCR", "a"},
		{"GET", "a"},
		{"LPUSH", "a", "x"}, // runtime error inside EXEC: the others still run
		{"INCRBYFLOAT", "f", "1.5"},
		{"SPOP", "nosuchset"},
		{"PING"},
		{"ECHO", "hi"},
		{"SELECT", "3"},
		{"SET", "in3", "v"},
		{"EXPIRE", "in3", "100"},
		{"MULTI"},
		{"LPOP", "nolist", "2"},
		{"BLPOP", "nolist", "0"},
		{"RPUSH", "l", "p", "q"},
		{"BLPOP", "l", "0"},
		{"BRPOPLPUSH", "nolist", "l2", "0"}, // a null bulk string, not a null array
		{"BLMOVE", "nolist", "l2", "LEFT", "RIGHT", "0"},
		{"BLMPOP", "0", "1", "nolist", "LEFT"},
		{"BZPOPMIN", "nozset", "0"},
		{"BRPOPLPUSH", "l", "l2", "0"},
		{"EXEC"},
		{"GET", "in3"},
		{"SELECT", "0"},
		{"MULTI"},
		{"SET", "b", "1"},
		{"GETT", "b"},
		{"GET"},
		{"EXEC"},
		{"GET", "b"},
		{"MULTI"},
		{"SET", "c", "1"},
		{"DISCARD"},
		{"GET", "c"},
		{"MULTI"},
		{"EXEC"},
		{"MULTI"},
		{"SELECT", "99"},
		{"SET", "d", "1"},
		{"EXEC"},
		{"MULTI"},
		{"WATCH", "x"},
		{"EXEC"},
		// Null arrays inside a read's reply (the script has one nil).
		{"MULTI"},
		{"GEOADD", "g", "1", "1", "a"},
		{"GEOPOS", "g", "a", "nosuch"},
		{"XADD", "st", "1-0", "f", "v"},
		{"XGROUP", "CREATE", "st", "gg", "0"},
		{"XPENDING", "st", "gg"},
		{"XREADGROUP", "GROUP", "gg", "c", "STREAMS", "st", ">"},
		{"XPENDING", "st", "gg"},
		{"EXEC"},
		// CLIENT subcommands about the client itself, run in order at EXEC.
		{"MULTI"},
		{"CLIENT", "GETNAME"},
		{"CLIENT", "SETNAME", "txname"},
		{"SET", "n", "1"},
		{"CLIENT", "GETNAME"},
		{"CLIENT", "SETNAME", "bad name"},
		{"EXEC"},
		{"CLIENT", "GETNAME"},
	}
	sameScript(t, ref.Addr, addr, "FLUSHDB", script)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestClientReply: CLIENT REPLY OFF, SKIP and ON as in Redis.
func TestClientReply(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	ref, master := servers[0], servers[1]
	addr, _ := startProxy(t, master, servers[2])
	cmds := [][]string{
		{"CLIENT", "REPLY", "OFF"}, {"SET", "a", "1"}, {"MULTI"}, {"INCR", "a"}, {"EXEC"},
		{"CLIENT", "REPLY", "ON"}, {"GET", "a"},
		{"CLIENT", "REPLY", "SKIP"}, {"SET", "b", "2"}, {"GET", "b"},
	}
	out := map[string]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, cmd := range cmds {
			c.Send(cmd...)
		}
		c.Flush()
		// Three replies are expected: ON's +OK, GET a, GET b.
		for i := 0; i < 3; i++ {
			out[name] += string(c.Read())
		}
	}
	if out["redis"] != out["proxy"] {
		t.Fatalf("redis %q, proxy %q", out["redis"], out["proxy"])
	}
}

// TestWatch: WATCH/EXEC through the proxy as in Redis: EXEC runs when nothing
// changed, aborts (nil) when another client — or the client itself — changed a
// watched key; DISCARD and UNWATCH end the watch. The slaves converge.
func TestWatch(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	type step struct {
		other bool // sent by the second client
		cmd   []string
	}
	steps := []step{
		{false, []string{"SET", "k", "1"}},
		{false, []string{"WATCH", "k", "j"}},
		{false, []string{"MULTI"}},
		{false, []string{"INCR", "k"}},
		{false, []string{"EXEC"}}, // runs
		{false, []string{"WATCH", "k"}},
		{true, []string{"SET", "k", "changed"}},
		{false, []string{"MULTI"}},
		{false, []string{"SET", "k", "mine"}},
		{false, []string{"EXEC"}}, // aborted
		{false, []string{"GET", "k"}},
		{false, []string{"WATCH", "k"}},
		{false, []string{"SET", "k", "self"}},
		{false, []string{"MULTI"}},
		{false, []string{"GET", "k"}},
		{false, []string{"EXEC"}}, // aborted by the client's own write
		{false, []string{"WATCH", "k"}},
		{false, []string{"UNWATCH"}},
		{true, []string{"SET", "k", "again"}},
		{false, []string{"MULTI"}},
		{false, []string{"GET", "k"}},
		{false, []string{"EXEC"}}, // runs: unwatched
		{false, []string{"SELECT", "2"}},
		{false, []string{"WATCH", "d2"}},
		{true, []string{"SELECT", "2"}},
		{true, []string{"SET", "d2", "x"}},
		{false, []string{"MULTI"}},
		{false, []string{"SET", "d2", "y"}},
		{false, []string{"EXEC"}}, // aborted: same DB
		{false, []string{"WATCH", "w"}},
		{false, []string{"MULTI"}},
		{false, []string{"DISCARD"}},
		{true, []string{"SET", "w", "1"}},
		{false, []string{"MULTI"}},
		{false, []string{"SET", "w", "2"}},
		{false, []string{"EXEC"}}, // runs: DISCARD unwatched
		{false, []string{"WATCH", "e"}},
		{false, []string{"MULTI"}},
		{false, []string{"EXEC"}}, // empty, runs
	}
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c, o := redistest.DialRaw(t, a), redistest.DialRaw(t, a)
		for _, s := range steps {
			conn := c
			if s.other {
				conn = o
			}
			got[name] = append(got[name], string(conn.Do(s.cmd...)))
		}
	}
	for i, s := range steps {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("step %d %q: redis %q, proxy %q", i, s.cmd, got["redis"][i], got["proxy"][i])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestWatchPipelined: WATCH and EXEC keep their place in a pipeline.
func TestWatchPipelined(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	ref, master := servers[0], servers[1]
	addr, _ := startProxy(t, master, servers[2])
	cmds := [][]string{
		{"SET", "k", "1"}, {"WATCH", "k"}, {"SET", "k", "2"}, {"MULTI"}, {"GET", "k"}, {"EXEC"},
		{"WATCH", "k"}, {"MULTI"}, {"INCR", "k"}, {"EXEC"}, {"GET", "k"},
	}
	got := map[string]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, cmd := range cmds {
			c.Send(cmd...)
		}
		c.Flush()
		for range cmds {
			got[name] += string(c.Read())
		}
	}
	if got["redis"] != got["proxy"] {
		t.Fatalf("redis %q\nproxy %q", got["redis"], got["proxy"])
	}
}

// sameScript sends script to Redis (refAddr) and through the proxy (addr), one
// command at a time and then pipelined, each on a fresh connection after flush,
// and reports every reply that differs.
func sameScript(t *testing.T, refAddr, addr, flush string, script [][]string) {
	t.Helper()
	for _, pipelined := range []bool{false, true} {
		got := map[string][]string{}
		for name, a := range map[string]string{"redis": refAddr, "proxy": addr} {
			c := redistest.DialRaw(t, a)
			c.Do(flush)
			if pipelined {
				for _, cmd := range script {
					c.Send(cmd...)
				}
				c.Flush()
				for range script {
					got[name] = append(got[name], string(c.Read()))
				}
				continue
			}
			for _, cmd := range script {
				got[name] = append(got[name], string(c.Do(cmd...)))
			}
		}
		for i, cmd := range script {
			if got["redis"][i] != got["proxy"][i] {
				t.Errorf("pipelined=%v %.60q: redis %q, proxy %q", pipelined, cmd, got["redis"][i], got["proxy"][i])
			}
		}
	}
}

// TestMultiClientCommands: CLIENT ID, INFO and LIST, and INFO, inside MULTI
// answer once the transaction ran, as outside it (after the transaction's
// SETNAME; INFO's keyspace shows the transaction's write).
func TestMultiClientCommands(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := redistest.DialRaw(t, addr)
	id := strings.TrimSuffix(strings.TrimPrefix(string(c.Do("CLIENT", "ID")), ":"), "\r\n")
	got := string(pipelineReplies(c, [][]string{{"MULTI"}, {"CLIENT", "ID"}, {"CLIENT", "SETNAME", "in-tx"},
		{"CLIENT", "INFO"}, {"CLIENT", "LIST", "ID", id}, {"SET", "k", "v"}, {"INFO", "keyspace"}, {"EXEC"}}))
	parts := strings.SplitN(got, "*6\r\n", 2)
	if len(parts) != 2 || !strings.HasPrefix(parts[1], ":"+id+"\r\n+OK\r\n") ||
		strings.Count(parts[1], " name=in-tx ") != 2 || strings.Count(parts[1], "id="+id+" ") != 2 ||
		!strings.Contains(parts[1], "# Proxy\r\n") || !strings.Contains(parts[1], "db0:keys=1,") {
		t.Fatalf("MULTI, CLIENT ID, SETNAME, INFO, LIST ID, EXEC: %q", got)
	}
	// A transaction a watched key's change aborts runs none of them.
	o := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "WATCH", "w")
	mustReply(t, o, "+OK\r\n", "SET", "w", "changed")
	if got := string(pipelineReplies(c, [][]string{{"MULTI"}, {"CLIENT", "SETNAME", "aborted"}, {"EXEC"}})); got != "+OK\r\n+QUEUED\r\n*-1\r\n" {
		t.Fatalf("aborted MULTI, CLIENT SETNAME, EXEC: %q", got)
	}
	mustReply(t, c, "$5\r\nin-tx\r\n", "CLIENT", "GETNAME")
}
