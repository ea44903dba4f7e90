package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Settings of the -proxies-lag runs.
const (
	lagConns      = 48                     // load connections, split evenly across the proxies
	lagKeyspace   = 100000                 // keys of the load, bench:lag:key:0..
	lagValueSize  = 32                     // bytes of each SET's value
	lagWarmup     = time.Second            // load alone before the first probe
	lagProbeEvery = 5 * time.Millisecond   // one probe write through a proxy
	lagPollEvery  = 500 * time.Microsecond // pause between two GETs of the probe key on a slave
	lagSlaves     = 2
)

// lagProbeKey holds the probe's sequence number; each probe writes the next one.
const lagProbeKey = "bench:lag:probe"

// lagSetup is one -proxies-lag entry: n proxies, the load through all of them
// or (first) through the first one only.
type lagSetup struct {
	n     int
	first bool
}

// parseLagSetup parses "N" or "N:first".
func parseLagSetup(s string) (lagSetup, error) {
	num, via, _ := strings.Cut(s, ":")
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > lagConns || (via != "" && via != "first") {
		return lagSetup{}, fmt.Errorf("-proxies-lag: %q is not N or N:first with N from 1 to %d", s, lagConns)
	}
	return lagSetup{n: n, first: via == "first"}, nil
}

func (s lagSetup) String() string {
	if s.first {
		return strconv.Itoa(s.n) + ":first"
	}
	return strconv.Itoa(s.n)
}

// lagResult is one -proxies-lag run.
type lagResult struct {
	setup      lagSetup
	offered    float64         // SET/s asked of the load generator
	achieved   float64         // SET/s it completed
	loadErrors int64           // failed SETs of the load
	probes     int             // probe writes acknowledged
	lags       []time.Duration // one per slave per probe seen there, from the write's reply
	fromSend   []time.Duration // the same from the write's sending
	unseen     int             // (probe, slave) pairs never seen within drainTimeout
	appliers   []int           // per slave: proxies reporting role=applier after the run
	cpu        []procCPUShare  // per process of the run, over the probing time
}

// procCPUShare is the CPU one process of a run used while the probes ran.
type procCPUShare struct {
	name  string  // master, slave-1, proxy-2, ...
	role  string  // for a proxy: how many slaves it applies to ("applies 2", "follows")
	share float64 // CPU time / wall time (1 = one core busy)
}

// runProxiesLag measures the replication lag with each proxy count of -proxies-lag
// and prints the table.
func (b *bench) runProxiesLag(ctx context.Context) error {
	b.lagHeader()
	var results []lagResult
	for _, setup := range b.opt.proxiesLag {
		res, err := b.proxiesLag(ctx, setup)
		if err != nil {
			return fmt.Errorf("-proxies-lag %s: %w", setup, err)
		}
		fmt.Fprintf(b.log, "lag run: proxies=%s, %.0f SET/s, %d probes, p99 %s\n",
			setup, res.achieved, res.probes, fmtMs(durPercentile(res.lags, 0.99)))
		results = append(results, res)
	}
	b.reportProxiesLag(results)
	return nil
}

