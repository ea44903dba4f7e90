package router_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// bigWrite returns a KindWrite request of name key and n members, split as the
// proxy splits it.
func bigWrite(db int, name, key string, n int) *router.Request {
	args := [][]byte{[]byte(name), []byte(key)}
	for i := 0; i < n; i++ {
		args = append(args, []byte("m"+strconv.Itoa(i)))
	}
	sp, ok := replicate.SplitOf(args)
	if !ok {
		panic("no split for " + name)
	}
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = string(a)
	}
	return &router.Request{Kind: router.KindWrite, DB: db, Raw: cmd(s...), Argc: len(args), Split: sp}
}

// TestBackendNativeWrite: writes too large for the master script run natively,
// in order with the small writes around them in one batch, each numbered once
// with its effects split into parts a slave can apply; a failed one takes no
// number.
func TestBackendNativeWrite(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 5*time.Second, true)
	small := func(db int, args ...string) *router.Request {
		return &router.Request{Kind: router.KindWrite, DB: db, Raw: cmd(args...), Argc: len(args)}
	}
	reqs := []*router.Request{
		small(0, "INCR", "c"),
		bigWrite(3, "SADD", "s", 20000),
		small(3, "SADD", "s", "m1", "extra"),
		bigWrite(3, "RPUSH", "s", 10000), // WRONGTYPE
		small(0, "INCR", "c"),
		{Kind: router.KindRaw, DB: 3, Raw: cmd("SCARD", "s")},
	}
	do(b, reqs...)
	want := []string{":1\r\n", ":20000\r\n", ":1\r\n",
		"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", ":2\r\n", ":20001\r\n"}
	for i, r := range reqs {
		if string(r.Reply) != want[i] {
			t.Errorf("reply %d = %q, want %q", i, r.Reply, want[i])
		}
	}
	seqs := []int64{reqs[0].Seq, reqs[1].Seq, reqs[2].Seq, reqs[3].Seq, reqs[4].Seq}
	if seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 || seqs[3] != 0 || seqs[4] != 4 {
		t.Fatalf("sequence numbers %v, want [1 2 3 0 4]", seqs)
	}
	if reqs[1].Epoch == "" || reqs[1].Epoch != reqs[0].Epoch {
		t.Errorf("epochs %q and %q", reqs[0].Epoch, reqs[1].Epoch)
	}
	entries, err := redis.Values(srv.Do(t, "XRANGE", replicate.KeyBacklog, "2-0", "2-0"), nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("backlog entry 2: %v %v", entries, err)
	}
	fields, _ := redis.ByteSlices(entries[0].([]interface{})[1], nil)
	m, err := replicate.DecodeMessage(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range m.Effects {
		if e.DB != 3 || string(e.Args[0]) != "SADD" || string(e.Args[1]) != "s" || len(e.Args) > 4000 {
			t.Fatalf("effect in DB %d: %s ... (%d arguments)", e.DB, e.Args[:2], len(e.Args))
		}
		for _, a := range e.Args[2:] {
			seen[string(a)] = true
		}
	}
	if len(m.Effects) < 5 || len(seen) != 20000 {
		t.Errorf("%d effects carrying %d members, want 20000 members in parts", len(m.Effects), len(seen))
	}
	if n := srv.Do(t, "EXISTS", replicate.KeyErrs); n != int64(0) {
		t.Errorf("%s left on the master", replicate.KeyErrs)
	}
	// The script flushed from the master behind the proxy's back: a large
	// write still tells failure from success, and is numbered.
	srv.Do(t, "SCRIPT", "FLUSH")
	failed, ok := bigWrite(3, "RPUSH", "s", 10000), bigWrite(0, "SADD", "t", 10000)
	do(b, failed, ok)
	if failed.Seq != 0 || !strings.HasPrefix(string(failed.Reply), "-WRONGTYPE") {
		t.Errorf("after SCRIPT FLUSH, failed write: %q seq %d", failed.Reply, failed.Seq)
	}
	if ok.Seq != 5 || string(ok.Reply) != ":10000\r\n" {
		t.Errorf("after SCRIPT FLUSH, write: %q seq %d, want seq 5", ok.Reply, ok.Seq)
	}
}

// TestSplitOf pins how large writes split: the head every part repeats (with
// ZADD's and GEOADD's options), the group size, and what cannot be split.
func TestSplitOf(t *testing.T) {
	for line, want := range map[string]replicate.Split{
		"SADD s a b":           {Head: 2, Group: 1},
		"del a b c":            {Head: 1, Group: 1},
		"MSET a 1 b 2":         {Head: 1, Group: 2},
		"HSET h f v":           {Head: 2, Group: 2},
		"ZADD z NX ch 1 a 2 b": {Head: 4, Group: 2},
		"zadd z 1 nx":          {Head: 2, Group: 2},
		"GEOADD g XX 1 2 a":    {Head: 3, Group: 3},
		"XACK s g 1-0 2-0":     {Head: 3, Group: 1},
		"MSETNX a 1 b 2":       {},
		"SUNIONSTORE d a b":    {},
		"EVAL return 0":        {},
		"SET k v":              {},
	} {
		got, ok := replicate.SplitOf(bytesArgs(strings.Fields(line)))
		if got != want || ok != (want.Group > 0) {
			t.Errorf("SplitOf(%s) = %v %v, want %v", line, got, ok, want)
		}
	}
}

