package e2e

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestRedisBenchmarkDefaultSet runs redis-benchmark's whole default test set (no
// -t: SPOP, ZPOPMIN, XADD, MSET, LRANGE... are in) through the proxy; then every
// slave holds exactly the master's data, expiry times included.
func TestRedisBenchmarkDefaultSet(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	out := runTool(t, "", "redis-benchmark", "-h", "127.0.0.1", "-p", portOf(t, addr),
		"-n", "3000", "-c", "10", "-r", "1000", "-q")
	if strings.Contains(out, "ERR") || strings.Contains(strings.ToLower(out), "error") {
		t.Fatalf("redis-benchmark reported errors:\n%s", out)
	}
	for _, test := range []string{"SPOP", "ZPOPMIN", "MSET", "LRANGE_600"} {
		if !strings.Contains(out, test) {
			t.Errorf("redis-benchmark printed no result for %s:\n%s", test, out)
		}
	}
	// Redis 7.0's default set has no XADD: run it as a custom command, with an
	// approximate trim (the slaves must get the exact one).
	out = runTool(t, "", "redis-benchmark", "-h", "127.0.0.1", "-p", portOf(t, addr),
		"-n", "3000", "-c", "10", "-q", "XADD", "stream", "MAXLEN", "~", "500", "*", "f", "v")
	if strings.Contains(out, "ERR") || strings.Contains(strings.ToLower(out), "error") {
		t.Fatalf("redis-benchmark XADD reported errors:\n%s", out)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestProxyKilled kills the proxy with SIGKILL in the middle of a write load and
// starts it again: the slaves converge, and every counter holds at least the
// increments acknowledged (and at most those plus the ones in flight at the kill).
func TestProxyKilled(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	args := []string{"--master", master.Addr, "--slaves", slaves[0].Addr + "," + slaves[1].Addr,
		"--log-format", "json", "--log-level", "info"}
	p := startBinary(t, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	addr := p.listening()

	const clients = 4
	var mu sync.Mutex
	acked := map[string]int{}
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer conn.Close()
			buf := make([]byte, 64)
			for i := 0; ; i++ {
				key := fmt.Sprintf("ctr:%d", i%3)
				cmd := fmt.Sprintf("*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key)
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Write([]byte(cmd)); err != nil {
					return
				}
				n, err := conn.Read(buf)
				if err != nil {
					return // the proxy died: this increment is not acknowledged
				}
				if buf[0] == ':' && buf[n-1] == '\n' {
					mu.Lock()
					acked[key]++
					mu.Unlock()
				}
			}
		}(c)
	}
	redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if acked["ctr:0"] < 300 {
			return fmt.Errorf("only %d increments so far", acked["ctr:0"])
		}
		return nil
	})
	p.cmd.Process.Kill()
	wg.Wait()
	<-p.done

	p2 := startBinary(t, append([]string{"--listen", "127.0.0.1:0"}, args...)...)
	addr2 := p2.listening()
	c := redistest.DialRaw(t, addr2)
	if got := c.Do("INCR", "after"); string(got) != ":1\r\n" {
		t.Fatalf("INCR after the restart: %q", got)
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	for key, n := range acked {
		v := string(slaves[0].Do(t, "GET", key).([]byte))
		var got int
		fmt.Sscan(v, &got)
		if got < n || got > n+clients {
			t.Errorf("%s = %d on the slaves, %d increments acknowledged (%d clients in flight)", key, got, n, clients)
		}
	}
	p2.terminate()
}
