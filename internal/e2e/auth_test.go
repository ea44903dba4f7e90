package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

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
	sameRepliesAs(t, ref, addr, steps, func(s string) string { return s })
}

// sameRepliesAs is sameReplies comparing the replies as norm rewrites them.
func sameRepliesAs(t *testing.T, ref, addr string, steps [][]string, norm func(string) string) {
	t.Helper()
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, s := range steps {
			r := string(c.Do(s...))
			if s[0] == "HELLO" && len(r) > 0 && r[0] == '*' {
				r = "HELLO ok"
			}
			got[name] = append(got[name], norm(r))
		}
	}
	for i, s := range steps {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("%q: redis %q, proxy %q", s, got["redis"][i], got["proxy"][i])
		}
	}
}

// TestACLOwnUsers: the ACL commands describe the proxy's users as a Redis with
// the same users shows them (ACL LIST, USERS, GETUSER, WHOAMI, DRYRUN, also
// inside MULTI), never the master's ACL and its password hashes; the commands
// that change users are refused, since users come from the configuration.
func TestACLOwnUsers(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t, "--requirepass", "s3cret",
		"--user", "writer", "on", ">wpass", "~*", "&*", "+@all",
		"--user", "reader", "on", ">rpass", "~*", "&*", "+@all", "-@write", "-@admin",
		"-eval", "-evalsha", "-fcall", "-publish", "-spublish", "-script|load", "-script|flush",
		"-script|kill", "-function|kill", "-pfdebug", "-pfselftest")
	backendArgs := []string{"--requirepass", "master-pw", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all"}
	master := redistest.Start(t, backendArgs...)
	slave := redistest.Start(t, backendArgs...)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.RequirePass = "s3cret"
		c.Users = []proxy.User{
			{Name: "writer", Password: "wpass", Access: proxy.AccessReadWrite},
			{Name: "reader", Password: "rpass", Access: proxy.AccessReadOnly},
		}
		c.MasterPassword, c.SlavePassword = "master-pw", "master-pw"
	}, master, slave)
	sameRepliesAs(t, ref.Addr, addr, [][]string{
		{"ACL", "LIST"}, {"AUTH", "writer", "wpass"}, {"ACL", "WHOAMI"}, {"ACL", "USERS"}, {"ACL", "LIST"},
		{"ACL", "GETUSER", "default"}, {"ACL", "GETUSER", "writer"}, {"ACL", "GETUSER", "reader"},
		{"ACL", "GETUSER", "app"}, {"ACL", "GETUSER", "nobody"},
		{"ACL", "DRYRUN", "reader", "SET", "a", "b"}, {"ACL", "DRYRUN", "reader", "GET", "a"},
		{"ACL", "DRYRUN", "writer", "SET", "a", "b"}, {"ACL", "DRYRUN", "nobody", "GET", "a"},
		{"ACL", "DRYRUN", "reader", "nocmd"}, {"ACL", "DRYRUN", "reader", "GET"},
		{"MULTI"}, {"ACL", "LIST"}, {"ACL", "WHOAMI"}, {"ACL", "GETUSER", "reader"}, {"SET", "k", "v"}, {"EXEC"},
		{"AUTH", "reader", "rpass"}, {"ACL", "WHOAMI"}, {"ACL", "LIST"}, {"ACL", "GETUSER", "default"},
		{"ACL", "USERS"}, {"ACL", "DRYRUN", "reader", "GET", "a"},
	}, sortDeniedCommands)

	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "AUTH", "s3cret")
	for _, args := range [][]string{{"ACL", "LIST"}, {"ACL", "GETUSER", "default"}, {"ACL", "GETUSER", "app"}} {
		for _, pw := range []string{"master-pw", "app-pw"} {
			h := sha256.Sum256([]byte(pw))
			if r := c.Do(args...); strings.Contains(string(r), hex.EncodeToString(h[:])) {
				t.Errorf("%q shows the backends' hash of %q: %q", args, pw, r)
			}
		}
	}
	for _, sub := range []string{"SETUSER", "DELUSER", "SAVE", "LOAD", "LOG"} {
		args := []string{"ACL", sub}
		if sub == "SETUSER" || sub == "DELUSER" {
			args = append(args, "app")
		}
		if r := string(c.Do(args...)); !strings.HasPrefix(r, "-ERR syncproxy: 'acl "+strings.ToLower(sub)+"' is not available") {
			t.Errorf("%q: %q", args, r)
		}
	}
	mustReply(t, c, "+OK\r\n", "MULTI")
	c.Do("ACL", "SETUSER", "app", "off")
	mustReply(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
	mc, err := redis.Dial("tcp", master.Addr, redis.DialPassword("master-pw"), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if users, err := redis.Strings(mc.Do("ACL", "USERS")); strings.Join(users, " ") != "app default" {
		t.Errorf("the master's users changed: %q %v", users, err)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// deniedCommands are the command rules after -@admin in a user's description,
// which Redis lists in an order that differs from one server to the next.
var deniedCommands = regexp.MustCompile(`-@admin(?: -[a-z|]+)+`)

// sortDeniedCommands sorts them, for comparing descriptions.
func sortDeniedCommands(s string) string {
	return deniedCommands.ReplaceAllStringFunc(s, func(m string) string {
		f := strings.Fields(m)
		sort.Strings(f[1:])
		return strings.Join(f, " ")
	})
}
