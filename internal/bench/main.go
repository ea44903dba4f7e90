// Command bench measures syncproxy against Redis, and against other Redis proxies,
// with redis-benchmark; `make bench` runs it. It is a measurement, not a test: it
// exits 0 whatever the figures, and non-zero only when it cannot run.
//
// # What it starts
//
// Everything runs on free loopback ports, in a temporary directory removed at the end:
//
//   - a master and two slaves (redis-server --save "" --appendonly no), and syncproxy,
//     built from this checkout, in front of them;
//   - with -peers (the default), the peers found: predixy (-predixy, by default
//     ../shared/bin/predixy from the module root or from the main git worktree's
//     root) with 1 worker thread, writing to the master and reading from the first
//     slave; and twemproxy (-twemproxy, Debian's nutcracker, looked up in PATH) with
//     one pool holding the master alone. A peer not found is not measured: its row
//     says "not found" and the bench runs on;
//   - with -replication (the default), a second master with two native replicas
//     attached by REPLICAOF, the baseline of the write line;
//   - with -reads (the default), a second syncproxy with --read-your-writes=false in
//     front of the same master and slaves;
//   - with -proxy-bin PATH, another syncproxy binary (another commit's build) in front
//     of the same master and slaves, measured like a peer: its row "syncproxy (PATH)"
//     gives an A/B comparison from one run.
//
// # What it measures
//
// For every test of -tests and every pipeline depth of -P, each round runs
// redis-benchmark -c 50 -n N against the master directly, then through syncproxy,
// then through each peer, and for SET with -replication, against the master with
// native replicas: the runs are interleaved so that a change of machine load
// touches every side alike. Around each run through a proxy, the bench reads the
// proxy process's user+system CPU time from /proc/<pid>/stat (Linux only) and
// divides it by N: the CPU per request. For syncproxy's SET runs the span ends when
// both slaves have applied the run's last write, so it includes the applying.
//
// While syncproxy runs SET, a sampler sends INFO through the proxy every 10 ms and
// records each slave's lag_ms and lag_messages from the "# Sync" section. After
// every run through the proxy the bench waits until each slave has applied the
// master's last sequence number, so that no run pays for the previous one's backlog.
//
// With -reads, each round also runs GET (-P 1 and every depth of -P) through the
// proxy with read-your-writes on and through the one with it off, one after the
// other; and a mixed 1:1 workload: redis-benchmark -t set and -t get at the same
// time, each with half of -c, -n N and -r 100000 (so both use the same keys),
// directly on the master and then through the read-your-writes proxy. The mixed
// table gives two combined figures: the sum of the two processes' own requests per
// second, and 2N over the slower process's time.
//
// # Reading the report
//
// The first table is issue 15's: one row per system (syncproxy, predixy,
// twemproxy, the master with 2 native replicas) and, per test and depth, the
// requests per second as a ratio to direct Redis measured in the same round (the
// median over the rounds of the per-round ratios), then the CPU microseconds per
// request of the proxy (median). syncproxy's SET keeps two slaves exact; in
// brackets is its ratio to the natively replicated master of the same round, the
// fair baseline for a replicated write. The peers keep no slaves on their SET rows,
// and predixy reads from a slave while direct GETs and twemproxy's go to the
// master. Below it, issue 15's targets for syncproxy, each marked PASS or BELOW:
// GET >= 0.85 of direct at -P 1 and at least predixy's ratio; >= 0.6 at -P 16;
// CPU per GET <= 1.3 times predixy's; SET >= 0.8 of native replication at -P 1 and
// >= 0.6 at -P 16; replication lag p99 < 10 ms during the SET runs. Targets that
// need predixy say "predixy not measured" without it. Then the medians in
// requests per second, the catch-up time of the slaves after each SET run, the
// lag percentiles, and the read and mixed tables. Client, proxies and servers
// share the machine's cores: compare ratios from one run, on a quiet machine.
//
// # Replication lag with several proxies (-proxies-lag)
//
// With -proxies-lag 1,3 the bench runs only this measurement (lag.go): for each
// count N, a fresh master and two slaves with N proxies in front of them (they
// elect one applier per slave; the others follow), and a fixed total rate of SETs
// (-lag-rate) from a load generator inside the bench over 48 connections split
// evenly across the proxies, so that every N is offered the same load. After a
// second of load, a probe writes 1, 2, 3, ... to one key every 5 ms through each
// proxy in turn for -lag-duration, and every slave is polled directly with GET: a
// probe's lag on a slave is from the write's reply to the first GET that shows its
// value. With N:first (e.g. 3:first) the whole load goes through the first proxy
// and the others only carry their probes: what followers cost, apart from
// splitting the load over more processes on the same cores.
// The table gives p50, p99 and max per N, the SETs per second completed,
// and how many proxies apply to each slave after the run; a second table gives
// the CPU each process of the run (master, slaves, proxies with their roles) used
// while the probes ran, from /proc/<pid>/stat (Linux only).
//
// # Processes
//
// Every child runs in its own process group and is stopped (SIGTERM, then SIGKILL)
// when the bench returns: on success, on error, and on SIGINT or SIGTERM. On Linux
// the kernel also kills them if the bench itself dies. -timeout bounds the whole run
// and -run-timeout each redis-benchmark run.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Bounds of the waits of the bench.
const (
	readyTimeout  = 15 * time.Second       // a server or the proxy answering
	linkTimeout   = 30 * time.Second       // native replicas linked, proxy slaves online
	drainTimeout  = 60 * time.Second       // proxy slaves applying the last write of a run
	probeTimeout  = 500 * time.Millisecond // one readiness probe
	stopGrace     = 3 * time.Second        // SIGTERM to SIGKILL
	lagInterval   = 10 * time.Millisecond  // INFO sampling period
	startAttempts = 5                      // ports tried when the chosen one is taken
)

