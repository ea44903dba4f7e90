package e2e

import (
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
	}
	for _, pipelined := range []bool{false, true} {
		got := map[string][]string{}
		for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
			c := redistest.DialRaw(t, a)
			c.Do("FLUSHDB")
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
				t.Errorf("pipelined=%v %q: redis %q, proxy %q", pipelined, cmd, got["redis"][i], got["proxy"][i])
			}
		}
	}
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
