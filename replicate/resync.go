package replicate

import (
	"context"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// numDBs is the number of databases copied by a full resync (Redis' default).
const numDBs = 16

// fullResync empties the slave and copies the master into it, then catches up from
// the backlog. The slave is out of the read set meanwhile.
func (a *Applier) fullResync(ctx context.Context, reason string) error {
	a.setState(StateResyncing, reason)
	a.resyncs.Add(1)
	epoch, seq, err := a.masterPosition()
	if err != nil {
		return err
	}
	if _, err := a.slave.Do("FLUSHALL"); err != nil {
		return err
	}
	copied := 0
	for db := 0; db < numDBs; db++ {
		n, err := a.copyDB(ctx, db)
		copied += n
		if err != nil {
			return err
		}
	}
	if _, err := a.slave.Do("SET", KeyApplied, epoch+":"+strconv.FormatInt(seq, 10)); err != nil {
		return err
	}
	a.mu.Lock()
	a.epoch = epoch
	a.mu.Unlock()
	a.applied.Store(seq)
	a.log.Info().Int("keys", copied).Int64("seq", seq).Msg("full resync copied the master")
	_, target, err := a.masterPosition()
	if err != nil {
		return err
	}
	if err := a.catchUp(ctx, target); err != nil {
		return err
	}
	a.setState(StateOnline, "resync complete")
	return nil
}

// copyDB copies one database from the master to the slave with SCAN, DUMP and
// RESTORE ... ABSTTL, in pipelined batches; it leaves both connections in DB 0.
func (a *Applier) copyDB(ctx context.Context, db int) (int, error) {
	if _, err := a.master.Do("SELECT", db); err != nil {
		return 0, err
	}
	defer a.master.Do("SELECT", 0)
	if _, err := a.slave.Do("SELECT", db); err != nil {
		return 0, err
	}
	defer a.slave.Do("SELECT", 0)
	copied := 0
	cursor := "0"
	for {
		if ctx.Err() != nil {
			return copied, ctx.Err()
		}
		vals, err := redis.Values(a.master.Do("SCAN", cursor, "COUNT", 200))
		if err != nil {
			return copied, err
		}
		if len(vals) != 2 {
			return copied, ErrMessageFormat
		}
		cursor, _ = redis.String(vals[0], nil)
		keys, _ := redis.ByteSlices(vals[1], nil)
		var todo [][]byte
		for _, k := range keys {
			if db == 0 && strings.HasPrefix(string(k), KeyPrefix) {
				continue
			}
			todo = append(todo, k)
		}
		for _, k := range todo {
			a.master.Send("DUMP", k)
			a.master.Send("PEXPIRETIME", k)
		}
		if len(todo) > 0 {
			if err := a.master.Flush(); err != nil {
				return copied, err
			}
		}
		sent := 0
		for _, k := range todo {
			dump, derr := a.master.Receive()
			exp, eerr := redis.Int64(a.master.Receive())
			if derr != nil {
				return copied, derr
			}
			if dump == nil || eerr != nil {
				continue // vanished meanwhile; a later message says so
			}
			ttl := int64(0)
			if exp > 0 {
				ttl = exp
			}
			a.slave.Send("RESTORE", k, ttl, dump, "REPLACE", "ABSTTL")
			sent++
		}
		if sent > 0 {
			if err := a.slave.Flush(); err != nil {
				return copied, err
			}
			for i := 0; i < sent; i++ {
				if _, err := a.slave.Receive(); err != nil {
					return copied, err
				}
			}
		}
		copied += sent
		if cursor == "0" {
			return copied, nil
		}
	}
}
