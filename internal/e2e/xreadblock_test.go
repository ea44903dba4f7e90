package e2e

import (
	"strings"
	"testing"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestXReadBlockKeyChanges: a client blocked in XREAD or XREADGROUP while
// another client deletes the stream, changes its type, flushes the DB or
// destroys the group gets Redis 7.0's reply byte for byte, directly and through
// the proxy: XREAD stays blocked (woken by a later XADD, or timing out), and
// XREADGROUP ends with UNBLOCKED or NOGROUP.
func TestXReadBlockKeyChanges(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 4)
	ref, master, slaves := servers[0], servers[1], servers[2:]
	addr, _ := startProxy(t, master, slaves...)
	cases := []struct {
		name    string
		setup   string // commands separated by ";"
		block   []string
		changes [][]string // by another client, once the first one blocks
	}{
		{"xread woken by xadd", "XADD a 1-1 f v", cmd("XREAD BLOCK 5000 STREAMS a $"),
			[][]string{cmd("XADD a 2-1 f v2")}},
		{"xread key deleted", "XADD b 1-1 f v", cmd("XREAD BLOCK 5000 STREAMS b $"),
			[][]string{cmd("DEL b"), cmd("XADD b 2-1 f v2")}},
		{"xread type changed", "XADD c 1-1 f v", cmd("XREAD BLOCK 700 STREAMS c $"),
			[][]string{cmd("DEL c"), cmd("SET c x"), cmd("XADD c 3-1 f v")}},
		{"xread overwritten by set", "XADD c2 1-1 f v", cmd("XREAD BLOCK 700 STREAMS c2 $"),
			[][]string{cmd("SET c2 x")}},
		{"xread flushall", "XADD d 1-1 f v", cmd("XREAD BLOCK 5000 STREAMS d $"),
			[][]string{cmd("FLUSHALL"), cmd("XADD d 2-1 f v2")}},
		{"xread of two streams, one overwritten", "XADD k1 1-1 f v", cmd("XREAD BLOCK 5000 STREAMS k1 k2 $ $"),
			[][]string{cmd("SET k1 x"), cmd("XADD k2 2-1 f v2")}},
		{"xreadgroup woken by xadd", "XGROUP CREATE e g $ MKSTREAM", cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS e >"),
			[][]string{cmd("XADD e 1-1 f v")}},
		{"xreadgroup key deleted", "XGROUP CREATE f g $ MKSTREAM", cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS f >"),
			[][]string{cmd("DEL f")}},
		{"xreadgroup type changed", "XGROUP CREATE h g $ MKSTREAM", cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS h >"),
			[][]string{cmd("SET h x")}},
		{"xreadgroup group destroyed", "XGROUP CREATE i g $ MKSTREAM", cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS i >"),
			[][]string{cmd("XGROUP DESTROY i g")}},
		{"xreadgroup flushdb", "XGROUP CREATE j g $ MKSTREAM", cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS j >"),
			[][]string{cmd("FLUSHDB")}},
		{"xreadgroup of two streams, group destroyed then key deleted", "XGROUP CREATE l1 g $ MKSTREAM; XGROUP CREATE l2 g $ MKSTREAM",
			cmd("XREADGROUP GROUP g c BLOCK 5000 STREAMS l1 l2 > >"),
			[][]string{cmd("XGROUP DESTROY l1 g"), cmd("DEL l2")}},
	}
	for _, tc := range cases {
		replies := map[string]string{}
		for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
			blocked, other := redistest.DialRaw(t, a), redistest.DialRaw(t, a)
			for _, line := range strings.Split(tc.setup, ";") {
				other.Do(cmd(line)...)
			}
			blocked.Send(tc.block...)
			blocked.Flush()
			waitBlocked(t, name, ref, other)
			var log []string
			for _, c := range tc.changes {
				log = append(log, string(other.Do(c...)))
			}
			replies[name] = string(blocked.Read()) + " | " + strings.Join(log, " ")
		}
		if replies["redis"] != replies["proxy"] {
			t.Errorf("%s: redis %q, proxy %q", tc.name, replies["redis"], replies["proxy"])
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if diffs, err := redistest.Diff(ref.Addr, master.Addr); err != nil || len(diffs) > 0 {
		t.Errorf("the master differs from the reference: %v %s", err, strings.Join(diffs, "\n"))
	}
}
