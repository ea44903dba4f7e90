package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// BenchmarkProxyGet measures the read path through an in-process proxy: GETs of
// a 3-byte value sent by clients pipelining depth commands each (as
// redis-benchmark -P), against a master and two slaves. One op is one GET; the
// allocations are the whole process's, the client side's included (none: it
// reuses its buffers). Run with -benchmem.
func BenchmarkProxyGet(b *testing.B) {
	servers := redistest.StartN(b, 3)
	addr, _ := startProxy(b, servers[0], servers[1:]...)
	setup := redistest.DialRaw(b, addr)
	if got := string(setup.Do("SET", "key", "abc")); got != "+OK\r\n" {
		b.Fatalf("SET: %q", got)
	}
	redistest.WaitConverged(b, convergeTimeout, servers[0], servers[1:]...)
	for _, depth := range []int{1, 16} {
		b.Run("P"+strconv.Itoa(depth), func(b *testing.B) { benchGets(b, addr, depth) })
	}
}

// benchGets runs b.N GETs through addr from 8 clients, depth per round trip.
func benchGets(b *testing.B, addr string, depth int) {
	const clients = 8
	get := []byte("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n")
	want := []byte("$3\r\nabc\r\n")
	var batch []byte
	for i := 0; i < depth; i++ {
		batch = append(batch, get...)
	}
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	rounds := (b.N + depth*clients - 1) / (depth * clients)
	errs := make(chan error, clients)
	b.ReportAllocs()
	b.ResetTimer()
	for _, c := range conns {
		go func() { errs <- getRounds(c, batch, want, depth, rounds) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// getRounds sends batch rounds times on c and reads depth replies each time.
func getRounds(c net.Conn, batch, want []byte, depth, rounds int) error {
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	buf := make([]byte, len(want)*depth)
	for i := 0; i < rounds; i++ {
		if _, err := c.Write(batch); err != nil {
			return err
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		for j := 0; j < depth; j++ {
			if got := buf[j*len(want) : (j+1)*len(want)]; !bytes.Equal(got, want) {
				return errBadReply(got)
			}
		}
	}
	return nil
}

type errBadReply string

func (e errBadReply) Error() string { return "unexpected reply " + strconv.Quote(string(e)) }
