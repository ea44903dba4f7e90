package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// The near cache run (-near-cache-get), instead of the other runs: GET over a
// 1,000-key working set (redis-benchmark -t get -r 1000 -P 16 -c 50) directly
// on the master, through a proxy with --near-cache 64mb, and through one
// without (the same slaves), interleaved over -rounds; the goal of issue 16 is
// the caching proxy at >= 1.2x direct Redis.

// sideNoCache is the proxy without the near cache (in b.proxyNoRYW's place).
const sideNoCache = "no-cache"

const (
	nearKeys   = 1000
	nearPipe   = 16
	nearTarget = 1.2
	nearSize   = "64mb"
)

// runNearCacheGet runs the near cache measurement and prints its table.
func (b *bench) runNearCacheGet(ctx context.Context) error {
	slaves, err := b.startBackends(ctx)
	if err != nil {
		return err
	}
	if b.proxy, err = b.startProxy(ctx, "syncproxy", b.master, slaves, "--near-cache", nearSize); err != nil {
		return err
	}
	if b.proxyNoRYW, err = b.startProxy(ctx, "syncproxy-nocache", b.master, slaves); err != nil {
		return err
	}
	r := strconv.Itoa(nearKeys)
	// The working set, written through the proxy (the near cache starts with
	// the first write it sees), then one warm-up GET run that fills the cache.
	if _, err := b.redisBenchmark(ctx, b.proxy, "set", nearPipe, b.opt.clients, "-r", r); err != nil {
		return fmt.Errorf("populate: %w", err)
	}
	if err := b.waitApplied(ctx, drainTimeout); err != nil {
		return err
	}
	if _, err := b.redisBenchmark(ctx, b.proxy, "get", nearPipe, b.opt.clients, "-r", r); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	rps := map[string][]float64{}
	for round := 1; round <= b.opt.rounds; round++ {
		for _, side := range []string{sideDirect, sideProxy, sideNoCache} {
			addr := b.addr(side)
			if side == sideNoCache {
				addr = b.proxyNoRYW
			}
			v, err := b.redisBenchmark(ctx, addr, "get", nearPipe, b.opt.clients, "-r", r)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, side, err)
			}
			rps[side] = append(rps[side], v)
			fmt.Fprintf(b.log, "round %d/%d  get -P %d -r %d %-7s %12.0f rps\n", round, b.opt.rounds, nearPipe, nearKeys, side, v)
		}
	}
	return b.reportNearCache(rps)
}

// reportNearCache prints the medians, their ratio and the proxy's near cache
// figures.
func (b *bench) reportNearCache(rps map[string][]float64) error {
	info, err := redis.String(doOnce(b.proxy, "INFO"))
	if err != nil {
		return err
	}
	direct, proxy, plain := median(rps[sideDirect]), median(rps[sideProxy]), median(rps[sideNoCache])
	fmt.Fprintf(b.out, "\n### Near cache: GET, %d keys, -P %d, -c %d, -n %d, median of %d rounds\n\n",
		nearKeys, nearPipe, b.opt.clients, b.opt.requests, b.opt.rounds)
	fmt.Fprintf(b.out, "| direct Redis | proxy --near-cache %s | proxy without | cache/direct | target | cache/without |\n|---|---|---|---|---|---|\n", nearSize)
	fmt.Fprintf(b.out, "| %.0f | %.0f | %.0f | %.2f | %s | %.2f |\n\n", direct, proxy, plain, proxy/direct,
		nearVerdict(proxy/direct), proxy/plain)
	var fields []string
	for _, f := range []string{"hits", "misses", "invalidations", "entries", "bytes"} {
		fields = append(fields, f+"="+infoField(info, "near_cache_"+f))
	}
	fmt.Fprintf(b.out, "near cache after the runs: %s\n", strings.Join(fields, ", "))
	return nil
}

// nearVerdict marks the ratio of the caching proxy to direct Redis against the
// issue's goal.
func nearVerdict(ratio float64) string {
	if ratio >= nearTarget {
		return fmt.Sprintf(">= %.2f PASS", nearTarget)
	}
	return fmt.Sprintf(">= %.2f BELOW", nearTarget)
}
