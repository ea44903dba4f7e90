package e2e

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// Bounds of the Sentinel test.
const (
	sentinelReadyTimeout = 10 * time.Second // until the sentinel knows the replica
	followTimeout        = 10 * time.Second // from SENTINEL FAILOVER to the proxy on the new master
	writableTimeout      = 5 * time.Second  // from the switch to a write acknowledged again
)

// writeLog counts, across writer goroutines, the writes acknowledged and those
// that got an error (their outcome is unknown: they may or may not have been
// applied).
type writeLog struct {
	mu        sync.Mutex
	incrOK    int
	incrErr   int
	sets      map[string]ackedSet
	setErr    int
	errs      map[string]int // error replies, by text
	lastOK    time.Time
	firstErr  time.Time
	lastErr   time.Time
	stopped   chan struct{}
	wg        sync.WaitGroup
	connFails int
}

// ackedSet is an acknowledged SET: its value and when.
type ackedSet struct {
	val string
	at  time.Time
}

func (l *writeLog) result(incr bool, key, val string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if err != nil {
		if incr {
			l.incrErr++
		} else {
			l.setErr++
		}
		if l.firstErr.IsZero() {
			l.firstErr = now
		}
		l.lastErr = now
		msg := err.Error()
		if i := strings.Index(msg, " to 127.0.0.1:"); i > 0 {
			msg = msg[:i] + " to ..." // one entry per kind of error
		}
		l.errs[msg]++
		return
	}
	if incr {
		l.incrOK++
	} else {
		l.sets[key] = ackedSet{val, now}
	}
	l.lastOK = now
}

func (l *writeLog) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.incrOK
}

func (l *writeLog) ackedSince(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastOK.After(t)
}

// write runs INCR counter and SET w<id>:<i> <i> in turn on the proxy until
// stopped, redialing when the connection breaks; every result is logged.
func (l *writeLog) write(addr string, id int) {
	defer l.wg.Done()
	var c redis.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-l.stopped:
			return
		default:
		}
		if c == nil {
			var err error
			c, err = redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second),
				redis.DialReadTimeout(10*time.Second), redis.DialWriteTimeout(10*time.Second))
			if err != nil {
				l.mu.Lock()
				l.connFails++
				l.mu.Unlock()
				continue
			}
		}
		var err error
		if i%2 == 0 {
			_, err = redis.Int64(c.Do("INCR", "counter"))
			l.result(true, "", "", err)
		} else {
			key, val := "w"+strconv.Itoa(id)+":"+strconv.Itoa(i), strconv.Itoa(i)
			_, err = redis.String(c.Do("SET", key, val))
			l.result(false, key, val, err)
		}
		var re redis.Error
		if err != nil && !errors.As(err, &re) {
			c.Close() // a network error: the outcome is unknown, dial again
			c = nil
		}
	}
}

// TestSentinelFailover runs the proxy with --sentinel in front of a master M with
// a native replica R, and two independent slaves; a write load runs through the
// proxy while SENTINEL FAILOVER promotes R. The proxy, which hears the sentinel
// start the promotion, holds the writes meanwhile; it must follow to R, writes
// must work again within a bound, every acknowledged write must be on R, and the
// slaves must converge to R exactly.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	testFailover(t, failoverManual)
}

// TestSentinelFailoverUnseen is TestSentinelFailover with the proxy knowing only
// a sentinel that did not lead the failover: it learns of it late (that sentinel
// hears of it through Sentinel's hello messages), while M still takes writes
// that R will never have — Sentinel's known window of lost writes. The writes
// acknowledged after the proxy switched must all be on R; and since the slaves
// applied writes that R lacks, the proxy must give R a new epoch, so that they
// resync and converge to R exactly instead of diverging.
func TestSentinelFailoverUnseen(t *testing.T) {
	t.Parallel()
	testFailover(t, failoverUnseen)
}

// TestSentinelMasterCrash: the master is killed (SIGKILL) under write load; the
// sentinel sees it down and promotes the replica by itself, and the proxy
// follows. Writes in flight at the crash fail; writes the master acknowledged
// but had not replicated yet are lost (asynchronous replication: the proxy
// renews the epoch if the slaves applied some, so that they resync); every write
// acknowledged after the switch is on the new master, and the slaves converge.
func TestSentinelMasterCrash(t *testing.T) {
	t.Parallel()
	testFailover(t, failoverCrash)
}