type options struct {
	rounds     int
	requests   int
	clients    int
	pipelines  []int
	tests      []string
	repl       bool
	timeout    time.Duration
	runTimeout time.Duration
	keep       bool
	reads      bool
	peers      bool   // -peers: also measure predixy and twemproxy
	predixy    string // -predixy: the predixy binary (relative to the module root)
	twemproxy  string // -twemproxy: the nutcracker binary (looked up in PATH)

	proxiesLag  []lagSetup    // -proxies-lag: proxy counts; when set, only the lag runs
	lagRate     float64       // SET/s offered in total in each -proxies-lag run
	lagDuration time.Duration // probing time of each -proxies-lag run
	threads     int           // -proxy-threads: every syncproxy's --threads
	nearCache   bool          // -near-cache-get: only the near cache run (nearcache.go)
	otherProxy  string        // -proxy-bin: a second syncproxy binary measured as a peer (A/B)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opt, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, opt.timeout)
	defer cancel()

	b := &bench{opt: opt, out: stdout, log: stderr}
	err = b.run(ctx)
	b.cleanup()
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			fmt.Fprintf(stderr, "bench: stopped after -timeout %v: %v\n", opt.timeout, err)
		case ctx.Err() != nil:
			fmt.Fprintf(stderr, "bench: interrupted: %v\n", err)
		default:
			fmt.Fprintf(stderr, "bench: %v\n", err)
		}
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opt options
	pipes := fs.String("P", "1,16", "comma-separated pipeline depths (redis-benchmark -P)")
	tests := fs.String("tests", "set,get", "comma-separated redis-benchmark tests (-t), each run on its own")
	fs.IntVar(&opt.rounds, "rounds", 3, "interleaved rounds; medians are taken over them")
	fs.IntVar(&opt.requests, "n", 70000, "requests per redis-benchmark run at -P 1; a run at -P N sends N times as many, so that every run lasts about as long (the default keeps the whole bench near 4 minutes on 2 cores)")
	fs.IntVar(&opt.clients, "c", 50, "redis-benchmark parallel connections")
	fs.BoolVar(&opt.repl, "replication", true, "also compare SET through syncproxy with SET on a master with two native replicas, and sample the replication lag")
	fs.DurationVar(&opt.timeout, "timeout", 30*time.Minute, "bound on the whole bench")
	fs.DurationVar(&opt.runTimeout, "run-timeout", 5*time.Minute, "bound on one redis-benchmark run")
	fs.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (server and proxy logs)")
	fs.BoolVar(&opt.peers, "peers", true, "also measure predixy (-predixy) and twemproxy (-twemproxy) in the same rounds, when found")
	fs.StringVar(&opt.predixy, "predixy", defaultPredixy, "predixy binary, relative to the module root unless absolute; missing: its row says \"not found\"")
	fs.StringVar(&opt.twemproxy, "twemproxy", "nutcracker", "twemproxy binary (Debian package nutcracker), looked up in PATH; missing: its row says \"not found\"")
	fs.BoolVar(&opt.reads, "reads", true, "also compare GET through syncproxy with read-your-writes on and off (a second proxy), and run a mixed 1:1 SET/GET workload directly and through the proxy")
	proxiesLag := fs.String("proxies-lag", "", "comma-separated proxy counts, e.g. 1,3,3:first: instead of the other runs, for each count start that many proxies on a fresh master and 2 slaves, offer the same total SET rate split across them (N:first: all through the first proxy), and measure the replication lag by probing the slaves directly through each proxy in turn")
	fs.Float64Var(&opt.lagRate, "lag-rate", 5000, "with -proxies-lag: total SET/s offered, split across the proxies")
	fs.IntVar(&opt.threads, "proxy-threads", 1, "every syncproxy's --threads (GOMAXPROCS): 1, as predixy's WorkerThreads 1; 0: the proxy's default, every CPU")
	fs.DurationVar(&opt.lagDuration, "lag-duration", 10*time.Second, "with -proxies-lag: probing time per proxy count (after 1s of load alone)")
	fs.StringVar(&opt.otherProxy, "proxy-bin", "", "a second syncproxy binary (e.g. another commit's) measured in the same interleaved rounds as an extra row, \"syncproxy (PATH)\", in front of the same master and slaves")
	fs.BoolVar(&opt.nearCache, "near-cache-get", false, "instead of the other runs: GET over 1,000 keys at -P 16 directly and through a proxy with and without --near-cache 64mb (nearcache.go)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./internal/bench [flags]\n\n"+
			"Measures redis-benchmark against Redis directly and through syncproxy.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return opt, err
	}
	if fs.NArg() > 0 {
		return opt, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(*pipes, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || p < 1 {
			return opt, fmt.Errorf("-P: %q is not a positive integer", s)
		}
		opt.pipelines = append(opt.pipelines, p)
	}
	for _, s := range strings.Split(*proxiesLag, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		setup, err := parseLagSetup(s)
		if err != nil {
			return opt, err
		}
		opt.proxiesLag = append(opt.proxiesLag, setup)
	}
	for _, s := range strings.Split(*tests, ",") {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			opt.tests = append(opt.tests, s)
		}
	}
	switch {
	case len(opt.tests) == 0:
		return opt, errors.New("-tests: no test given")
	case opt.rounds < 1:
		return opt, errors.New("-rounds must be at least 1")
	case opt.requests < 1:
		return opt, errors.New("-n must be at least 1")
	case opt.clients < 1:
		return opt, errors.New("-c must be at least 1")
	case opt.timeout <= 0 || opt.runTimeout <= 0:
		return opt, errors.New("-timeout and -run-timeout must be positive")
	case opt.lagRate <= 0 || opt.lagDuration <= 0:
		return opt, errors.New("-lag-rate and -lag-duration must be positive")
	}
	return opt, nil
}

