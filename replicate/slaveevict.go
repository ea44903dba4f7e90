package replicate

import (
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gomodule/redigo/redis"
)

// slaveEvictions follows a slave's own evictions (INFO evicted_keys): a slave
// with a maxmemory of its own evicts other keys than the master and then serves
// a subset of the data, so it leaves the read set until its stats are reset
// (CONFIG RESETSTAT, or a restart), the operator's word that it was dealt with
// (`syncproxy check --repair` puts the keys back).
type slaveEvictions struct {
	seen     bool  // last is set; owned by the run goroutine
	last     int64 // evicted_keys at the last check
	evicting atomic.Bool
}

// Evicting reports whether the slave was seen evicting keys (it is then out of
// the read set).
func (a *Applier) Evicting() bool { return a.evict.evicting.Load() }

// checkEvictions reads the slave's evicted_keys and sets Evicting from it. A
// server whose INFO lacks the field is left alone.
func (a *Applier) checkEvictions() error {
	s, err := redis.String(a.slave.Do("INFO", "stats"))
	if err != nil {
		if _, ok := err.(redis.Error); ok {
			return nil
		}
		return err
	}
	n, ok := infoInt(s, "evicted_keys")
	if !ok {
		return nil
	}
	ev := &a.evict
	switch {
	case !ev.seen:
		ev.seen = true
	case n > ev.last && !ev.evicting.Load():
		ev.evicting.Store(true)
		a.log.Error().Int64("evicted_keys", n).Int64("before", ev.last).
			Msg("the slave evicts keys (maxmemory of its own): it serves a subset of the data and leaves the read set; give it no maxmemory (or more than the master's), run `syncproxy check --repair`, then CONFIG RESETSTAT on it")
	case n < ev.last && ev.evicting.Load():
		ev.evicting.Store(false)
		a.log.Warn().Msg("the slave's stats were reset: back in the read set")
	}
	ev.last = n
	return nil
}

// infoInt returns an integer field of an INFO reply.
func infoInt(info, field string) (int64, bool) {
	v, ok := InfoField(info, field)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// InfoField returns the value of field in an INFO reply; false when it has none.
func InfoField(info, field string) (string, bool) {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, true
		}
	}
	return "", false
}