// proxiesLag starts a fresh master, lagSlaves slaves and n proxies in front of
// them, runs the load and the probes, and stops them all again.
func (b *bench) proxiesLag(ctx context.Context, setup lagSetup) (lagResult, error) {
	n := setup.n
	res := lagResult{setup: setup, offered: b.opt.lagRate}
	b.procsMu.Lock()
	mark := len(b.procs)
	b.procsMu.Unlock()
	defer func() {
		b.procsMu.Lock()
		procs := slices.Clone(b.procs[mark:])
		b.procsMu.Unlock()
		stopAll(procs)
	}()
	prefix := "lag" + strconv.Itoa(n) + "-"
	m, err := b.startRedis(ctx, prefix+"master")
	if err != nil {
		return res, err
	}
	var slaves, proxies []string
	for i := 1; i <= lagSlaves; i++ {
		s, err := b.startRedis(ctx, prefix+"slave-"+strconv.Itoa(i))
		if err != nil {
			return res, err
		}
		slaves = append(slaves, s.addr)
	}
	for i := 1; i <= n; i++ {
		addr, err := b.startProxy(ctx, "syncproxy-"+prefix+strconv.Itoa(i), m.addr, slaves)
		if err != nil {
			return res, err
		}
		proxies = append(proxies, addr)
	}

	loaded := proxies
	if setup.first {
		loaded = proxies[:1]
	}
	load := startLoad(ctx, loaded, b.opt.lagRate)
	select {
	case <-ctx.Done():
	case <-time.After(lagWarmup):
	}
	b.procsMu.Lock()
	run := slices.Clone(b.procs[mark:])
	b.procsMu.Unlock()
	cpu := startCPU(run)
	p, err := probeLag(ctx, proxies, slaves, b.opt.lagDuration)
	res.cpu = cpu.stop()
	res.achieved, res.loadErrors = load.stop()
	if err != nil {
		return res, err
	}
	res.probes, res.lags, res.fromSend, res.unseen = p.probes, p.lags, p.fromSend, p.unseen
	res.appliers = countAppliers(proxies, lagSlaves)
	roles := proxyRoles(proxies)
	k := 0
	for i := range res.cpu {
		if strings.HasPrefix(res.cpu[i].name, "proxy") && k < len(roles) {
			res.cpu[i].role = roles[k]
			k++
		}
	}
	return res, nil
}

// cpuSample is the CPU time of a run's processes at its start.
type cpuSample struct {
	procs []*proc
	at    time.Time
	used  []time.Duration
}

func startCPU(procs []*proc) *cpuSample {
	s := &cpuSample{procs: procs, at: time.Now()}
	for _, p := range procs {
		d, _ := procCPU(p.cmd.Process.Pid)
		s.used = append(s.used, d)
	}
	return s
}

// stop returns each process's CPU share since startCPU, named by its role in the
// run (nil where the CPU time cannot be read).
func (s *cpuSample) stop() []procCPUShare {
	wall := time.Since(s.at)
	var out []procCPUShare
	for i, p := range s.procs {
		d, ok := procCPU(p.cmd.Process.Pid)
		if !ok {
			return nil
		}
		name := p.name[strings.LastIndexByte(p.name, '-')+1:]
		switch {
		case strings.HasPrefix(p.name, "syncproxy"):
			name = "proxy-" + name
		case strings.Contains(p.name, "slave"):
			name = "slave-" + name
		}
		out = append(out, procCPUShare{name: name, share: float64(d-s.used[i]) / float64(wall)})
	}
	return out
}

// proxyRoles asks every proxy's INFO to how many slaves it applies.
func proxyRoles(proxies []string) []string {
	var out []string
	for _, addr := range proxies {
		info, err := redis.String(doOnce(addr, "INFO"))
		if err != nil {
			out = append(out, "?")
			continue
		}
		n := 0
		for _, s := range parseSync(info) {
			if s.role == "applier" {
				n++
			}
		}
		role := "follows"
		if n > 0 {
			role = "applies " + strconv.Itoa(n)
		}
		out = append(out, role)
	}
	return out
}

// countAppliers asks every proxy's INFO which slaves it applies to and returns,
// per slave, how many proxies do (-1 when a proxy did not answer).
func countAppliers(proxies []string, slaves int) []int {
	out := make([]int, slaves)
	for _, addr := range proxies {
		info, err := redis.String(doOnce(addr, "INFO"))
		if err != nil {
			return nil
		}
		for i, s := range parseSync(info) {
			if i < slaves && s.role == "applier" {
				out[i]++
			}
		}
	}
	return out
}

// ---- load ----

// loadGen offers SETs at a fixed total rate over lagConns connections, spread
// evenly over the proxies: each connection sends one SET every lagConns/rate,
// waits for its reply, and catches up without pause when it fell behind, so that
// the offered load does not depend on the proxies' latency.
type loadGen struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time
	done   atomic.Int64
	errs   atomic.Int64
}

func startLoad(ctx context.Context, proxies []string, rate float64) *loadGen {
	ctx, cancel := context.WithCancel(ctx)
	g := &loadGen{cancel: cancel, start: time.Now()}
	interval := time.Duration(float64(lagConns) / rate * float64(time.Second))
	for i := range lagConns {
		g.wg.Add(1)
		offset := time.Duration(i) * interval / lagConns // spread the connections' sends
		go g.worker(ctx, proxies[i%len(proxies)], g.start.Add(offset), interval, uint64(i))
	}
	return g
}

