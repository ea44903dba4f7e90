package replicate_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// rig is a master, a slave, a replicator between them, and a backend that runs
// writes through the master script (what the proxy does, without sessions).
type rig struct {
	master, slave *redistest.Server
	repl          *replicate.Replicator
	b             *router.Backend
	rewrite       map[string]bool
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srvs := redistest.StartN(t, 2)
	return newRigOn(t, srvs[0], srvs[1], 10000, 10000)
}

// newRigOn builds a rig on existing servers (several rigs may share them, like
// several proxies do).
func newRigOn(t *testing.T, master, slave *redistest.Server, queueLen, backlogLen int) *rig {
	t.Helper()
	return newRigWith(t, master, slave, queueLen, backlogLen, nil)
}

// newRigWith is newRigOn with the replicator's Config changed by set first.
func newRigWith(t *testing.T, master, slave *redistest.Server, queueLen, backlogLen int, set func(*replicate.Config)) *rig {
	t.Helper()
	table := router.BuiltinTable()
	rg := &rig{master: master, slave: slave}
	cfg := replicate.Config{
		RecentLen:    queueLen, // a backlog trimmed below the slave is lost to the proxy too
		Master:       replicate.Endpoint{Name: "master", Addr: rg.master.Addr},
		Slaves:       []replicate.Endpoint{{Name: "slave-1", Addr: rg.slave.Addr}},
		Channel:      "test:sync",
		QueueLen:     queueLen,
		BacklogLen:   backlogLen,
		PollInterval: 100 * time.Millisecond,
		Keys: func(args [][]byte, dst []int) []int {
			if ci := table.Lookup(args); ci != nil {
				return ci.KeyIndexes(args, dst)
			}
			return dst
		},
		Log: zerolog.Nop(),
	}
	if set != nil {
		set(&cfg)
	}
	rg.repl = replicate.New(cfg)
	rg.repl.Start()
	t.Cleanup(rg.repl.Close)
	ms := replicate.MasterScript()
	rg.b = router.NewBackend(router.BackendOptions{Name: "master", Addr: rg.master.Addr, Conns: 1, Timeout: 5 * time.Second, Log: zerolog.Nop(),
		Script: &router.WriteScript{SHA: ms.SHA, Body: ms.Body, Args: [][]byte{[]byte(rg.repl.EpochCandidate()), []byte(fmt.Sprint(backlogLen)), []byte("test:sync")}}})
	t.Cleanup(rg.b.Close)
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !rg.b.Up() || !rg.repl.Appliers()[0].Online() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	return rg
}

// write runs one write through the script, as the proxy would route it.
func (rg *rig) write(t *testing.T, db int, args ...string) string {
	t.Helper()
	raw := redcon.AppendArray(nil, len(args))
	bargs := make([][]byte, len(args))
	for i, a := range args {
		raw = redcon.AppendBulkString(raw, a)
		bargs[i] = []byte(a)
	}
	rt := router.New(router.BuiltinTable(), nil, nil).Route(bargs)
	r := &router.Request{Kind: router.KindWrite, DB: db, Raw: raw, Argc: len(args), Mode: rt.Mode}
	w := router.NewWaiter()
	w.Add(r)
	rg.b.Submit(0, r)
	w.Wait()
	return string(r.Reply)
}

