package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/history"
	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestHistorySoak runs only when asked: go test ./internal/e2e -run TestHistorySoak
// -history 2m (make soak runs it after TestSoak).
var (
	historyFor   = flag.Duration("history", 0, "run TestHistorySoak for this long (0 skips it)")
	historyKill  = flag.Duration("historykill", 20*time.Second, "TestHistorySoak: time between two slave restarts")
	historyLevel = flag.String("historylevel", "", "TestHistorySoak: CLIENT CONSISTENCY level of every connection (empty: the proxy's default)")
)

// Parameters of the history workload.
const (
	histClients   = 8                      // a quarter of them read-only
	histReadOnly  = histClients / 4        // the last ones
	histShared    = 16                     // keys k0.. every writer INCRs
	histOwned     = 4                      // keys s0.. each SET by one writer, to increasing values
	histPauseMs   = "200"                  // CLIENT PAUSE of the held-back slave
	histPauseGap  = 300 * time.Millisecond // between two pauses
	histIOTimeout = 5 * time.Second
	histShowErrs  = 5
)

// TestHistory records what 8 clients do and see through two proxies in front of one
// master and two slaves, one slave held back now and then with CLIENT PAUSE WRITE,
// and checks the history (see internal/history): at the proxy's default level the
// session guarantees; at `global` (set with CLIENT CONSISTENCY) with pooled clients
// (writes on one connection, reads on another, through the other proxy) every read
// sees every write acknowledged before it; with --read-policy master, linearizability.
// No read of a key that exists may answer nil, and no slave is resynced in full.
func TestHistory(t *testing.T) {
	t.Parallel()
	shared := startHistory(t, nil) // for the runs without adjust
	for _, v := range []struct {
		name   string
		level  string
		pooled bool
		adjust func(*proxy.Config)
		checks history.Checks
		run    time.Duration
	}{
		{"default", "", false, nil, history.Session, 2 * time.Second},
		{"global", "global", true, nil, history.GlobalLevel, 1500 * time.Millisecond},
		{"master", "", true, func(c *proxy.Config) { c.ReadPolicy = "master" },
			history.GlobalLevel | history.Linearizable, time.Second},
	} {
		t.Run(v.name, func(t *testing.T) {
			hs := shared
			if v.adjust != nil {
				hs = startHistory(t, v.adjust)
			}
			hs.requireLevel(t, v.level)
			hs.begin(t)
			before := hs.resyncs()
			ctx, cancel := context.WithTimeout(context.Background(), v.run)
			defer cancel()
			st := hs.run(ctx, v.level, v.pooled)
			t.Logf("%d pauses of slave %s; %d errors", st.pauses, hs.slaves[1].Addr, st.errs.n.Load())
			for _, e := range st.errs.list() {
				t.Errorf("client error: %s", e)
			}
			if n := hs.resyncs() - before; n != 0 {
				t.Errorf("%d full resyncs, want 0", n)
			}
			hs.check(t, v.checks)
			redistest.WaitConverged(t, convergeTimeout, hs.master, hs.slaves...)
		})
	}
}

// TestHistorySoak is TestHistory for -history, at -historylevel, with a slave
// stopped (killed or shut down, alternately) and restarted empty every
// -historykill, the other held back with CLIENT PAUSE. Client errors while a slave
// is down are counted, not failures; violations are, and so is a full resync when
// no slave was restarted.
func TestHistorySoak(t *testing.T) {
	if *historyFor <= 0 {
		t.Skip("a soak run: go test ./internal/e2e -run TestHistorySoak -history 2m, or make soak")
	}
	hs := startHistory(t, nil)
	level := *historyLevel
	hs.requireLevel(t, level)
	hs.begin(t)
	before := hs.resyncs() // the first copy of each new slave
	ctx, cancel := context.WithTimeout(context.Background(), *historyFor)
	defer cancel()
	done := make(chan histStats, 1)
	go func() { done <- hs.run(ctx, level, level == "global") }()
	kill := time.NewTicker(*historyKill)
	defer kill.Stop()
	kills := 0
	var st histStats
	for running := true; running; {
		select {
		case <-kill.C:
			restartSlave(t, hs.srvs[kills%2], hs.slaves[0], kills)
			kills++
		case st = <-done:
			running = false
		}
	}
	resyncs := hs.resyncs() - before
	t.Logf("%d slave restarts, %d pauses, %d client errors, %d full resyncs", kills, st.pauses, st.errs.n.Load(), resyncs)
	if kills == 0 && resyncs != 0 {
		t.Errorf("%d full resyncs with no slave restarted, want 0", resyncs)
	}
	for _, e := range st.errs.list() {
		t.Logf("client error: %s", e)
	}
	checks := history.Session
	if level == "global" {
		checks = history.GlobalLevel
	}
	hs.check(t, checks)
	redistest.WaitConverged(t, soakSettle, hs.master, hs.slaves...)
}

// histSetup is a master, two slaves, two proxies and the history of their clients.
type histSetup struct {
	master *redistest.Server
	slaves []*redistest.Server
	addrs  []string
	srvs   []*proxy.Server
	h      *history.History // of the current run
}

