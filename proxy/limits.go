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

// redcon's reader has no limits of its own: it buffers whatever length a client
// declares. limitConn sits between the client's socket and redcon and follows the
// request stream with a small state machine that reads only the framing — array
// and bulk headers, inline line ends — and skips bulk payloads by their length.
// It does not build commands (redcon does); it stops a request that exceeds a
// limit before redcon buffers it, answers with Redis' error, and closes.
//
// What the machine cannot follow (a missing '$', a bad number) is malformed for
// redcon too, which then answers with its own protocol error and closes: from
// there the machine stops checking.

// Limits are the bounds on what one client may send and leave unread.
type Limits struct {
	MaxBulkLen    int64         // longest bulk string (Redis' proto-max-bulk-len)
	MaxArgs       int64         // most arguments in one command
	QueryBuffer   int64         // most bytes of one command (client-query-buffer-limit)
	OutputTimeout time.Duration // a client that accepts no reply byte for this long is closed; 0: never
	IdleTimeout   time.Duration // the read deadline redcon keeps (0: none), restored after a TLS handshake
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

// errLimit is returned by limitConn.Read after it answered a request over a limit;
// redcon then closes the connection.
type errLimit struct{ reply string }

func (e *errLimit) Error() string { return e.reply }

// errMalformed marks a malformed request for limitConn.Read.
var errMalformed = &errLimit{}

// errIgnore marks an empty or negative array header ("*0", "*-1"), which Redis
// ignores and redcon refuses: limitConn.Read removes it from the stream.
var errIgnore = &errLimit{}

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
	stPass // malformed: redcon reports it
)

// reqScanner follows the framing of a stream of client requests.
type reqScanner struct {
	lim    *Limits
	authed func() bool // nil or true: the authenticated limits apply

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
	ignoreEnd int // with errIgnore: where the ignored header ends in p
	prevCR    bool
}

// scan consumes p. When a request breaks a limit it returns the offset in p where
// that request starts (0 if it started in an earlier p) and the error to send.
// When a request is malformed it returns its offset and errMalformed: redcon
// reports those itself, but drops the requests read with them, so they must
// reach it first.
func (r *reqScanner) scan(p []byte) (int, *errLimit) {
	cmdStart := 0
	startedHere := false // the current request's first byte is in p
	malformed := func() (int, *errLimit) {
		r.st = stPass
		return max(cmdStart, 0), errMalformed
	}
	for i := 0; i < len(p); {
		switch r.st {
		case stPass:
			return -1, nil
		case stStart:
			cmdStart = i
			startedHere = true
			r.cmdBytes = 0
			r.lineLen = 0
			r.spaces = 0
			if p[i] == '*' {
				r.st = stArrayLen
				r.resetNum()
				i++
				r.cmdBytes++
			} else {
				r.st = stInline
			}
		case stInline:
			j := bytes.IndexByte(p[i:], '\n')
			end := len(p)
			if j >= 0 {
				end = i + j
			}
			r.lineLen += end - i
			r.cmdBytes += int64(end - i)
			r.spaces += bytes.Count(p[i:end], []byte{' '})
			// redcon copies the rest of the line for each argument: a long line
			// of many short arguments costs its length times their number.
			if r.lineLen > maxInline || r.spaces*r.lineLen > maxInlineWork {
				return max(cmdStart, 0), &errLimit{"ERR Protocol error: too big inline request"}
			}
			if j < 0 {
				return -1, nil
			}
			i = end + 1
			r.st = stStart
		case stArrayLen, stBulkLen:
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
					return max(cmdStart, 0), &errLimit{"ERR Protocol error: too big " + what + " count string"}
				}
				r.digit(c)
				continue
			}
			if !r.prevCR || r.numBad || r.numDigits == 0 {
				return malformed() // redcon: invalid (multi)bulk length
			}
			n := r.num
			if r.numNeg {
				n = -n
			}
			r.lineLen = 0
			if r.st == stArrayLen {
				if n <= 0 {
					if !startedHere {
						return malformed() // partly delivered: redcon refuses it
					}
					r.st = stStart
					r.ignoreEnd = i
					return cmdStart, errIgnore
				}
				if n > r.lim.MaxArgs {
					return max(cmdStart, 0), &errLimit{"ERR Protocol error: invalid multibulk length"}
				}
				if n > unauthMaxArgs && !r.isAuthed() {
					return max(cmdStart, 0), &errLimit{"ERR Protocol error: unauthenticated multibulk length"}
				}
				r.args = n
				r.st = stBulkStart
				continue
			}
			if n < 0 {
				return malformed()
			}
			if n > r.lim.MaxBulkLen {
				return max(cmdStart, 0), &errLimit{"ERR Protocol error: invalid bulk length"}
			}
			if n > unauthMaxBulk && !r.isAuthed() {
				return max(cmdStart, 0), &errLimit{"ERR Protocol error: unauthenticated bulk length"}
			}
			r.skip = n
			if r.cmdBytes+r.skip > r.lim.QueryBuffer {
				return max(cmdStart, 0), &errLimit{"ERR Protocol error: client reached the query buffer limit (" +
					strconv.FormatInt(r.lim.QueryBuffer, 10) + " bytes)"}
			}
			r.st = stBulkBody
		case stBulkStart:
			if p[i] != '$' {
				return malformed() // redcon: expected '$'
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
			if r.skip > 0 {
				return -1, nil
			}
			r.st = stBulkCR
		case stBulkCR, stBulkLF:
			want := byte('\r')
			if r.st == stBulkLF {
				want = '\n'
			}
			if p[i] != want {
				return malformed() // redcon: invalid bulk length
			}
			i++
			r.cmdBytes++
			if r.st == stBulkCR {
				r.st = stBulkLF
				continue
			}
			r.args--
			if r.args == 0 {
				r.st = stStart
			} else {
				r.st = stBulkStart
			}
		}
		if r.cmdBytes > r.lim.QueryBuffer {
			return max(cmdStart, 0), &errLimit{"ERR Protocol error: client reached the query buffer limit (" +
				strconv.FormatInt(r.lim.QueryBuffer, 10) + " bytes)"}
		}
	}
	return -1, nil
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