type failoverMode int

const (
	failoverManual failoverMode = iota // SENTINEL FAILOVER, the proxy knows the leader
	failoverUnseen                     // SENTINEL FAILOVER, the proxy knows another sentinel
	failoverCrash                      // the master is killed
)

// Acknowledged writes may be lost in Sentinel's window in every mode. With the
// proxy knowing the leader (manual), the hold closes it when the proxy hears the
// promotion within Sentinel's tick before REPLICAOF NO ONE, which a loaded machine
// does not always do (seen once in a full e2e run: 2 of 633 increments lost): the
// test asks that only writes acknowledged after the failover began be missing,
// that the slaves converge to the new master, and that every write acknowledged
// after the switch be on it.
func testFailover(t *testing.T, mode failoverMode) {
	unseen := mode == failoverUnseen
	const name = "mymaster"
	m := redistest.Start(t)
	_, mport, _ := net.SplitHostPort(m.Addr)
	r := redistest.Start(t, "--replicaof", "127.0.0.1", mport)
	slaves := redistest.StartN(t, 2)
	redistest.CheckFor(t, sentinelReadyTimeout, poll, func() error {
		if st := r.Info(t, "replication", "master_link_status"); st != "up" {
			return fmt.Errorf("replica link %s", st)
		}
		return nil
	})
	sen := redistest.StartSentinel(t, m, redistest.SentinelOptions{Name: name})
	waitSentinelReplica(t, sen, name, r.Addr)
	known := sen // the sentinel the proxy knows
	if unseen {
		known = redistest.StartSentinel(t, m, redistest.SentinelOptions{Name: name})
		waitSentinelReplica(t, known, name, r.Addr)
	}

	// The first sentinel listed is down: the proxy asks the next one.
	dead := deadAddr(t)
	addr, srv := startProxyWith(t, func(c *proxy.Config) {
		c.Master = ""
		c.Sentinels = []string{dead, known.Addr}
		c.SentinelMaster = name
		c.BackendTimeout = 5 * time.Second
		c.HealthInterval = 100 * time.Millisecond
	}, m, slaves...)
	if got := srv.MasterAddr(); got != m.Addr {
		t.Fatalf("proxy's master %s, want %s", got, m.Addr)
	}

	log := &writeLog{sets: map[string]ackedSet{}, errs: map[string]int{}, stopped: make(chan struct{})}
	const writers = 2
	for i := 0; i < writers; i++ {
		log.wg.Add(1)
		go log.write(addr, i)
	}
	stopWriters := sync.OnceFunc(func() {
		close(log.stopped)
		log.wg.Wait()
	})
	t.Cleanup(stopWriters)
	redistest.CheckFor(t, 10*time.Second, poll, func() error {
		if n := log.acked(); n < 300 {
			return fmt.Errorf("%d increments acknowledged", n)
		}
		return nil
	})

	oldEpoch, _ := redis.String(m.Do(t, "GET", "syncproxy:epoch"), nil)
	ackedBefore := log.acked()
	start := time.Now()
	if mode == failoverCrash {
		m.Kill(t)
	} else if got := sen.Do(t, "SENTINEL", "FAILOVER", name); got != "OK" {
		t.Fatalf("SENTINEL FAILOVER: %v", got)
	}
	var followed time.Duration
	redistest.CheckFor(t, followTimeout, poll, func() error {
		if v := proxyInfo(t, addr, "master"); !strings.HasPrefix(v, "addr="+r.Addr+",") {
			return fmt.Errorf("INFO master: %s", v)
		}
		followed = time.Since(start)
		return nil
	})
	switched := time.Now()
	redistest.CheckFor(t, writableTimeout, poll, func() error {
		if !log.ackedSince(switched) {
			return errors.New("no write acknowledged since the switch")
		}
		return nil
	})
	writable := time.Since(start)
	// Some more load on the new master, then stop.
	base := log.acked()
	redistest.CheckFor(t, 10*time.Second, poll, func() error {
		if n := log.acked(); n < base+300 {
			return fmt.Errorf("%d increments acknowledged since the switch", n-base)
		}
		return nil
	})
	stopWriters()

	log.mu.Lock()
	defer log.mu.Unlock()
	t.Logf("proxy on the new master %v after the failover began (SENTINEL FAILOVER or the kill), a write acknowledged again after %v; "+
		"INCR acknowledged %d, failed %d; SET acknowledged %d, failed %d; errors %v",
		followed.Round(time.Millisecond), writable.Round(time.Millisecond), log.incrOK, log.incrErr, len(log.sets), log.setErr, log.errs)
	if !log.firstErr.IsZero() {
		t.Logf("errors from %v to %v after the failover began", log.firstErr.Sub(start).Round(time.Millisecond),
			log.lastErr.Sub(start).Round(time.Millisecond))
	}
	if v := proxyInfo(t, addr, "sentinel"); !strings.Contains(v, "switches=1,") {
		t.Errorf("INFO sentinel: %s", v)
	}
	if got := srv.Replicator().Master().Addr; got != r.Addr {
		t.Errorf("replicator's master %s, want %s", got, r.Addr)
	}

	// Every acknowledged write is on the new master; a failed one may or may not be.
	counter, err := redis.Int(r.Do(t, "GET", "counter"), nil)
	if err != nil {
		t.Fatalf("GET counter on the new master: %v", err)
	}
	newEpoch, _ := redis.String(r.Do(t, "GET", "syncproxy:epoch"), nil)
	t.Logf("counter on the new master %d; epoch renewed: %v", counter, newEpoch != oldEpoch)
	switch {
	case counter > log.incrOK+log.incrErr:
		t.Errorf("counter %d on the new master, more than the %d increments sent: a write was applied twice", counter, log.incrOK+log.incrErr)
	case counter < ackedBefore && mode == failoverManual:
		t.Errorf("counter %d on the new master, fewer than the %d increments acknowledged before SENTINEL FAILOVER", counter, ackedBefore)
	case counter < log.incrOK && newEpoch == oldEpoch && mode != failoverManual:
		// (Manual: the few writes of the late hold may not have reached the
		// slaves, and then no new epoch is needed; WaitConverged below checks.)
		t.Errorf("the new master lacks acknowledged writes (counter %d < %d) but kept the epoch: slaves that applied them would diverge", counter, log.incrOK)
	}
	missing, lost := 0, 0
	for key, set := range log.sets {
		if got, _ := redis.String(r.Do(t, "GET", key), nil); got != set.val {
			if set.at.Before(switched) && (mode != failoverManual || set.at.After(start)) {
				lost++ // acknowledged by M while Sentinel had promoted R already
				continue
			}
			missing++
			if missing <= 5 {
				t.Errorf("SET %s %s acknowledged %v after SENTINEL FAILOVER: the new master has %q", key, set.val, set.at.Sub(start).Round(time.Millisecond), got)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged SETs missing on the new master", missing, len(log.sets))
	}
	t.Logf("%d SETs acknowledged by the old master before the proxy switched are not on the new one (Sentinel's window of lost writes)", lost)
	redistest.WaitConverged(t, convergeTimeout, r, slaves...)
}

// waitSentinelReplica waits until the sentinel monitors replica as a healthy
// replica of the master: only then can it promote it.
func waitSentinelReplica(t *testing.T, sen *redistest.Server, name, replica string) {
	t.Helper()
	redistest.CheckFor(t, sentinelReadyTimeout, 20*time.Millisecond, func() error {
		list, err := redis.Values(sen.Do(t, "SENTINEL", "REPLICAS", name), nil)
		if err != nil {
			return err
		}
		for _, r := range list {
			f, err := redis.StringMap(r, nil)
			if err != nil {
				return err
			}
			if f["name"] == replica && f["flags"] == "slave" && f["master-link-status"] == "ok" {
				return nil
			}
		}
		return fmt.Errorf("sentinel does not know %s as a healthy replica yet (%d replicas)", replica, len(list))
	})
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// proxyInfo returns one field of the proxy's INFO.
func proxyInfo(t *testing.T, addr, field string) string {
	t.Helper()
	c := redistest.DialRaw(t, addr)
	defer c.Close()
	v, _ := infoField(c, field)
	return v
}