func TestEffects(t *testing.T) {
	rg := newRig(t)
	now := time.Now().UnixMilli()
	at := func(d time.Duration) string { return fmt.Sprint(now + d.Milliseconds()) }
	steps := []struct {
		args []string
		want string // expected reply prefix
	}{
		{[]string{"SADD", "s", "a", "b", "c", "d", "e", "f"}, ":6"},
		{[]string{"SPOP", "s"}, "$1"},
		{[]string{"SPOP", "s", "2"}, "*2"},
		{[]string{"SPOP", "nosuch"}, "$-1"},
		{[]string{"SET", "f", "10.5"}, "+OK"},
		{[]string{"PEXPIRE", "f", "100000"}, ":1"},
		{[]string{"INCRBYFLOAT", "f", "0.1"}, "$4\r\n10.6"},
		{[]string{"HINCRBYFLOAT", "h", "x", "1.25"}, "$4\r\n1.25"},
		{[]string{"SET", "e1", "v", "EX", "100"}, "+OK"},
		{[]string{"SET", "e2", "v", "PX", "100000", "GET"}, "$-1"},
		{[]string{"SET", "e3", "v", "EXAT", fmt.Sprint(now/1000 + 300)}, "+OK"},
		{[]string{"SET", "e4", "v", "PXAT", at(400 * time.Second)}, "+OK"},
		{[]string{"SET", "e1", "w", "KEEPTTL"}, "+OK"},
		{[]string{"SET", "e2", "x", "EX", "50", "NX"}, "$-1"},
		{[]string{"SETEX", "e5", "100", "v"}, "+OK"},
		{[]string{"PSETEX", "e6", "100000", "v"}, "+OK"},
		{[]string{"SET", "t1", "v"}, "+OK"},
		{[]string{"EXPIRE", "t1", "100"}, ":1"},
		{[]string{"EXPIRE", "t1", "50", "GT"}, ":0"},
		{[]string{"EXPIRE", "t1", "200", "GT"}, ":1"},
		{[]string{"PEXPIRE", "t1", "10000", "LT"}, ":1"},
		{[]string{"EXPIRE", "t1", "10", "NX"}, ":0"},
		{[]string{"EXPIRE", "t1", "10", "XX"}, ":1"},
		{[]string{"EXPIREAT", "t1", fmt.Sprint(now/1000 + 500)}, ":1"},
		{[]string{"SET", "t2", "v"}, "+OK"},
		{[]string{"GETEX", "t2", "PX", "123456"}, "$1"},
		{[]string{"SET", "t3", "v", "EX", "100"}, "+OK"},
		{[]string{"GETEX", "t3", "PERSIST"}, "$1"},
		{[]string{"PERSIST", "e5"}, ":1"},
		{[]string{"SET", "gone", "v"}, "+OK"},
		{[]string{"EXPIRE", "gone", "-1"}, ":1"},
		{[]string{"XADD", "st", "MAXLEN", "~", "5", "*", "f", "v"}, "$"},
		{[]string{"XADD", "st", "*", "f", "v2"}, "$"},
		{[]string{"XADD", "st", "NOMKSTREAM", "*", "f", "v3"}, "$"},
		{[]string{"XADD", "nost", "NOMKSTREAM", "*", "f", "v"}, "$-1"},
		{[]string{"XTRIM", "st", "MAXLEN", "~", "1"}, ":"},
		{[]string{"XTRIM", "st", "MAXLEN", "1"}, ":"},
		{[]string{"SET", "big", "9007199254740990"}, "+OK"},
		{[]string{"INCRBY", "big", "9000000000000000000"}, ":9009007199254740990"},
		{[]string{"INCR", "big"}, ":9009007199254740991"},
		{[]string{"DECRBY", "big", "1"}, ":9009007199254740990"},
		{[]string{"HINCRBY", "hb", "f", "9223372036854775806"}, ":9223372036854775806"},
		{[]string{"INCRBY", "big", "9000000000000000000"}, "-ERR increment or decrement would overflow"},
		{[]string{"LPUSH", "big", "x"}, "-WRONGTYPE"},
		{[]string{"RPUSH", "l", "a", "b"}, ":2"},
		{[]string{"PEXPIRE", "l", "300000"}, ":1"},
	}
	for _, s := range steps {
		got := rg.write(t, 0, s.args...)
		if !strings.HasPrefix(got, s.want) {
			t.Fatalf("%q: reply %q, want prefix %q", s.args, got, s.want)
		}
	}
	// RESTORE with a relative TTL: the slave gets the absolute time.
	dump := rg.master.Do(t, "DUMP", "l").([]byte)
	if got := rg.write(t, 0, "RESTORE", "l2", "250000", string(dump)); got != "+OK\r\n" {
		t.Fatalf("RESTORE: %q", got)
	}
	// Other DBs, and FLUSHDB of a DB other than 0.
	rg.write(t, 5, "SET", "k5", "v", "EX", "1000")
	rg.write(t, 6, "SET", "k6", "v")
	rg.write(t, 6, "FLUSHDB")
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)

	// FLUSHALL keeps the replication epoch: the slave follows without a resync.
	epoch := string(rg.master.Do(t, "GET", replicate.KeyEpoch).([]byte))
	resyncs := rg.repl.Appliers()[0].Resyncs()
	if got := rg.write(t, 0, "FLUSHALL"); got != "+OK\r\n" {
		t.Fatalf("FLUSHALL: %q", got)
	}
	rg.write(t, 0, "SET", "after", "flush")
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	if e := string(rg.master.Do(t, "GET", replicate.KeyEpoch).([]byte)); e != epoch {
		t.Fatalf("epoch changed by FLUSHALL: %s -> %s", epoch, e)
	}
	if n := rg.repl.Appliers()[0].Resyncs(); n != resyncs {
		t.Fatalf("FLUSHALL caused %d full resyncs", n-resyncs)
	}
}

