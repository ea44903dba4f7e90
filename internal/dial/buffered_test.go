package dial

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// readCounter is a connection whose reads come from a buffer, counted.
type readCounter struct {
	net.Conn
	in    bytes.Reader
	reads int
}

func (c *readCounter) SetReadDeadline(time.Time) error  { return nil }
func (c *readCounter) SetWriteDeadline(time.Time) error { return nil }

func (c *readCounter) Read(p []byte) (int, error) {
	c.reads++
	return c.in.Read(p)
}

// TestRedigoLargeReplyOneRead: with a BufferSize above redigo's 4096 bytes, a
// 20 KB reply (a sync message of a large group) costs one read of the
// connection, not one per 4096 bytes.
func TestRedigoLargeReplyOneRead(t *testing.T) {
	value := bytes.Repeat([]byte("x"), 20<<10)
	reply := append([]byte("$"+strconv.Itoa(len(value))+"\r\n"), value...)
	reply = append(reply, "\r\n"...)
	for _, tc := range []struct {
		size, reads int
	}{
		{0, 3},        // redigo's own 4096-byte buffer, then the rest of the value
		{64 << 10, 1}, // through the dial's reader
	} {
		conn := &readCounter{}
		conn.in.Reset(reply)
		br := bufio.NewReaderSize(conn, max(tc.size, 4096))
		c := redis.NewConn(buffered(conn, br, tc.size), 0, 0)
		got, err := redis.Bytes(c.Receive())
		if err != nil || !bytes.Equal(got, value) {
			t.Fatalf("BufferSize %d: got %d bytes, %v", tc.size, len(got), err)
		}
		if conn.reads != tc.reads {
			t.Errorf("BufferSize %d: %d reads of the connection, want %d", tc.size, conn.reads, tc.reads)
		}
	}
}
