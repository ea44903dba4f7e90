package replicate

import (
	"bytes"
	"errors"

	"github.com/gomodule/redigo/redis"
)

// Functions on the slaves. FUNCTION LOAD, DELETE, FLUSH and RESTORE reach the
// slaves as effects of the sync stream like any write (the proxy runs them on
// the master natively and numbers them: WriteNativeCall), so that a slave can
// serve FCALL_RO. A script may not run FUNCTION: the slaves apply runs of
// messages as transactions of the plain commands (applytx.go), and a run holding
// one is never handed to the apply script. A full resync copies the
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
