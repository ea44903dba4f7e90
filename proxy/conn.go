package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

// A client connection is served by a loop of the proxy's own on redcon's protocol
// functions: the loop reads into a buffer it sizes itself, follows the framing
// with reqScanner (limits.go) so that a request over a limit is refused before it
// is buffered, hands each complete request to redcon.Parse, and writes replies
// with redcon's Append functions. An idle client costs a readBufSize buffer; a
// large request's buffer goes with the request.

const (
	// readBufSize is the read buffer a connection keeps; one grown for a large
	// request is let go once that request was read.
	readBufSize = 4 << 10
	// maxKeptOut is the reply buffer a connection keeps between batches (larger
	// replies are written straight through: see writeReply).
	maxKeptOut = 4 << 10
)

// errDetached ends the serving loop of a connection a session serves itself.
var errDetached = errors.New("proxy: connection detached")

// errProtocol is a request redcon's parser refuses: its reply, sent before the
// connection is closed.
type errProtocol struct{ reply string }

func (e *errProtocol) Error() string { return e.reply }

// clientConn is a client's connection, as redcon.Conn and redcon.DetachedConn for
// the session. Its read side belongs to the goroutine that reads (serve, or a
// detached session's); its write side to whoever holds the session.
type clientConn struct {
	s    *Server
	nc   *limitConn
	addr string
	ctx  interface{}

	buf       []byte // buf[start:end] is read and not yet handed out
	start     int    // where the request being read starts
	scanned   int    // how far the scanner followed it
	end       int
	scan      reqScanner
	malformed bool             // buf[start:] is malformed: redcon's parser says why once it can
	failed    error            // to answer at the next read, after the requests before it
	spans     []span           // small requests scanned, not yet copied out (copySpans)
	bounds    []int            // the spans' arguments found by scanWhole (span.bounds)
	cmds      []redcon.Command // read, not yet handed out
	batch     []redcon.Command // the last batch read, reused
	idleSet   bool             // the idle deadline is set on nc

	out      []byte // replies not yet flushed
	werr     error  // the write that failed: no more are tried
	detached bool
	closed   bool
}

func newClientConn(s *Server, nc net.Conn) *clientConn {
	lc := newLimitConn(nc, &s.limits, s.config().RequirePass != "")
	c := &clientConn{s: s, nc: lc, addr: nc.RemoteAddr().String()}
	c.scan.authed = lc.authed.Load
	return c
}

// serve reads the client's requests and hands each batch to handler (which takes
// what is pipelined behind the first with ReadPipeline), then flushes the replies,
// until the connection fails, is closed or is detached.
func (c *clientConn) serve(handler func(redcon.Conn, redcon.Command)) error {
	for {
		cmds, err := c.readCommands()
		if err != nil {
			return err
		}
		c.cmds = cmds
		for len(c.cmds) > 0 {
			cmd := c.cmds[0]
			c.cmds = c.cmds[1:]
			handler(c, cmd)
			if c.detached {
				return errDetached // the session's goroutine reads from now on
			}
		}
		clear(cmds) // the commands' bytes are not kept alive by an idle client
		if c.closed {
			return nil
		}
		if err := c.Flush(); err != nil {
			return err
		}
	}
}

// readCommands returns the complete requests buffered, reading until there is one.
// A request that breaks a limit or is malformed is answered, after the requests
// before it were served, and fails the connection.
func (c *clientConn) readCommands() ([]redcon.Command, error) {
	for c.failed == nil {
		cmds, err := c.parse()
		if err != nil {
			c.failed = err
		}
		if len(cmds) > 0 {
			return cmds, nil
		}
		if err == nil {
			if err := c.fill(); err != nil {
				return nil, err
			}
		}
	}
	switch e := c.failed.(type) {
	case *errLimit:
		c.nc.fail(e.reply, true)
	case *errProtocol:
		c.nc.fail(e.reply, false)
	}
	return nil, c.failed
}