// TestResyncUnderLoad restarts the slave empty while clients keep writing: the
// full resync copies the master while keys change, and the slave still ends exact,
// with every counter equal to the increments acknowledged.
func TestResyncUnderLoad(t *testing.T) {
	rg := newRig(t)
	for i := 0; i < 3000; i++ {
		rg.master.Do(t, "SET", fmt.Sprintf("pre:%d", i), "x")
	}
	stop := make(chan struct{})
	var acked [4]int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := i % 4
			if strings.HasPrefix(rg.write(t, 0, "INCR", fmt.Sprintf("ctr:%d", c)), ":") {
				acked[c]++
			}
			rg.write(t, 0, "LPUSH", "list", fmt.Sprint(i))
			rg.write(t, 1, "SADD", "set", fmt.Sprint(i%50))
			rg.write(t, 0, "RENAME", fmt.Sprintf("pre:%d", i%3000), fmt.Sprintf("pre:%d", (i+7)%3000))
			rg.write(t, 0, "SET", fmt.Sprintf("pre:%d", i%3000), fmt.Sprint(i))
			rg.write(t, 0, "SUNIONSTORE", "dest", "set", "list2")
		}
	}()
	a := rg.repl.Appliers()[0]
	before := a.Resyncs()
	rg.slave.Restart(t)
	redistest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if a.Resyncs() == before || !a.Online() {
			return fmt.Errorf("no resync yet (state %s)", a.State())
		}
		return nil
	})
	close(stop)
	<-done
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	for c, n := range acked {
		v := rg.slave.Do(t, "GET", fmt.Sprintf("ctr:%d", c))
		if v == nil && n == 0 {
			continue
		}
		if string(v.([]byte)) != fmt.Sprint(n) {
			t.Errorf("ctr:%d on the slave = %s, %d increments acknowledged", c, v, n)
		}
	}
}

// TestClaimEffects: XCLAIM and XAUTOCLAIM reach the slave as forced claims with the
// master's delivery times and counts, so the pending entries match exactly.
func TestClaimEffects(t *testing.T) {
	rg := newRig(t)
	for i := 1; i <= 5; i++ {
		rg.write(t, 0, "XADD", "s", fmt.Sprintf("%d-0", i), "f", "v")
	}
	steps := [][]string{
		{"XGROUP", "CREATE", "s", "g", "0"},
		{"XREADGROUP", "GROUP", "g", "alice", "COUNT", "4", "STREAMS", "s", ">"},
		{"XCLAIM", "s", "g", "bob", "0", "1-0", "2-0"},
		{"XCLAIM", "s", "g", "carol", "0", "3-0", "JUSTID"},
		{"XDEL", "s", "4-0"},
		{"XAUTOCLAIM", "s", "g", "dave", "0", "0-0", "COUNT", "10"},
		{"XCLAIM", "s", "g", "erin", "3600000", "1-0"},
		{"XADD", "s", "6-0", "f", "v"},
		{"XREADGROUP", "GROUP", "g", "frank", "STREAMS", "s", ">"},
		{"XREADGROUP", "GROUP", "g", "frank", "STREAMS", "s", ">"},
		{"XADD", "s", "7-0", "f", "v"},
		{"XREADGROUP", "GROUP", "g", "gina", "NOACK", "STREAMS", "s", ">"},
	}
	for _, s := range steps {
		if got := rg.write(t, 0, s...); strings.HasPrefix(got, "-") {
			t.Fatalf("%q: %q", s, got)
		}
	}
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	// The pending entries, with their absolute delivery times (XINFO STREAM FULL).
	pending := func(srv *redistest.Server) string {
		v := srv.Do(t, "XINFO", "STREAM", "s", "FULL").([]interface{})
		var b strings.Builder
		for i := 0; i+1 < len(v); i += 2 {
			if string(v[i].([]byte)) != "groups" {
				continue
			}
			for _, g := range v[i+1].([]interface{}) {
				gf := g.([]interface{})
				for j := 0; j+1 < len(gf); j += 2 {
					if string(gf[j].([]byte)) != "pending" {
						continue
					}
					for _, e := range gf[j+1].([]interface{}) {
						f := e.([]interface{})
						fmt.Fprintf(&b, "%s %s %d %d; ", f[0], f[1], f[2], f[3])
					}
				}
			}
		}
		return b.String()
	}
	if m, s := pending(rg.master), pending(rg.slave); m != s || m == "" {
		t.Fatalf("pending entries (id, owner, delivery time, count):\nmaster %q\nslave  %q", m, s)
	}
}
