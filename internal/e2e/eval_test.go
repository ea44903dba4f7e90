package e2e

import (
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestEvalDifferential: client scripts through the proxy reply as in Redis, and
// whatever they write — several keys, several DBs, non-deterministic commands —
// reaches the slaves exactly.
func TestEvalDifferential(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	const multi = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('INCRBY', KEYS[2], ARGV[2]); return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), 42, false}"
	const sha = "0d6a7b3b1d6a1df8c5e5f4bf8ed2b0e4f7f0c0a1" // not loaded anywhere
	cmds := [][]string{
		{"EVAL", "return 1", "0"},
		{"EVAL", "return {1, 'two', {3}}", "0"},
		{"EVAL", "return redis.status_reply('FINE')", "0"},
		{"EVAL", "return redis.error_reply('MYERR custom')", "0"},
		{"EVAL", multi, "2", "a", "b", "va", "5"},
		{"EVALSHA", "2f1f7ffbfd25c3a2d9a0f0e9c3b6c07ab1de2b10", "0"},
		{"SCRIPT", "LOAD", multi},
		{"EVALSHA", "b4f1b46a8bbb6b4f1bcd7e95c5b2eaf2e8c3da8c", "2", "a", "b", "x", "1"},
		{"SCRIPT", "EXISTS", sha},
		{"EVAL", "redis.call('SADD', KEYS[1], 'a', 'b', 'c', 'd'); return redis.call('SCARD', KEYS[1])", "1", "s"},
		{"EVAL", "redis.call('SPOP', KEYS[1]); redis.call('EXPIRE', KEYS[1], 100); return redis.call('SCARD', KEYS[1])", "1", "s"},
		{"EVAL", "redis.call('SELECT', 3); redis.call('SET', 'in3', 'v'); return redis.call('GET', 'in3')", "0"},
		{"GET", "in3"},
		{"EVAL", "redis.call('INCRBYFLOAT', KEYS[1], '1.5'); return redis.call('GET', KEYS[1])", "1", "f"},
		{"EVAL", "local ok = redis.pcall('LPUSH', KEYS[1], 'x'); return ok", "1", "a"},
		{"EVAL", "redis.call('SET', KEYS[1], 'partial'); return redis.call('LPUSH', KEYS[1], 'x')", "1", "p"},
		{"GET", "p"},
		{"EVAL", "local x = 1\nredis.call('LPUSH', KEYS[1], 'x')\nreturn x", "1", "p"},
		{"EVAL", "local x = 1\n\nerror('boom')", "0"},
		{"EVAL", "local x = 1\nreturn x +", "0"},
		{"EVAL", "return 1", "-1"},
		{"EVAL", "return 1", "3", "a"},
		{"EVAL", "return 1", "x"},
		{"EVAL_RO", "return redis.call('GET', KEYS[1])", "1", "a"},
	}
	got := map[string][]string{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		for _, cmd := range cmds {
			got[name] = append(got[name], string(c.Do(cmd...)))
		}
	}
	for i, cmd := range cmds {
		if got["redis"][i] != got["proxy"][i] {
			t.Errorf("%.60q: redis %q, proxy %q", cmd, got["redis"][i], got["proxy"][i])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