// parse returns the complete requests of buf[scanned:end] as commands.
func (c *clientConn) parse() ([]redcon.Command, error) {
	cmds := c.batch[:0]
	if cap(cmds) > maxKeptRequests {
		cmds = nil
	}
	c.scan.lim = c.s.limits.Load()
	for !c.malformed && c.scanned < c.end {
		at := len(c.bounds)
		var n int
		if n, c.bounds = c.scan.scanWhole(c.buf[c.scanned:c.end], c.bounds); n > 0 && n <= readBufSize {
			c.scanned += n
			c.spans = append(c.spans, span{start: c.start, end: c.scanned, bounds: at, argc: (len(c.bounds) - at) / 2})
			c.start = c.scanned
			continue
		}
		c.bounds = c.bounds[:at]
		n, ev := c.scan.scan(c.buf[c.scanned:c.end])
		c.scanned += n
		switch ev {
		case evRequest:
			if req := c.buf[c.start:c.scanned]; req[0] == '*' && len(req) <= readBufSize {
				c.spans = append(c.spans, span{start: c.start, end: c.scanned})
				c.start = c.scanned
				continue
			}
			var err error
			if cmds, err = c.copySpans(cmds); err != nil {
				return cmds, err
			}
			cmd, ok, err := c.command()
			if err != nil {
				return cmds, err
			}
			if ok {
				cmds = append(cmds, cmd)
			}
		case evIgnore:
			c.start = c.scanned
		case evLimit:
			cmds, err := c.copySpans(cmds)
			if err == nil {
				err = c.scan.err
			}
			return cmds, err
		case evMalformed:
			c.malformed = true
		}
	}
	cmds, err := c.copySpans(cmds)
	if err != nil {
		return cmds, err
	}
	c.batch = cmds
	if c.malformed {
		// Malformed as soon as redcon can tell, within a few bytes.
		if _, err := redcon.Parse(c.buf[c.start:c.end]); err == nil || err.Error() != "incomplete command" {
			return cmds, protocolError(err)
		}
		if int64(c.end-c.start) > c.scan.lim.QueryBuffer {
			return cmds, &errLimit{queryBufferError(c.scan.lim.QueryBuffer)}
		}
	}
	return cmds, nil
}

// command parses the request buf[start:scanned]; ok is false for a request
// without arguments (an empty line). A large request keeps the buffer it was
// read into, and the connection takes a small one; a small one is copied, so that
// what a session keeps of a command holds nothing else.
func (c *clientConn) command() (cmd redcon.Command, ok bool, err error) {
	req := c.buf[c.start:c.scanned]
	switch {
	case len(req) > readBufSize:
		c.buf = append(make([]byte, 0, readBufSize), c.buf[c.scanned:c.end]...)
		c.buf = c.buf[:max(readBufSize, len(c.buf))]
		c.end -= c.scanned
		c.scanned = 0
	case req[0] == '*':
		req = append([]byte(nil), req...)
	}
	c.start = c.scanned
	cmd, err = redcon.Parse(req)
	if err != nil {
		if err.Error() == "incomplete command" {
			return cmd, false, nil // a line of spaces
		}
		return cmd, false, protocolError(err)
	}
	return cmd, true, nil
}

// span is a request's place in clientConn.buf; with argc > 0, its arguments'
// bounds are clientConn.bounds[bounds:bounds+2*argc], relative to start.
type span struct{ start, end, bounds, argc int }

// copySpans appends to cmds the commands of the small array requests noted in
// c.spans, copied out of the read buffer: all of them into one new buffer, and
// their arguments into one new slice, so that a pipelined batch costs two
// allocations, not three per command. Each command's slices are capped to its
// own part, and the buffers are never reused: what a session keeps of a command
// holds at most the requests read with it.
func (c *clientConn) copySpans(cmds []redcon.Command) ([]redcon.Command, error) {
	if len(c.spans) == 0 {
		return cmds, nil
	}
	size, argc := 0, 0
	for _, sp := range c.spans {
		size += sp.end - sp.start
		if sp.argc > 0 {
			argc += sp.argc
		} else {
			argc += arrayLen(c.buf[sp.start:sp.end])
		}
	}
	raw := make([]byte, 0, size)
	args := make([][]byte, argc)
	var err error
	for _, sp := range c.spans {
		at := len(raw)
		raw = append(raw, c.buf[sp.start:sp.end]...)
		req := raw[at:len(raw):len(raw)]
		var cmd redcon.Command
		ok := false
		if n := sp.argc; n > 0 { // scanWhole found the arguments
			cmd, ok = redcon.Command{Raw: req, Args: args[:n:n]}, true
			argsAt(req, c.bounds[sp.bounds:], cmd.Args)
			args = args[n:]
		} else {
			n := arrayLen(req)
			cmd, ok = splitArgs(req, args[:n:n])
			args = args[n:]
		}
		if !ok { // redcon's parser decides, as command does
			if cmd, err = redcon.Parse(req); err != nil {
				if err.Error() == "incomplete command" {
					err = nil
					continue
				}
				err = protocolError(err)
				break
			}
		}
		cmds = append(cmds, cmd)
	}
	c.spans, c.bounds = c.spans[:0], c.bounds[:0]
	return cmds, err
}

