package replicate_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// TestChannelIsAHint: messages published on the sync channel by anyone but the
// master script — the next sequence number, one far ahead, another epoch,
// garbage — are never applied, skip no real write and show no lag.
func TestChannelIsAHint(t *testing.T) {
	rg := newRig(t)
	mc, err := redis.Dial("tcp", rg.master.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	rg.write(t, 0, "SET", "real", "0")
	for i := 1; i <= 10; i++ {
		vals, err := redis.Strings(mc.Do("MGET", replicate.KeyEpoch, replicate.KeySeq))
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := strconv.ParseInt(vals[1], 10, 64)
		for _, f := range []struct {
			epoch string
			seq   int64
		}{{vals[0], seq + 1}, {vals[0], seq + 100000}, {"other-epoch", seq + 1}, {vals[0], seq}} {
			msg := replicate.AppendMessage(nil, &replicate.Message{Epoch: f.epoch, Seq: f.seq, TimeMs: time.Now().UnixMilli(),
				Effects: []replicate.Effect{{DB: 0, Args: [][]byte{[]byte("SET"), []byte("real"), []byte("forged")}}}})
			if _, err := mc.Do("PUBLISH", "test:sync", msg); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := mc.Do("PUBLISH", "test:sync", "garbage"); err != nil {
			t.Fatal(err)
		}
		rg.write(t, 0, "SET", "real", strconv.Itoa(i))
	}
	seq, err := redis.Int64(mc.Do("GET", replicate.KeySeq))
	if err != nil {
		t.Fatal(err)
	}
	a := rg.repl.Appliers()[0]
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if a.Applied() != seq || rg.repl.Latest() != seq || a.LagMessages() != 0 {
			return fmt.Errorf("applied %d, latest %d, lag %d; master's seq %d", a.Applied(), rg.repl.Latest(), a.LagMessages(), seq)
		}
		return nil
	})
	redistest.WaitConverged(t, 10*time.Second, rg.master, rg.slave)
}

// TestLuaQuote: every byte survives a round trip through a Lua string literal.
func TestLuaQuote(t *testing.T) {
	srv := redistest.StartN(t, 1)[0]
	c, err := redis.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var all []byte
	for b := 0; b < 256; b++ {
		all = append(all, byte(b), '1')
	}
	for _, s := range []string{"", "plain", "it's", `back\slash`, "\x001\n2", string(all)} {
		got, err := redis.String(c.Do("EVAL", "return "+replicate.LuaQuote(s), 0))
		if err != nil || got != s {
			t.Errorf("%q: got %q, %v", s, got, err)
		}
	}
}
