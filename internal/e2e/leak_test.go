package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Parameters of TestNoLeak.
const (
	leakClients     = 10000            // clients that connect and go away
	leakConcurrency = 100              // clients connected at once, at most
	leakPairs       = 25               // SET+GET pairs of a pipelined client: 50 commands
	leakGoroutines  = 10               // goroutines tolerated above the baseline
	leakHeap        = 4 << 20          // heap bytes tolerated above the baseline
	leakSettle      = 20 * time.Second // from the last client gone to everything released
	leakIOTimeout   = 10 * time.Second // each client read or write
	leakUncollected = 1000             // last clients run with the collector off
)

// How a client of TestNoLeak goes away. Half of the clients are of the first two
// kinds: they leave something half done on the proxy's side.
const (
	leaveMidRequest = iota // half of a RESP frame sent
	leavePipeline          // 50 pipelined commands sent, some replies read
	leaveQuit              // SET, then QUIT and its +OK
	leaveAtOnce            // closed right after connecting
	leaveBlocked           // blocked in BLPOP
	leaveSubscribed        // SUBSCRIBEd
	leaveInMulti           // MULTI with a queued SET, never EXECed
	leaveWatching          // WATCHing a key
	leaveKinds
)

var leaveNames = [leaveKinds]string{"mid-request", "mid-pipeline", "quit", "at-once", "blocked", "subscribed", "in-multi", "watching"}

// leaveKind is the kind of client i: even clients leave mid-request or
// mid-pipeline, odd ones go through the six other kinds.
func leaveKind(i int) int {
	if i%2 == 0 {
		return (i / 2) % 2
	}
	return 2 + (i/2)%6
}

// leakKey and leakValue name the j-th write of client i.
func leakKey(i, j int) string   { return "leak:" + strconv.Itoa(i) + ":" + strconv.Itoa(j) }
func leakValue(i, j int) string { return "v" + strconv.Itoa(i) + "." + strconv.Itoa(j) }

// leakSnapshot is what TestNoLeak compares before and after.
type leakSnapshot struct {
	goroutines int
	heap       uint64
	backends   []int // connected_clients of the master and each slave, checker included
	clients    int   // the proxy's connected_clients, checker included
}

func (s leakSnapshot) String() string {
	return fmt.Sprintf("goroutines=%d heap=%.1fMiB backend_conns=%v proxy_clients=%d",
		s.goroutines, float64(s.heap)/(1<<20), s.backends, s.clients)
}

