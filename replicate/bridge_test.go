package replicate_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// evictMetaLate evicts the master's replication metadata as maxmemory does,
// behind n other eviction notifications: one script that publishes n
// notifications of evicted keys (reserved ones, which the evictor skips but
// must read), then deletes the epoch, the counter and the backlog and
// publishes their notifications, in the order the master would.
const evictMetaLate = `
local ch = '__keyevent@0__:evicted'
for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', ch, 'syncproxy:other:' .. i) end
for _, k in ipairs({'syncproxy:epoch', 'syncproxy:seq', 'syncproxy:backlog'}) do
  redis.call('DEL', k)
  redis.call('PUBLISH', ch, k)
end
return 1
`

// TestBridgeEvictionNoticedLate: the metadata evicted whole, the next write
// starts a new epoch, which the appliers see before the evictor has read the
// eviction's notification (it is behind many others, as in the first eviction
// wave of a master given a small maxmemory). The slave crosses to the new
// epoch: no master reset, no resync.
func TestBridgeEvictionNoticedLate(t *testing.T) {
	rg, a, resyncs := convergedRig(t, 10)
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		v, _ := redis.Values(rg.master.Do(t, "PUBSUB", "NUMSUB", "__keyevent@0__:evicted"), nil)
		if len(v) != 2 || v[1] != int64(1) {
			return fmt.Errorf("the evictor is not subscribed: %v", v)
		}
		return nil
	})
	rg.master.Do(t, "EVAL", evictMetaLate, 0, 50000)
	rg.write(t, 0, "SET", "after", "1")
	requireCrossed(t, rg, a, resyncs)
}

// convergedRig returns a rig whose slave applied n writes, its applier and
// the applier's full resyncs so far.
func convergedRig(t *testing.T, n int) (*rig, *replicate.Applier, int64) {
	t.Helper()
	rg := newRig(t)
	for i := 0; i < n; i++ {
		rg.write(t, 0, "SET", fmt.Sprint("k", i), "v")
	}
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	a := rg.repl.Appliers()[0]
	return rg, a, a.Resyncs()
}

// requireCrossed waits for the slave to equal the master and checks that it
// crossed to one new epoch with no full resync and no master reset.
func requireCrossed(t *testing.T, rg *rig, a *replicate.Applier, resyncs int64) {
	t.Helper()
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	if n, m := a.Resyncs()-resyncs, rg.repl.MasterResets(); n != 0 || m != 0 {
		t.Fatalf("metadata evicted: %d full resyncs, %d master resets; want none", n, m)
	}
	if n := rg.repl.EpochsCrossed(); n != 1 {
		t.Fatalf("EpochsCrossed = %d, want 1", n)
	}
}

// luaWrite defines write(v) for the scripts below: it numbers a message of
// epoch (a local of the script) that SETs x to v, as the master script does,
// with ARGV[2] as its time, appends it to the backlog and publishes it.
const luaWrite = `
local function write(v)
  redis.call('SET', 'x', v)
  local seq = redis.call('INCR', 'syncproxy:seq')
  local eff = '*4\r\n$1\r\n0\r\n$3\r\nSET\r\n$1\r\nx\r\n$' .. #v .. '\r\n' .. v .. '\r\n'
  local msg = '*5\r\n$11\r\nsyncproxy/1\r\n$' .. #epoch .. '\r\n' .. epoch .. '\r\n:' .. seq .. '\r\n:' ..
    ARGV[2] .. '\r\n*1\r\n' .. eff
  redis.call('XADD', 'syncproxy:backlog', seq .. '-0', 'm', msg)
  redis.call('PUBLISH', 'test:sync', msg)
end
`

// evictNewEpochHead evicts the metadata, then numbers three messages of a new
// epoch (ARGV[1]) as the master script does, one SET of x each, then evicts
// the backlog and numbers a fourth: the backlog holds only the fourth when the
// proxy first reads the new epoch; the first three are on the channel.
const evictNewEpochHead = `
local ch, epoch = '__keyevent@0__:evicted', ARGV[1]
local function evict(k) redis.call('DEL', k); redis.call('PUBLISH', ch, k) end
` + luaWrite + `
evict('syncproxy:epoch'); evict('syncproxy:seq'); evict('syncproxy:backlog')
redis.call('SET', 'syncproxy:epoch', epoch)
write('1'); write('2'); write('3')
evict('syncproxy:backlog')
write('4')
return 1
`

// TestBridgeNewEpochHeadEvicted: the metadata evicted whole, the master goes on
// in a new epoch whose first messages the backlog lost (evicted) before the
// proxy read it: the slave crosses to the new epoch and catches up with them
// from the channel, without a resync.
func TestBridgeNewEpochHeadEvicted(t *testing.T) {
	rg, a, resyncs := convergedRig(t, 10)
	rg.master.Do(t, "EVAL", evictNewEpochHead, 0, fmt.Sprint("test-epoch-", time.Now().UnixNano()), time.Now().UnixMilli())
	requireCrossed(t, rg, a, resyncs)
}

// backlogLostLate publishes n undecodable messages on the sync channel (the
// subscription reads them before anything after: the backlog reader's fence
// waits for them), then numbers three messages as the master script does (one
// SET of x each), deletes the backlog (no eviction notification) and numbers
// a fourth: the backlog holds only the fourth; the first three are on the
// channel, behind the junk.
const backlogLostLate = `
for i = 1, tonumber(ARGV[1]) do redis.call('PUBLISH', 'test:sync', 'junk') end
local epoch = redis.call('GET', 'syncproxy:epoch')
` + luaWrite + `
write('1'); write('2'); write('3')
redis.call('DEL', 'syncproxy:backlog')
write('4')
return 1
`

// TestBacklogLostBeforeFill: the backlog lost messages the proxy had not read
// yet, and the applier finds it short before the backlog reader has taken
// them from the channel: it waits for them instead of resyncing the slave.
func TestBacklogLostBeforeFill(t *testing.T) {
	rg, a, resyncs := convergedRig(t, 1)
	rg.master.Do(t, "EVAL", backlogLostLate, 0, 10000, time.Now().UnixMilli())
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	if n := a.Resyncs() - resyncs; n != 0 {
		t.Fatalf("backlog lost before it was read: %d full resyncs, want none", n)
	}
}