// limitConn is a client connection seen through its limits. A reload replaces
// the limits: each Read and Write takes the ones in force.
type limitConn struct {
	net.Conn
	limits  *atomic.Pointer[Limits]
	scan    reqScanner
	authed  atomic.Bool
	pending *errLimit              // to send at the next Read, after the replies before it
	shaken  bool                   // the TLS handshake (if any) was done
	rest    []byte                 // read, to deliver at the next Read (after a malformed request\'s start)
	reason  atomic.Pointer[string] // why the connection failed, for the log
}

func newLimitConn(c net.Conn, limits *atomic.Pointer[Limits], needAuth bool) *limitConn {
	lc := &limitConn{Conn: c, limits: limits}
	lc.authed.Store(!needAuth)
	lc.scan = reqScanner{authed: lc.authed.Load}
	return lc
}

// NetConn returns the wrapped connection.
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// Read reads from the client and checks what it read against the limits. Requests
// before one over a limit are delivered; that one is answered with an error (once
// the replies before it were written: redcon reads again only after flushing
// them), and the connection fails.
func (c *limitConn) Read(p []byte) (int, error) {
	if c.pending != nil {
		return 0, c.fail(c.pending)
	}
	if len(c.rest) > 0 {
		n := copy(p, c.rest)
		c.rest = c.rest[n:]
		return n, nil
	}
	if !c.shaken {
		c.shaken = true
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	for {
		n, err := c.Conn.Read(p)
		c.scan.lim = c.limits.Load()
		for off := 0; off < n; {
			at, lerr := c.scan.scan(p[off:n])
			if lerr == nil {
				break
			}
			at += off
			switch lerr {
			case errIgnore:
				// Dropped, as Redis drops it; what follows is scanned on.
				end := off + c.scan.ignoreEnd
				n = at + copy(p[at:], p[end:n])
				off = at
				continue
			case errMalformed:
				// redcon answers it; what precedes it is served first.
				if at > 0 {
					c.rest = append([]byte(nil), p[at:n]...)
					return at, nil
				}
				return n, err
			}
			if at > 0 {
				c.pending = lerr
				return at, nil
			}
			return 0, c.fail(lerr)
		}
		if n > 0 || err != nil {
			return n, err
		}
		// Everything read was dropped: read on.
	}
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

// fail answers the client with e and reports e.
func (c *limitConn) fail(e *errLimit) error {
	c.reason.Store(&e.reply)
	c.Conn.SetWriteDeadline(time.Now().Add(errWriteTimeout))
	c.Conn.Write([]byte("-" + e.reply + "\r\n"))
	return e
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

// outputListener wraps each accepted socket in an outputConn.
type outputListener struct {
	net.Listener
	limits *atomic.Pointer[Limits]
}

func (l *outputListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newOutputConn(c, l.limits), nil
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
