package e2e

import (
	"strconv"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestPipelinedReplies sends pipelines of every depth that mix replicated writes,
// local commands and slave reads, and checks that every reply arrives, in order,
// and is the right one. A reply missing or out of place here means the session
// wrote a batch's replies before all of them were complete.
func TestPipelinedReplies(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	addr, _ := startProxy(t, servers[0], servers[1:]...)
	c := redistest.DialRaw(t, addr)
	c.SetTimeout(5 * time.Second)
	read := func(round int, what string, i int, want string) {
		t.Helper()
		f, err := c.TryRead()
		if err != nil || string(f) != want {
			t.Fatalf("round %d, %s #%d: got %q (%v), want %q", round, what, i, f, err, want)
		}
	}
	for round := 0; round < 300; round++ {
		n := 1 + round%20
		val := strconv.Itoa(round)
		for i := 0; i < n; i++ {
			c.Send("SET", "k"+strconv.Itoa(i), val)
			c.Send("PING")
		}
		c.Flush()
		for i := 0; i < n; i++ {
			read(round, "SET", i, "+OK\r\n")
			read(round, "PING", i, "+PONG\r\n")
		}
		// Reads only: after the writes above, they go to the slaves that applied them.
		for i := 0; i < n; i++ {
			c.Send("GET", "k"+strconv.Itoa(i))
			c.Send("ECHO", val)
		}
		c.Flush()
		for i := 0; i < n; i++ {
			read(round, "GET", i, string(bulk(val)))
			read(round, "ECHO", i, string(bulk(val)))
		}
	}
}

// TestQuitInPipeline: as in Redis, QUIT answers +OK, closes the connection, and
// nothing pipelined after it runs.
func TestQuitInPipeline(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 2)
	addr, _ := startProxy(t, servers[0], servers[1])
	c := redistest.DialRaw(t, addr)
	c.Send("SET", "before", "1")
	c.Send("QUIT")
	c.Send("SET", "after", "1")
	c.Flush()
	if got := string(c.Read()); got != "+OK\r\n" {
		t.Fatalf("SET before QUIT: %q", got)
	}
	if got := string(c.Read()); got != "+OK\r\n" {
		t.Fatalf("QUIT: %q", got)
	}
	if got, err := c.TryRead(); err == nil {
		t.Fatalf("reply after QUIT: %q", got)
	}
	if v := servers[0].Do(t, "EXISTS", "after"); v.(int64) != 0 {
		t.Fatal("a command pipelined after QUIT ran")
	}
}