// argsAt slices req's arguments into args, the k-th from bounds[2k] to
// bounds[2k+1].
func argsAt(req []byte, bounds []int, args [][]byte) {
	for k := range args {
		start, end := bounds[2*k], bounds[2*k+1]
		args[k] = req[start:end:end]
	}
}

// arrayLen returns N of a request "*N\r\n...", or 0 when it is not well formed.
func arrayLen(req []byte) int {
	n, i := 0, 1
	for ; i < len(req) && req[i] >= '0' && req[i] <= '9' && i < 12; i++ {
		n = n*10 + int(req[i]-'0')
	}
	if i == 1 || i+1 >= len(req) || req[i] != '\r' || req[i+1] != '\n' || n > len(req) {
		return 0
	}
	return n
}

// splitArgs parses req, a whole "*N" array of N bulk strings, into a command
// whose arguments are slices of req stored in args (len N). It reports false
// when req is not exactly that, strictly framed: redcon.Parse then decides.
func splitArgs(req []byte, args [][]byte) (redcon.Command, bool) {
	if len(args) == 0 {
		return redcon.Command{}, false
	}
	i := bytes.IndexByte(req, '\n') + 1
	for k := range args {
		if i >= len(req) || req[i] != '$' {
			return redcon.Command{}, false
		}
		size, j := 0, i+1
		for ; j < len(req) && req[j] >= '0' && req[j] <= '9' && j-i < 12; j++ {
			size = size*10 + int(req[j]-'0')
		}
		if j == i+1 || j+1 >= len(req) || req[j] != '\r' || req[j+1] != '\n' {
			return redcon.Command{}, false
		}
		start := j + 2
		end := start + size
		if end+2 > len(req) || req[end] != '\r' || req[end+1] != '\n' {
			return redcon.Command{}, false
		}
		args[k] = req[start:end:end]
		i = end + 2
	}
	if i != len(req) {
		return redcon.Command{}, false
	}
	return redcon.Command{Raw: req, Args: args}, true
}

// protocolError is the reply to a request redcon's parser refused with err.
func protocolError(err error) error {
	if err != nil && strings.HasPrefix(err.Error(), "Protocol error") {
		return &errProtocol{"ERR " + err.Error()}
	}
	return &errProtocol{"ERR Protocol error: invalid request"}
}

// fill reads more of the client's requests, into a buffer with room for them.
func (c *clientConn) fill() error {
	c.compact()
	if c.end == len(c.buf) {
		size := max(2*len(c.buf), readBufSize)
		if need := c.scan.need(); need > 0 && int64(c.end)+need < int64(size) {
			size = c.end + int(need) // what the request needs, no more
		}
		nb := make([]byte, size)
		copy(nb, c.buf[:c.end])
		c.buf = nb
	}
	c.setReadDeadline()
	n, err := c.nc.Read(c.buf[c.end:])
	c.end += n
	if n > 0 {
		return nil
	}
	return err
}

// compact moves the request being read to the start of the buffer, into a new
// readBufSize one when the buffer grew larger and the request fits.
func (c *clientConn) compact() {
	pending := c.end - c.start
	switch {
	case len(c.buf) > readBufSize && pending <= readBufSize/2:
		nb := make([]byte, readBufSize)
		copy(nb, c.buf[c.start:c.end])
		c.buf = nb
	case c.start > 0:
		copy(c.buf, c.buf[c.start:c.end])
	default:
		return
	}
	c.scanned -= c.start
	c.end = pending
	c.start = 0
}

