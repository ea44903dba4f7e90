package replicate

import (
	"errors"
	"strconv"

	"github.com/gomodule/redigo/redis"
)

// A run of messages is applied to a slave as one transaction of the plain
// effect commands, in two round trips:
//
//	WATCH syncproxy:applied syncproxy:resync
//	MGET syncproxy:applied syncproxy:resync      (the slave must be at the run's start,
//	                                              and no other applier's resync hold it)
//	MULTI
//	[SELECT db] effect ... [SELECT db] effect ...
//	[SELECT 0] SET syncproxy:applied <epoch>:<last seq>
//	EXEC
//
// The WATCH makes the EXEC fail if another applier moved the position, or took
// the resync lock, after it was checked: applying stays exactly-once with several
// appliers, as with the apply script, while the slave runs the effects at native
// speed (no Lua call per effect). Commands a script may not run (FUNCTION) need
// nothing else. A run the slave refuses as a whole at queue time (EXECABORT: a
// command it does not know, or OOM) is applied by the apply script instead,
// which applies what it can and counts the rest as failed, as before.

// applyTx applies msgs, consecutive messages from the slave's position, in one
// transaction with the position's update.
func (a *Applier) applyTx(msgs []*Message) error {
	from := a.applied.Load()
	last := msgs[len(msgs)-1]
	if err := a.watchPosition(last.Epoch, from); err != nil {
		return err
	}
	reply, err := a.execRun(msgs, last)
	var re redis.Error
	switch {
	case errors.As(err, &re):
		// Refused when queued: the transaction was discarded (and the WATCH).
		for _, m := range msgs {
			if nativeEffects(m) {
				return err
			}
		}
		a.log.Warn().Err(re).Int64("seq", last.Seq).Msg("the slave refused a run as a transaction: applied by the apply script")
		return a.applyScripted(msgs)
	case err != nil:
		return err
	case reply == nil:
		return a.moved(last.Epoch, from) // the position or the lock moved under the WATCH
	}
	failed := 0
	for _, r := range reply {
		if _, ok := r.(redis.Error); ok {
			failed++
		}
	}
	a.appliedRun(last, failed)
	return nil
}

// watchPosition WATCHes the slave's position and resync lock and checks that
// the slave is at from in epoch, unlocked or locked by this applier's resync;
// otherwise it UNWATCHes and answers as for a run the slave refused (moved).
func (a *Applier) watchPosition(epoch string, from int64) error {
	c := a.slave
	if err := c.Send("WATCH", KeyApplied, KeyResync); err != nil {
		return err
	}
	vals, err := redis.Strings(c.Do("MGET", KeyApplied, KeyResync))
	if err != nil {
		c.Do("UNWATCH")
		return err
	}
	token := ""
	if a.rs != nil {
		token = a.rs.token
	}
	if vals[0] == epoch+":"+strconv.FormatInt(from, 10) && (vals[1] == "" || vals[1] == token) {
		return nil
	}
	if _, err := c.Do("UNWATCH"); err != nil {
		return err
	}
	if vals[1] != "" && vals[1] != token {
		return errGap // another applier's resync holds the slave
	}
	return a.moved(epoch, from)
}

// execRun sends msgs' effects and the position's update as MULTI ... EXEC and
// returns EXEC's replies (nil: the WATCH aborted it); an error reply means the
// transaction was refused as a whole.
func (a *Applier) execRun(msgs []*Message, last *Message) ([]interface{}, error) {
	c := a.slave
	c.Send("MULTI")
	db := 0
	for _, m := range msgs {
		for _, e := range m.Effects {
			if len(e.Args) == 0 {
				continue
			}
			if e.DB != db {
				c.Send("SELECT", e.DB)
				db = e.DB
			}
			args := a.args[:0]
			for _, arg := range e.Args[1:] {
				args = append(args, arg)
			}
			c.Send(string(e.Args[0]), args...)
			clear(args)
			a.args = args[:0]
		}
	}
	if db != 0 {
		c.Send("SELECT", 0)
	}
	c.Send("SET", KeyApplied, last.Epoch+":"+strconv.FormatInt(last.Seq, 10))
	reply, err := c.Do("EXEC")
	if err != nil {
		return nil, err
	}
	if reply == nil {
		return nil, nil
	}
	return redis.Values(reply, nil)
}
