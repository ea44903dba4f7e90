package replicate_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestEvictionConditional: the conditional delete removes from the slave the
// keys the master no longer holds, and keeps a key evicted and written again
// before it ran, and the reserved keys.
func TestEvictionConditional(t *testing.T) {
	rg := newRig(t)
	rg.write(t, 0, "SET", "gone", "1")
	rg.write(t, 0, "SET", "back", "1")
	rg.write(t, 2, "SET", "gone2", "1")
	rg.write(t, 0, "SET", "kept", "1")
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	// Evictions, as the master makes them: not replicated by themselves.
	c := rg.master.Dial(t)
	defer c.Close()
	for _, cmd := range [][]interface{}{{"DEL", "gone", "back"}, {"SELECT", 2}, {"DEL", "gone2"}, {"SELECT", 0}} {
		if _, err := c.Do(cmd[0].(string), cmd[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	// Written again before the conditional delete runs.
	rg.write(t, 0, "SET", "back", "again")
	seq, deleted, err := rg.repl.ReplicateEvictions(c, []replicate.EvictedKey{
		{DB: 0, Key: "gone"}, {DB: 0, Key: "back"}, {DB: 2, Key: "gone2"},
		{DB: 0, Key: "syncproxy:seq"}, {DB: 0, Key: "kept"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if deleted != 2 || seq == 0 {
		t.Fatalf("deleted %d keys at seq %d, want 2 at a new seq", deleted, seq)
	}
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	if v, _ := redis.String(rg.slave.Do(t, "GET", "back"), nil); v != "again" {
		t.Fatalf("slave's back = %q, want again", v)
	}
	if n := rg.slave.Do(t, "EXISTS", "gone", "kept"); n != int64(1) {
		t.Fatalf("EXISTS gone kept on the slave: %v, want 1", n)
	}
	if got := rg.repl.EvictionsReplicated(); got != 2 {
		t.Fatalf("EvictionsReplicated = %d, want 2", got)
	}
	// Every key present: no message.
	if seq, deleted, err = rg.repl.ReplicateEvictions(c, []replicate.EvictedKey{{DB: 0, Key: "kept"}, {DB: 0, Key: "back"}}); err != nil || seq != 0 || deleted != 0 {
		t.Fatalf("second call: seq %d deleted %d err %v, want nothing", seq, deleted, err)
	}
}

// notifyFlags returns the master's notify-keyspace-events.
func notifyFlags(t *testing.T, s *redistest.Server) string {
	t.Helper()
	v, err := redis.Strings(s.Do(t, "CONFIG", "GET", "notify-keyspace-events"), nil)
	if err != nil || len(v) != 2 {
		t.Fatalf("CONFIG GET notify-keyspace-events: %v %v", v, err)
	}
	return v[1]
}

// TestEvictionNotifyRestored: the replicator adds E and e to the master's
// notify-keyspace-events, keeps the operator's flags, puts them back (and
// again when someone else clears them) and restores the operator's value on Close.
func TestEvictionNotifyRestored(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	srvs[0].Do(t, "CONFIG", "SET", "notify-keyspace-events", "Kx")
	orig := notifyFlags(t, srvs[0])
	rg := newRigOn(t, srvs[0], srvs[1], 10000, 10000)
	enabled := func() error {
		f := notifyFlags(t, srvs[0])
		for _, c := range []string{"K", "x", "E", "e"} {
			if !strings.Contains(f, c) {
				return fmt.Errorf("notify-keyspace-events %q lacks %s", f, c)
			}
		}
		return nil
	}
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, enabled)
	srvs[0].Do(t, "CONFIG", "SET", "notify-keyspace-events", orig)
	redistest.CheckFor(t, 20*time.Second, 50*time.Millisecond, enabled)
	rg.repl.Close()
	if got := notifyFlags(t, srvs[0]); got != orig {
		t.Fatalf("notify-keyspace-events after Close: %q, want %q", got, orig)
	}
}

// TestSlaveEvictingLeavesReadSet: a slave that evicts keys of its own is no
// longer Online (out of the read set) until its stats are reset.
func TestSlaveEvictingLeavesReadSet(t *testing.T) {
	rg := newRig(t)
	a := rg.repl.Appliers()[0]
	used, _ := strconv.ParseInt(rg.slave.Info(t, "memory", "used_memory"), 10, 64)
	rg.slave.Do(t, "CONFIG", "SET", "maxmemory-policy", "allkeys-random")
	rg.slave.Do(t, "CONFIG", "SET", "maxmemory", strconv.FormatInt(used+300<<10, 10))
	v := strings.Repeat("v", 1000)
	var keys []string
	for i := 0; rg.slave.Info(t, "stats", "evicted_keys") == "0"; i++ {
		if i == 5000 {
			t.Fatal("the slave evicted nothing")
		}
		k := "big:" + strconv.Itoa(i)
		keys = append(keys, k)
		rg.write(t, 0, "SET", k, v)
	}
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a.Online() || !a.Evicting() {
			return fmt.Errorf("online %v evicting %v", a.Online(), a.Evicting())
		}
		return nil
	})
	rg.slave.Do(t, "CONFIG", "SET", "maxmemory", "0")
	rg.slave.Do(t, "CONFIG", "RESETSTAT")
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !a.Online() || a.Evicting() {
			return fmt.Errorf("online %v evicting %v", a.Online(), a.Evicting())
		}
		return nil
	})
	// The keys the slave lost, gone from the master too: equal again.
	for _, k := range keys {
		rg.write(t, 0, "DEL", k)
	}
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
}

// TestEvictionSweep: keys the master dropped while the eviction subscription
// was down (here deleted behind the proxy's back, as an eviction nobody heard
// of) are found by the sweep when it is back and deleted on the slave; the
// keys the master holds stay.
func TestEvictionSweep(t *testing.T) {
	rg := newRig(t)
	rg.master.Do(t, "CONFIG", "SET", "maxmemory", "1gb")
	rg.master.Do(t, "CONFIG", "SET", "maxmemory-policy", "allkeys-random")
	for i := 0; i < 1200; i++ {
		rg.write(t, i%3, "SET", "k"+strconv.Itoa(i), "v")
	}
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	c := rg.master.Dial(t)
	defer c.Close()
	for db := 0; db < 3; db++ {
		c.Do("SELECT", db)
		for i := db; i < 1200; i += 30 { // 40 keys of each DB
			c.Do("DEL", "k"+strconv.Itoa(i))
		}
	}
	if n := rg.slave.Do(t, "EXISTS", "k0", "k30"); n != int64(2) {
		t.Fatalf("the slave lost the keys by itself: EXISTS %v", n)
	}
	// Cut the subscriptions: the evictor comes back and sweeps.
	rg.master.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	if got := rg.repl.EvictionsReplicated(); got != 120 {
		t.Errorf("EvictionsReplicated = %d, want 120", got)
	}
}
