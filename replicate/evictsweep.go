package replicate

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Evictions the subscription missed. While the eviction subscription is down
// (the master unreachable, the proxy stopped), the master's evictions are not
// seen, and the slaves keep those keys. When it is back, the evictor sweeps: it
// scans each slave (SCAN, sweepCount keys a call, sweepPause between calls) and
// runs the eviction script for every batch of keys found, which deletes on the
// slaves, in stream order, those the master does not hold at that point. Deleting
// on the slaves a key the master lacks, at a numbered position, is always right,
// whatever the reason it lacks it; the sweep only bounds the cost of finding them.

const (
	sweepCount = 500
	sweepPause = 10 * time.Millisecond
)

// sweep runs once after the eviction subscription came back, with its own
// connection to the master; it stops when ctx ends.
func (e *evictor) sweep(ctx context.Context, g *masterGen) {
	wc, err := e.r.dial(ctx, g.ep, e.r.cfg.Timeout)
	if err != nil {
		e.log.Warn().Err(err).Msg("eviction sweep: cannot reach the master; `syncproxy check --repair` finds what was missed")
		return
	}
	defer wc.Close()
	if !evicts(wc) {
		return
	}
	start := time.Now()
	var scanned, deleted int64
	for _, a := range e.r.Appliers() {
		s, d, err := e.sweepSlave(ctx, wc, a)
		scanned, deleted = scanned+s, deleted+d
		if err != nil {
			if ctx.Err() == nil {
				e.log.Warn().Err(err).Str("slave", a.Name()).Msg("eviction sweep of the slave stopped; `syncproxy check --repair` finds what was missed")
			}
			return
		}
	}
	e.log.Info().Int64("keys_scanned", scanned).Int64("keys_deleted", deleted).Dur("took", time.Since(start)).
		Msg("eviction sweep done: slaves hold no key the master evicted while the subscription was down")
}

// evicts reports whether the master may evict keys (maxmemory and a policy
// other than noeviction); true when CONFIG is refused.
func evicts(c redis.Conn) bool {
	vals, err := redis.Strings(c.Do("CONFIG", "GET", "maxmemory*"))
	if err != nil {
		return true
	}
	cfg := map[string]string{}
	for i := 0; i+1 < len(vals); i += 2 {
		cfg[vals[i]] = vals[i+1]
	}
	return cfg["maxmemory"] != "0" && cfg["maxmemory-policy"] != "noeviction"
}

// sweepSlave scans every DB of a's slave; it returns the keys scanned and
// deleted on the slaves.
func (e *evictor) sweepSlave(ctx context.Context, wc redis.Conn, a *Applier) (scanned, deleted int64, err error) {
	sc, err := e.r.dial(ctx, a.ep, e.r.cfg.Timeout)
	if err != nil {
		return 0, 0, err
	}
	defer sc.Close()
	info, err := redis.String(sc.Do("INFO", "keyspace"))
	if err != nil {
		return 0, 0, err
	}
	for _, db := range KeyspaceDBs(info) {
		if _, err := sc.Do("SELECT", db); err != nil {
			return scanned, deleted, err
		}
		cursor := "0"
		for {
			vals, err := redis.Values(sc.Do("SCAN", cursor, "COUNT", sweepCount))
			if err != nil {
				return scanned, deleted, err
			}
			var keys []string
			if _, err := redis.Scan(vals, &cursor, &keys); err != nil {
				return scanned, deleted, err
			}
			batch := make([]EvictedKey, 0, len(keys))
			for _, k := range keys {
				batch = append(batch, EvictedKey{DB: db, Key: k})
			}
			_, n, err := e.r.ReplicateEvictions(wc, batch)
			if err != nil {
				return scanned, deleted, err
			}
			scanned, deleted = scanned+int64(len(keys)), deleted+int64(n)
			if cursor == "0" {
				break
			}
			if !SleepCtx(ctx, sweepPause) {
				return scanned, deleted, ctx.Err()
			}
		}
	}
	return scanned, deleted, nil
}

// KeyspaceDBs returns the DBs listed in an INFO keyspace reply.
func KeyspaceDBs(info string) []int {
	var dbs []int
	for _, line := range strings.Split(info, "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "db") {
			continue
		}
		if n, err := strconv.Atoi(name[2:]); err == nil {
			dbs = append(dbs, n)
		}
	}
	return dbs
}
