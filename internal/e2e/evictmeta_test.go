package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestMetadataSurvivesEviction: the epoch and the sequence counter removed from
// the master as an eviction removes them (the backlog staying) are restored from
// the backlog: no master reset, no slave emptied, no write failed; then a write
// load on a master at a small maxmemory with allkeys-lru, which evicts them
// again and again (the backlog with them), fails no write, resyncs no slave, and
// leaves the slaves equal to the master.
func TestMetadataSurvivesEviction(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	c, err := redis.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	value := strings.Repeat("v", 100)
	write := func(from, n int) {
		t.Helper()
		for batch := from; batch < from+n; batch++ {
			for i := 0; i < 100; i++ {
				c.Send("SET", "key:"+strconv.Itoa(batch*100+i), value)
			}
			c.Flush()
			for i := 0; i < 100; i++ {
				if _, err := c.Receive(); err != nil {
					t.Fatalf("SET %d: %v", batch*100+i, err)
				}
			}
		}
	}
	resyncs := func() (n int64) {
		for _, a := range srv.Replicator().Appliers() {
			n += a.Resyncs()
		}
		return n
	}
	write(0, 5)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	before := resyncs()
	for _, k := range [][]string{{replicate.KeyEpoch}, {replicate.KeySeq}, {replicate.KeyEpoch, replicate.KeySeq}} {
		args := []interface{}{}
		for _, key := range k {
			args = append(args, key)
		}
		master.Do(t, "DEL", args...)
		write(5, 5)
		redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	}
	if n := resyncs() - before; n != 0 || srv.Replicator().MasterResets() != 0 {
		t.Errorf("removed metadata taken for a master that lost its data: %d full resyncs, %d master resets", n, srv.Replicator().MasterResets())
	}

	// allkeys-lru: the metadata, touched by every write, is as likely to go as
	// any key written in the same second (Redis' LRU clock ticks in seconds), so
	// the epoch, the counter and the backlog go together now and then: the
	// master starts a new epoch, which the slaves cross to without a resync.
	master.Do(t, "CONFIG", "SET", "maxmemory", "2mb")
	master.Do(t, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
	write(10, 200)
	info, _ := redis.String(master.Do(t, "INFO", "stats"), nil)
	evicted := -1
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "evicted_keys:"); ok {
			evicted, _ = strconv.Atoi(v)
		}
	}
	if evicted < 1000 {
		t.Fatalf("the master evicted %d keys; the test needs thousands", evicted)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	repl := srv.Replicator()
	t.Logf("the master evicted %d keys; %d deleted on the slaves; slaves crossed to a new epoch %d times; %d messages the backlog lost taken from the channel",
		evicted, repl.EvictionsReplicated(), repl.EpochsCrossed(), repl.GapsFilled())
	if n := resyncs() - before; n != 0 || repl.MasterResets() != 0 {
		t.Errorf("evictions on the master caused %d full resyncs and %d master resets", n, repl.MasterResets())
	}
}