// worker is one load connection to addr, sending at next, next+interval, ...
func (g *loadGen) worker(ctx context.Context, addr string, next time.Time, interval time.Duration, seed uint64) {
	defer g.wg.Done()
	rng := rand.New(rand.NewPCG(seed, 1))
	value := strings.Repeat("x", lagValueSize)
	var c redis.Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		if !sleepUntil(ctx, next) {
			return
		}
		next = next.Add(interval)
		var err error
		if c == nil {
			if c, err = dial(addr, time.Second); err != nil {
				c = nil
				g.errs.Add(1)
				continue
			}
		}
		if _, err = c.Do("SET", "bench:lag:key:"+strconv.Itoa(rng.IntN(lagKeyspace)), value); err != nil {
			g.errs.Add(1)
			if c.Err() != nil {
				c.Close()
				c = nil
			}
			continue
		}
		g.done.Add(1)
	}
}

// stop ends the load and returns the SETs per second it completed and its errors.
func (g *loadGen) stop() (float64, int64) {
	g.cancel()
	g.wg.Wait()
	return float64(g.done.Load()) / time.Since(g.start).Seconds(), g.errs.Load()
}

// sleepUntil waits until t; false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// ---- probes ----

// probeResult is what probeLag measured.
type probeResult struct {
	probes   int
	lags     []time.Duration // from the write's reply
	fromSend []time.Duration // from the write's sending
	unseen   int
}

// probeLag writes 1, 2, 3, ... to lagProbeKey every lagProbeEvery for d, each
// through the next proxy in turn, and polls every slave directly with GET. A
// probe's lag on a slave is from the proxy's reply to the write to the reply of
// the first GET on the slave that shows its value or a later one (a slave applies
// in order), 0 when the slave showed it before the write's reply arrived. After
// the last probe, the slaves get drainTimeout to show it.
func probeLag(ctx context.Context, proxies, slaves []string, d time.Duration) (probeResult, error) {
	pollCtx, cancelPoll := context.WithCancel(ctx)
	defer cancelPoll()
	var final atomic.Int64 // the last probe, once written
	seen := make([][]time.Time, len(slaves))
	errs := make([]error, len(slaves))
	var wg sync.WaitGroup
	for i, addr := range slaves {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen[i], errs[i] = pollProbe(pollCtx, addr, &final)
		}()
	}
	sends, acks, err := writeProbes(ctx, proxies, d)
	final.Store(int64(len(acks)))
	if err != nil {
		cancelPoll()
		wg.Wait()
		return probeResult{}, err
	}
	polled := make(chan struct{})
	go func() {
		wg.Wait()
		close(polled)
	}()
	select {
	case <-polled:
	case <-time.After(drainTimeout):
		cancelPoll()
		<-polled
	}
	for _, err := range errs {
		if err != nil {
			return probeResult{}, err
		}
	}
	res := probeResult{probes: len(acks)}
	for _, s := range seen {
		for k, ack := range acks {
			switch {
			case ack.IsZero(): // the write failed
			case k >= len(s):
				res.unseen++
			default:
				res.lags = append(res.lags, max(0, s[k].Sub(ack)))
				res.fromSend = append(res.fromSend, max(0, s[k].Sub(sends[k])))
			}
		}
	}
	return res, nil
}

// writeProbes writes the probes for d and returns the time each one was sent
// and of its reply (zero when it failed), probe k+1 at index k.
func writeProbes(ctx context.Context, proxies []string, d time.Duration) (sends, acks []time.Time, err error) {
	conns := make([]redis.Conn, len(proxies))
	for i, addr := range proxies {
		c, err := dial(addr, time.Second)
		if err != nil {
			return nil, nil, err
		}
		defer c.Close()
		conns[i] = c
	}
	start := time.Now()
	for next := start; time.Since(start) < d; next = next.Add(lagProbeEvery) {
		if !sleepUntil(ctx, next) {
			return sends, acks, ctx.Err()
		}
		seq := len(acks) + 1
		sends = append(sends, time.Now())
		_, err := conns[seq%len(conns)].Do("SET", lagProbeKey, seq)
		ack := time.Now()
		if err != nil {
			ack = time.Time{}
		}
		acks = append(acks, ack)
	}
	return sends, acks, nil
}

