package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestFollowerReadsNoBacklog runs a proxy that holds no slave's lease (another
// holder, standing for another proxy, does): under writes through it, it reads
// nothing from the master's backlog (no XRANGE in the master's commandstats), is
// not subscribed to the sync channel (no wake-up per write) while reporting its
// subscription healthy, and its reads still see their writes; a client blocked on
// it makes it subscribe and is woken by a push at once, not by the blocked
// client's retry; when the other holder stops renewing, the proxy takes over
// within the lease's TTL, subscribed, and the slaves converge. Then a second proxy
// follows it and learns the slaves' positions when its reads need them, long
// before its next check.
func TestFollowerReadsNoBacklog(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	fast := func(c *proxy.Config) { c.HealthInterval = 100 * time.Millisecond }

	// A first proxy gives the slaves a position, then stops; another holder
	// takes the leases.
	firstAddr, first := startProxyWith(t, fast, master, slaves...)
	load(t, []string{firstAddr}, 20)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	closeBounded(t, first)
	for _, s := range slaves {
		s.Do(t, "SET", "syncproxy:lease", "another-proxy", "PX", "60000")
	}

	addr, srv := startProxyWith(t, fast, master, slaves...)
	for _, a := range srv.Replicator().Appliers() {
		if a.Leader() {
			t.Fatalf("the proxy took slave %s's lease, held by another", a.Name())
		}
	}
	master.Do(t, "CONFIG", "RESETSTAT")
	load(t, []string{addr}, 200)
	if n := xranges(t, master); n != 0 {
		t.Errorf("a follower-only proxy read the master's backlog %d times (XRANGE), want 0", n)
	}
	if n := syncSubscribers(t, master); n != 0 {
		t.Errorf("the sync channel has %d subscribers with only a follower-only proxy running, want 0", n)
	}
	if !srv.Status().Subscribed {
		t.Error("a follower on standby reports its sync subscription down")
	}

	followerWakesBlocked(t, master, addr, srv)

	// The other holder stops renewing: this proxy takes over.
	for _, s := range slaves {
		s.Do(t, "PEXPIRE", "syncproxy:lease", 300)
	}
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		for _, a := range srv.Replicator().Appliers() {
			if !a.Leader() {
				return fmt.Errorf("slave %s: lease not taken over", a.Name())
			}
		}
		return nil
	})
	waitSyncSubscribers(t, master, 1)
	load(t, []string{addr}, 100)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	followerLearnsPositions(t, master, slaves)
}

// syncSubscribers returns the number of subscribers of the default sync channel.
func syncSubscribers(t *testing.T, master *redistest.Server) int64 {
	t.Helper()
	vals, err := redis.Values(master.Do(t, "PUBSUB", "NUMSUB", "syncproxy:sync"), nil)
	if err != nil || len(vals) != 2 {
		t.Fatalf("PUBSUB NUMSUB: %v %v", vals, err)
	}
	n, _ := redis.Int64(vals[1], nil)
	return n
}

// waitSyncSubscribers waits until the sync channel has n subscribers.
func waitSyncSubscribers(t *testing.T, master *redistest.Server, n int64) {
	t.Helper()
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if got := syncSubscribers(t, master); got != n {
			return fmt.Errorf("the sync channel has %d subscribers, want %d", got, n)
		}
		return nil
	})
}

// followerWakesBlocked blocks a client on the follower-only proxy at addr,
// which subscribes for it, and checks that a push wakes it at once, not its
// retry.
func followerWakesBlocked(t *testing.T, master *redistest.Server, addr string, srv *proxy.Server) {
	t.Helper()
	blocked := redisDial(t, addr)
	got := make(chan error, 1)
	go func() {
		start := time.Now()
		_, err := redis.Values(blocked.Do("BLPOP", "follower:list", 5))
		if d := time.Since(start); err == nil && d > 5*time.Second {
			err = fmt.Errorf("BLPOP returned after %v", d)
		}
		got <- err
	}()
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		if srv.Status().Blocked == 0 {
			return fmt.Errorf("the client is not blocked yet")
		}
		return nil
	})
	waitSyncSubscribers(t, master, 1)
	pusher := redisDial(t, addr)
	pushed := time.Now()
	if _, err := pusher.Do("RPUSH", "follower:list", "x"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("BLPOP: %v", err)
	}
	if d := time.Since(pushed); d > 200*time.Millisecond {
		t.Errorf("a client blocked on a follower was woken %v after the push, want at once", d)
	}
}

// followerLearnsPositions starts a follower whose checks are far apart and
// checks that its reads after its own write go to a slave well before its next
// check: it read the slave's position because a read needed it.
func followerLearnsPositions(t *testing.T, master *redistest.Server, slaves []*redistest.Server) {
	t.Helper()
	slow := func(c *proxy.Config) { c.HealthInterval = 5 * time.Second }
	addr, srv := startProxyWith(t, slow, master, slaves...)
	c := redisDial(t, addr)
	if _, err := c.Do("INCR", "follower:counter"); err != nil {
		t.Fatal(err)
	}
	reads := func() int64 {
		var n int64
		for _, sl := range srv.Router().Slaves() {
			n += sl.Reads.Load()
		}
		return n
	}
	before := reads()
	redistest.CheckFor(t, time.Second, poll, func() error {
		if _, err := c.Do("GET", "follower:counter"); err != nil {
			return err
		}
		if reads() == before {
			return fmt.Errorf("reads after the write still go to the master")
		}
		return nil
	})
	for _, a := range srv.Replicator().Appliers() {
		if a.Leader() {
			t.Errorf("the second proxy took slave %s's lease from the first", a.Name())
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// xranges returns how many XRANGE calls the server counted since CONFIG RESETSTAT.
func xranges(t *testing.T, s *redistest.Server) int64 {
	t.Helper()
	info, err := redis.String(s.Do(t, "INFO", "commandstats"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "cmdstat_xrange:calls="); ok {
			n, _ := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
			return n
		}
	}
	return 0
}

// redisDial connects to addr, closed at the end of the test.
func redisDial(t *testing.T, addr string) redis.Conn {
	t.Helper()
	c, err := redis.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
