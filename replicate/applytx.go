package replicate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// A run of messages is applied to a slave as one transaction of the plain
// effect commands, in one round trip:
//
//	WATCH syncproxy:applied syncproxy:resync syncproxy:applyguard
//	EVAL <guardScript> 0 <epoch>:<from> <token>
//	MULTI
//	[SELECT db] effect ... [SELECT db] effect ...
//	[SELECT 0] SET syncproxy:applied <epoch>:<last seq>
//	EXEC
//
// The guard checks that the slave is at the run's start and that no other
// applier's resync holds it; when not, it writes a WATCHed key, which makes the
// EXEC behind it fail, and says why. The WATCH also makes the EXEC fail if
// another applier moved the position, or took the resync lock, after the check:
// applying stays exactly-once with several appliers, as with the apply script,
// while the slave runs the effects at native speed (no Lua call per effect).
// Commands a script may not run (FUNCTION) need nothing else. A run the slave
// refuses as a whole at queue time (EXECABORT: a command it does not know, OOM)
// is applied by the apply script instead, which applies what it can and counts
// the rest as failed, as before.

// guardScript is the check before an apply transaction (see above). ARGV: the
// position the run starts from ("<epoch>:<seq>"), the applier's resync token.
// A failed read counts as a moved position. The first DEL is a write: after
// one, Redis lets a script write even when the slave is out of memory.
const guardScript = `
local lock = redis.pcall('GET', 'syncproxy:resync')
local cur = redis.pcall('GET', 'syncproxy:applied')
local locked = type(lock) ~= 'string' and lock ~= false or (lock and lock ~= ARGV[2])
if locked or cur ~= ARGV[1] then
  redis.pcall('DEL', 'syncproxy:applyguard')
  redis.pcall('SET', 'syncproxy:applyguard', '1')
  redis.pcall('DEL', 'syncproxy:applyguard')
  if locked then return redis.error_reply('SYNCGAP resync in progress') end
  return redis.error_reply('SYNCGAP ' .. tostring(cur))
end
return 1
`

// applyTx applies msgs, consecutive messages from the slave's position, in one
// transaction with the position's update.
func (a *Applier) applyTx(msgs []*Message) error {
	from := a.applied.Load()
	last := msgs[len(msgs)-1]
	replies, err := a.sendRun(msgs, last, from)
	if err != nil {
		return err
	}
	guard, exec := replies[1], replies[len(replies)-1]
	if re, ok := guard.(redis.Error); ok {
		if _, ran := exec.([]interface{}); ran {
			// The check did not run (refused), and the effects were applied.
			a.log.Error().Err(re).Int64("seq", last.Seq).Msg("the slave refused the position check and applied the run without it")
			return re
		}
		switch {
		case strings.HasPrefix(string(re), "SYNCGAP resync"):
			return errGap // another applier's resync holds the slave
		case strings.HasPrefix(string(re), "SYNCGAP"):
			return a.moved(last.Epoch, from)
		}
		return re
	}
	switch exec := exec.(type) {
	case nil:
		return a.moved(last.Epoch, from) // the position or the lock moved under the WATCH
	case redis.Error:
		// Refused when queued: the transaction was discarded (and the WATCH).
		for _, m := range msgs {
			if nativeEffects(m) {
				return exec
			}
		}
		a.log.Warn().Err(exec).Int64("seq", last.Seq).Msg("the slave refused a run as a transaction: applied by the apply script")
		return a.applyScripted(msgs)
	case []interface{}:
		failed := 0
		for _, r := range exec {
			if _, ok := r.(redis.Error); ok {
				failed++
			}
		}
		a.appliedRun(last, failed)
		return nil
	}
	return fmt.Errorf("replicate: unexpected EXEC reply %T from the slave", exec)
}

// sendRun sends the transaction that applies msgs from the position from, and
// returns every reply: WATCH's, the guard's, MULTI's, one per queued command,
// EXEC's.
func (a *Applier) sendRun(msgs []*Message, last *Message, from int64) ([]interface{}, error) {
	c := a.slave
	token := ""
	if a.rs != nil {
		token = a.rs.token
	}
	c.Send("WATCH", KeyApplied, KeyResync, keyApplyGuard)
	c.Send("EVAL", guardScript, 0, last.Epoch+":"+strconv.FormatInt(from, 10), token)
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
	c.Send("EXEC")
	return redis.Values(c.Do(""))
}
