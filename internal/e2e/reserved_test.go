package e2e

import (
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestReservedKeysUnreadable: clients can neither read nor write the replication
// metadata, on every path a command can take — alone, pipelined, inside MULTI
// (which then aborts), blocking, as a script's declared key — as scripts are
// refused it inside the master script.
func TestReservedKeysUnreadable(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "v") // the metadata exists
	mustReply(t, c, ":1\r\n", "RPUSH", "l", "syncproxy:seq")
	const refused = "-ERR syncproxy: keys starting with 'syncproxy:' are reserved"
	for _, cmd := range [][]string{
		{"GET", "syncproxy:seq"},
		{"EXISTS", "k", "syncproxy:epoch"},
		{"XRANGE", "syncproxy:backlog", "-", "+"},
		{"XREAD", "STREAMS", "syncproxy:backlog", "0"},
		{"XREAD", "BLOCK", "10", "STREAMS", "syncproxy:backlog", "0"},
		{"BLPOP", "syncproxy:x", "0.01"},
		{"DUMP", "syncproxy:epoch"},
		{"OBJECT", "ENCODING", "syncproxy:seq"},
		{"TYPE", "syncproxy:backlog"},
		{"SORT_RO", "syncproxy:x"},
		{"EVAL_RO", "return 1", "1", "syncproxy:seq"},
		{"SET", "syncproxy:seq", "1"},
		{"COPY", "syncproxy:seq", "mine"},
		// SORT's patterns read keys named after the elements, as Redis' ACLs
		// require full read rights for them.
		{"SORT", "l", "BY", "nosort", "GET", "*"},
		{"SORT_RO", "l", "BY", "syncproxy:*"},
		{"SORT", "l", "BY", "nosort", "GET", "sync*"},
		{"EVAL", "return redis.call('SORT', KEYS[1], 'BY', 'nosort', 'GET', '*')", "1", "l"},
	} {
		if got := string(c.Do(cmd...)); !strings.HasPrefix(got, refused) {
			t.Errorf("%s: %q, want the reserved-key error", showCmd(cmd), got)
		}
	}
	// Patterns that cannot reach them still work.
	mustReply(t, c, "*1\r\n$13\r\nsyncproxy:seq\r\n", "SORT", "l", "BY", "nosort", "GET", "#")
	mustReply(t, c, "*1\r\n$-1\r\n", "SORT_RO", "l", "BY", "nosort", "GET", "other:*")
	// Pipelined beside ordinary reads.
	c.Send("GET", "k")
	c.Send("GET", "syncproxy:seq")
	c.Send("GET", "k")
	c.Flush()
	for i, want := range []string{"$1\r\nv\r\n", refused, "$1\r\nv\r\n"} {
		if got := string(c.Read()); !strings.HasPrefix(got, want) {
			t.Errorf("pipelined reply %d: %q, want %q", i, got, want)
		}
	}
	// Inside MULTI: refused at queue time, EXEC aborts. Blocking pops too,
	// although inside MULTI they run in their non-blocking form.
	for _, cmd := range [][]string{
		{"GET", "syncproxy:seq"},
		{"BLPOP", "syncproxy:x", "0"},
		{"XREAD", "BLOCK", "0", "STREAMS", "syncproxy:backlog", "0"},
	} {
		mustReply(t, c, "+OK\r\n", "MULTI")
		if got := string(c.Do(cmd...)); !strings.HasPrefix(got, refused) {
			t.Errorf("%s in MULTI: %q", showCmd(cmd), got)
		}
		if got := string(c.Do("EXEC")); !strings.HasPrefix(got, "-EXECABORT") {
			t.Errorf("EXEC after a refused %s: %q, want EXECABORT", showCmd(cmd), got)
		}
	}
}
