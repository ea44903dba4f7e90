package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// staleReads writes then immediately reads the same key n times and counts the
// reads that did not see the write.
func staleReads(t *testing.T, c *redistest.RawConn, n int) int {
	t.Helper()
	stale := 0
	for i := 0; i < n; i++ {
		v := strconv.Itoa(i)
		c.Do("SET", "ryw", v)
		if got := string(c.Do("GET", "ryw")); got != "$"+strconv.Itoa(len(v))+"\r\n"+v+"\r\n" {
			stale++
		}
	}
	return stale
}

// TestReadYourWrites: with the slave held back (CLIENT PAUSE WRITE on it), a client
// that writes then reads never reads stale data with read-your-writes on; with it
// off it does (proof that the test can fail).
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	for _, ryw := range []bool{true, false} {
		servers := redistest.StartN(t, 2)
		master, slave := servers[0], servers[1]
		addr, srv := startProxyWith(t, func(c *proxy.Config) { c.ReadYourWrites = ryw }, master, slave)
		c := redistest.DialRaw(t, addr)
		slave.Do(t, "CLIENT", "PAUSE", "3000", "WRITE")
		stale := staleReads(t, c, 3000)
		t.Logf("read-your-writes %v: %d stale reads of 3000; slave served %d reads", ryw, stale, srv.Router().Slaves()[0].Reads.Load())
		if ryw && stale != 0 {
			t.Errorf("%d stale reads with read-your-writes on", stale)
		}
		if !ryw && stale == 0 {
			t.Errorf("no stale read with read-your-writes off: the test cannot tell")
		}
		slave.Do(t, "CLIENT", "UNPAUSE")
	}
}

// TestMaxLag: a slave beyond --max-lag-messages serves no reads until it is back
// within the bound.
func TestMaxLag(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, srv := startProxyWith(t, func(c *proxy.Config) {
		c.ReadYourWrites = false
		c.MaxLagMessages = 10
	}, master, slave)
	sl := srv.Router().Slaves()[0]
	c := redistest.DialRaw(t, addr)
	c.Do("SET", "k", "v")
	redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		before := sl.Reads.Load()
		c.Do("GET", "k")
		if sl.Reads.Load() == before {
			return errString("the slave serves no reads")
		}
		return nil
	})
	slave.Do(t, "CLIENT", "PAUSE", "20000", "WRITE")
	for i := 0; i < 100; i++ {
		c.Do("INCR", "n")
	}
	redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if lag := srv.Replicator().Appliers()[0].LagMessages(); lag <= 10 {
			return errString("lag " + strconv.FormatInt(lag, 10))
		}
		return nil
	})
	before := sl.Reads.Load()
	for i := 0; i < 50; i++ {
		c.Do("GET", "k")
	}
	if n := sl.Reads.Load() - before; n != 0 {
		t.Errorf("a slave beyond max-lag served %d reads", n)
	}
	slave.Do(t, "CLIENT", "UNPAUSE")
	redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		before := sl.Reads.Load()
		c.Do("GET", "k")
		if sl.Reads.Load() == before {
			return errString("the slave is not readmitted")
		}
		return nil
	})
}

// TestWait: WAIT counts the slaves that applied the client's last write.
func TestWait(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, ":2\r\n", "WAIT", "2", "1000") // no write yet: every online slave
	c.Do("SET", "k", "1")
	mustReply(t, c, ":2\r\n", "WAIT", "2", "0")
	slaves[1].Do(t, "CLIENT", "PAUSE", "3000", "WRITE")
	c.Do("SET", "k", "2")
	start := time.Now()
	mustReply(t, c, ":1\r\n", "WAIT", "2", "300")
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("WAIT 2 300 returned after %v with one slave held back", d)
	}
	mustReply(t, c, ":1\r\n", "WAIT", "1", "0")
	slaves[1].Do(t, "CLIENT", "UNPAUSE")
	mustReply(t, c, ":2\r\n", "WAIT", "2", "0")
	if r := string(c.Do("WAIT", "1", "-1")); !strings.HasPrefix(r, "-ERR") {
		t.Errorf("WAIT with a negative timeout: %q", r)
	}
}

// TestCausalToken: another connection given CLIENT SYNCTOKEN's token sees the write.
func TestCausalToken(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ReadYourWrites = false }, master, slave)
	a, b := redistest.DialRaw(t, addr), redistest.DialRaw(t, addr)
	mustReply(t, a, "$0\r\n\r\n", "CLIENT", "SYNCTOKEN")
	slave.Do(t, "CLIENT", "PAUSE", "3000", "WRITE")
	for i := 0; i < 200; i++ {
		v := strconv.Itoa(i)
		a.Do("SET", "tok", v)
		tok := string(a.Do("CLIENT", "SYNCTOKEN"))
		tok = tok[strings.Index(tok, "\r\n")+2 : len(tok)-2]
		mustReply(t, b, "+OK\r\n", "CLIENT", "SYNCAFTER", tok)
		mustReply(t, b, "$"+strconv.Itoa(len(v))+"\r\n"+v+"\r\n", "GET", "tok")
	}
	slave.Do(t, "CLIENT", "UNPAUSE")
	if r := string(b.Do("CLIENT", "SYNCAFTER", "garbage")); !strings.HasPrefix(r, "-ERR syncproxy: invalid sync token") {
		t.Errorf("bad token: %q", r)
	}
}

