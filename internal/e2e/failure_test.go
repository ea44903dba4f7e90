package e2e

import (
	"bytes"

	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// numKeys is the number of keys written before a failure is injected.
const numKeys = 100

// key and value name the test keys and their values.
func key(i int) string   { return "key:" + strconv.Itoa(i) }
func value(i int) string { return "value-" + strconv.Itoa(i) }

// writeKeys writes numKeys keys through the proxy in one pipeline.
func writeKeys(t *testing.T, addr string) {
	t.Helper()
	c := redistest.DialRaw(t, addr)
	for i := 0; i < numKeys; i++ {
		c.Send("SET", key(i), value(i))
	}
	c.Flush()
	for i := 0; i < numKeys; i++ {
		if got := c.Read(); string(got) != "+OK\r\n" {
			t.Fatalf("SET %s: %q", key(i), got)
		}
	}
	c.Close()
}

// checkReads reads every key once, each GET on its own round trip, on a new
// connection (no read-your-writes constraint) and fails the test on any error reply
// or wrong value.
func checkReads(t *testing.T, addr, when string) {
	t.Helper()
	c := redistest.DialRaw(t, addr)
	defer c.Close()
	bad := 0
	for i := 0; i < numKeys; i++ {
		if got, want := c.Do("GET", key(i)), bulk(value(i)); !bytes.Equal(got, want) {
			if bad++; bad <= 5 {
				t.Errorf("%s: GET %s = %q, want %q", when, key(i), got, want)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d GETs failed", when, bad, numKeys)
	}
}

// readsFrom returns how many reads each slave and the master served so far.
func readsFrom(srv *proxy.Server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "master %d", srv.Router().MasterReads.Load())
	for _, sl := range srv.Router().Slaves() {
		fmt.Fprintf(&b, ", %s %d", sl.Backend.Name(), sl.Reads.Load())
	}
	return b.String()
}

// TestSlaveDown stops slaves: reads keep being answered, with the right values, by
// the remaining slave and then by the master; a slave that comes back empty is
// brought back in sync before it serves reads again.
func TestSlaveDown(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, s1, s2 := servers[0], servers[1], servers[2]
	addr, srv := startProxy(t, master, s1, s2)
	writeKeys(t, addr)
	redistest.WaitConverged(t, convergeTimeout, master, s1, s2)
	checkReads(t, addr, "all up")
	t.Logf("reads served: %s", readsFrom(srv))

	s1.Stop(t)
	checkReads(t, addr, "slave-1 stopped")
	t.Logf("reads served: %s", readsFrom(srv))

	s2.Stop(t)
	before := srv.Router().MasterReads.Load()
	checkReads(t, addr, "both slaves stopped")
	t.Logf("reads served: %s", readsFrom(srv))
	if srv.Router().MasterReads.Load() == before {
		t.Error("no read went to the master while both slaves were down")
	}

	// Writes keep working too, and reach the slave that comes back.
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "while-down", "x")

	s1.Restart(t) // empty
	checkReads(t, addr, "slave-1 restarted empty")
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		if a := srv.Replicator().Appliers()[0]; !a.Online() {
			return fmt.Errorf("slave-1 is %v", a.State())
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, s1)
	checkReads(t, addr, "slave-1 back in sync")
	t.Logf("reads served: %s", readsFrom(srv))
}

// errorWithin sends one command and requires an error reply starting with "ERR"
// within limit; it returns the reply and how long it took.
func errorWithin(t *testing.T, addr string, limit time.Duration, args ...string) ([]byte, time.Duration) {
	t.Helper()
	c := redistest.DialRaw(t, addr)
	defer c.Close()
	c.SetTimeout(limit + 5*time.Second) // a hang fails below with the measured time
	start := time.Now()
	c.Send(args...)
	c.Flush()
	got, err := c.TryRead()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("%s: no reply after %v: %v", showCmd(args), took, err)
	}
	if !bytes.HasPrefix(got, []byte("-ERR")) {
		t.Errorf("%s: got %q, want an -ERR reply", showCmd(args), got)
	}
	if took > limit {
		t.Errorf("%s: error after %v, want within %v", showCmd(args), took, limit)
	}
	t.Logf("%s -> %q after %v", showCmd(args), got, took.Round(time.Millisecond))
	return got, took
}

