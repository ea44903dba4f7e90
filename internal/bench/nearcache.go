package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The near cache run (-near-cache-get), instead of the other runs: GET over a
// 1,000-key working set (redis-benchmark -t get -r 1000 -P 16 -c 50) directly
// on the master, through a proxy with --near-cache 64mb, through one without
// (the same slaves) and, with -proxy-bin, through that binary with --near-cache
// 64mb too (an A/B of the cache hit path from one run), interleaved over
// -rounds; the goal of issue 16 is the caching proxy at >= 1.2x direct Redis.
// Each proxy's CPU time per GET is read around its runs (Linux).

// sideNoCache is the proxy without the near cache (in b.proxyNoRYW's place).
const sideNoCache = "no-cache"

const (
	nearKeys   = 1000
	nearPipe   = 16
	nearTarget = 1.2
	nearSize   = "64mb"
)

// nearSide is one system the near cache run measures.
type nearSide struct {
	name string
	addr string
	proc *proc // nil for direct Redis
	rps  []float64
	cpu  []float64 // microseconds of the proxy's CPU per GET (direct: the master's)
	gen  []float64 // microseconds of redis-benchmark's CPU per GET
}

// runNearCacheGet runs the near cache measurement and prints its table.
func (b *bench) runNearCacheGet(ctx context.Context) error {
	slaves, err := b.startBackends(ctx)
	if err != nil {
		return err
	}
	sides, err := b.startNearProxies(ctx, slaves)
	if err != nil {
		return err
	}
	r := strconv.Itoa(nearKeys)
	// The working set, written through the proxy (the near cache starts with
	// the first write it sees), then one warm-up GET run per caching proxy
	// that fills its cache.
	if _, err := b.redisBenchmark(ctx, b.proxy, "set", nearPipe, b.opt.clients, "-r", r); err != nil {
		return fmt.Errorf("populate: %w", err)
	}
	if err := b.waitApplied(ctx, drainTimeout); err != nil {
		return err
	}
	for _, sd := range sides {
		if sd.name == sideProxy || sd.name == sideOther {
			if _, err := b.redisBenchmark(ctx, sd.addr, "get", nearPipe, b.opt.clients, "-r", r); err != nil {
				return fmt.Errorf("warm-up %s: %w", sd.name, err)
			}
		}
	}
	for round := 1; round <= b.opt.rounds; round++ {
		for _, sd := range nearOrder(sides, round) {
			var before time.Duration
			if sd.proc != nil {
				before, _ = procCPU(sd.proc.cmd.Process.Pid)
			}
			v, err := b.redisBenchmark(ctx, sd.addr, "get", nearPipe, b.opt.clients, "-r", r)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, sd.name, err)
			}
			sd.rps = append(sd.rps, v)
			sd.gen = append(sd.gen, float64(b.benchCPU)/float64(time.Microsecond)/float64(b.opt.requests))
			cpu := ""
			if sd.proc != nil {
				if after, ok := procCPU(sd.proc.cmd.Process.Pid); ok {
					us := float64(after-before) / float64(time.Microsecond) / float64(b.opt.requests)
					sd.cpu = append(sd.cpu, us)
					cpu = fmt.Sprintf("  %.2f us CPU/GET", us)
				}
			}
			fmt.Fprintf(b.log, "round %d/%d  get -P %d -r %d %-9s %12.0f rps%s\n", round, b.opt.rounds, nearPipe, nearKeys, sd.name, v, cpu)
		}
	}
	return b.reportNearCache(sides)
}

// nearOrder is the order of the sides in round: with -proxy-bin, the two
// caching proxies take turns at running first, so that neither always follows
// the same side.
func nearOrder(sides []*nearSide, round int) []*nearSide {
	if len(sides) < 4 || round%2 == 1 {
		return sides
	}
	swapped := append([]*nearSide(nil), sides...)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	return swapped
}

