package replicate

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Functions on the slaves. FUNCTION LOAD, DELETE, FLUSH and RESTORE reach the
// slaves as effects of the sync stream like any write (the proxy runs them on
// the master natively and numbers them: WriteNativeCall), so that a slave can
// serve FCALL_RO. A script may not run FUNCTION, so a message holding one is
// applied without the apply script: in a transaction with the position's update,
// after checking, under WATCH, that the slave is still where the message starts
// and that no other applier's resync holds it. A full resync copies the
// libraries (FUNCTION DUMP, FUNCTION RESTORE ... REPLACE) before the keys.

// nativeEffects reports whether m holds an effect the apply script cannot run.
func nativeEffects(m *Message) bool {
	for _, e := range m.Effects {
		if len(e.Args) > 0 && bytes.EqualFold(e.Args[0], []byte("function")) {
			return true
		}
	}
	return false
}

// applyNative applies m, the next message, without the apply script.
func (a *Applier) applyNative(m *Message) error {
	from := a.applied.Load()
	want := m.Epoch + ":" + strconv.FormatInt(from, 10)
	c := a.slave
	if _, err := c.Do("WATCH", KeyApplied, KeyResync); err != nil {
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
	if vals[0] != want || vals[1] != token {
		c.Do("UNWATCH")
		return errGap
	}
	c.Send("MULTI")
	for _, e := range m.Effects {
		c.Send("SELECT", e.DB)
		args := make([]interface{}, 0, len(e.Args)-1)
		for _, arg := range e.Args[1:] {
			args = append(args, arg)
		}
		c.Send(string(e.Args[0]), args...)
	}
	c.Send("SELECT", 0)
	c.Send("SET", KeyApplied, m.Epoch+":"+strconv.FormatInt(m.Seq, 10))
	replies, err := redis.Values(c.Do("EXEC"))
	if err == redis.ErrNil {
		return errGap // the position or the lock moved under the WATCH
	}
	if err != nil {
		return err
	}
	for i, r := range replies {
		if re, ok := r.(redis.Error); ok && i%2 == 1 {
			a.log.Warn().Err(re).Int64("seq", m.Seq).Msg("a function effect failed on the slave")
		}
	}
	a.applies.Add(1)
	a.setApplied(m.Seq)
	a.lagMs.Store(time.Now().UnixMilli() - m.TimeMs)
	return nil
}

// copyFunctions makes the slave's libraries the master's, for a full resync.
func (a *Applier) copyFunctions() error {
	dump, err := redis.Bytes(a.master.Do("FUNCTION", "DUMP"))
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) {
			return nil // a master without functions support (the demo's)
		}
		return err
	}
	if _, err := a.slave.Do("FUNCTION", "RESTORE", dump, "FLUSH"); err != nil {
		return err
	}
	return nil
}