// waitWritable polls until a write through the proxy succeeds.
func waitWritable(t *testing.T, addr string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c := redistest.DialRaw(t, addr)
	defer c.Close()
	redistest.CheckFor(t, timeout, 20*time.Millisecond, func() error {
		if got := c.Do("SET", "probe", "1"); string(got) != "+OK\r\n" {
			return fmt.Errorf("SET probe: %q", got)
		}
		return nil
	})
	return time.Since(start)
}

// TestMasterDown stops the master: writes get a clear error within the backend
// timeout, reads are answered by the slaves; when the master is back on the same
// port, writes work again without restarting the proxy.
func TestMasterDown(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxyWith(t, func(c *proxy.Config) { c.BackendTimeout = timeout }, master, slaves...)
	writeKeys(t, addr)
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	master.Stop(t)
	errorWithin(t, addr, timeout+time.Second, "SET", "k", "v")
	errorWithin(t, addr, timeout+time.Second, "INCR", "counter")
	// Once the proxy knows the master is down, the error comes at once.
	errorWithin(t, addr, timeout+time.Second, "SET", "k", "v")

	checkReads(t, addr, "master stopped")
	t.Logf("reads served: %s", readsFrom(srv))

	master.Restart(t) // empty: its data is lost, as after a crash without persistence
	took := waitWritable(t, addr, 10*time.Second)
	t.Logf("writes work again %v after the restart", took.Round(time.Millisecond))
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "SET", "after", "restart")
	mustReply(t, c, string(bulk("restart")), "GET", "after")
	// The slaves follow the new master (a new epoch: full resync).
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}

// TestMasterHangs pauses the master (SIGSTOP) beyond --write-reply-timeout: a
// write gets an error within that bound instead of hanging, and the error says
// its outcome is unknown — never "unavailable": the master applies it once it
// resumes, and the slaves get it. Then writes work again.
func TestMasterHangs(t *testing.T) {
	t.Parallel()
	const timeout, replyTimeout = 300 * time.Millisecond, time.Second
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) {
		c.BackendTimeout = timeout
		c.WriteReplyTimeout = replyTimeout
	}, master, slaves...)
	writeKeys(t, addr)

	master.Pause(t)
	got, took := errorWithin(t, addr, replyTimeout+time.Second, "SET", "k", "v")
	if !bytes.HasSuffix(got, []byte("the write's outcome is unknown\r\n")) || bytes.Contains(got, []byte("unavailable")) {
		t.Errorf("SET: %q, want the outcome unknown", got)
	}
	if took < replyTimeout-100*time.Millisecond {
		t.Errorf("SET: failed after %v, before --write-reply-timeout %v", took, replyTimeout)
	}
	// The connection is being replaced: the next write is not sent at all, and
	// says so ("unavailable"), or it is and its outcome is unknown.
	got, _ = errorWithin(t, addr, replyTimeout+time.Second, "LPUSH", "l", "v")
	notSent := bytes.HasSuffix(got, []byte(" is unavailable\r\n"))
	if !notSent && !bytes.HasSuffix(got, []byte("the write's outcome is unknown\r\n")) {
		t.Errorf("LPUSH: %q, want unavailable or the outcome unknown", got)
	}

	master.Resume(t)
	took = waitWritable(t, addr, 10*time.Second)
	t.Logf("writes work again %v after the resume", took.Round(time.Millisecond))
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if got := master.Do(t, "GET", "k"); fmt.Sprintf("%s", got) != "v" {
		t.Errorf("k = %s on the master: the write reported with an unknown outcome was applied", got)
	}
	if got := master.Do(t, "EXISTS", "l"); notSent && got != int64(0) {
		t.Errorf("LPUSH reported not sent was applied")
	}
}

