package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// forge builds a well-formed sync message that SETs key on the slaves, with the
// master's epoch and its sequence number plus ahead.
func forge(t *testing.T, mc redis.Conn, ahead int64, key string) []byte {
	t.Helper()
	vals, err := redis.Strings(mc.Do("MGET", replicate.KeyEpoch, replicate.KeySeq))
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := strconv.ParseInt(vals[1], 10, 64)
	return replicate.AppendMessage(nil, &replicate.Message{
		Epoch: vals[0], Seq: seq + ahead, TimeMs: time.Now().UnixMilli(),
		Effects: []replicate.Effect{{DB: 0, Args: [][]byte{[]byte("SET"), []byte(key), []byte("forged")}}},
	})
}

// TestForgedSyncMessages: while writers run, a script's PUBLISH of a forged
// sync message is refused, and forged messages published on the master by
// another path (with the next sequence number, or far ahead) are not applied,
// skip no real write and show no lag: the slaves equal the master afterwards.
func TestForgedSyncMessages(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	mc, err := redis.Dial("tcp", master.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "first", "1")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wc, err := redis.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer wc.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := wc.Do("SET", fmt.Sprintf("w%d:%d", w, i%50), i); err != nil {
					errs <- err
					return
				}
				if _, err := wc.Do("INCR", "counter"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		for _, ahead := range []int64{1, 100000} {
			msg := string(forge(t, mc, ahead, "forged:"+strconv.Itoa(i)))
			r := string(c.Do("EVAL", "return redis.call('PUBLISH', ARGV[1], ARGV[2])", "0", "syncproxy:sync", msg))
			if !strings.HasPrefix(r, "-ERR syncproxy: the sync channel is reserved") {
				t.Errorf("script PUBLISH of a forged message: %q", r)
			}
			// Another path to the master: the proxy cannot refuse it.
			if _, err := mc.Do("PUBLISH", "syncproxy:sync", forge(t, mc, ahead, "forged:direct:"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond) // let writers interleave with the forgeries
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	seq, err := redis.Int64(mc.Do("GET", replicate.KeySeq))
	if err != nil {
		t.Fatal(err)
	}
	redistest.CheckFor(t, convergeTimeout, 20*time.Millisecond, func() error {
		latest, _ := infoField(c, "sync_latest_seq")
		if latest != strconv.FormatInt(seq, 10) {
			return fmt.Errorf("sync_latest_seq %s, master's seq %d", latest, seq)
		}
		for i := range slaves {
			v, _ := infoField(c, "slave"+strconv.Itoa(i))
			if !strings.Contains(v, ",lag_messages=0,") || !strings.Contains(v, ",applied="+strconv.FormatInt(seq, 10)+",") {
				return fmt.Errorf("slave%d: %s (master's seq %d)", i, v, seq)
			}
		}
		return nil
	})
	for _, s := range slaves {
		sc, err := redis.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := redis.Strings(sc.Do("KEYS", "*forged*"))
		sc.Close()
		if err != nil || len(keys) > 0 {
			t.Fatalf("slave %s holds forged keys %q (%v)", s.Addr, keys, err)
		}
	}
}