func bytesArgs(s []string) [][]byte {
	out := make([][]byte, len(s))
	for i, a := range s {
		out[i] = []byte(a)
	}
	return out
}

// TestBackendNativeGroup: writes that cannot fail once queued (ModeNative) run
// natively on the master, grouped per DB in transactions numbered by a short
// script; each group is one message holding every write's effect in order, and
// the writes keep their place among the script's writes (a script call may
// carry the native writes queued behind its own). A group the master
// refuses when queued (OOM) gets the master's error and no number.
func TestBackendNativeGroup(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 5*time.Second, true)
	nat := func(db int, args ...string) *router.Request {
		return &router.Request{Kind: router.KindWrite, DB: db, Raw: cmd(args...), Argc: len(args), Mode: replicate.ModeNative}
	}
	reqs := []*router.Request{
		nat(0, "SET", "a", "1"), nat(0, "SET", "b", "2"), nat(0, "MSET", "c", "3", "d", "4"),
		nat(2, "SET", "e", "5"),
		{Kind: router.KindWrite, DB: 0, Raw: cmd("INCR", "x"), Argc: 2, Mode: replicate.ModeRewrite},
		nat(0, "SETNX", "a", "9"), nat(0, "MSETNX", "f", "6"),
	}
	do(b, reqs...)
	want := []string{"+OK\r\n", "+OK\r\n", "+OK\r\n", "+OK\r\n", ":1\r\n", ":0\r\n", ":1\r\n"}
	for i, r := range reqs {
		if string(r.Reply) != want[i] {
			t.Errorf("reply %d = %q, want %q", i, r.Reply, want[i])
		}
		if r.Seq <= 0 || r.Epoch != "epoch-test-"+strings.TrimPrefix(r.Epoch, "epoch-test-") {
			t.Errorf("request %d: seq %d epoch %q", i, r.Seq, r.Epoch)
		}
		if i > 0 && r.Seq < reqs[i-1].Seq {
			t.Errorf("request %d numbered %d, before request %d's %d", i, r.Seq, i-1, reqs[i-1].Seq)
		}
	}
	if reqs[3].Seq == reqs[2].Seq {
		t.Errorf("a native group across DBs: numbers %d %d", reqs[2].Seq, reqs[3].Seq)
	}
	got := backlogEffects(t, srv)
	wantEff := []string{"0 SET a 1", "0 SET b 2", "0 MSET c 3 d 4", "2 SET e 5", "0 INCR x", "0 SETNX a 9", "0 MSETNX f 6"}
	if strings.Join(got, "|") != strings.Join(wantEff, "|") {
		t.Errorf("effects in the backlog:\n%v\nwant\n%v", got, wantEff)
	}
	if n := srv.CommandCalls(t, "evalsha"); n != 1 {
		t.Errorf("%d EVALSHA on the master, want 1 (INCR's)", n)
	}
	if n := srv.CommandCalls(t, "exec"); n < 2 {
		t.Errorf("%d EXEC on the master, want one per native group", n)
	}

	srv.Do(t, "CONFIG", "SET", "maxmemory", "1")
	oom := []*router.Request{nat(0, "SET", "g", "7"), nat(0, "MSET", "h", "8")}
	do(b, oom...)
	srv.Do(t, "CONFIG", "SET", "maxmemory", "0")
	for i, r := range oom {
		if !strings.HasPrefix(string(r.Reply), "-OOM ") || r.Seq != 0 {
			t.Errorf("under OOM, write %d: %q seq %d", i, r.Reply, r.Seq)
		}
	}
	if n, _ := redis.Int(srv.Do(t, "EXISTS", "g", "h"), nil); n != 0 {
		t.Errorf("%d refused keys written", n)
	}
	if got := backlogEffects(t, srv); len(got) != len(wantEff) {
		t.Errorf("refused writes numbered: %v", got[len(wantEff):])
	}
}

// backlogEffects returns every effect in the master's backlog, in order, as
// "<db> <args...>".
func backlogEffects(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	entries, err := redis.Values(srv.Do(t, "XRANGE", replicate.KeyBacklog, "-", "+"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		fields, _ := redis.ByteSlices(e.([]interface{})[1], nil)
		m, err := replicate.DecodeMessage(fields[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, eff := range m.Effects {
			s := strconv.Itoa(eff.DB)
			for _, a := range eff.Args {
				s += " " + string(a)
			}
			out = append(out, s)
		}
	}
	return out
}
