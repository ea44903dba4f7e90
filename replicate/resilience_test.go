package replicate_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// load writes through rg until stop closes: INCRs on a few counters (counting the
// acknowledged ones), pushes and sets. It returns the acknowledged increments.
func load(t *testing.T, rg *rig, prefix string, stop chan struct{}) func() map[string]int {
	acked := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("ctr:%d", i%5)
			if strings.HasPrefix(rg.write(t, i%3, "INCR", k), ":") {
				mu.Lock()
				acked[fmt.Sprintf("%d/%s", i%3, k)]++
				mu.Unlock()
			}
			rg.write(t, 0, "RPUSH", prefix+"list", fmt.Sprint(i))
			rg.write(t, 0, "SET", fmt.Sprintf("%skey:%d", prefix, i%100), fmt.Sprint(i))
		}
	}()
	return func() map[string]int {
		<-done
		return acked
	}
}

// checkCounters compares the counters on the slave with the acknowledged increments.
func checkCounters(t *testing.T, slave *redistest.Server, acked ...map[string]int) {
	t.Helper()
	total := map[string]int{}
	for _, m := range acked {
		for k, n := range m {
			total[k] += n
		}
	}
	c := slave.Dial(t)
	for k, n := range total {
		var db int
		var key string
		fmt.Sscanf(k, "%d/%s", &db, &key)
		c.Do("SELECT", db)
		v, err := c.Do("GET", key)
		if err != nil || string(v.([]byte)) != fmt.Sprint(n) {
			t.Errorf("db %d %s on the slave = %s (%v), %d increments acknowledged", db, key, v, err, n)
		}
	}
}

func TestPubSubKilled(t *testing.T) {
	rg := newRig(t)
	stop := make(chan struct{})
	wait := load(t, rg, "", stop)
	for i := 0; i < 5; i++ {
		redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if rg.repl.Latest() == 0 {
				return fmt.Errorf("no messages yet")
			}
			return nil
		})
		rg.master.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	close(stop)
	acked := wait()
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	checkCounters(t, rg.slave, acked)
}

func TestSlavePausedOverflow(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	rg := newRigOn(t, srvs[0], srvs[1], 20, 100000)
	stop := make(chan struct{})
	wait := load(t, rg, "", stop)
	rg.slave.Pause(t)
	start := rg.repl.Latest()
	redistest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if rg.repl.Latest()-start < 500 {
			return fmt.Errorf("only %d messages while the slave is paused", rg.repl.Latest()-start)
		}
		return nil
	})
	rg.slave.Resume(t)
	close(stop)
	acked := wait()
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	checkCounters(t, rg.slave, acked)
	if rg.repl.Appliers()[0].CatchUps() == 0 {
		t.Error("the overflow was not caught up from the backlog")
	}
}

func TestBacklogTrimmedBelowSlave(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	rg := newRigOn(t, srvs[0], srvs[1], 20, 100000)
	stop := make(chan struct{})
	wait := load(t, rg, "", stop)
	a := rg.repl.Appliers()[0]
	resyncs := a.Resyncs()
	rg.slave.Pause(t)
	start := rg.repl.Latest()
	redistest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if rg.repl.Latest()-start < 200 {
			return fmt.Errorf("only %d messages", rg.repl.Latest()-start)
		}
		return nil
	})
	// The backlog loses what the slave has not applied yet.
	rg.master.Do(t, "XTRIM", replicate.KeyBacklog, "MAXLEN", "10")
	rg.slave.Resume(t)
	redistest.CheckFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if a.Resyncs() == resyncs {
			return fmt.Errorf("no full resync yet")
		}
		return nil
	})
	close(stop)
	acked := wait()
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	checkCounters(t, rg.slave, acked)
}

// TestTwoProxies runs two writers and two replicators (two proxies) on the same
// master and slave, incrementing and pushing to the same keys.
func TestTwoProxies(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	rg1 := newRigOn(t, srvs[0], srvs[1], 10000, 100000)
	rg2 := newRigOn(t, srvs[0], srvs[1], 10000, 100000)
	stop := make(chan struct{})
	w1 := load(t, rg1, "", stop)
	w2 := load(t, rg2, "", stop)
	redistest.CheckFor(t, 20*time.Second, 5*time.Millisecond, func() error {
		if rg1.repl.Latest() < 2000 {
			return fmt.Errorf("only %d messages", rg1.repl.Latest())
		}
		return nil
	})
	close(stop)
	a1, a2 := w1(), w2()
	redistest.WaitConverged(t, 20*time.Second, srvs[0], srvs[1])
	checkCounters(t, srvs[1], a1, a2)
}

// TestMasterRestartedEmpty: the master loses its data; the slave follows the new
// data set (a new epoch), without keeping anything of the old one.
func TestMasterRestartedEmpty(t *testing.T) {
	rg := newRig(t)
	rg.write(t, 0, "SET", "old", "1")
	rg.write(t, 0, "INCR", "n")
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	before := rg.repl.Appliers()[0].Epoch()
	rg.master.Restart(t)
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if got := rg.write(t, 0, "INCR", "n"); got != ":1\r\n" {
			return fmt.Errorf("INCR: %q", got)
		}
		return nil
	})
	rg.write(t, 0, "SET", "new", "2")
	redistest.WaitConverged(t, 20*time.Second, rg.master, rg.slave)
	if after := rg.repl.Appliers()[0].Epoch(); after == before {
		t.Fatalf("epoch unchanged: %s", after)
	}
	if v := rg.slave.Do(t, "EXISTS", "old"); v.(int64) != 0 {
		t.Fatal("the slave kept a key of the old data set")
	}
}
