package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/replicate"
)

// idleProfile, when set, receives a heap profile taken while the idle clients of
// BenchmarkIdleClients are connected (go tool pprof -sample_index=inuse_space).
var idleProfile = flag.String("idleprofile", "", "write a heap profile of the proxy with its idle clients to `file` (BenchmarkIdleClients)")

// Parameters of BenchmarkIdleClients.
const (
	idleClients   = 1000
	largeValue    = 64 << 20  // bytes of the value the large request SETs and GETs
	mediumValue   = 200 << 10 // bytes of the reply each of mediumClients reads
	mediumClients = 100
	idleTimeout   = 60 * time.Second
)

// proxyMemory is the memory the test binary's Go runtime holds for live data:
// heap objects and goroutine stacks, after a collection.
func proxyMemory() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// BenchmarkIdleClients measures what idle clients cost the proxy: 1,000 idle
// connections of redis-benchmark -I (another process, so that the clients' own
// memory is not counted), and one client that SET and GET a 64 MiB value and
// stays connected: what the proxy retains of it once the request is over.
func BenchmarkIdleClients(b *testing.B) {
	bench := lookTool(b, "redis-benchmark")
	if *idleProfile != "" {
		defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
		runtime.MemProfileRate = 1 // every allocation, for exact figures per client
	}
	servers := redistest.StartN(b, 3)
	master := servers[0]
	addr, srv := startProxy(b, master, servers[1:]...)
	checker := redistest.DialRaw(b, addr)
	port := portOf(b, addr)
	clients := func() int {
		n, err := strconv.Atoi(infoValue(string(checker.Do("INFO", "clients")), "connected_clients"))
		if err != nil {
			b.Fatalf("proxy INFO clients: %v", err)
		}
		return n - 1 // not the checker
	}
	waitClients := func(want int) {
		b.Helper()
		redistest.CheckFor(b, idleTimeout, poll, func() error {
			if n := clients(); n != want {
				return fmt.Errorf("the proxy has %d clients, want %d", n, want)
			}
			return nil
		})
	}

	var perClient, retained, afterClose, medium float64
	for range b.N {
		// 1,000 idle clients.
		base := proxyMemory()
		ctx, cancel := context.WithTimeout(context.Background(), idleTimeout)
		idle := exec.CommandContext(ctx, bench, "-I", "-c", strconv.Itoa(idleClients), "-h", "127.0.0.1", "-p", port)
		var out lockedBuffer
		idle.Stdout, idle.Stderr = &out, &out
		if err := idle.Start(); err != nil {
			cancel()
			b.Fatal(err)
		}
		waitClients(idleClients)
		with := proxyMemory()
		if *idleProfile != "" {
			writeHeapProfile(b, *idleProfile)
		}
		idle.Process.Kill()
		idle.Wait()
		cancel()
		waitClients(0)
		total := float64(with) - float64(base)
		perClient = total / idleClients
		b.Logf("%d idle clients: %.2f MiB (%.0f bytes each); redis-benchmark said %q",
			idleClients, total/(1<<20), perClient, bytes.TrimSpace([]byte(out.String())))

		// Clients that each read a medium reply, then idle.
		base = proxyMemory()
		conns := mediumReplies(b, addr, srv, master)
		medium = (float64(proxyMemory()) - float64(base)) / mediumClients
		for _, c := range conns {
			c.Close()
		}
		waitClients(0)
		b.Logf("%d clients that each read a %d KiB reply: %.1f KiB each", mediumClients, mediumValue>>10, medium/1024)

		// One large request, then the client idles.
		base = proxyMemory()
		r := largeRequest(b, addr, largeValue)
		waitApplied(b, srv, master) // replication holds nothing of it any more
		after := proxyMemory()
		retained = (float64(after) - float64(base)) / (1 << 20)
		if *idleProfile != "" {
			writeHeapProfile(b, *idleProfile+".large")
		}
		r.Close()
		waitClients(0)
		afterClose = (float64(proxyMemory()) - float64(base)) / (1 << 20)
		if *idleProfile != "" {
			writeHeapProfile(b, *idleProfile+".closed")
		}
		b.Logf("after a %d MiB SET and GET: %.2f MiB retained while the client stays, %.2f MiB once it left",
			largeValue>>20, retained, afterClose)
	}
	b.ReportMetric(perClient*idleClients/(1<<20), "MiB/1000clients")
	b.ReportMetric(perClient, "B/client")
	b.ReportMetric(retained, "MiB-retained-after-64MiB")
	b.ReportMetric(medium/1024, "KiB/client-after-200KiB-reply")
}