// Sides of a comparison.
const (
	sideDirect = "direct"  // the proxy's master, directly
	sideProxy  = "proxy"   // through syncproxy
	sideNative = "native"  // the master with two native replicas, directly
	sideRYWOn  = "ryw-on"  // through syncproxy, --read-your-writes=true (the same proxy as sideProxy)
	sideRYWOff = "ryw-off" // through the second syncproxy, --read-your-writes=false
)

// Kinds of cells, each with its table.
const (
	kindBase  = iota // one redis-benchmark test: direct, proxy (and native)
	kindRead         // GET through the proxy with read-your-writes on and off
	kindMixed        // SET and GET at once, from two redis-benchmark processes
)

// mixedTest is the test name of the mixed cells.
const mixedTest = "set+get"

// cell is one test at one pipeline depth, measured on several sides.
type cell struct {
	kind  int
	test  string
	pipe  int
	sides []string
	rps   map[string][]float64   // side -> one figure per round; mixed cells: 2n / the slower process's time
	cpu   map[string][]float64   // base cells: proxy side -> its CPU microseconds per request, per round
	sum   map[string][]float64   // mixed cells: side -> sum of the two processes' own rps, per round
	lag   lagStats               // proxy SET runs only
	drain []time.Duration        // proxy runs: from the end of the run to slaves caught up
	procs map[string][][]float64 // SET cells: native and proxy side -> per round, CPU per request by setProcs
}

type bench struct {
	benchCPU time.Duration // the last redis-benchmark run's CPU time (user+system)
	opt      options
	out, log io.Writer

	tmp      string
	redisBin string
	benchBin string

	procsMu sync.Mutex
	procs   []*proc

	master, native string // addresses
	proxy          string // --read-your-writes=true (the default)
	proxyNoRYW     string // --read-your-writes=false, with -reads
	proxyBin       string
	proxyProc      *proc   // the process behind proxy, for its CPU time
	peers          []*peer // with -peers: predixy and twemproxy, found or not
}

// setup finds the binaries, makes the temporary directory and builds syncproxy.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.redisBin, err = exec.LookPath("redis-server"); err != nil {
		return errors.New("redis-server not found: install redis-server and redis-tools (make test does it on Debian/Ubuntu)")
	}
	if b.benchBin, err = exec.LookPath("redis-benchmark"); err != nil {
		return errors.New("redis-benchmark not found: install redis-tools (make test does it on Debian/Ubuntu)")
	}
	if b.tmp, err = os.MkdirTemp("", "syncproxy-bench-"); err != nil {
		return err
	}
	if b.opt.keep {
		fmt.Fprintf(b.log, "bench: logs kept in %s\n", b.tmp)
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	if b.opt.peers {
		b.findPeers(root)
	}
	if err := b.addOtherProxy(); err != nil {
		return err
	}
	return b.buildProxy(ctx, root)
}

func (b *bench) run(ctx context.Context) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	if len(b.opt.proxiesLag) > 0 {
		return b.runProxiesLag(ctx)
	}
	if b.opt.nearCache {
		return b.runNearCacheGet(ctx)
	}

	slaves, err := b.startBackends(ctx)
	if err != nil {
		return err
	}
	if err := b.startNeutralApplier(ctx, slaves); err != nil {
		return err
	}
	if b.proxy, err = b.startProxy(ctx, "syncproxy", b.master, slaves); err != nil {
		return err
	}
	b.proxyProc = b.lastProc("syncproxy")
	// The peers: predixy reads from the first slave, as syncproxy does from both.
	if err := b.startPeers(ctx, b.master, slaves); err != nil {
		return err
	}

	// The baseline of the write line: native replication.
	if b.opt.repl {
		if err := b.startNative(ctx); err != nil {
			return err
		}
	}

	cells := b.plan()
	b.header()
	// The read cells run after the others: their second proxy runs appliers on
	// the same slaves too, which would weigh on the replicated-write figures.
	var base, reads []*cell
	for _, c := range cells {
		isRead := c.kind == kindMixed
		for _, side := range c.sides {
			isRead = isRead || side == sideRYWOff
		}
		if isRead {
			reads = append(reads, c)
		} else {
			base = append(base, c)
		}
	}
	if err := b.rounds(ctx, base); err != nil {
		return err
	}
	if len(reads) > 0 {
		// The same backends behind a second proxy that does not track its clients' writes.
		if b.proxyNoRYW, err = b.startProxy(ctx, "syncproxy-noryw", b.master, slaves, "--read-your-writes=false"); err != nil {
			return err
		}
		fmt.Fprintf(b.log, "bench: second proxy %s (--read-your-writes=false) for the read runs\n", b.proxyNoRYW)
		if err := b.rounds(ctx, reads); err != nil {
			return err
		}
	}
	b.report(cells)
	return nil
}

// rounds runs cells for every round, interleaved within each round.
func (b *bench) rounds(ctx context.Context, cells []*cell) error {
	for round := 1; round <= b.opt.rounds; round++ {
		for _, c := range cells {
			for _, side := range c.sides {
				if c.kind == kindMixed {
					res, err := b.measureMixed(ctx, side)
					if err != nil {
						return fmt.Errorf("round %d, %s -P %d %s: %w", round, c.test, c.pipe, side, err)
					}
					c.rps[side] = append(c.rps[side], res.slower)
					c.sum[side] = append(c.sum[side], res.set+res.get)
					fmt.Fprintf(b.log, "round %d/%d  %-7s -P %-3d %-9s %12.0f rps (SET %.0f + GET %.0f; 2n/slower %.0f)\n",
						round, b.opt.rounds, c.test, c.pipe, side, res.set+res.get, res.set, res.get, res.slower)
					continue
				}
				rps, err := b.measure(ctx, c, side)
				if err != nil {
					return fmt.Errorf("round %d, %s -P %d %s: %w", round, c.test, c.pipe, side, err)
				}
				c.rps[side] = append(c.rps[side], rps)
				fmt.Fprintf(b.log, "round %d/%d  %-7s -P %-3d %-9s %12.0f rps\n", round, b.opt.rounds, c.test, c.pipe, side, rps)
			}
		}
	}
	return nil
}

