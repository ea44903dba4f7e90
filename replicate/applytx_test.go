package replicate_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// waitApplied waits until the rig's applier applied every message the master
// numbered.
func waitApplied(t *testing.T, rg *rig) {
	t.Helper()
	seq, err := redis.Int64(rg.master.Do(t, "GET", replicate.KeySeq), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := rg.repl.Appliers()[0]
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a.Applied() != seq {
			return fmt.Errorf("applied %d; master's seq %d", a.Applied(), seq)
		}
		return nil
	})
}

// TestSlaveAppliesTransactions: the slave runs the effects natively, in
// MULTI/EXEC transactions with its position's update, never in the apply script.
func TestSlaveAppliesTransactions(t *testing.T) {
	rg := newRig(t)
	for i := 0; i < 50; i++ {
		rg.write(t, i%3, "SET", "k"+strconv.Itoa(i), strconv.Itoa(i))
		rg.write(t, 0, "HSET", "h", "f"+strconv.Itoa(i), "v")
	}
	rg.write(t, 1, "INCRBYFLOAT", "f", "1.5")
	waitApplied(t, rg)
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
	if n := rg.slave.CommandCalls(t, "evalsha"); n != 0 {
		t.Errorf("the slave ran %d EVALSHA: effects applied in the apply script", n)
	}
	if n := rg.slave.CommandCalls(t, "exec"); n == 0 {
		t.Error("the slave ran no EXEC")
	}
	if n := rg.slave.CommandCalls(t, "set"); n < 50 {
		t.Errorf("the slave ran %d SET natively, want at least 50", n)
	}
}

// TestSlaveRefusedRunAppliedByScript: a run the slave refuses as a transaction
// when queued (here a command it does not know: renamed) is applied by the apply
// script, which applies the other effects and moves the position on.
func TestSlaveRefusedRunAppliedByScript(t *testing.T) {
	master := redistest.Start(t)
	slave := redistest.Start(t, "--rename-command", "SETRANGE", "setrange_renamed_for_test")
	rg := newRigOn(t, master, slave, 10000, 10000)
	rg.write(t, 0, "SET", "a", "1")
	rg.write(t, 0, "SETRANGE", "b", "0", "x")
	rg.write(t, 0, "SET", "c", "2")
	waitApplied(t, rg)
	rg.write(t, 0, "SET", "d", "3")
	waitApplied(t, rg)
	diffs, err := redistest.DiffServers(rg.master, rg.slave)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || !strings.Contains(diffs[0], `"b"`) {
		t.Fatalf("want only key b missing on the slave, got:\n%s", strings.Join(diffs, "\n"))
	}
}

// TestApplyGuardAbortsMovedSlave: a run whose start is not the slave's position
// (another applier applied it meanwhile) is not applied: the check before the
// transaction makes its EXEC fail, and the applier continues from the slave's
// position.
func TestApplyGuardAbortsMovedSlave(t *testing.T) {
	rg := newRig(t)
	rg.write(t, 0, "SET", "a", "1")
	waitApplied(t, rg)
	pos, err := redis.String(rg.slave.Do(t, "GET", replicate.KeyApplied), nil)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(pos, ':')
	seq, _ := strconv.ParseInt(pos[i+1:], 10, 64)
	// As if another proxy's applier had applied the next message.
	rg.slave.Do(t, "SET", replicate.KeyApplied, pos[:i+1]+strconv.FormatInt(seq+1, 10))
	rg.write(t, 0, "SET", "b", "2")
	waitApplied(t, rg)
	if n, _ := redis.Int(rg.slave.Do(t, "EXISTS", "b", "syncproxy:applyguard"), nil); n != 0 {
		t.Fatalf("a run from a position the slave left was applied (%d keys)", n)
	}
	rg.write(t, 0, "SET", "c", "3")
	waitApplied(t, rg)
	if v, _ := redis.String(rg.slave.Do(t, "GET", "c"), nil); v != "3" {
		t.Fatalf("the next run after a moved position: c = %q", v)
	}
}
