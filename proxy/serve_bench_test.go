package proxy

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// BenchmarkServeGets measures the proxy's own work per GET at -P 16, without
// the client socket: a connection whose reads return pipelines of 16 GETs of
// 16 keys and whose writes are discarded, served by a proxy in front of a
// master and two slaves; near: every GET a near cache hit. One op is one GET.
func BenchmarkServeGets(b *testing.B) {
	servers := redistest.StartN(b, 3)
	for _, near := range []bool{true, false} {
		name := "slave"
		if near {
			name = "near"
		}
		b.Run(name, func(b *testing.B) { benchServeGets(b, servers, near) })
	}
}

func benchServeGets(b *testing.B, servers []*redistest.Server, near bool) {
	cfg := DefaultConfig()
	cfg.Master, cfg.Slaves = servers[0].Addr, []string{servers[1].Addr, servers[2].Addr}
	if near {
		cfg.NearCache = 64 << 20
	}
	s, err := NewServer(cfg, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	cl := redistest.DialRaw(b, ln.Addr().String())
	var batch []byte
	for i := 0; i < 16; i++ {
		key := "key:" + strconv.Itoa(100000000000+i)
		cl.Do("SET", key, "xxx")
		batch = append(batch, "*2\r\n$3\r\nGET\r\n$"+strconv.Itoa(len(key))+"\r\n"+key+"\r\n"...)
	}
	redistest.WaitConverged(b, 10*time.Second, servers[0], servers[1:]...)
	redistest.CheckFor(b, 10*time.Second, 10*time.Millisecond, func() error {
		for _, a := range s.repl.Appliers() {
			if !a.Online() {
				return io.ErrNoProgress // reads go to the master until then
			}
		}
		cl.WriteRaw(batch)
		for i := 0; i < 16; i++ {
			cl.Read()
		}
		if near && s.near.stats().hits < 16 {
			return io.ErrNoProgress // the cache fills once the slaves are online
		}
		return nil
	})
	conn := &batchConn{batch: batch, left: (b.N + 15) / 16}
	b.ReportAllocs()
	b.ResetTimer()
	s.serveConn(conn)
	b.StopTimer()
	if want := bytes.Repeat([]byte("$3\r\nxxx\r\n"), 16); !bytes.Equal(conn.first, want) {
		b.Fatalf("replies %q", conn.first)
	}
}

// batchConn is a client connection that sends batch left times, then EOF; it
// keeps the first reply written.
type batchConn struct {
	batch []byte
	left  int
	first []byte
}

func (c *batchConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	c.left--
	return copy(p, c.batch), nil
}

func (c *batchConn) Write(p []byte) (int, error) {
	if c.first == nil {
		c.first = append([]byte(nil), p...)
	}
	return len(p), nil
}

func (c *batchConn) Close() error                       { return nil }
func (c *batchConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *batchConn) RemoteAddr() net.Addr               { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *batchConn) SetDeadline(t time.Time) error      { return nil }
func (c *batchConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *batchConn) SetWriteDeadline(t time.Time) error { return nil }