// plan lists the cells in the order each round runs them: per test and depth,
// direct, syncproxy, the peers started (then native for SET).
func (b *bench) plan() []*cell {
	var cells []*cell
	hasSet := false
	for _, t := range b.opt.tests {
		for _, p := range b.opt.pipelines {
			c := &cell{test: t, pipe: p, sides: []string{sideDirect, sideProxy}, rps: map[string][]float64{}, cpu: map[string][]float64{}}
			for _, pe := range b.peers {
				if pe.addr != "" {
					c.sides = append(c.sides, pe.side)
				}
			}
			if t == "set" && b.opt.repl {
				hasSet = true
				c.sides = append(c.sides, sideNative)
			}
			cells = append(cells, c)
		}
	}
	if b.opt.repl && !hasSet {
		for _, p := range b.opt.pipelines {
			cells = append(cells, &cell{test: "set", pipe: p, sides: []string{sideProxy, sideNative}, rps: map[string][]float64{}})
		}
	}
	if b.opt.reads {
		// GET with read-your-writes on and off, at -P 1 and every depth of -P.
		pipes := []int{1}
		for _, p := range b.opt.pipelines {
			if !slices.Contains(pipes, p) {
				pipes = append(pipes, p)
			}
		}
		for _, p := range pipes {
			cells = append(cells, &cell{kind: kindRead, test: "get", pipe: p, sides: []string{sideRYWOn, sideRYWOff}, rps: map[string][]float64{}})
		}
		cells = append(cells, &cell{kind: kindMixed, test: mixedTest, pipe: 1, sides: []string{sideDirect, sideProxy},
			rps: map[string][]float64{}, sum: map[string][]float64{}})
	}
	return cells
}

// measure runs redis-benchmark for c on one side and returns its requests per
// second. For a proxy side of a base cell it also records the proxy process's CPU
// time per request: over the run, and for syncproxy until its slaves have applied
// the run's writes (the work the run caused).
func (b *bench) measure(ctx context.Context, c *cell, side string) (float64, error) {
	addr := b.addr(side)
	cpu := b.startRunCPU(c, side)
	procs := b.startProcsCPU(c, side)
	if side != sideProxy {
		rps, err := b.redisBenchmark(ctx, addr, c.test, c.pipe, b.opt.clients)
		if err == nil {
			cpu.stop(c, side, b.runRequests(c.pipe))
			procs.stop(b, c, side, b.runRequests(c.pipe))
		}
		return rps, err
	}
	var sampler *lagSampler
	if c.test == "set" {
		sampler = startLagSampler(ctx, b.proxy)
	}
	rps, err := b.redisBenchmark(ctx, addr, c.test, c.pipe, b.opt.clients)
	end := time.Now()
	if sampler != nil {
		c.lag.add(sampler.stop())
	}
	if err != nil {
		return 0, err
	}
	// The next run must not pay for this one's replication backlog.
	if err := b.waitApplied(ctx, drainTimeout); err != nil {
		return 0, err
	}
	c.drain = append(c.drain, time.Since(end))
	cpu.stop(c, side, b.runRequests(c.pipe))
	procs.stop(b, c, side, b.runRequests(c.pipe))
	return rps, nil
}

// runCPU is a proxy process's CPU time at the start of a run; nil when the run's
// side is no proxy of a base cell or the time cannot be read.
type runCPU struct {
	p    *proc
	used time.Duration
}

func (b *bench) startRunCPU(c *cell, side string) *runCPU {
	var p *proc
	switch {
	case c.cpu == nil:
	case side == sideProxy:
		p = b.proxyProc
	case b.peer(side) != nil:
		p = b.peer(side).proc
	}
	if p == nil {
		return nil
	}
	used, ok := procCPU(p.cmd.Process.Pid)
	if !ok {
		return nil
	}
	return &runCPU{p: p, used: used}
}

// stop records in c the CPU microseconds per request used since startRunCPU.
func (r *runCPU) stop(c *cell, side string, requests int) {
	if r == nil {
		return
	}
	if used, ok := procCPU(r.p.cmd.Process.Pid); ok {
		us := float64(used-r.used) / float64(time.Microsecond) / float64(requests)
		c.cpu[side] = append(c.cpu[side], us)
	}
}

// addr returns the address of a side.
func (b *bench) addr(side string) string {
	if p := b.peer(side); p != nil {
		return p.addr
	}
	return map[string]string{
		sideDirect: b.master, sideProxy: b.proxy, sideNative: b.native,
		sideRYWOn: b.proxy, sideRYWOff: b.proxyNoRYW,
	}[side]
}

// lastProc returns the last child started under name.
func (b *bench) lastProc(name string) *proc {
	b.procsMu.Lock()
	defer b.procsMu.Unlock()
	for i := len(b.procs) - 1; i >= 0; i-- {
		if b.procs[i].name == name {
			return b.procs[i]
		}
	}
	return nil
}

// mixedResult is one mixed run: each process's own requests per second, and the
// combined figure 2n / the slower process's time (n / its own rps), i.e. twice
// the lower of the two rps.
type mixedResult struct {
	set, get, slower float64
}

// mixedClients is the -c of each of the two processes of a mixed run: half of -c,
// so that the run has as many connections as the others.
func (b *bench) mixedClients() int {
	return max(1, b.opt.clients/2)
}

// mixedKeyspace is the -r of the mixed runs: SET and GET both use key:__rand_int__,
// so both processes touch the same keys.
const mixedKeyspace = 100000