// TestNoLeak connects and disconnects 10,000 clients, leaving in every way a
// client can (see leaveKind), then checks that the proxy came back to where it
// was: goroutines, backend connections, clients and heap; and that every write
// whose reply a client read is on the master. It does not run in parallel: it
// counts the goroutines and heap of the whole test binary.
func TestNoLeak(t *testing.T) {
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)

	// The checkers' connections exist before the baseline and until the end.
	var backendConns []redis.Conn
	for _, s := range servers {
		backendConns = append(backendConns, s.Dial(t))
	}
	checker := redistest.DialRaw(t, addr)
	// snapshot counts connections first, and collects garbage only when asked
	// to: a connection dropped without Close is closed by the finalizer of its
	// file descriptor at a collection, which would hide the leak.
	snapshot := func(gc bool) (leakSnapshot, error) {
		var s leakSnapshot
		for i, c := range backendConns {
			text, err := redis.String(c.Do("INFO", "clients"))
			if err != nil {
				return s, fmt.Errorf("INFO clients on %s: %w", servers[i].Addr, err)
			}
			n, err := strconv.Atoi(infoValue(text, "connected_clients"))
			if err != nil {
				return s, fmt.Errorf("INFO clients on %s: %w", servers[i].Addr, err)
			}
			s.backends = append(s.backends, n)
		}
		info := string(checker.Do("INFO", "clients"))
		n, err := strconv.Atoi(infoValue(info, "connected_clients"))
		if err != nil {
			return s, fmt.Errorf("proxy INFO: %q", info)
		}
		s.clients = n
		if gc {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.heap = ms.HeapAlloc
		s.goroutines = runtime.NumGoroutine()
		return s, nil
	}
	before, err := snapshot(true)
	if err != nil {
		t.Fatal(err)
	}

	// Warm-up: two clients of each kind, so that what the proxy creates once and
	// keeps (pools, tables, maps) exists before the baseline; then wait until the
	// proxy let them all go.
	acked := make([]uint8, leakClients) // writes acknowledged to client i
	for i := 0; i < 2*leaveKinds; i++ {
		if err := leakClient(addr, i, acked); err != nil {
			t.Fatalf("warm-up client %d (%s): %v", i, leaveNames[leaveKind(i)], err)
		}
	}
	// settled compares with base: connections only, or everything after a
	// collection.
	settled := func(base leakSnapshot, gc bool) func() (leakSnapshot, error) {
		return func() (leakSnapshot, error) {
			now, err := snapshot(gc)
			switch {
			case err != nil:
			case now.clients != 1:
				err = fmt.Errorf("the proxy has %d clients besides the checker", now.clients-1)
			case fmt.Sprint(now.backends) != fmt.Sprint(base.backends):
				err = fmt.Errorf("backend connections (master, slaves) %v, want %v", now.backends, base.backends)
			case !gc:
			case now.goroutines > base.goroutines+leakGoroutines:
				err = fmt.Errorf("%d goroutines, baseline %d", now.goroutines, base.goroutines)
			case now.heap > base.heap+leakHeap:
				err = fmt.Errorf("heap %.1f MiB, baseline %.1f MiB", float64(now.heap)/(1<<20), float64(base.heap)/(1<<20))
			}
			return now, err
		}
	}
	before.goroutines, before.heap = 1<<30, 1<<62 // not yet the baseline
	if _, err := pollFor(leakSettle, settled(before, true)); err != nil {
		t.Fatalf("after the warm-up: %v\n%s", err, goroutineDump())
	}
	base, err := snapshot(true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: %v", base)

	// The clients, leakConcurrency at a time. The collector is off from the last
	// leakUncollected clients on until the connections are counted: a connection
	// the proxy forgot to close would be closed by the finalizer of its file
	// descriptor at a collection, and not seen. (Off for the whole run, the test
	// binary would grow to about 2 GiB under the race detector.)
	var gcOff sync.Once
	gcPercent := -1
	restoreGC := func() {
		if gcPercent >= 0 {
			debug.SetGCPercent(gcPercent)
			gcPercent = -1
		}
	}
	defer restoreGC()
	start := time.Now()
	var next atomic.Int64
	var failures atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < leakConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= leakClients {
					return
				}
				if i >= leakClients-leakUncollected {
					gcOff.Do(func() { gcPercent = debug.SetGCPercent(-1) })
				}
				if err := leakClient(addr, i, acked); err != nil {
					if failures.Add(1) <= 10 {
						t.Errorf("client %d (%s): %v", i, leaveNames[leaveKind(i)], err)
					}
				}
			}
		}()
	}
	wg.Wait()
	ran := time.Since(start)
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d clients failed", n, leakClients)
	}

	// Everything the clients held is released: first the connections, without
	// forcing a collection, then goroutines and heap.
	if _, err := pollFor(leakSettle, settled(base, false)); err != nil {
		t.Fatalf("%v after the clients left (baseline %v)\n%s", err, base, goroutineDump())
	}
	restoreGC()
	after, err := pollFor(leakSettle, settled(base, true))
	if err != nil {
		t.Fatalf("%v after the clients left (baseline %v)\n%s", err, base, goroutineDump())
	}
	t.Logf("%d clients in %v, released after %v: %v", leakClients, ran.Round(time.Millisecond),
		(time.Since(start) - ran).Round(time.Millisecond), after)

	checkAcked(t, master, acked)
}

