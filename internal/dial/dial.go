// Package dial opens every connection of the proxy to a Redis server — backend
// links, dedicated master connections, the replicator's redigo connections,
// sentinels — through one sequence of steps: TCP, TLS, AUTH [user] password,
// SELECT, setup commands (SCRIPT LOAD, CLIENT SETNAME), PING.
//
// Every failure is an *Error worded "<role> <addr>: <step>: <cause>", and says
// whether the server was reached and refused the connection (TLS, credentials,
// an error reply): a configuration problem rather than an outage.
//
// # Concurrency
//
// Dial and Redigo start no goroutine; they may be called from any goroutine.
// The connection returned belongs to the caller, who closes it.
package dial

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Target is one server and how to log in to it.
type Target struct {
	Role     string // "master", "slave-1", "sentinel": names the server in errors
	Addr     string // HOST:PORT
	Username string // ACL user; needs Password
	Password string // AUTH when not empty
	// TLS, when set, makes the connection TLS; without a ServerName (and unless
	// verification is off) the certificate is verified for the host of Addr.
	TLS *tls.Config
	DB  int // SELECT when not 0
	// Setup are commands sent after AUTH and SELECT, before the closing PING
	// (SCRIPT LOAD, CLIENT SETNAME); an error reply to one fails the dial, at
	// the step named by its first two words ("script load").
	Setup [][]string
	// OnBusy, when set, makes a BUSY reply (the server runs a script) to a setup
	// command or the PING no failure: the server is alive. OnBusy is called.
	OnBusy func()
	// Timeout bounds the dial and the whole handshake (0: only ctx does).
	Timeout time.Duration
	// BufferSize is the size of the reader returned (at least 4096).
	BufferSize int
}

// Steps of a dial, as errors name them.
const (
	StepDial = "dial"
	StepTLS  = "tls"
	StepAuth = "auth"
	StepPing = "ping"
)

// Error is a dial that failed at one step.
type Error struct {
	Role, Addr, Step string
	Err              error
	// Refused: the server was reached and refused the connection (TLS, an error
	// reply, the connection closed at once), not an outage.
	Refused bool
}

// Error words the failure as "<role> <addr>: <step>: <cause>".
func (e *Error) Error() string {
	return e.Role + " " + e.Addr + ": " + e.Step + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Refused reports whether err is a dial that the server refused.
func Refused(err error) bool {
	var de *Error
	return errors.As(err, &de) && de.Refused
}

// Dial connects to t and runs the handshake. The reader must be used for
// everything read from the connection afterwards.
func Dial(ctx context.Context, t Target) (net.Conn, *bufio.Reader, error) {
	if t.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.Timeout)
		defer cancel()
	}
	d := net.Dialer{KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		return nil, nil, t.fail(StepDial, err, false)
	}
	if t.TLS != nil {
		tc := tls.Client(conn, tlsFor(t.TLS, t.Addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, t.fail(StepTLS, err, true)
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, max(t.BufferSize, 4096))
	if err := t.handshake(ctx, conn, br); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, br, nil
}

// Redigo dials t as Dial does and returns a redigo connection over it, with
// the read and write timeouts of its commands.
func Redigo(ctx context.Context, t Target, readTimeout, writeTimeout time.Duration) (redis.Conn, error) {
	conn, br, err := Dial(ctx, t)
	if err != nil {
		return nil, err
	}
	return redis.NewConn(buffered(conn, br, t.BufferSize), readTimeout, writeTimeout), nil
}

// buffered returns a connection that reads what br holds before reading conn.
// With a BufferSize above redigo's own (4096), it reads through br for good:
// a reply larger than 4096 bytes (a sync message) then takes one read system
// call, not one per 4096 bytes.
func buffered(conn net.Conn, br *bufio.Reader, size int) net.Conn {
	if size > 4096 {
		return &bufConn{Conn: conn, r: br}
	}
	if br.Buffered() == 0 {
		return conn
	}
	return &bufConn{Conn: conn, r: io.MultiReader(bytes.NewReader(peekAll(br)), conn)}
}

func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}