// measureMixed runs redis-benchmark -t set and -t get at the same time on one side,
// each with -c mixedClients, -r mixedKeyspace and -n N. If one fails, the other is
// stopped. Through the proxy, it then waits until the slaves have applied the writes.
func (b *bench) measureMixed(ctx context.Context, side string) (mixedResult, error) {
	addr := b.addr(side)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		rps      [2]float64
		errs     [2]error
		tests    = [2]string{"set", "get"}
		keyspace = []string{"-r", strconv.Itoa(mixedKeyspace)}
	)
	for i, t := range tests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rps[i], errs[i] = b.redisBenchmark(runCtx, addr, t, 1, b.mixedClients(), keyspace...)
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return mixedResult{}, ctx.Err()
	}
	for i, err := range errs {
		// The first error, not the other process's cancellation.
		if err != nil && !errors.Is(err, context.Canceled) {
			return mixedResult{}, fmt.Errorf("%s: %w", tests[i], err)
		}
	}
	for i, err := range errs {
		if err != nil {
			return mixedResult{}, fmt.Errorf("%s: %w", tests[i], err)
		}
	}
	if side == sideProxy {
		if err := b.waitApplied(ctx, drainTimeout); err != nil {
			return mixedResult{}, err
		}
	}
	return mixedResult{set: rps[0], get: rps[1], slower: 2 * min(rps[0], rps[1])}, nil
}

// redisBenchmark runs one redis-benchmark test and parses its --csv output:
//
//	"test","rps","avg_latency_ms",...
//	"SET","41152.26","1.154",...
func (b *bench) redisBenchmark(ctx context.Context, addr, test string, pipe, clients int, extra ...string) (float64, error) {
	host, port, _ := net.SplitHostPort(addr)
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, b.opt.runTimeout)
	defer cancel()
	args := []string{"-h", host, "-p", port,
		"-c", strconv.Itoa(clients), "-n", strconv.Itoa(b.runRequests(pipe)),
		"-P", strconv.Itoa(pipe), "-t", test, "-q", "--csv"}
	cmd := exec.CommandContext(ctx, b.benchBin, append(args, extra...)...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if cmd.ProcessState != nil {
		b.benchCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if parent.Err() != nil {
		return 0, parent.Err()
	}
	if ctx.Err() != nil {
		return 0, fmt.Errorf("redis-benchmark did not finish within -run-timeout %v", b.opt.runTimeout)
	}
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %v: %s", err, lastLines(stdout.String()+stderr.String(), 5))
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, `"`) || strings.HasPrefix(line, `"test"`) {
			continue
		}
		rec, err := csv.NewReader(strings.NewReader(line)).Read()
		if err != nil || len(rec) < 2 {
			continue
		}
		rps, err := strconv.ParseFloat(rec[1], 64)
		if err != nil || math.IsInf(rps, 0) || math.IsNaN(rps) || rps <= 0 {
			return 0, fmt.Errorf("redis-benchmark reported %q requests per second (raise -n)", rec[1])
		}
		return rps, nil
	}
	return 0, fmt.Errorf("no result in redis-benchmark output: %s", lastLines(stdout.String()+stderr.String(), 5))
}

// runRequests is the -n of a redis-benchmark run at pipeline depth pipe: -n
// times pipe, so that runs at every depth last about as long. A run of 70,000
// GETs at -P 16 lasts 0.1 to 0.3 s on 2 cores: the clients' connections and the
// processes' warm-up weigh in it, and CPU times (read in 10 ms ticks) are
// within a tenth. The near cache run keeps -n as given.
func (b *bench) runRequests(pipe int) int {
	if b.opt.nearCache {
		return b.opt.requests
	}
	return b.opt.requests * max(pipe, 1)
}

// waitApplied waits until every slave of the proxy has applied the master's last
// sequence number.
func (b *bench) waitApplied(ctx context.Context, timeout time.Duration) error {
	target, err := redis.Int64(doOnce(b.master, "GET", "syncproxy:seq"))
	if err == redis.ErrNil {
		return nil // nothing written through the proxy yet
	}
	if err != nil {
		return fmt.Errorf("read the master's sequence number: %w", err)
	}
	c, err := dial(b.proxy, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	var last []slaveInfo
	err = poll(ctx, timeout, lagInterval, func() (bool, error) {
		info, err := redis.String(c.Do("INFO"))
		if err != nil {
			return false, err
		}
		last = parseSync(info)
		for _, s := range last {
			if s.applied < target || s.state != "online" {
				return false, nil
			}
		}
		return len(last) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("slaves did not apply sequence %d within %v (last seen %+v): %w", target, timeout, last, err)
	}
	return nil
}

// ---- processes ----

// proc is one child process and its log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has exited
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs bin with its output in logPath and registers it for cleanup.
func (b *bench) start(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child holds its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	b.procsMu.Lock()
	b.procs = append(b.procs, p)
	b.procsMu.Unlock()
	return p, nil
}

// stop ends p: SIGTERM, then SIGKILL after stopGrace.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(stopGrace):
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopGrace):
	}
}

// cleanup stops every child, the proxy first, and removes the temporary directory.
func (b *bench) cleanup() {
	b.procsMu.Lock()
	procs := slices.Clone(b.procs)
	b.procs = nil
	b.procsMu.Unlock()
	stopAll(procs)
	if b.tmp != "" && !b.opt.keep {
		os.RemoveAll(b.tmp)
	}
}

// stopAll stops procs: the proxies (syncproxy and the peers) one by one, latest
// first, then the servers at once.
func stopAll(procs []*proc) {
	var wg sync.WaitGroup
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		if strings.HasPrefix(p.name, "syncproxy") || p.name == sidePredixy || p.name == sideTwem {
			p.stop() // before its backends, so that it does not log their loss
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop()
		}()
	}
	wg.Wait()
}

// server is one redis-server started by the bench.
type server struct {
	*proc
	addr string
}

var errPortTaken = errors.New("port taken by another process")