// startHistory starts the servers and two proxies (adjust changes their
// configuration) and gives every key a value, on every slave.
func startHistory(t *testing.T, adjust func(*proxy.Config)) *histSetup {
	t.Helper()
	servers := redistest.StartN(t, 3)
	hs := &histSetup{master: servers[0], slaves: servers[1:]}
	for i := 0; i < 2; i++ {
		addr, srv := startProxyWith(t, adjust, hs.master, hs.slaves...)
		hs.addrs, hs.srvs = append(hs.addrs, addr), append(hs.srvs, srv)
	}
	c, err := redis.Dial("tcp", hs.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, key := range histKeys() {
		if _, err := c.Do("SET", key, "0"); err != nil {
			t.Fatalf("SET %s 0: %v", key, err)
		}
	}
	return hs
}

// begin starts a new history, once the slaves hold the master's data, with the
// keys' values on the master as their initial values.
func (hs *histSetup) begin(t *testing.T) {
	t.Helper()
	redistest.WaitConverged(t, convergeTimeout, hs.master, hs.slaves...)
	for _, srv := range hs.srvs {
		waitOnline(t, srv)
	}
	hs.h = history.New()
	mc := hs.master.Dial(t)
	for _, key := range histKeys() {
		v, err := redis.Int64(mc.Do("GET", key))
		if err != nil {
			t.Fatalf("GET %s on the master: %v", key, err)
		}
		hs.h.Init(key, v)
	}
}

// histKeys are the keys of the workload: the shared ones, then the owned ones.
func histKeys() []string {
	var keys []string
	for i := 0; i < histShared; i++ {
		keys = append(keys, "k"+strconv.Itoa(i))
	}
	for i := 0; i < histOwned; i++ {
		keys = append(keys, "s"+strconv.Itoa(i))
	}
	return keys
}

// requireLevel skips the test unless the proxy accepts CLIENT CONSISTENCY level
// ("" needs nothing).
func (hs *histSetup) requireLevel(t *testing.T, level string) {
	t.Helper()
	if level == "" {
		return
	}
	c, err := redis.Dial("tcp", hs.addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Do("CLIENT", "CONSISTENCY", level)
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.Contains(strings.ToLower(err.Error()), "unknown") {
		t.Skipf("the proxy has no CLIENT CONSISTENCY %s yet (issue 12, item 3): %v", level, err)
	}
	if err != nil {
		t.Fatalf("CLIENT CONSISTENCY %s: %v", level, err)
	}
}

// resyncs counts the full resyncs of both proxies so far.
func (hs *histSetup) resyncs() (n int64) {
	for _, srv := range hs.srvs {
		for _, a := range srv.Replicator().Appliers() {
			n += a.Resyncs()
		}
	}
	return n
}

// check checks the history and fails the test on any violation.
func (hs *histSetup) check(t *testing.T, checks history.Checks) {
	t.Helper()
	start := time.Now()
	rep := hs.h.Check(history.Config{Checks: checks, Slaves: len(hs.slaves)})
	t.Logf("checked in %v: %s", time.Since(start).Round(time.Millisecond), rep.Summary())
	if rep.Total() != 0 {
		t.Errorf("%d violations: %s", rep.Total(), rep.String())
	}
	for _, n := range rep.Notes {
		t.Logf("note: %s", n)
	}
}

// histStats are the figures of a run.
type histStats struct {
	pauses int
	errs   *errList
}

// run runs the clients and holds slave 1 back until ctx ends.
func (hs *histSetup) run(ctx context.Context, level string, pooled bool) histStats {
	st := histStats{errs: &errList{}}
	var wg sync.WaitGroup
	var conns atomic.Int64
	tokens := &tokenBox{}
	init := hs.h.Inits()
	for id := 0; id < histClients; id++ {
		c := &histClient{id: id, h: hs.h, level: level, pooled: pooled, readOnly: id >= histClients-histReadOnly,
			rnd: rand.New(rand.NewSource(int64(id))), tokens: tokens, connIDs: &conns, errs: st.errs,
			owned: init["s"+strconv.Itoa(id)]} // SETs continue from the key's value
		c.proxies = [2]int{id % 2, (id + 1) % 2}
		c.addrs = [2]string{hs.addrs[c.proxies[0]], hs.addrs[c.proxies[1]]}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx)
		}()
	}
	st.pauses = pauseWrites(ctx, hs.slaves[1].Addr)
	wg.Wait()
	return st
}

// pauseWrites sends CLIENT PAUSE <histPauseMs> WRITE to the slave at addr every
// histPauseGap until ctx ends, redialing after errors (the slave may be down), and
// returns the number of pauses.
func pauseWrites(ctx context.Context, addr string) int {
	tick := time.NewTicker(histPauseGap)
	defer tick.Stop()
	var c redis.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		if c == nil {
			var err error
			if c, err = redis.Dial("tcp", addr, redis.DialReadTimeout(time.Second)); err != nil {
				c = nil
				continue
			}
		}
		if _, err := c.Do("CLIENT", "PAUSE", histPauseMs, "WRITE"); err != nil {
			c.Close()
			c = nil
			continue
		}
		n++
	}
}

// tokenBox holds the latest CLIENT SYNCTOKEN reply of any writer.
type tokenBox struct {
	mu  sync.Mutex
	tok string
}

func (b *tokenBox) put(tok string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tok = tok
}

func (b *tokenBox) get() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tok
}

// errList counts client errors and keeps the first few.
type errList struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (l *errList) add(format string, args ...interface{}) {
	if l.n.Add(1) > histShowErrs {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.first = append(l.first, fmt.Sprintf(format, args...))
}

func (l *errList) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.first...)
}
