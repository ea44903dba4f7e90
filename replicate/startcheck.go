package replicate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// MaxClockSkew is the difference between a slave's clock and the master's beyond
// which CheckServers reports it: keys expire on each server at the master's
// absolute times, by the server's own clock.
const MaxClockSkew = 500 * time.Millisecond

// ErrSlaveEvicts refuses to start with a slave whose maxmemory is below the
// master's: it would evict keys the master keeps and serve a subset.
var ErrSlaveEvicts = errors.New("replicate: a slave's maxmemory is below the master's")

// CheckServers compares each slave with the master before replication starts:
// a slave whose maxmemory is below the master's (or set while the master's is
// not) is an error wrapping ErrSlaveEvicts unless allowEvicting; a slave whose
// clock differs from the master's by more than MaxClockSkew is logged. Servers
// that cannot be reached, or refuse CONFIG, are not checked (logged).
func (r *Replicator) CheckServers(ctx context.Context, allowEvicting bool) error {
	m, err := r.serverFacts(ctx, r.Master())
	if err != nil {
		r.cfg.Log.Warn().Err(err).Str("master", r.Master().Addr).Msg("start-up check of the master skipped")
		return nil
	}
	for _, a := range r.Appliers() {
		s, err := r.serverFacts(ctx, a.ep)
		if err != nil {
			a.log.Warn().Err(err).Msg("start-up check of the slave skipped")
			continue
		}
		skew := s.offset - m.offset
		if skew.Abs() > MaxClockSkew {
			a.log.Error().Dur("skew", skew).Dur("bound", MaxClockSkew).
				Msg("the slave's clock differs from the master's: its keys expire that much earlier or later")
		}
		if m.maxmemory < 0 || s.maxmemory < 0 {
			continue // CONFIG refused
		}
		if s.maxmemory != 0 && (m.maxmemory == 0 || s.maxmemory < m.maxmemory) {
			err := fmt.Errorf("%w: slave %s %s has maxmemory %d, the master %d (0: none); give it at least the master's, or start with --allow-slave-eviction",
				ErrSlaveEvicts, a.ep.Name, a.ep.Addr, s.maxmemory, m.maxmemory)
			if !allowEvicting {
				return err
			}
			a.log.Warn().Int64("maxmemory", s.maxmemory).Int64("master_maxmemory", m.maxmemory).
				Msg("the slave may evict keys the master keeps (allowed by --allow-slave-eviction): it leaves the read set while it does")
		}
	}
	return nil
}

// serverFacts is what CheckServers compares.
type serverFacts struct {
	maxmemory int64         // -1: CONFIG refused
	offset    time.Duration // the server's clock minus the proxy's (TIME against the middle of its round trip)
}

func (r *Replicator) serverFacts(ctx context.Context, e Endpoint) (serverFacts, error) {
	f := serverFacts{maxmemory: -1}
	c, err := r.dial(ctx, e, r.cfg.Timeout)
	if err != nil {
		return f, err
	}
	defer c.Close()
	if kv, err := redis.StringMap(c.Do("CONFIG", "GET", "maxmemory")); err == nil {
		if n, err := strconv.ParseInt(kv["maxmemory"], 10, 64); err == nil {
			f.maxmemory = n
		}
	}
	start := time.Now()
	t, err := redis.Int64s(c.Do("TIME"))
	if err != nil || len(t) != 2 {
		return f, fmt.Errorf("replicate: TIME: %v", err)
	}
	mid := start.Add(time.Since(start) / 2)
	f.offset = time.Unix(t[0], t[1]*1000).Sub(mid)
	return f, nil
}