// startRedis starts a redis-server on a free loopback port and waits until it answers.
func (b *bench) startRedis(ctx context.Context, name string) (*server, error) {
	dir := filepath.Join(b.tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := b.start(name, filepath.Join(dir, "redis.log"), b.redisBin,
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no")
		if err != nil {
			return nil, err
		}
		err = waitRedis(ctx, p, addr)
		if err == nil {
			return &server{proc: p, addr: addr}, nil
		}
		p.stop()
		if (errors.Is(err, errPortTaken) || strings.Contains(readFile(p.logPath), "Address already in use")) && attempt < startAttempts {
			continue
		}
		return nil, fmt.Errorf("%s: %w\n%s", name, err, lastLines(readFile(p.logPath), 10))
	}
}

// waitRedis waits until the server at addr answers and is the process p, not another
// one that holds the port.
func waitRedis(ctx context.Context, p *proc, addr string) error {
	pid := strconv.Itoa(p.cmd.Process.Pid)
	return poll(ctx, readyTimeout, 10*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, errors.New("redis-server exited")
		}
		info, err := redis.String(doOnce(addr, "INFO", "server"))
		if err != nil {
			return false, nil // not listening yet, or loading
		}
		if infoField(info, "process_id") != pid {
			return false, errPortTaken
		}
		return true, nil
	})
}

// buildProxy builds syncproxy from this checkout into the temporary directory.
func (b *bench) buildProxy(ctx context.Context, root string) error {
	bin := filepath.Join(b.tmp, "syncproxy")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/syncproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/syncproxy: %v\n%s", err, out)
	}
	b.proxyBin = bin
	return nil
}

// startBackends starts syncproxy's master (b.master) and its two slaves, and
// returns the slaves' addresses.
func (b *bench) startBackends(ctx context.Context) ([]string, error) {
	m, err := b.startRedis(ctx, "master")
	if err != nil {
		return nil, err
	}
	b.master = m.addr
	var slaves []string
	for i := 1; i <= 2; i++ {
		s, err := b.startRedis(ctx, "slave-"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		slaves = append(slaves, s.addr)
	}
	return slaves, nil
}

// startProxy starts the built syncproxy, named name (a prefix of "syncproxy"), in
// front of master and slaves with the extra flags, waits until its slaves are
// online and returns its address.
func (b *bench) startProxy(ctx context.Context, name, master string, slaves []string, extra ...string) (string, error) {
	return b.startProxyBin(ctx, name, b.proxyBin, master, slaves, extra...)
}

// startNeutralApplier, for an A/B run (-proxy-bin), starts a syncproxy that
// takes both slaves' leases before the two measured ones start: the proxy that
// applies applies every write, whoever sent it, so without a third one the row
// of whichever proxy took the leases would carry the other's replication work.
// Both measured proxies then follow, and their rows compare the same work (their
// CPU per SET leaves out applying).
func (b *bench) startNeutralApplier(ctx context.Context, slaves []string) error {
	if p := b.peer(sideOther); p == nil || p.bin == "" {
		return nil
	}
	addr, err := b.startProxy(ctx, "syncproxy-applier", b.master, slaves)
	if err != nil {
		return err
	}
	err = poll(ctx, readyTimeout, 10*time.Millisecond, func() (bool, error) {
		roles := proxyRoles([]string{addr})
		return roles[0] == "applies "+strconv.Itoa(len(slaves)), nil
	})
	if err == nil {
		fmt.Fprintf(b.log, "bench: applier %s applies to the %d slaves; the measured proxies follow\n", addr, len(slaves))
	}
	return err
}

// startProxyBin is startProxy with the syncproxy binary bin.
func (b *bench) startProxyBin(ctx context.Context, name, bin, master string, slaves []string, extra ...string) (string, error) {
	dir := filepath.Join(b.tmp, "syncproxy-logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var addr string
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		logPath := filepath.Join(dir, name+"-"+strconv.Itoa(attempt)+".log")
		args := append([]string{"--listen", addr, "--master", master, "--slaves", strings.Join(slaves, ","),
			"--log-level", "warn", "--threads", strconv.Itoa(b.opt.threads)}, extra...)
		p, err := b.start(name, logPath, bin, args...)
		if err != nil {
			return "", err
		}
		err = poll(ctx, readyTimeout, 10*time.Millisecond, func() (bool, error) {
			if p.exited() {
				return false, errors.New("syncproxy exited")
			}
			pong, err := redis.String(doOnce(addr, "PING"))
			return err == nil && pong == "PONG", nil
		})
		if err != nil {
			p.stop()
			if strings.Contains(readFile(logPath), "address already in use") && attempt < startAttempts {
				continue
			}
			return "", fmt.Errorf("%s did not answer PING: %w\n%s", name, err, lastLines(readFile(logPath), 10))
		}
		break
	}
	// Reads go to the master until the slaves are online: wait for them, so that
	// the first GET run measures the real read path.
	var last []slaveInfo
	err := poll(ctx, linkTimeout, 20*time.Millisecond, func() (bool, error) {
		info, err := redis.String(doOnce(addr, "INFO"))
		if err != nil {
			return false, nil
		}
		last = parseSync(info)
		for _, s := range last {
			if s.state != "online" {
				return false, nil
			}
		}
		return len(last) == len(slaves), nil
	})
	if err != nil {
		return "", fmt.Errorf("%s's slaves not online (last seen %+v): %w", name, last, err)
	}
	return addr, nil
}

// startNative starts a master with two replicas attached by REPLICAOF.
func (b *bench) startNative(ctx context.Context) error {
	m, err := b.startRedis(ctx, "native-master")
	if err != nil {
		return err
	}
	b.native = m.addr
	host, port, _ := net.SplitHostPort(m.addr)
	var replicas []string
	for i := 1; i <= 2; i++ {
		r, err := b.startRedis(ctx, "native-replica-"+strconv.Itoa(i))
		if err != nil {
			return err
		}
		if _, err := doOnce(r.addr, "REPLICAOF", host, port); err != nil {
			return fmt.Errorf("REPLICAOF on %s: %w", r.name, err)
		}
		replicas = append(replicas, r.addr)
	}
	err = poll(ctx, linkTimeout, 20*time.Millisecond, func() (bool, error) {
		for _, r := range replicas {
			info, err := redis.String(doOnce(r, "INFO", "replication"))
			if err != nil || infoField(info, "master_link_status") != "up" {
				return false, nil
			}
		}
		info, err := redis.String(doOnce(b.native, "INFO", "replication"))
		return err == nil && infoField(info, "connected_slaves") == "2", nil
	})
	if err != nil {
		return fmt.Errorf("native replicas did not reach master_link_status:up: %w", err)
	}
	return nil
}

// ---- replication lag ----

// slaveInfo is one "slaveN:" line of the "# Sync" section of INFO through the proxy:
//
//	slave0:name=slave-1,addr=127.0.0.1:6380,state=online,up=true,applied=42,lag_messages=0,lag_ms=0,...
type slaveInfo struct {
	name        string
	state       string
	applied     int64
	lagMessages int64
	lagMs       int64
	role        string // applier or follower (one applier per slave across proxies)
}

// parseSync returns the slaves listed in the "# Sync" section of an INFO reply.
func parseSync(info string) []slaveInfo {
	var out []slaveInfo
	section := ""
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(line, "# ") {
			section = line[2:]
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if section != "Sync" || !ok || !strings.HasPrefix(key, "slave") {
			continue
		}
		if _, err := strconv.Atoi(key[len("slave"):]); err != nil {
			continue
		}
		var s slaveInfo
		for _, kv := range strings.Split(val, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "name":
				s.name = v
			case "state":
				s.state = v
			case "applied":
				s.applied = n
			case "lag_messages":
				s.lagMessages = n
			case "lag_ms":
				s.lagMs = n
			case "role":
				s.role = v
			}
		}
		out = append(out, s)
	}
	return out
}