// pollProbe reads lagProbeKey on the slave at addr until it shows final (once
// final is set) or ctx ends, and returns when each value was first seen: value
// k+1 at index k.
func pollProbe(ctx context.Context, addr string, final *atomic.Int64) ([]time.Time, error) {
	c, err := dial(addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var seen []time.Time
	for {
		v, err := redis.Int64(c.Do("GET", lagProbeKey))
		if err != nil && err != redis.ErrNil {
			return seen, fmt.Errorf("GET %s on slave %s: %w", lagProbeKey, addr, err)
		}
		now := time.Now()
		for int64(len(seen)) < v {
			seen = append(seen, now)
		}
		if f := final.Load(); f > 0 && int64(len(seen)) >= f {
			return seen, nil
		}
		if !sleepUntil(ctx, now.Add(lagPollEvery)) {
			return seen, nil
		}
	}
}

// ---- report ----

func (b *bench) lagHeader() {
	load := ""
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average " + strings.Join(strings.Fields(string(l))[:3], " ")
	}
	fmt.Fprintf(b.out, "syncproxy bench -proxies-lag: per proxy count, a fresh master + %d slaves; %.0f SET/s offered in total "+
		"over %d connections split evenly across the proxies (N:first: all on the first) (%d-byte values, %d keys); after %v, a probe write every %v "+
		"through each proxy in turn for %v, each slave polled directly (GET every %v); %d CPUs%s\n\n",
		lagSlaves, b.opt.lagRate, lagConns, lagValueSize, lagKeyspace, lagWarmup, lagProbeEvery, b.opt.lagDuration,
		lagPollEvery, runtime.NumCPU(), load)
}

func (b *bench) reportProxiesLag(results []lagResult) {
	w := b.out
	fmt.Fprintf(w, "Replication lag, write reply through a proxy -> value readable on a slave, all probes on both slaves\n")
	fmt.Fprintf(w, "%7s %9s %9s %7s %7s %8s %8s %8s %8s %9s  %s\n",
		"proxies", "offered", "SET/s", "errors", "probes", "p50 ms", "p99 ms", "max ms", "unseen", "send p99", "appliers per slave")
	for _, r := range results {
		appliers := "?"
		if r.appliers != nil {
			appliers = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(r.appliers)), ","), "[]")
		}
		fmt.Fprintf(w, "%7s %9.0f %9.0f %7d %7d %8s %8s %8s %8d %9s  %s\n", r.setup, r.offered, r.achieved, r.loadErrors,
			r.probes, fmtMs(durPercentile(r.lags, 0.50)), fmtMs(durPercentile(r.lags, 0.99)),
			fmtMs(durPercentile(r.lags, 1)), r.unseen, fmtMs(durPercentile(r.fromSend, 0.99)), appliers)
	}
	fmt.Fprintf(w, "SET/s is the load completed (it falls short of offered when the proxies cannot keep up); a lag\n"+
		"includes up to %v of polling and one GET round trip; send p99: the same p99 from the probe's\n"+
		"sending instead of its reply (the write's round trip included, whichever proxy acknowledged it);\n"+
		"appliers per slave: proxies whose INFO says\n"+
		"role=applier for it after the run (1 = one applier, the others follow).\n", lagPollEvery)
	fmt.Fprintf(w, "\nCPU per process while the probes ran (%% of one core; the bench's own load generator and probes not counted)\n")
	for _, r := range results {
		if r.cpu == nil {
			fmt.Fprintf(w, "%7s  not measured on this system\n", r.setup)
			continue
		}
		var parts []string
		for _, c := range r.cpu {
			part := fmt.Sprintf("%s %.0f%%", c.name, 100*c.share)
			if c.role != "" {
				part += " (" + c.role + ")"
			}
			parts = append(parts, part)
		}
		fmt.Fprintf(w, "%7s  %s\n", r.setup, strings.Join(parts, ", "))
	}
}

// durPercentile returns the nearest-rank p-quantile of v (p in (0, 1]).
func durPercentile(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	ns := make([]int64, len(v))
	for i, d := range v {
		ns[i] = int64(d)
	}
	return time.Duration(percentile(ns, p))
}

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}
