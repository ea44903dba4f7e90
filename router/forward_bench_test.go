package router

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/tidwall/redcon"
)

// These benchmarks decide how replies travel from a backend to a client: as raw
// RESP frames (ReadFrame, then WriteRaw), or decoded by redigo and re-encoded
// with redcon's typed writers. The hot path uses raw frames because they measure
// faster (see README, "Benchmarks"): no decoding into interface values, no
// allocation per element, and the bytes are exactly the backend's.

func replyStream(reply string, n int) []byte {
	return []byte(strings.Repeat(reply, n))
}

func lrange100() string {
	var b []byte
	b = redcon.AppendArray(b, 100)
	for i := 0; i < 100; i++ {
		b = redcon.AppendBulkString(b, "element-xxxxxxxx")
	}
	return string(b)
}

var benchReplies = map[string]string{
	"get":        "$3\r\nxxx\r\n",
	"lrange_100": lrange100(),
	"set":        "+OK\r\n",
}

func BenchmarkForwardRaw(b *testing.B) {
	for _, name := range []string{"set", "get", "lrange_100"} {
		b.Run(name, func(b *testing.B) {
			stream := replyStream(benchReplies[name], 1000)
			w := redcon.NewWriter(io.Discard)
			var buf []byte
			b.SetBytes(int64(len(benchReplies[name])))
			b.ReportAllocs()
			for i := 0; i < b.N; i += 1000 {
				br := bufio.NewReaderSize(bytes.NewReader(stream), 16<<10)
				for j := 0; j < 1000; j++ {
					var err error
					if buf, err = ReadFrame(br, buf[:0]); err != nil {
						b.Fatal(err)
					}
					w.WriteRaw(buf)
				}
				w.Flush()
			}
		})
	}
}

func BenchmarkForwardRedigo(b *testing.B) {
	for _, name := range []string{"set", "get", "lrange_100"} {
		b.Run(name, func(b *testing.B) {
			stream := replyStream(benchReplies[name], 1000)
			w := redcon.NewWriter(io.Discard)
			b.SetBytes(int64(len(benchReplies[name])))
			b.ReportAllocs()
			for i := 0; i < b.N; i += 1000 {
				c := redis.NewConn(&fakeConn{r: bytes.NewReader(stream)}, 0, 0)
				for j := 0; j < 1000; j++ {
					v, err := c.Receive()
					if _, ok := err.(redis.Error); err != nil && !ok {
						b.Fatal(err)
					}
					writeValue(w, v, err)
				}
				w.Flush()
			}
		})
	}
}

// writeValue re-encodes a redigo reply with its exact RESP type.
func writeValue(w *redcon.Writer, v interface{}, err error) {
	if e, ok := err.(redis.Error); ok {
		w.WriteError(string(e))
		return
	}
	switch v := v.(type) {
	case nil:
		w.WriteNull()
	case string:
		w.WriteString(v)
	case []byte:
		w.WriteBulk(v)
	case int64:
		w.WriteInt64(v)
	case redis.Error:
		w.WriteError(string(v))
	case []interface{}:
		w.WriteArray(len(v))
		for _, e := range v {
			writeValue(w, e, nil)
		}
	}
}

// TestForwardEquivalence checks that both forwarding paths produce the same bytes
// for the benchmark's replies, so the benchmark compares like with like.
func TestForwardEquivalence(t *testing.T) {
	for name, reply := range benchReplies {
		var raw, dec bytes.Buffer
		w := redcon.NewWriter(&raw)
		f, err := ReadFrame(bufio.NewReader(strings.NewReader(reply)), nil)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteRaw(f)
		w.Flush()
		w2 := redcon.NewWriter(&dec)
		c := redis.NewConn(&fakeConn{r: strings.NewReader(reply)}, 0, 0)
		v, err := c.Receive()
		writeValue(w2, v, err)
		w2.Flush()
		if raw.String() != dec.String() || raw.String() != reply {
			t.Errorf("%s: raw %q, redigo %q, want %q", name, raw.String(), dec.String(), reply)
		}
	}
}

type fakeConn struct{ r io.Reader }

func (c *fakeConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *fakeConn) Close() error                       { return nil }
func (c *fakeConn) LocalAddr() net.Addr                { return nil }
func (c *fakeConn) RemoteAddr() net.Addr               { return nil }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