// TestReadPolicies: each policy routes reads where it says; weights split reads.
func TestReadPolicies(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	reads := func(policy string, weights map[string]int) (int64, []int64, string) {
		addr, srv := startProxyWith(t, func(c *proxy.Config) {
			c.ReadPolicy = policy
			c.Weights = weights
		}, master, slaves...)
		c := redistest.DialRaw(t, addr)
		last := ""
		for i := 0; i < 2000; i++ {
			last = string(c.Do("GET", "nokey"))
		}
		var per []int64
		for _, sl := range srv.Router().Slaves() {
			per = append(per, sl.Reads.Load())
		}
		return srv.Router().MasterReads.Load(), per, last
	}
	if m, per, _ := reads("master", nil); m != 2000 || per[0]+per[1] != 0 {
		t.Errorf("master: master %d, slaves %v", m, per)
	}
	if m, per, _ := reads("prefer-master", nil); m != 2000 || per[0]+per[1] != 0 {
		t.Errorf("prefer-master: master %d, slaves %v", m, per)
	}
	if m, per, _ := reads("slave", nil); m != 0 || per[0]+per[1] != 2000 {
		t.Errorf("replica: master %d, slaves %v", m, per)
	}
	if m, per, _ := reads("any", nil); m == 0 || per[0] == 0 || per[1] == 0 {
		t.Errorf("any: master %d, slaves %v", m, per)
	}
	_, per, _ := reads("prefer-slave", map[string]int{slaves[0].Addr: 1, slaves[1].Addr: 3})
	if ratio := float64(per[1]) / float64(per[0]); ratio < 2.7 || ratio > 3.3 {
		t.Errorf("weights 1:3 gave %v", per)
	}
	// replica with no eligible slave: an error, never the master.
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.ReadPolicy = "slave" }, master, slaves...)
	// Paused for longer than the test can take on a loaded machine, then let go.
	for _, s := range slaves {
		s.Do(t, "CLIENT", "PAUSE", "20000", "WRITE")
		defer s.Do(t, "CLIENT", "UNPAUSE")
	}
	c := redistest.DialRaw(t, addr)
	c.Do("SET", "x", "1") // the slaves cannot apply it: read-your-writes finds none
	if r := string(c.Do("GET", "x")); !strings.HasPrefix(r, "-ERR syncproxy: no slave is eligible") {
		t.Errorf("slave policy, no eligible slave: %q", r)
	}
}

// TestSlaveRestartedEmptyServesNoStaleReads: a slave restarted empty is taken out
// of the read set as soon as the proxy reconnects to it, until it is resynced:
// no read returns missing data meanwhile (read-your-writes off, so nothing else
// protects the reads).
func TestSlaveRestartedEmptyServesNoStaleReads(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, srv := startProxyWith(t, func(c *proxy.Config) { c.ReadYourWrites = false }, master, slave)
	c := redistest.DialRaw(t, addr)
	for i := 0; i < 200; i++ {
		c.Do("SET", "key:"+strconv.Itoa(i), "v")
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
	resyncs := srv.Replicator().Appliers()[0].Resyncs()
	slave.Restart(t)
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if r := string(c.Do("GET", "key:"+strconv.Itoa(i%200))); r != "$1\r\nv\r\n" {
			t.Fatalf("read %d after the slave restarted empty: %q", i, r)
		}
	}
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if srv.Replicator().Appliers()[0].Resyncs() == resyncs {
			return errString("no resync yet")
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}

// TestRYWWaitServedBySlave: with --ryw-wait, a read after a write waits for the
// slave (held back by CLIENT PAUSE WRITE) instead of going to the master, and is
// answered by it once it applied the write, well before ryw-wait ends (the
// applier's move wakes the read).
func TestRYWWaitServedBySlave(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	master, slave := servers[0], servers[1]
	addr, srv := startProxyWith(t, func(c *proxy.Config) { c.RYWWait = 10 * time.Second }, master, slave)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "k", "0")
	mustReply(t, c, ":1\r\n", "WAIT", "1", "0")
	rt := srv.Router()
	masterReads, slaveReads := rt.MasterReads.Load(), rt.Slaves()[0].Reads.Load()
	slave.Do(t, "CLIENT", "PAUSE", "300", "WRITE")
	mustReply(t, c, "+OK\r\n", "SET", "k", "1")
	start := time.Now()
	mustReply(t, c, "$1\r\n1\r\n", "GET", "k")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the read waited %v: not woken when the slave applied the write", d)
	}
	if n := rt.MasterReads.Load() - masterReads; n != 0 {
		t.Errorf("%d reads went to the master", n)
	}
	if n := rt.Slaves()[0].Reads.Load() - slaveReads; n != 1 {
		t.Errorf("the slave served %d reads, want 1", n)
	}
	redistest.WaitConverged(t, 10*time.Second, master, slave)
}