// lagSampler sends INFO through the proxy every lagInterval and keeps each slave's lag.
type lagSampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    lagStats
}

// lagStats holds lag samples, one per slave per INFO reply.
type lagStats struct {
	ms, messages []int64
	errors       int
}

func (l *lagStats) add(o lagStats) {
	l.ms = append(l.ms, o.ms...)
	l.messages = append(l.messages, o.messages...)
	l.errors += o.errors
}

func startLagSampler(ctx context.Context, addr string) *lagSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &lagSampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		c, err := dial(addr, time.Second)
		if err != nil {
			s.res.errors++
			return
		}
		defer func() { c.Close() }() // c may be replaced by a reconnect
		t := time.NewTicker(lagInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			info, err := redis.String(c.Do("INFO"))
			if err != nil {
				s.res.errors++
				if c.Err() != nil {
					nc, err := dial(addr, time.Second)
					if err != nil {
						return
					}
					c.Close()
					c = nc
				}
				continue
			}
			for _, sl := range parseSync(info) {
				s.res.ms = append(s.res.ms, sl.lagMs)
				s.res.messages = append(s.res.messages, sl.lagMessages)
			}
		}
	}()
	return s
}

// stop ends the sampler and returns its samples.
func (s *lagSampler) stop() lagStats {
	s.cancel()
	<-s.done
	return s.res
}

// ---- report ----

func (b *bench) header() {
	version := "?"
	if out, err := exec.Command(b.redisBin, "--version").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "v=") {
				version = f[2:]
			}
		}
	}
	load := ""
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = ", load average " + strings.Join(strings.Fields(string(l))[:3], " ")
	}
	fmt.Fprintf(b.out, "syncproxy bench: redis-benchmark -c %d -n %d x the pipeline depth, %d round(s), redis-server %s, %d CPUs%s\n",
		b.opt.clients, b.opt.requests, b.opt.rounds, version, runtime.NumCPU(), load)
	fmt.Fprintf(b.out, "proxy %s -> master %s + 2 slaves", b.proxy, b.master)
	if b.opt.repl {
		fmt.Fprintf(b.out, "; native: master %s + 2 REPLICAOF replicas", b.native)
	}
	for _, p := range b.peers {
		if p.addr != "" {
			fmt.Fprintf(b.out, "; %s %s", p.side, p.addr)
		}
	}
	if b.opt.reads {
		fmt.Fprintf(b.out, "; for the read runs, started after the others, a second proxy (--read-your-writes=false) on the same master and slaves")
	}
	fmt.Fprintf(b.out, "\n\n")
}

func (b *bench) report(cells []*cell) {
	b.reportTable(cells)
	b.reportTargets(cells)
	b.reportThroughput(cells)
	if b.opt.repl {
		b.reportReplication(cells)
		b.reportSetCPU(cells)
	}
	if b.opt.reads {
		b.reportReads(cells)
	}
}

// reportThroughput prints the median requests/s of every side of the base cells.
func (b *bench) reportThroughput(cells []*cell) {
	w := b.out
	sides := []string{sideDirect, sideProxy}
	for _, p := range b.peers {
		if p.addr != "" {
			sides = append(sides, p.side)
		}
	}
	if b.opt.repl {
		sides = append(sides, sideNative)
	}
	fmt.Fprintf(w, "\nThroughput, median requests/s over %d round(s): direct = the master behind syncproxy, predixy and\n"+
		"twemproxy, directly; proxy = syncproxy; native = the master with 2 REPLICAOF replicas (SET only)\n", b.opt.rounds)
	fmt.Fprintf(w, "%-6s %4s", "test", "-P")
	for _, s := range sides {
		fmt.Fprintf(w, " %12s", s)
	}
	fmt.Fprintln(w)
	for _, c := range cells {
		if c.kind != kindBase || c.rps[sideDirect] == nil {
			continue
		}
		fmt.Fprintf(w, "%-6s %4d", strings.ToUpper(c.test), c.pipe)
		for _, s := range sides {
			if c.rps[s] == nil {
				fmt.Fprintf(w, " %12s", "-")
			} else {
				fmt.Fprintf(w, " %12.0f", median(c.rps[s]))
			}
		}
		fmt.Fprintln(w)
	}
}