// leakClient runs client i: it connects, does what its kind says and leaves.
// acked[i] receives the number of its writes whose +OK it read.
func leakClient(addr string, i int, acked []uint8) error {
	conn, err := net.DialTimeout("tcp", addr, leakIOTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(leakIOTimeout))
	r := bufio.NewReader(conn)
	expect := func(want string) error {
		got, err := redistest.ReadFrame(r)
		if err != nil {
			return fmt.Errorf("reading %q: %w (got %q)", want, err, got)
		}
		if string(got) != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
	var b []byte
	switch leaveKind(i) {
	case leaveMidRequest:
		switch (i / 4) % 3 {
		case 0: // a few bytes into a command
			b = []byte("*3\r\n$3\r\nSET\r\n$5\r\nab")
		case 1: // half of a 64 KiB value: the proxy's read buffer grows for it
			b = fmt.Appendf(nil, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n", len(leakKey(i, 0)), leakKey(i, 0), 64<<10)
			b = append(b, bytes.Repeat([]byte("x"), 32<<10)...)
		case 2: // a complete command, unanswered, then half of the next
			b = []byte("*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$3\r\nke")
		}
	case leavePipeline:
		for j := 0; j < leakPairs; j++ {
			k, v := leakKey(i, j), leakValue(i, j)
			b = fmt.Appendf(b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(v), v)
			b = fmt.Appendf(b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k)
		}
		if _, err := conn.Write(b); err != nil {
			return err
		}
		// Read some of the replies: 0 to all 50, by client.
		read := (i * 7919) % (2*leakPairs + 1)
		for n := 0; n < read; n++ {
			j := n / 2
			want := "+OK\r\n"
			if n%2 == 1 {
				want = string(bulk(leakValue(i, j)))
			}
			if err := expect(want); err != nil {
				return fmt.Errorf("pipeline reply %d: %w", n, err)
			}
			if n%2 == 0 {
				acked[i] = uint8(j + 1)
			}
		}
		return nil
	case leaveQuit:
		k, v := leakKey(i, 0), leakValue(i, 0)
		b = fmt.Appendf(nil, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(v), v)
		if _, err := conn.Write(b); err != nil {
			return err
		}
		if err := expect("+OK\r\n"); err != nil {
			return err
		}
		acked[i] = 1
		if _, err := conn.Write([]byte("*1\r\n$4\r\nQUIT\r\n")); err != nil {
			return err
		}
		if err := expect("+OK\r\n"); err != nil {
			return err
		}
		// The proxy closes the connection after QUIT's reply.
		if got, err := redistest.ReadFrame(r); !errors.Is(err, io.EOF) {
			return fmt.Errorf("after QUIT: %q, %v; want the connection closed", got, err)
		}
		return nil
	case leaveAtOnce:
		if (i/2)%2 == 0 {
			conn.(*net.TCPConn).SetLinger(0) // a reset rather than a FIN
		}
		return nil
	case leaveBlocked:
		// PONG comes back once the proxy has the BLPOP in hand: it serves a
		// blocking command alone, after answering what precedes it.
		k := "leak:block:" + strconv.Itoa(i)
		b = fmt.Appendf(nil, "*1\r\n$4\r\nPING\r\n*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s\r\n$1\r\n0\r\n", len(k), k)
		if _, err := conn.Write(b); err != nil {
			return err
		}
		return expect("+PONG\r\n")
	case leaveSubscribed:
		ch := "leak:chan:" + strconv.Itoa(i)
		b = fmt.Appendf(nil, "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", len(ch), ch)
		if _, err := conn.Write(b); err != nil {
			return err
		}
		return expect(fmt.Sprintf("*3\r\n$9\r\nsubscribe\r\n%s:1\r\n", bulk(ch)))
	case leaveInMulti:
		k := "leak:multi:" + strconv.Itoa(i)
		b = fmt.Appendf(nil, "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nx\r\n", len(k), k)
		if _, err := conn.Write(b); err != nil {
			return err
		}
		if err := expect("+OK\r\n"); err != nil {
			return err
		}
		return expect("+QUEUED\r\n")
	case leaveWatching:
		k := leakKey(i, 0)
		b = fmt.Appendf(nil, "*2\r\n$5\r\nWATCH\r\n$%d\r\n%s\r\n", len(k), k)
		if _, err := conn.Write(b); err != nil {
			return err
		}
		return expect("+OK\r\n")
	}
	_, err = conn.Write(b)
	return err
}

// checkAcked checks that every acknowledged write is on the master, and that no
// transaction left open (never EXECed) wrote anything.
func checkAcked(t *testing.T, master *redistest.Server, acked []uint8) {
	t.Helper()
	c := master.Dial(t)
	var keys []interface{}
	var want []string
	checked := 0
	flush := func() {
		if len(keys) == 0 {
			return
		}
		got, err := redis.Strings(c.Do("MGET", keys...))
		if err != nil {
			t.Fatalf("MGET on the master: %v", err)
		}
		for j := range got {
			if got[j] != want[j] {
				t.Errorf("acknowledged write %s: the master has %q, want %q", keys[j], got[j], want[j])
			}
		}
		checked += len(keys)
		keys, want = keys[:0], want[:0]
	}
	for i, n := range acked {
		for j := 0; j < int(n); j++ {
			keys = append(keys, leakKey(i, j))
			want = append(want, leakValue(i, j))
		}
		if len(keys) >= 1000 {
			flush()
		}
	}
	flush()
	multi, err := redis.Strings(c.Do("KEYS", "leak:multi:*"))
	if err != nil {
		t.Fatalf("KEYS on the master: %v", err)
	}
	if len(multi) > 0 {
		t.Errorf("%d transactions never EXECed wrote on the master, e.g. %s", len(multi), multi[0])
	}
	t.Logf("%d acknowledged writes found on the master", checked)
}

// pollFor calls cond until it returns nil or timeout passes, and returns its last
// result.
func pollFor[T any](timeout time.Duration, cond func() (T, error)) (T, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		v, err := cond()
		if err == nil || time.Now().After(deadline) {
			return v, err
		}
		<-tick.C
	}
}

// goroutineDump is the goroutine profile, stacks grouped and counted.
func goroutineDump() string {
	var b strings.Builder
	b.WriteString("goroutines:\n")
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		b.WriteString(err.Error())
	}
	return b.String()
}

// infoValue finds "field:value" in the text of an INFO reply.
func infoValue(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimRight(line, "\r"), ":"); ok && k == field {
			return v
		}
	}
	return ""
}
