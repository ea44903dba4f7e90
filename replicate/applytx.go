package replicate

import (
	"fmt"
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
	tx, err := a.sendRun(msgs, last, from)
	if err != nil {
		return err
	}
	if tx.guard != "" {
		if tx.exec == execRan {
			// The check did not run (refused: EVAL denied to the slave's user, a
			// script of a client running), and the effects were applied: whether
			// the slave was at the run's start is not known. The next sync copies
			// it whole, which makes it exact whatever happened.
			a.unverified.Store(true)
			a.setState(StateCatchingUp, "applied a run without its position check") // out of the read set
			a.log.Error().Err(tx.guard).Int64("seq", last.Seq).
				Msg("the slave refused the position check and applied the run without it: it will be copied again")
			return tx.guard
		}
		switch {
		case strings.HasPrefix(string(tx.guard), "SYNCGAP resync"):
			return errGap // another applier's resync holds the slave
		case strings.HasPrefix(string(tx.guard), "SYNCGAP"):
			return a.moved(last.Epoch, from)
		}
		return tx.guard
	}
	switch tx.exec {
	case execAborted:
		return a.moved(last.Epoch, from) // the position or the lock moved under the WATCH
	case execRefused:
		// Refused when queued: the transaction was discarded (and the WATCH).
		for _, m := range msgs {
			if nativeEffects(m) {
				return tx.execErr
			}
		}
		a.log.Warn().Err(tx.execErr).Int64("seq", last.Seq).Msg("the slave refused a run as a transaction: applied by the apply script")
		return a.applyScripted(msgs)
	}
	a.appliedRun(last, tx.failed)
	return nil
}

// EXEC's outcomes.
const (
	execRan     = iota // an array: the effects ran, tx.failed of them with an error
	execAborted        // null: a WATCHed key moved
	execRefused        // an error (EXECABORT): the transaction was discarded
)

// txResult is what an apply transaction's replies say.
type txResult struct {
	guard   redis.Error // the guard's error reply, "" when the check passed
	exec    int         // EXEC's outcome
	execErr redis.Error // EXEC's error reply (execRefused)
	failed  int         // effects that failed (execRan)
}

// maxKeptTxBuf bounds the encoding buffer an applier keeps between runs.
const maxKeptTxBuf = 1 << 20

// sendRun sends the transaction that applies msgs from the position from in one
// write, and reads its replies, skipping those it does not look at (WATCH's,
// MULTI's, the +QUEUED ones).
func (a *Applier) sendRun(msgs []*Message, last *Message, from int64) (txResult, error) {
	token := ""
	if a.rs != nil {
		token = a.rs.token
	}
	buf, queued := appendRun(a.txBuf[:0], msgs, last, from, token)
	if cap(buf) <= maxKeptTxBuf {
		a.txBuf = buf[:0]
	}
	var tx txResult
	err := a.sc.roundTrip(buf, func() (err error) {
		tx, err = a.readRun(queued)
		return err
	})
	if err != nil {
		// Replies may be left unread: nothing may use the connection again
		// (redigo would see them as its own).
		a.sc.Close()
	}
	return tx, err
}

// readRun reads the replies of a transaction of queued commands.
func (a *Applier) readRun(queued int) (txResult, error) {
	var tx txResult
	for i := 0; i < 3+queued; i++ { // WATCH, the guard, MULTI, the queued commands
		line, err := a.sc.readLine()
		if err != nil {
			return tx, err
		}
		if i == 1 && line[0] == '-' {
			tx.guard = redis.Error(line[1:])
		}
		if err := a.sc.skip(line); err != nil {
			return tx, err
		}
	}
	return tx, a.readExec(&tx)
}

// readExec reads EXEC's reply into tx.
func (a *Applier) readExec(tx *txResult) error {
	line, err := a.sc.readLine()
	if err != nil {
		return err
	}
	switch line[0] {
	case '-':
		tx.exec, tx.execErr = execRefused, redis.Error(line[1:])
		return nil
	case '_':
		tx.exec = execAborted
		return nil
	case '*':
		n, err := respLen(line)
		if err != nil || n < 0 {
			tx.exec = execAborted
			return err
		}
		tx.exec = execRan
		for i := 0; i < n; i++ {
			line, err := a.sc.readLine()
			if err != nil {
				return err
			}
			if line[0] == '-' || line[0] == '!' {
				tx.failed++
			}
			if err := a.sc.skip(line); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("replicate: unexpected EXEC reply %q from the slave", line[:1])
}
