package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// The client connection loop (conn.go) reads requests into its own buffer and
// follows them with reqScanner, a small state machine that reads only the
// framing — array and bulk headers, inline line ends — and skips bulk payloads
// by their length. It tells the loop where each request ends, how much room the
// one being read still needs, and when one breaks a limit: before the loop buffers
// it. redcon's parser then splits each complete request into its arguments.
//
// What the machine cannot follow (a missing '$', a bad number) is malformed:
// redcon's parser says why, with its own protocol error.

// Limits are the bounds on what one client may send and leave unread.
type Limits struct {
	MaxBulkLen    int64         // longest bulk string (Redis' proto-max-bulk-len)
	MaxArgs       int64         // most arguments in one command
	QueryBuffer   int64         // most bytes of one command (client-query-buffer-limit)
	OutputTimeout time.Duration // a client that accepts no reply byte for this long is closed; 0: never
	IdleTimeout   time.Duration // a client silent for this long is closed (0: never)
	// HandshakeTimeout bounds a TLS client's handshake: a connection that never
	// completes it would otherwise hold its goroutine and TLS state for good.
	HandshakeTimeout time.Duration
}

// Redis' fixed limits for inline requests and header lines, and for clients that
// have not authenticated yet when a password is required.
const (
	maxInline       = 64 << 10 // PROTO_INLINE_MAX_SIZE
	maxInlineWork   = 4 << 20  // bytes redcon may copy for one inline request
	unauthMaxArgs   = 10
	unauthMaxBulk   = 16384
	errWriteTimeout = 1 * time.Second // for writing the error before closing
)

// errLimit is a request over a limit: the error the client is answered with
// before its connection is closed.
type errLimit struct{ reply string }

func (e *errLimit) Error() string { return e.reply }

// errOutputStalled is returned by outputConn.Write when the client took no reply
// byte for the output timeout.
var errOutputStalled = errors.New("client accepted no output within the output timeout")

type scanState uint8

const (
	stStart     scanState = iota // at the first byte of a request
	stInline                     // inside an inline request, until '\n'
	stArrayLen                   // the count of "*<count>\r\n"
	stBulkStart                  // at the '$' of an argument
	stBulkLen                    // the length of "$<len>\r\n"
	stBulkBody                   // skipping an argument's bytes
	stBulkCR                     // the CR LF after them
	stBulkLF
	stLost // a limit was broken or the framing lost: nothing more is followed
)

// scanEvent is what reqScanner.scan stopped at.
type scanEvent uint8

const (
	evMore      scanEvent = iota // everything given was consumed; the request goes on
	evRequest                    // a request ended
	evIgnore                     // an empty array header ("*0", "*-1") ended: Redis ignores it
	evLimit                      // the request breaks a limit: reqScanner.err says which
	evMalformed                  // the framing cannot be followed
)

// reqScanner follows the framing of a stream of client requests.
type reqScanner struct {
	lim    *Limits
	authed func() bool // nil or true: the authenticated limits apply
	err    *errLimit   // with evLimit

	st       scanState
	cmdBytes int64 // bytes of the current request so far
	args     int64 // arguments of the current request still to come
	skip     int64 // bytes left of the current argument (stBulkBody)
	// the number being read (stArrayLen, stBulkLen), parsed as strconv.Atoi would
	num       int64
	numDigits int
	numNeg    bool
	numBad    bool
	lineLen   int
	spaces    int // of the inline request
	prevCR    bool
}

// scan follows p, the next bytes of the stream, until a request ends, breaks a
// limit or loses the framing, or until p ends. It returns the bytes of p it
// consumed (with evRequest and evIgnore: up to the end of the request) and what it
// stopped at.
func (r *reqScanner) scan(p []byte) (int, scanEvent) {
	for i := 0; i < len(p); {
		ev := evMore
		switch r.st {
		case stLost:
			return i, evMalformed
		case stStart:
			i = r.begin(p, i)
		case stInline:
			i, ev = r.inline(p, i)
		case stArrayLen, stBulkLen:
			i, ev = r.header(p, i)
		case stBulkStart:
			if p[i] != '$' {
				return i, r.lose() // redcon: expected '$'
			}
			i++
			r.cmdBytes++
			r.resetNum()
			r.st = stBulkLen
		case stBulkBody:
			n := min(int64(len(p)-i), r.skip)
			i += int(n)
			r.skip -= n
			r.cmdBytes += n
			if r.skip == 0 {
				r.st = stBulkCR
			}
		case stBulkCR, stBulkLF:
			i, ev = r.bulkEnd(p, i)
		}
		if ev != evMore {
			return i, ev
		}
		// (A header line is bounded by maxInline, as Redis bounds it.)
		if r.st != stArrayLen && r.st != stBulkLen && r.cmdBytes > r.lim.QueryBuffer {
			return i, r.fail(queryBufferError(r.lim.QueryBuffer))
		}
	}
	return len(p), evMore
}