// startNearProxies starts the proxies of the near cache run and returns the
// run's sides, in the order of a round.
func (b *bench) startNearProxies(ctx context.Context, slaves []string) ([]*nearSide, error) {
	var err error
	if b.proxy, err = b.startProxy(ctx, "syncproxy", b.master, slaves, "--near-cache", nearSize); err != nil {
		return nil, err
	}
	sides := []*nearSide{{name: sideDirect, addr: b.master, proc: b.lastProc("master")},
		{name: sideProxy, addr: b.proxy, proc: b.lastProc("syncproxy")}}
	if p := b.peer(sideOther); p != nil && p.bin != "" {
		addr, err := b.startProxyBin(ctx, "syncproxy-other", p.bin, b.master, slaves, "--near-cache", nearSize)
		if err != nil {
			return nil, err
		}
		sides = append(sides, &nearSide{name: sideOther, addr: addr, proc: b.lastProc("syncproxy-other")})
	}
	if b.proxyNoRYW, err = b.startProxy(ctx, "syncproxy-nocache", b.master, slaves); err != nil {
		return nil, err
	}
	return append(sides, &nearSide{name: sideNoCache, addr: b.proxyNoRYW, proc: b.lastProc("syncproxy-nocache")}), nil
}

// reportNearCache prints the medians, the medians of the per-round ratios to
// direct Redis, the CPU per GET and the proxy's near cache figures.
func (b *bench) reportNearCache(sides []*nearSide) error {
	info, err := redis.String(doOnce(b.proxy, "INFO"))
	if err != nil {
		return err
	}
	by := map[string]*nearSide{}
	for _, sd := range sides {
		by[sd.name] = sd
	}
	// Ratios per round (the sides of a round share the machine's load), then
	// their median.
	ratio := func(sd *nearSide) float64 {
		var rs []float64
		for i, v := range sd.rps {
			rs = append(rs, v/by[sideDirect].rps[i])
		}
		return median(rs)
	}
	direct, proxy, plain := median(by[sideDirect].rps), median(by[sideProxy].rps), median(by[sideNoCache].rps)
	cacheRatio, plainRatio := ratio(by[sideProxy]), ratio(by[sideNoCache])
	fmt.Fprintf(b.out, "\n### Near cache: GET, %d keys, -P %d, -c %d, -n %d, median of %d rounds\n\n",
		nearKeys, nearPipe, b.opt.clients, b.opt.requests, b.opt.rounds)
	fmt.Fprintf(b.out, "| direct Redis | proxy --near-cache %s | proxy without | cache/direct | target | cache/without |\n|---|---|---|---|---|---|\n", nearSize)
	fmt.Fprintf(b.out, "| %.0f | %.0f | %.0f | %.2f | %s | %.2f |\n\n", direct, proxy, plain, cacheRatio,
		nearVerdict(cacheRatio), cacheRatio/plainRatio)
	// The load generator's CPU per GET says how close it is to a core of its
	// own: at 1 s of CPU per second it, not the server, bounds the rate.
	for _, sd := range sides {
		label, who := sd.name, "proxy"
		switch sd.name {
		case sideOther:
			label = "-proxy-bin " + b.opt.otherProxy + " --near-cache " + nearSize
		case sideDirect:
			who = "Redis"
		}
		fmt.Fprintf(b.out, "%-40s %12.0f rps (%.2f of direct), %s us %s CPU per GET, redis-benchmark %s us (%.0f%% of a core)\n",
			label+":", median(sd.rps), ratio(sd), cpuText(sd.cpu), who, cpuText(sd.gen), median(sd.gen)*median(sd.rps)/1e4)
	}
	var fields []string
	for _, f := range []string{"hits", "misses", "invalidations", "entries", "bytes"} {
		fields = append(fields, f+"="+infoField(info, "near_cache_"+f))
	}
	fmt.Fprintf(b.out, "\nnear cache after the runs: %s\n", strings.Join(fields, ", "))
	return nil
}

// cpuText is the median CPU per GET, or "-" when it could not be read.
func cpuText(us []float64) string {
	if len(us) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", median(us))
}

// nearVerdict marks the ratio of the caching proxy to direct Redis against the
// issue's goal.
func nearVerdict(ratio float64) string {
	if ratio >= nearTarget {
		return fmt.Sprintf(">= %.2f PASS", nearTarget)
	}
	return fmt.Sprintf(">= %.2f BELOW", nearTarget)
}
