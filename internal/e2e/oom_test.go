package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// TestMultiOverMaxmemory: a transaction of 1 MiB SETs on a master at maxmemory
// (noeviction) is refused while queuing, as Redis refuses it: each command from
// some point on gets OOM, EXEC gets EXECABORT, and the master does not grow. The
// index of the first OOM may differ from Redis' (the proxy counts the queued
// bytes against a recent sample of the master's used_memory). A single write too
// large for the memory left gets the master's own OOM.
func TestMultiOverMaxmemory(t *testing.T) {
	t.Parallel()
	mem := []string{"--maxmemory", "20mb", "--maxmemory-policy", "noeviction"}
	ref := redistest.Start(t, mem...)
	master := redistest.Start(t, mem...)
	slave := redistest.Start(t)
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.BackendTimeout = 30 * time.Second // megabytes of arguments, on a loaded machine
	}, master, slave)
	const oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
	v := strings.Repeat("x", 1<<20)
	firstOOM := map[string]int{}
	for name, a := range map[string]string{"redis": ref.Addr, "proxy": addr} {
		c := redistest.DialRaw(t, a)
		c.SetTimeout(30 * time.Second)
		mustReply(t, c, "+OK\r\n", "MULTI")
		firstOOM[name] = -1
		for i := 0; i < 30; i++ {
			got := string(c.Do("SET", "k"+strconv.Itoa(i), v))
			switch {
			case got == oom && firstOOM[name] < 0:
				firstOOM[name] = i
			case got == "+QUEUED\r\n" && firstOOM[name] < 0, got == oom:
			default:
				t.Fatalf("%s: SET %d in MULTI: %q (first OOM at %d)", name, i, got, firstOOM[name])
			}
		}
		mustReply(t, c, "-EXECABORT Transaction discarded because of previous errors.\r\n", "EXEC")
		mustReply(t, c, "+OK\r\n", "SET", "small", "1")
		mustReply(t, c, "+OK\r\n", "MULTI")
		mustReply(t, c, "+QUEUED\r\n", "INCR", "n")
		mustReply(t, c, "*1\r\n:1\r\n", "EXEC")
	}
	t.Logf("first OOM inside MULTI: redis at SET %d, proxy at SET %d", firstOOM["redis"], firstOOM["proxy"])
	if firstOOM["proxy"] < 0 {
		t.Fatal("the proxy queued the whole transaction")
	}
	used, _ := strconv.ParseInt(master.Info(t, "memory", "used_memory"), 10, 64)
	if used > 20<<20 {
		t.Errorf("the master grew to %d bytes, over its maxmemory", used)
	}
	if n := master.Do(t, "EXISTS", "k0", "k1"); n != int64(0) {
		t.Errorf("%v keys of the refused transaction on the master", n)
	}
	for _, a := range []string{ref.Addr, addr} {
		c := redistest.DialRaw(t, a)
		c.SetTimeout(30 * time.Second)
		mustReply(t, c, oom, "SET", "big", strings.Repeat("y", 25<<20))
	}
	redistest.WaitConverged(t, convergeTimeout, master, slave)
}