// scanWhole returns the length of the request p starts with when it is whole in
// p, plainly framed ("*N\r\n", then N times "$L\r\n", L bytes, "\r\n", with
// decimal digits only) and within every limit: a pipeline's usual request,
// followed in one pass, not by scan's byte-at-a-time states. It appends to
// bounds where each argument starts and ends in p. It returns 0 and bounds as
// it was for anything else, which scan then follows.
func (r *reqScanner) scanWhole(p []byte, bounds []int) (int, []int) {
	if r.st != stStart || len(p) < 4 || p[0] != '*' {
		return 0, bounds
	}
	n, i, ok := headerNum(p, 1)
	if !ok || n <= 0 || n > r.lim.MaxArgs {
		return 0, bounds
	}
	had := len(bounds)
	unauth := n > unauthMaxArgs // over the limits before authentication
	for ; n > 0; n-- {
		if i >= len(p) || p[i] != '$' {
			return 0, bounds[:had]
		}
		size, j, ok := headerNum(p, i+1)
		if !ok || size > r.lim.MaxBulkLen || size > int64(len(p)-j) {
			return 0, bounds[:had]
		}
		unauth = unauth || size > unauthMaxBulk
		end := j + int(size)
		if end+2 > len(p) || p[end] != '\r' || p[end+1] != '\n' {
			return 0, bounds[:had]
		}
		bounds = append(bounds, j, end)
		i = end + 2
	}
	if int64(i) > r.lim.QueryBuffer || (unauth && !r.isAuthed()) {
		return 0, bounds[:had]
	}
	return i, bounds
}

// headerNum parses the decimal digits of p from i to "\r\n"; it returns the
// number and where the next line starts.
func headerNum(p []byte, i int) (int64, int, bool) {
	n, start := int64(0), i
	for ; i < len(p) && p[i] >= '0' && p[i] <= '9'; i++ {
		if i-start == 18 {
			return 0, 0, false
		}
		n = n*10 + int64(p[i]-'0')
	}
	if i == start || i+1 >= len(p) || p[i] != '\r' || p[i+1] != '\n' {
		return 0, 0, false
	}
	return n, i + 2, true
}

// need returns how many more bytes the request being read needs at least, when
// known (0: not known).
func (r *reqScanner) need() int64 {
	switch r.st {
	case stBulkBody:
		return r.skip + 2
	case stBulkCR:
		return 2
	case stBulkLF:
		return 1
	}
	return 0
}

// begin starts a request at p[i]; it returns where scanning goes on.
func (r *reqScanner) begin(p []byte, i int) int {
	r.cmdBytes, r.lineLen, r.spaces = 0, 0, 0
	if p[i] != '*' {
		r.st = stInline
		return i
	}
	r.st = stArrayLen
	r.resetNum()
	r.cmdBytes++
	return i + 1
}

// inline follows an inline request from p[i] to its end of line.
func (r *reqScanner) inline(p []byte, i int) (int, scanEvent) {
	j := bytes.IndexByte(p[i:], '\n')
	end := len(p)
	if j >= 0 {
		end = i + j
	}
	r.lineLen += end - i
	r.cmdBytes += int64(end - i)
	r.spaces += bytes.Count(p[i:end], []byte{' '})
	// redcon copies the rest of the line for each argument: a long line of many
	// short arguments costs its length times their number.
	if r.lineLen > maxInline || r.spaces*r.lineLen > maxInlineWork {
		return end, r.fail("ERR Protocol error: too big inline request")
	}
	if j < 0 {
		return end, evMore
	}
	r.st = stStart
	return end + 1, evRequest
}

// header reads one byte of an array or bulk header line, and takes the number at
// its end.
func (r *reqScanner) header(p []byte, i int) (int, scanEvent) {
	c := p[i]
	i++
	r.cmdBytes++
	if c != '\n' {
		r.lineLen++
		if r.lineLen > maxInline {
			what := "mbulk"
			if r.st == stBulkLen {
				what = "bulk"
			}
			return i, r.fail("ERR Protocol error: too big " + what + " count string")
		}
		r.digit(c)
		return i, evMore
	}
	if !r.prevCR || r.numBad || r.numDigits == 0 {
		return i, r.lose() // redcon: invalid (multi)bulk length
	}
	n := r.num
	if r.numNeg {
		n = -n
	}
	r.lineLen = 0
	if r.st == stArrayLen {
		return i, r.arrayLen(n)
	}
	return i, r.bulkLen(n)
}

