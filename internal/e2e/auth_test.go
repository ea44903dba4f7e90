package e2e

import (
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestRequirePass: with --requirepass the proxy answers as a Redis with
// requirepass does, before and after AUTH (AUTH pw, AUTH default pw, HELLO AUTH).
func TestRequirePass(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t, "--requirepass", "s3cret")
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.RequirePass = "s3cret" }, servers[0], servers[1])
	steps := [][]string{
		{"GET", "k"}, {"PING"}, {"SET", "k", "v"}, {"SUBSCRIBE", "ch"}, {"BLPOP", "l", "0"}, {"MULTI"},
		{"NOSUCH"}, {"GET"},
		{"AUTH", "wrong"}, {"AUTH", "default", "wrong"}, {"AUTH", "other", "s3cret"}, {"AUTH", "a", "b", "c"},
		{"HELLO", "2"}, {"HELLO", "2", "AUTH", "default", "wrong"},
		{"AUTH", "s3cret"}, {"SET", "k", "v"}, {"GET", "k"},
		{"RESET"}, {"GET", "k"}, {"HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "x"}, {"GET", "k"},
		{"RESET"}, {"AUTH", "default", "s3cret"}, {"GET", "k"},
	}
	sameReplies(t, ref.Addr, addr, steps)
}

// TestMaxClientsAndIdleTimeout: beyond --max-clients a client gets Redis' error and
// is disconnected; with --idle-timeout an idle client is disconnected.
func TestMaxClientsAndIdleTimeout(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.MaxClients = 2
		c.IdleTimeout = 300 * time.Millisecond
	}, servers[0], servers[1])
	a, b := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, a, "+PONG\r\n", "PING")
	mustReply(t, b, "+PONG\r\n", "PING")
	c := redistest.DialRaw(t, addr)
	if r, err := c.TryRead(); err != nil || string(r) != "-ERR max number of clients reached\r\n" {
		t.Fatalf("third client: %q %v", r, err)
	}
	if r, err := c.TryRead(); err == nil {
		t.Fatalf("third client still connected: %q", r)
	}
	// a stays busy, b idles: b is disconnected, a is not.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		mustReply(t, a, "+PONG\r\n", "PING")
		time.Sleep(50 * time.Millisecond) // the client's own pace, well under the idle timeout
	}
	if r, err := b.TryRead(); err == nil {
		t.Fatalf("idle client still connected: %q", r)
	}
	mustReply(t, a, "+PONG\r\n", "PING")
}

// TestUsers: users of the config file, read-write and read-only, answer as a
// Redis with the same ACL users does (AUTH, HELLO AUTH, NOPERM for writes,
// scripts and publishing, EXECABORT for a transaction queuing one, ACL WHOAMI).
func TestUsers(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t, "--requirepass", "s3cret",
		"--user", "writer", "on", ">wpass", "~*", "&*", "+@all",
		"--user", "reader", "on", ">rpass", "~*", "&*", "+@all", "-@write", "-@admin",
		"-eval", "-evalsha", "-fcall", "-publish", "-spublish")
	servers := redistest.StartN(t, 3)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.RequirePass = "s3cret"
		c.Users = []proxy.User{
			{Name: "writer", Password: "wpass", Access: proxy.AccessReadWrite},
			{Name: "reader", Password: "rpass", Access: proxy.AccessReadOnly},
		}
	}, servers[0], servers[1], servers[2])
	steps := [][]string{
		{"AUTH", "reader", "wrong"}, {"AUTH", "nobody", "rpass"}, {"GET", "k"},
		{"AUTH", "writer", "wpass"}, {"ACL", "WHOAMI"}, {"SET", "k", "v"}, {"LPUSH", "l", "a", "b"},
		{"EVAL", "return redis.call('INCR', KEYS[1])", "1", "n"}, {"PUBLISH", "ch", "x"},
		{"AUTH", "reader", "rpass"}, {"ACL", "WHOAMI"}, {"GET", "k"}, {"LRANGE", "l", "0", "-1"}, {"EXISTS", "k", "n"},
		{"SET", "k", "other"}, {"DEL", "k"}, {"BLPOP", "l", "1"}, {"FLUSHALL"}, {"CONFIG", "SET", "maxmemory", "1"},
		{"EVAL", "return 1", "0"}, {"PUBLISH", "ch", "x"}, {"XREAD", "COUNT", "1", "STREAMS", "s", "0"},
		{"MULTI"}, {"GET", "k"}, {"INCR", "n"}, {"EXEC"},
		{"HELLO", "2", "AUTH", "writer", "wpass"}, {"ACL", "WHOAMI"}, {"INCR", "n"},
		{"RESET"}, {"ACL", "WHOAMI"}, {"GET", "k"}, {"AUTH", "s3cret"}, {"ACL", "WHOAMI"}, {"SET", "k", "w"},
	}
	sameReplies(t, ref.Addr, addr, steps)
	redistest.WaitConverged(t, convergeTimeout, servers[0], servers[1], servers[2])
}

// sameReplies sends steps on one connection to the reference Redis at ref and on
// one to the proxy at addr, and reports each step whose replies differ (HELLO's
// map is only checked to be one: server, version and id differ).
func sameReplies(t *testing.T, ref, addr string, steps [][]string) {
	t.Helper()
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, s := range steps {
			r := string(c.Do(s...))
			if s[0] == "HELLO" && len(r) > 0 && r[0] == '*' {
				r = "HELLO ok"
			}
			got[name] = append(got[name], r)
		}
	}
	for i, s := range steps {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("%q: redis %q, proxy %q", s, got["redis"][i], got["proxy"][i])
		}
	}
}
