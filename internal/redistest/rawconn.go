package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// Bounds of ReadFrame, so that garbage from a broken peer fails instead of exhausting
// memory or the stack.
const (
	maxLine  = 1 << 20   // bytes of a header or simple-string line
	maxBulk  = 512 << 20 // bytes of a bulk string (Redis' proto-max-bulk-len)
	maxDepth = 1000      // nesting of aggregates
)

// RawConn is a minimal RESP client that returns each reply as the exact bytes of its
// frame, for tests that compare direct Redis with the proxy byte for byte. Every
// method fails the test on I/O error or timeout. It is not safe for concurrent use.
type RawConn struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

// DialRaw connects to addr. The connection is closed at t.Cleanup; each read and write
// must complete within 10s (see SetTimeout).
func DialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("redistest: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return newRawConn(t, conn)
}

// DialRawTLS is DialRaw over TLS with conf; the handshake must succeed.
func DialRawTLS(t testing.TB, addr string, conf *tls.Config) *RawConn {
	t.Helper()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: ioTimeout}, Config: conf}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("redistest: dial %s with TLS: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return newRawConn(t, conn)
}

func newRawConn(t testing.TB, conn net.Conn) *RawConn {
	return &RawConn{
		t:       t,
		conn:    conn,
		r:       bufio.NewReader(conn),
		w:       bufio.NewWriter(conn),
		timeout: ioTimeout,
	}
}

// SetTimeout changes the deadline given to each later read and write.
func (c *RawConn) SetTimeout(d time.Duration) { c.timeout = d }

// Close closes the connection now, for tests of what follows a client's disconnection.
func (c *RawConn) Close() { c.conn.Close() }

// Do sends one command and returns the bytes of its reply.
func (c *RawConn) Do(args ...string) []byte {
	c.t.Helper()
	c.Send(args...)
	c.Flush()
	return c.Read()
}

// Send buffers one command, encoded as a RESP array of bulk strings; Flush sends it.
func (c *RawConn) Send(args ...string) {
	c.t.Helper()
	c.setWriteDeadline()
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n", len(a))
		c.w.WriteString(a)
		c.w.WriteString("\r\n")
	}
	// bufio.Writer keeps its first error and returns it from Flush.
}

// Flush writes the buffered commands.
func (c *RawConn) Flush() {
	c.t.Helper()
	c.setWriteDeadline()
	if err := c.w.Flush(); err != nil {
		c.t.Fatalf("redistest: write to %s: %v", c.conn.RemoteAddr(), err)
	}
}

// WriteRaw sends b as is, with whatever was buffered before it: inline commands,
// malformed or partial frames.
func (c *RawConn) WriteRaw(b []byte) {
	c.t.Helper()
	c.setWriteDeadline()
	c.w.Write(b)
	c.Flush()
}

// Read returns the bytes of the next complete reply frame.
func (c *RawConn) Read() []byte {
	c.t.Helper()
	frame, err := c.TryRead()
	if err != nil {
		c.t.Fatalf("redistest: read from %s: %v (partial frame %q)", c.conn.RemoteAddr(), err, frame)
	}
	return frame
}

// TryRead is Read returning the error instead of failing the test, for tests expecting
// the server to close the connection (io.EOF) or to stay silent (a timeout).
func (c *RawConn) TryRead() ([]byte, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return nil, err
	}
	return ReadFrame(c.r)
}

func (c *RawConn) setWriteDeadline() {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		c.t.Fatalf("redistest: set deadline on %s: %v", c.conn.RemoteAddr(), err)
	}
}

// ReadFrame reads one complete RESP2 or RESP3 reply from r and returns its bytes
// unchanged: simple types (+ - : _ , # ( ), blob types ($ ! =, with $-1 for null) and
// aggregates (* ~ > %, with *-1 for null), nested at any depth. An attribute (|) is
// returned together with the reply it annotates. Streamed (?) types are not supported.
// On error it returns the bytes read so far.
func ReadFrame(r *bufio.Reader) ([]byte, error) {
	return readFrame(r, nil, 0)
}

// readFrame appends one frame from r to out.
func readFrame(r *bufio.Reader, out []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return out, fmt.Errorf("redistest: RESP nested deeper than %d", maxDepth)
	}
	start := len(out)
	out, err := readLine(r, out)
	if err != nil {
		return out, err
	}
	line := out[start:]
	typ := line[0]
	switch typ {
	case '+', '-', ':', '_', ',', '#', '(':
		return out, nil
	}
	n, err := strconv.ParseInt(string(line[1:len(line)-2]), 10, 64)
	if err != nil {
		return out, fmt.Errorf("redistest: bad RESP header %q", line)
	}
	switch typ {
	case '$', '!', '=':
		if n == -1 && typ == '$' {
			return out, nil
		}
		if n < 0 || n > maxBulk {
			return out, fmt.Errorf("redistest: bad RESP blob length in %q", line)
		}
		blob := make([]byte, n+2)
		got, err := io.ReadFull(r, blob)
		out = append(out, blob[:got]...)
		if err != nil {
			return out, err
		}
		if !bytes.HasSuffix(blob, []byte("\r\n")) {
			return out, errors.New("redistest: RESP blob not followed by CRLF")
		}
		return out, nil
	case '*', '~', '>', '%', '|':
		if n == -1 && typ == '*' {
			return out, nil
		}
		if n < 0 {
			return out, fmt.Errorf("redistest: bad RESP aggregate length in %q", line)
		}
		if typ == '%' || typ == '|' {
			n *= 2
		}
		for i := int64(0); i < n; i++ {
			if out, err = readFrame(r, out, depth+1); err != nil {
				return out, err
			}
		}
		if typ == '|' {
			// An attribute precedes the reply it describes; both make one frame.
			return readFrame(r, out, depth+1)
		}
		return out, nil
	}
	return out, fmt.Errorf("redistest: unknown RESP type in %q", line)
}

// readLine appends one CRLF-terminated line of at least one byte before the CRLF.
func readLine(r *bufio.Reader, out []byte) ([]byte, error) {
	start := len(out)
	for {
		chunk, err := r.ReadSlice('\n')
		out = append(out, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return out, err
		}
		if len(out)-start > maxLine {
			return out, fmt.Errorf("redistest: RESP line longer than %d bytes", maxLine)
		}
	}
	line := out[start:]
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return out, fmt.Errorf("redistest: bad RESP line %q", line)
	}
	return out, nil
}