// arrayLen takes the count of a request's arguments.
func (r *reqScanner) arrayLen(n int64) scanEvent {
	switch {
	case n <= 0:
		r.st = stStart
		return evIgnore
	case n > r.lim.MaxArgs:
		return r.fail("ERR Protocol error: invalid multibulk length")
	case n > unauthMaxArgs && !r.isAuthed():
		return r.fail("ERR Protocol error: unauthenticated multibulk length")
	}
	r.args = n
	r.st = stBulkStart
	return evMore
}

// bulkLen takes the length of an argument.
func (r *reqScanner) bulkLen(n int64) scanEvent {
	switch {
	case n < 0:
		return r.lose()
	case n > r.lim.MaxBulkLen:
		return r.fail("ERR Protocol error: invalid bulk length")
	case n > unauthMaxBulk && !r.isAuthed():
		return r.fail("ERR Protocol error: unauthenticated bulk length")
	case r.cmdBytes+n > r.lim.QueryBuffer:
		return r.fail(queryBufferError(r.lim.QueryBuffer))
	}
	r.skip = n
	r.st = stBulkBody
	return evMore
}

// bulkEnd reads the CR or LF after an argument.
func (r *reqScanner) bulkEnd(p []byte, i int) (int, scanEvent) {
	want := byte('\r')
	if r.st == stBulkLF {
		want = '\n'
	}
	if p[i] != want {
		return i, r.lose() // redcon: invalid bulk length
	}
	i++
	r.cmdBytes++
	if r.st == stBulkCR {
		r.st = stBulkLF
		return i, evMore
	}
	if r.args--; r.args > 0 {
		r.st = stBulkStart
		return i, evMore
	}
	r.st = stStart
	return i, evRequest
}

// fail stops at a request over a limit.
func (r *reqScanner) fail(reply string) scanEvent {
	r.err = &errLimit{reply}
	r.st = stLost
	return evLimit
}

// lose stops at a request whose framing cannot be followed.
func (r *reqScanner) lose() scanEvent {
	r.st = stLost
	return evMalformed
}

// queryBufferError is Redis' error for a request over the query buffer limit.
func queryBufferError(limit int64) string {
	return "ERR Protocol error: client reached the query buffer limit (" + strconv.FormatInt(limit, 10) + " bytes)"
}

func (r *reqScanner) isAuthed() bool { return r.authed == nil || r.authed() }

func (r *reqScanner) resetNum() {
	r.num, r.numDigits, r.numNeg, r.numBad, r.prevCR, r.lineLen = 0, 0, false, false, false, 0
}

// digit adds one byte of a header line, parsed as strconv.Atoi parses it (an
// optional sign, then decimal digits, no overflow), the '\r' before '\n' apart.
func (r *reqScanner) digit(c byte) {
	if r.prevCR {
		r.numBad = true // "\r" inside the line
	}
	switch {
	case c == '\r':
		r.prevCR = true
		return
	case (c == '+' || c == '-') && r.numDigits == 0 && !r.numNeg && r.lineLen == 1:
		r.numNeg = c == '-'
	case c >= '0' && c <= '9':
		if r.num > (1<<62)/10 {
			// Beyond any limit. It stays a number (Atoi may take it, and redcon
			// would then wait for that many bytes): it saturates, to be refused.
			r.num = 1 << 62
		} else {
			r.num = r.num*10 + int64(c-'0')
		}
		r.numDigits++
	default:
		r.numBad = true
	}
}

// limitConn is a client connection seen through its limits: it records whether
// the client authenticated (the limits before are tighter) and why the
// connection was cut, and bounds a TLS client's handshake. A reload replaces the
// limits: each Read and Write takes the ones in force.
type limitConn struct {
	net.Conn
	limits *atomic.Pointer[Limits]
	authed atomic.Bool
	shaken bool                   // the TLS handshake (if any) was done
	reason atomic.Pointer[string] // why the connection failed, for the log
}

func newLimitConn(c net.Conn, limits *atomic.Pointer[Limits], needAuth bool) *limitConn {
	lc := &limitConn{Conn: c, limits: limits}
	lc.authed.Store(!needAuth)
	return lc
}

