package e2e

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Commands that must behave as Redis 7.0 does (issue 13): each is sent directly
// to a reference Redis and through the proxy.

// diffSame sends each command to ref and to the proxy and fails the test unless
// the raw replies are byte-identical.
func diffSame(t *testing.T, rc, pc *redistest.RawConn, table [][]string) {
	t.Helper()
	for i, args := range table {
		want := rc.Do(args...)
		got := pc.Do(args...)
		if !bytes.Equal(got, want) {
			t.Errorf("#%d %s:\n\tproxy: %s\n\tredis: %s", i, showCmd(args), showReply(got), showReply(want))
		}
	}
}

// TestPingArity: PING with two arguments or more is Redis' arity error; with
// one, it echoes it as a bulk string (issue 13, item 8).
func TestPingArity(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	diffSame(t, rc, pc, [][]string{
		cmd("PING x y z"), cmd("PING x y"), cmd("PING x"), {"PING", ""}, cmd("PING"),
		cmd("MULTI"), cmd("PING a"), cmd("EXEC"),
	})
	checkSameData(t, ref, master, slaves)
}

// TestScriptFlushForgets: after SCRIPT FLUSH, EVALSHA of a script that EVAL or
// SCRIPT LOAD ran before answers NOSCRIPT and SCRIPT EXISTS answers 0, until
// the script is run or loaded again (issue 13, item 7).
func TestScriptFlushForgets(t *testing.T) {
	t.Parallel()
	ref, master, slaves, addr := diffSetup(t)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	const (
		body1 = "redis.call('INCR', KEYS[1]) return 1"
		body2 = "return 2"
	)
	sha1, sha2 := scriptSHA(body1), scriptSHA(body2)
	table := [][]string{
		{"EVAL", body1, "1", "k"}, {"SCRIPT", "LOAD", body2},
		{"SCRIPT", "EXISTS", sha1, sha2}, {"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"},
		{"SCRIPT", "FLUSH"},
		{"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"}, {"SCRIPT", "EXISTS", sha1, sha2},
		{"EVAL", body1, "1", "k"}, {"EVALSHA", sha1, "1", "k"}, {"EVALSHA", sha2, "0"},
		{"SCRIPT", "EXISTS", sha1, sha2},
		{"SCRIPT", "LOAD", body2}, {"EVALSHA", sha2, "0"}, {"SCRIPT", "FLUSH", "SYNC"},
		{"EVALSHA", strings.ToUpper(sha2), "0"}, {"GET", "k"},
	}
	diffSame(t, rc, pc, table)
	// The same, pipelined: a SCRIPT FLUSH takes effect for what follows it.
	rc.Send("SCRIPT", "LOAD", body2)
	pc.Send("SCRIPT", "LOAD", body2)
	rc.Send("SCRIPT", "FLUSH")
	pc.Send("SCRIPT", "FLUSH")
	rc.Send("EVALSHA", sha2, "0")
	pc.Send("EVALSHA", sha2, "0")
	rc.Flush()
	pc.Flush()
	for i := 0; i < 3; i++ {
		if want, got := rc.Read(), pc.Read(); !bytes.Equal(got, want) {
			t.Errorf("pipelined #%d: proxy %s, redis %s", i, showReply(got), showReply(want))
		}
	}
	checkSameData(t, ref, master, slaves)
}

// scriptSHA is the SHA1 of a script body, as EVALSHA names it.
func scriptSHA(body string) string {
	sum := sha1.Sum([]byte(body))
	return hex.EncodeToString(sum[:])
}

// clientFields returns the field names of one CLIENT INFO / CLIENT LIST line.
func clientFields(line string) []string {
	var out []string
	for _, f := range strings.Fields(line) {
		k, _, _ := strings.Cut(f, "=")
		out = append(out, k)
	}
	return out
}