type bufConn struct {
	net.Conn
	r io.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handshake sends AUTH, SELECT, the setup commands and PING in one write and
// checks each reply in order.
func (t *Target) handshake(ctx context.Context, conn net.Conn, br *bufio.Reader) error {
	cmds, steps := t.commands()
	var buf []byte
	for _, c := range cmds {
		buf = appendCommand(buf, c)
	}
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := conn.Write(buf); err != nil {
		return t.ioFailure(steps[0], err)
	}
	for _, step := range steps {
		line, err := readReply(br)
		if err != nil {
			return t.ioFailure(step, err)
		}
		if t.OnBusy != nil && bytes.HasPrefix(line, []byte("-BUSY ")) {
			t.OnBusy()
			continue
		}
		if line[0] == '-' {
			return t.fail(step, errors.New(string(line[1:])), true)
		}
	}
	conn.SetDeadline(time.Time{})
	return nil
}

// commands lists the handshake's commands and the step each stands for.
func (t *Target) commands() (cmds [][]string, steps []string) {
	if t.Password != "" {
		auth := []string{"AUTH", t.Password}
		if t.Username != "" {
			auth = []string{"AUTH", t.Username, t.Password}
		}
		cmds, steps = append(cmds, auth), append(steps, StepAuth)
	}
	if t.DB != 0 {
		cmds, steps = append(cmds, []string{"SELECT", strconv.Itoa(t.DB)}), append(steps, "select")
	}
	for _, c := range t.Setup {
		cmds, steps = append(cmds, c), append(steps, strings.ToLower(strings.Join(c[:min(2, len(c))], " ")))
	}
	return append(cmds, []string{"PING"}), append(steps, StepPing)
}

// ioFailure words an I/O error of the handshake: a TLS alert (TLS 1.3 servers
// send one after the handshake to a client whose certificate they refuse), or a
// connection closed at once, most likely means TLS settings that do not match
// the server's.
func (t *Target) ioFailure(step string, err error) error {
	var oe *net.OpError
	closed := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		return t.fail(StepTLS, err, true)
	case closed && t.TLS == nil:
		return t.fail(step, errors.New("the server closed the connection (does it expect TLS?)"), true)
	case closed && len(t.TLS.Certificates) == 0:
		return t.fail(step, errors.New("the server closed the TLS connection (does it require a client certificate?)"), true)
	}
	return t.fail(step, err, false)
}

func (t *Target) fail(step string, err error, refused bool) error {
	return &Error{Role: t.Role, Addr: t.Addr, Step: step, Err: err, Refused: refused}
}

// tlsFor returns conf for addr: verified for addr's host when conf names none.
func tlsFor(conf *tls.Config, addr string) *tls.Config {
	if conf.ServerName != "" || conf.InsecureSkipVerify {
		return conf
	}
	conf = conf.Clone()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	conf.ServerName = host
	return conf
}

// appendCommand appends c as a RESP array of bulk strings.
func appendCommand(dst []byte, c []string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(c)), 10)
	dst = append(dst, "\r\n"...)
	for _, a := range c {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, "\r\n"...)
		dst = append(dst, a...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// readReply reads the reply to a handshake command: a simple string, an error
// or a bulk string (SCRIPT LOAD's digest); it returns its first line.
func readReply(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+', '-', ':':
		return append([]byte(nil), line...), nil
	case '$':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil || n > 1<<20 {
			return nil, errors.New("unexpected reply " + strconv.Quote(string(line)))
		}
		if n >= 0 {
			if _, err := br.Discard(n + 2); err != nil {
				return nil, err
			}
		}
		return []byte("$"), nil
	}
	return nil, errors.New("unexpected reply " + strconv.Quote(string(line)))
}