// NetConn returns the wrapped connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// Read reads from the client, after completing a TLS client's handshake.
func (c *limitConn) Read(p []byte) (int, error) {
	if !c.shaken {
		c.shaken = true
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

// handshake completes a TLS client's handshake within tlsHandshakeTimeout, then
// restores the idle deadline.
func (c *limitConn) handshake() error {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	lim := c.limits.Load()
	tc.SetDeadline(time.Now().Add(lim.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			reason := "TLS handshake not completed within " + lim.HandshakeTimeout.String()
			c.reason.Store(&reason)
		}
		return err
	}
	var idle time.Time
	if t := lim.IdleTimeout; t > 0 {
		idle = time.Now().Add(t)
	}
	tc.SetReadDeadline(idle)
	tc.SetWriteDeadline(time.Time{})
	return nil
}

// fail answers the client with reply, unbuffered, before its connection is
// closed; a limit's reply is recorded for the log.
func (c *limitConn) fail(reply string, limit bool) {
	if limit {
		c.reason.Store(&reply)
	}
	c.Conn.SetWriteDeadline(time.Now().Add(errWriteTimeout))
	c.Conn.Write([]byte("-" + reply + "\r\n"))
}

// Write writes replies; when the output timeout cut the client (see outputConn),
// it records why for the log.
func (c *limitConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if errors.Is(err, errOutputStalled) {
		reason := errOutputStalled.Error()
		c.reason.Store(&reason)
	}
	return n, err
}

// outputConn cuts a client that accepts no reply byte for the output timeout. It
// sits on the socket, under any TLS: a TLS connection whose write timed out is
// broken for good, so the short deadlines that watch the client's progress must
// be the socket's. A write waits in steps of an eighth of the timeout and notes
// at each step whether the client took bytes; the timeout runs from the last
// step that saw progress, so a client that reads nothing is cut after the
// timeout plus at most a step, whatever the kernel's buffers took at first.
type outputConn struct {
	net.Conn
	limits *atomic.Pointer[Limits]
	hard   atomic.Int64 // a deadline set by SetWriteDeadline, in Unix ns; 0: none
	armed  time.Time    // the socket's write deadline now (Write's goroutine only)
}

func newOutputConn(c net.Conn, limits *atomic.Pointer[Limits]) *outputConn {
	return &outputConn{Conn: c, limits: limits}
}

// NetConn returns the socket.
func (c *outputConn) NetConn() net.Conn { return c.Conn }

// SetWriteDeadline sets a deadline for writes besides the output timeout.
func (c *outputConn) SetWriteDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.hard.Store(ns)
	return c.Conn.SetWriteDeadline(t) // a write in progress sees it now
}

// SetDeadline sets the read deadline and SetWriteDeadline's.
func (c *outputConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// Write writes p, unless the client stalls for the output timeout (errOutputStalled)
// or the deadline set by SetWriteDeadline passes.
func (c *outputConn) Write(p []byte) (int, error) {
	t := c.limits.Load().OutputTimeout
	var hard time.Time
	if ns := c.hard.Load(); ns != 0 {
		hard = time.Unix(0, ns)
	}
	if t <= 0 {
		c.arm(hard)
		return c.Conn.Write(p)
	}
	step := max(t/8, time.Millisecond)
	last := time.Now() // the client took everything written before
	done := 0
	for {
		now := time.Now()
		if now.Sub(last) >= t {
			return done, errOutputStalled
		}
		if !hard.IsZero() && !now.Before(hard) {
			return done, os.ErrDeadlineExceeded
		}
		limit := last.Add(t)
		if !hard.IsZero() && hard.Before(limit) {
			limit = hard
		}
		// The deadline in force is kept while it is ahead and within the limit:
		// a timer update per write is what this saves.
		if !c.armed.After(now) || c.armed.After(limit) {
			next := now.Add(step)
			if next.After(limit) {
				next = limit
			}
			c.arm(next)
		}
		n, err := c.Conn.Write(p[done:])
		done += n
		if err == nil {
			return done, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return done, err
		}
		if n > 0 {
			last = time.Now() // the client read within the last step
		}
	}
}

// arm sets the socket's write deadline, if it differs.
func (c *outputConn) arm(t time.Time) {
	if !t.Equal(c.armed) {
		c.armed = t
		c.Conn.SetWriteDeadline(t)
	}
}

// limitsOf returns the client limits set by c.
func limitsOf(c *Config) *Limits {
	return &Limits{
		MaxBulkLen:       int64(c.ProtoMaxBulkLen),
		MaxArgs:          c.MaxArgs,
		QueryBuffer:      int64(c.QueryBufferLimit),
		OutputTimeout:    c.OutputTimeout,
		IdleTimeout:      c.IdleTimeout,
		HandshakeTimeout: c.TLSHandshakeTimeout,
	}
}

// logClosed logs why a client's connection was cut by its limits, if it was.
func (s *Server) logClosed(c net.Conn, id int64) {
	if lc, ok := c.(*limitConn); ok {
		if reason := lc.reason.Load(); reason != nil {
			s.metrics.limitCuts.Add(1)
			s.log.Warn().Int64("client", id).Str("addr", lc.RemoteAddr().String()).
				Str("reason", *reason).Msg("client disconnected by a limit")
		}
	}
}