// setReadDeadline bounds the next read by the idle timeout, or by drainIdle
// during a shutdown.
func (c *clientConn) setReadDeadline() {
	if idle := c.scan.lim.IdleTimeout; idle > 0 {
		c.nc.SetReadDeadline(time.Now().Add(idle))
		c.idleSet = true
	} else if c.idleSet {
		c.nc.SetReadDeadline(time.Time{})
		c.idleSet = false
	}
	// Shutdown sets closing before the deadlines of the clients: a client that
	// set its own after that sees closing here.
	if c.s.closing.Load() {
		c.nc.SetReadDeadline(time.Now().Add(drainIdle))
	}
}

// ReadCommand returns the next command (a detached connection's reading).
func (c *clientConn) ReadCommand() (redcon.Command, error) {
	for len(c.cmds) == 0 {
		cmds, err := c.readCommands()
		if err != nil {
			return redcon.Command{}, err
		}
		c.cmds = cmds
	}
	cmd := c.cmds[0]
	c.cmds[0] = redcon.Command{}
	c.cmds = c.cmds[1:]
	return cmd, nil
}

// Flush writes the replies buffered.
func (c *clientConn) Flush() error {
	if len(c.out) > 0 && c.werr == nil {
		_, c.werr = c.nc.Write(c.out)
	}
	if cap(c.out) > maxKeptOut {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return c.werr
}

// Close flushes the replies and closes the connection; the serving loop ends.
func (c *clientConn) Close() error {
	c.Flush()
	c.closed = true
	return c.nc.Close()
}

// Detach hands the connection to the session, which reads and flushes it from
// its own goroutine and closes it.
func (c *clientConn) Detach() redcon.DetachedConn {
	c.detached = true
	return c
}

// ReadPipeline takes the commands read behind the one being handled.
func (c *clientConn) ReadPipeline() []redcon.Command {
	cmds := c.cmds
	c.cmds = nil
	return cmds
}

// PeekPipeline returns the commands read behind the one being handled.
func (c *clientConn) PeekPipeline() []redcon.Command { return c.cmds }

// NetConn returns the client's connection (seen through its limits).
func (c *clientConn) NetConn() net.Conn { return c.nc }

// RemoteAddr returns the client's address.
func (c *clientConn) RemoteAddr() string { return c.addr }

// Context returns what SetContext set.
func (c *clientConn) Context() interface{} { return c.ctx }

// SetContext sets the connection's user data (its Session).
func (c *clientConn) SetContext(v interface{}) { c.ctx = v }

// SetReadBuffer does nothing: the connection sizes its buffer itself.
func (c *clientConn) SetReadBuffer(int) {}

// WriteError writes an error reply.
func (c *clientConn) WriteError(msg string) { c.out = redcon.AppendError(c.out, msg) }

// WriteString writes a status reply.
func (c *clientConn) WriteString(str string) { c.out = redcon.AppendString(c.out, str) }

// WriteBulk writes a bulk string.
func (c *clientConn) WriteBulk(bulk []byte) { c.out = redcon.AppendBulk(c.out, bulk) }

// WriteBulkString writes a bulk string.
func (c *clientConn) WriteBulkString(bulk string) { c.out = redcon.AppendBulkString(c.out, bulk) }

// WriteInt writes an integer reply.
func (c *clientConn) WriteInt(num int) { c.out = redcon.AppendInt(c.out, int64(num)) }

// WriteInt64 writes an integer reply.
func (c *clientConn) WriteInt64(num int64) { c.out = redcon.AppendInt(c.out, num) }

// WriteUint64 writes an integer reply.
func (c *clientConn) WriteUint64(num uint64) { c.out = redcon.AppendUint(c.out, num) }

// WriteArray writes an array header.
func (c *clientConn) WriteArray(count int) { c.out = redcon.AppendArray(c.out, count) }

// WriteNull writes a null bulk string.
func (c *clientConn) WriteNull() { c.out = redcon.AppendNull(c.out) }

// WriteRaw writes an encoded reply.
func (c *clientConn) WriteRaw(data []byte) { c.out = append(c.out, data...) }

// WriteAny writes v as redcon.AppendAny encodes it.
func (c *clientConn) WriteAny(v interface{}) { c.out = redcon.AppendAny(c.out, v) }

// WriteBulkFrom writes a bulk string of n bytes read from rb.
func (c *clientConn) WriteBulkFrom(n int64, rb io.Reader) {
	b := make([]byte, n)
	if _, err := io.ReadFull(rb, b); err != nil && c.werr == nil {
		c.werr = err
	}
	c.out = redcon.AppendBulk(c.out, b)
}
