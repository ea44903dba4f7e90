package replicate

import (
	"bufio"
	"context"
	"errors"
	"net"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/dial"
)

// slaveConn is the socket under an applier's redigo connection to its slave.
// redigo reads through br, so the apply transactions (applytx.go) can write raw
// RESP on the same socket and read their replies from br between two redigo
// commands: redigo's own buffer is empty once a command's replies are read.
type slaveConn struct {
	net.Conn
	br          *bufio.Reader
	read, write time.Duration
	line        []byte // a reply line longer than br's buffer
}

// Read feeds redigo from the shared reader.
func (c *slaveConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// dialSlave opens the applier's connection to its slave: a redigo connection
// and, under it, the socket for raw apply transactions.
func (r *Replicator) dialSlave(ctx context.Context, e Endpoint, readTimeout time.Duration) (redis.Conn, *slaveConn, error) {
	t := e.DialTarget(r.cfg.DialTimeout)
	t.BufferSize = streamBufferSize
	conn, br, err := dial.Dial(ctx, t)
	r.noteDial(ctx, e, err)
	if err != nil {
		return nil, nil, err
	}
	sc := &slaveConn{Conn: conn, br: br, read: readTimeout, write: r.cfg.WriteTimeout}
	return redis.NewConn(sc, readTimeout, r.cfg.WriteTimeout), sc, nil
}

// roundTrip writes req in one write and reads its replies with read, within
// the connection's timeouts (as redigo bounds each command).
func (c *slaveConn) roundTrip(req []byte, read func() error) error {
	if err := c.SetWriteDeadline(deadline(c.write)); err != nil {
		return err
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	if err := c.SetReadDeadline(deadline(c.read)); err != nil {
		return err
	}
	return read()
}

func deadline(d time.Duration) time.Time {
	if d == 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

var errProtocol = errors.New("replicate: malformed reply from the slave")

// readLine returns the next reply line without its CRLF; it is valid until the
// next read.
func (c *slaveConn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		c.line = append(c.line[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = c.br.ReadSlice('\n')
			c.line = append(c.line, line...)
		}
		line = c.line
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, errProtocol
	}
	return line[:len(line)-2], nil
}

// skip reads one reply, whose first line is line, and discards it.
func (c *slaveConn) skip(line []byte) error {
	switch line[0] {
	case '+', '-', ':', ',', '#', '_', '(':
		return nil
	case '$', '=', '!':
		n, err := respLen(line)
		if err != nil || n < 0 {
			return err
		}
		_, err = c.br.Discard(n + 2)
		return err
	case '*', '~', '>', '%':
		n, err := respLen(line)
		if line[0] == '%' {
			n *= 2
		}
		for i := 0; i < n && err == nil; i++ {
			err = c.skipNext()
		}
		return err
	}
	return errProtocol
}

// skipNext reads the next reply and discards it.
func (c *slaveConn) skipNext() error {
	line, err := c.readLine()
	if err != nil {
		return err
	}
	return c.skip(line)
}

// respLen parses the length of a bulk or aggregate header line.
func respLen(line []byte) (int, error) {
	b := line[1:]
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	n, ok := parseDecimal(b)
	if !ok || len(b) > 10 {
		return 0, errProtocol
	}
	if neg {
		return -n, nil
	}
	return n, nil
}