// largeRequest SETs and GETs a 64 MiB value through the proxy on a new
// connection, and returns it, still open and idle.
func largeRequest(b testing.TB, addr string, size int) net.Conn {
	b.Helper()
	conn, err := net.DialTimeout("tcp", addr, leakIOTimeout)
	if err != nil {
		b.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(idleTimeout))
	value := bytes.Repeat([]byte("v"), size)
	req := fmt.Appendf(nil, "*3\r\n$3\r\nSET\r\n$5\r\nlarge\r\n$%d\r\n", len(value))
	req = append(append(req, value...), "\r\n*2\r\n$3\r\nGET\r\n$5\r\nlarge\r\n"...)
	value = nil
	if _, err := conn.Write(req); err != nil {
		b.Fatal(err)
	}
	req = nil
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); line != "+OK\r\n" {
		b.Fatalf("SET of %d bytes: %q, %v", size, line, err)
	}
	header := "$" + strconv.Itoa(size) + "\r\n"
	if line, err := br.ReadString('\n'); line != header {
		b.Fatalf("GET of %d bytes: %q, %v", size, line, err)
	}
	if n, err := io.CopyN(io.Discard, br, int64(size)+2); err != nil {
		b.Fatalf("GET of %d bytes: read %d: %v", size, n, err)
	}
	conn.SetDeadline(time.Time{})
	return conn
}

// writeHeapProfile writes the heap profile (as of the last collection) to path.
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC() // the profile is as of the last complete cycle: make it this one
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// mediumReplies opens mediumClients connections that each GET a 200 KiB value,
// and returns them open and idle. They read with no buffer of their own, so
// that the test binary's memory is the proxy's.
func mediumReplies(b *testing.B, addr string, srv *proxy.Server, master *redistest.Server) []net.Conn {
	b.Helper()
	setup := redistest.DialRaw(b, addr)
	if got := setup.Do("SET", "medium", string(bytes.Repeat([]byte("m"), mediumValue))); string(got) != "+OK\r\n" {
		b.Fatalf("SET medium: %q", got)
	}
	setup.Close()
	waitApplied(b, srv, master) // so that a GET on any slave finds the value
	get := []byte("*2\r\n$3\r\nGET\r\n$6\r\nmedium\r\n")
	want := int64(len("$"+strconv.Itoa(mediumValue)+"\r\n") + mediumValue + 2)
	var conns []net.Conn
	for range mediumClients {
		c, err := net.DialTimeout("tcp", addr, leakIOTimeout)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(idleTimeout))
		if _, err := c.Write(get); err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyN(io.Discard, c, want); err != nil {
			b.Fatalf("GET medium: read %d of %d bytes: %v", n, want, err)
		}
	}
	return conns
}

// waitApplied waits until every slave is online and has applied the master's
// last message.
func waitApplied(b testing.TB, srv *proxy.Server, master *redistest.Server) {
	b.Helper()
	seq, err := redis.Int64(master.Do(b, "GET", replicate.KeySeq), nil)
	if err != nil {
		b.Fatalf("GET %s on the master: %v", replicate.KeySeq, err)
	}
	redistest.CheckFor(b, idleTimeout, poll, func() error {
		for _, a := range srv.Replicator().Appliers() {
			if !a.Online() || a.Applied() < seq {
				return fmt.Errorf("slave %s is %v, applied %d of %d", a.Name(), a.State(), a.Applied(), seq)
			}
		}
		return nil
	})
}