// clientValues returns the fields of a CLIENT INFO reply (a bulk string) by name.
func clientValues(t *testing.T, reply []byte) map[string]string {
	t.Helper()
	i := bytes.Index(reply, []byte("\r\n"))
	if len(reply) == 0 || reply[0] != '$' || i < 0 {
		t.Fatalf("CLIENT INFO: %q", reply)
	}
	m := map[string]string{}
	for _, f := range strings.Fields(string(reply[i+2:])) {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

// TestClientInfoFields: CLIENT INFO and CLIENT LIST give every field Redis 7.0
// gives, in Redis' order (the proxy's consistency field after them), with the
// session's values; CLIENT LIST TYPE and ID filter as Redis' (issue 13, item 5).
func TestClientInfoFields(t *testing.T) {
	t.Parallel()
	ref := redistest.Start(t)
	master, slave := redistest.Start(t), redistest.Start(t)
	addr, _ := startProxy(t, master, slave)
	rc, pc := redistest.DialRaw(t, ref.Addr), redistest.DialRaw(t, addr)
	want := append(clientFields(string(rc.Do("CLIENT", "INFO"))[5:]), "consistency")
	got := clientFields(string(pc.Do("CLIENT", "INFO"))[5:])
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("CLIENT INFO fields:\n\tproxy: %v\n\tredis: %v", got, want)
	}
	mustReply(t, pc, "+OK\r\n", "CLIENT", "SETNAME", "app1")
	mustReply(t, pc, "+OK\r\n", "SELECT", "3")
	id := strings.Trim(string(pc.Do("CLIENT", "ID")), ":\r\n")
	v := clientValues(t, pc.Do("CLIENT", "INFO"))
	for k, w := range map[string]string{"id": id, "name": "app1", "db": "3", "flags": "N", "multi": "-1",
		"cmd": "client|info", "user": "default", "resp": "2", "redir": "-1", "events": "r", "argv-mem": "10"} {
		if v[k] != w {
			t.Errorf("CLIENT INFO %s=%q, want %q", k, v[k], w)
		}
	}
	if v["fd"] == "" || v["fd"] == "-1" || v["laddr"] != addr {
		t.Errorf("CLIENT INFO fd=%q laddr=%q (proxy at %s)", v["fd"], v["laddr"], addr)
	}
	// Another client sees this one queuing in MULTI.
	other := redistest.DialRaw(t, addr)
	mustReply(t, pc, "+OK\r\n", "MULTI")
	mustReply(t, pc, "+QUEUED\r\n", "SET", "a", "1")
	list := string(other.Do("CLIENT", "LIST", "ID", id))
	if !strings.Contains(list, "id="+id+" ") || !strings.Contains(list, " flags=x ") ||
		!strings.Contains(list, " multi=1 ") || !strings.Contains(list, " cmd=set ") {
		t.Errorf("CLIENT LIST ID %s: %q", id, list)
	}
	mustReply(t, pc, "*1\r\n+OK\r\n", "EXEC")
	diffSame(t, rc, other, [][]string{
		cmd("CLIENT LIST TYPE nosuch"), cmd("CLIENT LIST ID x"), cmd("CLIENT LIST ID 1000000"),
		cmd("CLIENT LIST TYPE master"), cmd("CLIENT LIST foo"), cmd("CLIENT LIST TYPE normal x"),
	})
	if l := string(other.Do("CLIENT", "LIST", "TYPE", "normal")); strings.Count(l, " addr=") != 2 {
		t.Errorf("CLIENT LIST TYPE normal: %q, want 2 lines", l)
	}
}

// TestClientInfoRedisPy: redis-py's client_info() and client_list() parse the
// proxy's replies (issue 13, item 5).
func TestClientInfoRedisPy(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import redis").Run(); err != nil {
		t.Skip("redis-py is not installed for /usr/bin/python3")
	}
	master, slave := redistest.Start(t), redistest.Start(t)
	addr, _ := startProxy(t, master, slave)
	host, port, _ := strings.Cut(addr, ":")
	script := `import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]))
r.client_setname("py")
i = r.client_info()
assert i["name"] == "py" and i["oll"] == 0 and i["db"] == 0 and i["cmd"] == "client|info", i
l = r.client_list()
assert any(c["name"] == "py" for c in l), l
print("ok")
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, host, port).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("redis-py: %v\n%s", err, out)
	}
}