// TestWriteOutlastsBackendTimeout: a write the master answers after
// --backend-timeout — a slow script, a master frozen for a while — gets its real
// reply, as a direct client would, not an error (it was applied); the slaves
// get it, and other clients' writes meanwhile complete too.
func TestWriteOutlastsBackendTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxyWith(t, func(c *proxy.Config) { c.BackendTimeout = timeout }, master, slaves...)
	c := redistest.DialRaw(t, addr)
	other := redistest.DialRaw(t, addr)

	// A script running 4 times the backend timeout, a write queued behind it.
	const slow = "local function now() local t = redis.call('TIME'); return t[1] * 1000000 + t[2] end " +
		"local s = now() while now() - s < tonumber(ARGV[2]) do end " +
		"redis.call('SET', KEYS[1], ARGV[1]) return 'done'"
	c.Send("EVAL", slow, "1", "slow", "v", strconv.Itoa(int(4*timeout/time.Microsecond)))
	c.Flush()
	other.Send("INCR", "n")
	other.Flush()
	if got := c.Read(); string(got) != string(bulk("done")) {
		t.Errorf("slow script: %q, want its reply", got)
	}
	if got := other.Read(); string(got) != ":1\r\n" {
		t.Errorf("a write behind the slow script: %q", got)
	}

	// The master frozen 4 times the backend timeout with a write in flight.
	master.Pause(t)
	c.Send("SET", "frozen", "v")
	c.Flush()
	time.Sleep(4 * timeout) // the fault's duration
	master.Resume(t)
	if got := c.Read(); string(got) != "+OK\r\n" {
		t.Errorf("SET while the master was frozen: %q, want +OK", got)
	}
	// The same for a watched transaction (its own master connection).
	mustReply(t, c, "+OK\r\n", "WATCH", "tx")
	mustReply(t, c, "+OK\r\n", "MULTI")
	mustReply(t, c, "+QUEUED\r\n", "SET", "tx", "v")
	master.Pause(t)
	c.Send("EXEC")
	c.Flush()
	time.Sleep(4 * timeout) // the fault's duration
	master.Resume(t)
	if got := c.Read(); string(got) != "*1\r\n+OK\r\n" {
		t.Errorf("EXEC while the master was frozen: %q, want its reply", got)
	}
	// The idle shared link's keepalive may have found the frozen master silent
	// and be reconnecting: writes fail fast (not sent) until it is back.
	waitWritable(t, addr, 10*time.Second)
	mustReply(t, c, "+OK\r\n", "SET", "after", "v")
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	for _, k := range []string{"slow", "frozen", "tx", "after"} {
		if got := slaves[0].Do(t, "GET", k); fmt.Sprintf("%s", got) != "v" {
			t.Errorf("%s = %s on a slave", k, got)
		}
	}
}

// TestWriteRightAfterStart sends commands as soon as the proxy accepts clients,
// before its backend connections are necessarily established: they must wait for
// the connection (within the backend timeout), not fail at once.
func TestWriteRightAfterStart(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	for round := 0; round < 5; round++ {
		cfg := proxy.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.Master = servers[0].Addr
		cfg.Slaves = []string{servers[1].Addr, servers[2].Addr}
		cfg.BackendTimeout = 2 * time.Second
		srv, err := proxy.NewServer(cfg, newLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		c := redistest.DialRaw(t, ln.Addr().String())
		got := c.Do("SET", "early", strconv.Itoa(round))
		got2 := c.Do("GET", "early")
		c.Close()
		if !closeBounded(t, srv) {
			return
		}
		if string(got) != "+OK\r\n" || string(got2) != string(bulk(strconv.Itoa(round))) {
			t.Fatalf("round %d, first commands on a new proxy: SET = %q, GET = %q; want +OK and the value", round, got, got2)
		}
	}
}