// TestClientMemory: an idle client costs the proxy about 10 KiB (its read buffer,
// its goroutine, its session), and a client that sent a large request and stays
// connected holds nothing of it once it was served. (redcon's Server cost 18 KiB a
// client and kept the request's buffer, twice its size, until the client left.)
// Not parallel: it measures the process's memory.
func TestClientMemory(t *testing.T) {
	const clients, large = 300, 16 << 20
	bench := lookTool(t, "redis-benchmark")
	servers := redistest.StartN(t, 2)
	master := servers[0]
	addr, srv := startProxy(t, master, servers[1])
	checker := redistest.DialRaw(t, addr)
	count := func() int {
		n, _ := strconv.Atoi(infoValue(string(checker.Do("INFO", "clients")), "connected_clients"))
		return n - 1
	}
	wait := func(want int) {
		t.Helper()
		redistest.CheckFor(t, idleTimeout, poll, func() error {
			if n := count(); n != want {
				return fmt.Errorf("the proxy has %d clients, want %d", n, want)
			}
			return nil
		})
	}

	base := proxyMemory()
	ctx, cancel := context.WithTimeout(context.Background(), idleTimeout)
	defer cancel()
	idle := exec.CommandContext(ctx, bench, "-I", "-c", strconv.Itoa(clients), "-h", "127.0.0.1", "-p", portOf(t, addr))
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	wait(clients)
	perClient := (float64(proxyMemory()) - float64(base)) / clients
	idle.Process.Kill()
	idle.Wait()
	wait(0)
	t.Logf("%d idle clients: %.0f bytes each", clients, perClient)
	if perClient > 14<<10 {
		t.Errorf("an idle client costs %.0f bytes, want about 10 KiB", perClient)
	}

	base = proxyMemory()
	r := largeRequest(t, addr, large)
	defer r.Close()
	// Replication keeps its last message (recent.go): another one replaces it.
	if got := checker.Do("SET", "small", "v"); string(got) != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	waitApplied(t, srv, master)
	// Replication may still be reading the backlog for a moment: what the
	// client's connection holds is what stays.
	var retained float64
	redistest.CheckFor(t, 10*time.Second, poll, func() error {
		if retained = float64(proxyMemory()) - float64(base); retained > large/4 {
			return fmt.Errorf("%.2f MiB retained after a %d MiB request", retained/(1<<20), large>>20)
		}
		return nil
	})
	t.Logf("after a %d MiB SET and GET: %.2f MiB retained", large>>20, retained/(1<<20))
}

// TestLargeReplies: replies larger than the proxy lets redcon's writer buffer go
// straight to the connection (see proxy's writeReply); mixed with small ones in
// one pipeline, and as pub/sub messages, they arrive whole and in order.
func TestLargeReplies(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	values := map[string]string{
		"small":  "s",
		"medium": strings.Repeat("m", 12<<10), // two of them exceed the 16 KiB buffered
		"large":  strings.Repeat("l", 300<<10),
	}
	c := redistest.DialRaw(t, addr)
	for k, v := range values {
		c.Send("SET", k, v)
	}
	c.Flush()
	for range values {
		if got := c.Read(); string(got) != "+OK\r\n" {
			t.Fatalf("SET: %q", got)
		}
	}
	order := []string{"small", "medium", "small", "large", "small", "medium", "medium", "large", "large", "small"}
	for round := 0; round < 3; round++ {
		for _, k := range order {
			c.Send("GET", k)
			c.Send("PING")
		}
		c.Flush()
		for i, k := range order {
			if got := c.Read(); string(got) != string(bulk(values[k])) {
				t.Fatalf("round %d, GET %s (reply %d): %s", round, k, 2*i, showReply(got))
			}
			if got := c.Read(); string(got) != "+PONG\r\n" {
				t.Fatalf("round %d, PING (reply %d): %s", round, 2*i+1, showReply(got))
			}
		}
	}

	sub := redistest.DialRaw(t, addr)
	sub.Do("SUBSCRIBE", "ch")
	pub := redistest.DialRaw(t, addr)
	for _, k := range order {
		pub.Do("PUBLISH", "ch", values[k])
	}
	for i, k := range order {
		want := "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n" + string(bulk(values[k]))
		if got := sub.Read(); string(got) != want {
			t.Fatalf("message %d (%s): %s", i, k, showReply(got))
		}
	}
}