func (b *bench) reportReplication(cells []*cell) {
	w := b.out
	fmt.Fprintf(w, "\nReplicated writes: SET through syncproxy (2 slaves) vs SET on a master with 2 native replicas\n")
	fmt.Fprintf(w, "%-6s %4s %12s %12s %12s  %s\n", "test", "-P", "native", "proxy", "proxy/native", "catch-up after run (max)")
	for _, c := range cells {
		if c.rps[sideNative] == nil {
			continue
		}
		n, p := median(c.rps[sideNative]), median(c.rps[sideProxy])
		fmt.Fprintf(w, "%-6s %4d %12.0f %12.0f %12.2f  %v\n", strings.ToUpper(c.test), c.pipe, n, p,
			ratio(c.rps[sideProxy], c.rps[sideNative]), maxDuration(c.drain).Round(time.Millisecond))
	}
	fmt.Fprintf(w, "\nReplication lag during the proxy SET runs (INFO through the proxy every %v, all slaves, all rounds)\n", lagInterval)
	fmt.Fprintf(w, "%-6s %4s %8s %8s %8s %8s   %8s %8s %8s   p99 < %d ms\n", "test", "-P", "samples", "ms p50", "ms p99", "ms max",
		"msgs p50", "msgs p99", "msgs max", lagP99Target)
	for _, c := range cells {
		if c.rps[sideNative] == nil {
			continue
		}
		l := c.lag
		if len(l.ms) == 0 {
			fmt.Fprintf(w, "%-6s %4d no samples (%d INFO errors)\n", strings.ToUpper(c.test), c.pipe, l.errors)
			continue
		}
		p99 := percentile(l.ms, 0.99)
		errs := ""
		if l.errors > 0 {
			errs = fmt.Sprintf("  (%d INFO errors)", l.errors)
		}
		fmt.Fprintf(w, "%-6s %4d %8d %8d %8d %8d   %8d %8d %8d   %s%s\n", strings.ToUpper(c.test), c.pipe, len(l.ms),
			percentile(l.ms, 0.50), p99, percentile(l.ms, 1),
			percentile(l.messages, 0.50), percentile(l.messages, 0.99), percentile(l.messages, 1), mark(p99 < lagP99Target), errs)
	}
	fmt.Fprintf(w, "lag_ms is the age of the last applied message when it was applied (0 when the slave is up to date);\n"+
		"lag_messages is how many published messages the slave had not applied yet.\n")
}

func (b *bench) reportReads(cells []*cell) {
	w := b.out
	fmt.Fprintf(w, "\nGET through syncproxy, read-your-writes on vs off (two proxies on the same master and slaves), -c %d, median requests/s\n", b.opt.clients)
	fmt.Fprintf(w, "%-6s %4s %12s %12s %12s\n", "test", "-P", "RYW on", "RYW off", "on/off")
	for _, c := range cells {
		if c.kind != kindRead {
			continue
		}
		on, off := median(c.rps[sideRYWOn]), median(c.rps[sideRYWOff])
		fmt.Fprintf(w, "%-6s %4d %12.0f %12.0f %12.2f\n", strings.ToUpper(c.test), c.pipe, on, off, on/off)
	}
	for _, c := range cells {
		if c.kind != kindMixed {
			continue
		}
		fmt.Fprintf(w, "\nMixed 1:1 writes/reads: redis-benchmark -t set and -t get at the same time, each -c %d -n %d -r %d -P %d\n"+
			"(both on key:__rand_int__, the same keyspace), directly on the master vs through syncproxy (RYW on), median requests/s\n",
			b.mixedClients(), b.opt.requests, mixedKeyspace, c.pipe)
		fmt.Fprintf(w, "%-34s %12s %12s %12s\n", "combined figure", "direct", "proxy", "proxy/direct")
		d, p := median(c.sum[sideDirect]), median(c.sum[sideProxy])
		fmt.Fprintf(w, "%-34s %12.0f %12.0f %12.2f\n", "SET rps + GET rps (each its own)", d, p, p/d)
		d, p = median(c.rps[sideDirect]), median(c.rps[sideProxy])
		fmt.Fprintf(w, "%-34s %12.0f %12.0f %12.2f\n", "2n / slower one's time", d, p, p/d)
		fmt.Fprintf(w, "Each process's rps is its own (n / its own elapsed time). The sum overstates the mix\n"+
			"when one process ends first; 2n / the slower one's time (= 2 x the lower rps) counts all requests\n"+
			"over the time the mix took. The GET clients are not the SET clients, so read-your-writes does not\n"+
			"route their reads to the master.\n")
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the nearest-rank p-quantile of v (p in (0, 1]).
func percentile(v []int64, p float64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func maxDuration(v []time.Duration) time.Duration {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v)
}

// ---- helpers ----

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the bench from inside the syncproxy module (go run ./internal/bench)")
	}
	return filepath.Dir(gomod), nil
}

func dial(addr string, timeout time.Duration) (redis.Conn, error) {
	return redis.Dial("tcp", addr,
		redis.DialConnectTimeout(timeout), redis.DialReadTimeout(timeout), redis.DialWriteTimeout(timeout))
}

// doOnce runs one command on a fresh connection.
func doOnce(addr, cmd string, args ...interface{}) (interface{}, error) {
	c, err := dial(addr, probeTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// poll calls cond every interval until it reports true, fails, or timeout or ctx ends.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("not ready after %v", timeout)
		case <-tick.C:
		}
	}
}

// infoField returns the value of "name:value" in an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), name+":"); ok {
			return v
		}
	}
	return ""
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
