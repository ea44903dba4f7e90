package router

import (
	"bufio"
	"bytes"
	"errors"
	"strconv"
)

// Frame limits applied to backend replies. Redis itself never sends more than
// proto-max-bulk-len in one bulk, and nesting deeper than a few levels only comes
// from scripts — as deep as about 8000 levels, where Lua's stack ends — so these
// bounds only ever stop a broken or hostile backend.
const (
	maxReplyBulk  = 1 << 30 // 1 GiB
	maxReplyArray = 1 << 28
	maxReplyDepth = 1 << 14
	maxReplyLine  = maxReplyBulk // a simple string or error line
)

// ReadFrame reads exactly one complete RESP2/RESP3 value from r and appends its raw
// bytes to dst. It checks the framing (type prefixes, lengths, CRLF) but does not
// decode values, so replies can be forwarded to clients byte for byte.
func ReadFrame(r *bufio.Reader, dst []byte) ([]byte, error) {
	// A simple value whole in the buffer (+OK, +QUEUED, :1, a short error: most
	// of a write group's replies) is copied at once.
	if b, _ := r.Peek(r.Buffered()); len(b) >= 3 {
		switch b[0] {
		case '+', '-', ':':
			if i := bytes.IndexByte(b, '\n'); i >= 2 && b[i-1] == '\r' {
				dst = append(dst, b[:i+1]...)
				_, err := r.Discard(i + 1)
				return dst, err
			}
		}
	}
	return readFrame(r, dst)
}

// readFrame is ReadFrame for any value.
func readFrame(r *bufio.Reader, dst []byte) ([]byte, error) {
	remaining := 1    // values still to read at the current level, summed over levels
	var small [64]int // what is left to read at each enclosing level
	stack := small[:0]
	for remaining > 0 {
		line, err := readLine(r)
		if err != nil {
			return dst, err
		}
		dst = append(dst, line...)
		remaining--
		if len(line) < 3 {
			return dst, errBadFrame
		}
		body := line[1 : len(line)-2]
		switch line[0] {
		case '+', '-', ':', '_', ',', '#', '(':
			// simple value, done
		case '$', '=', '!':
			n, err := parseLen(body, maxReplyBulk)
			if err != nil {
				return dst, err
			}
			if n >= 0 {
				dst, err = readN(r, dst, n+2)
				if err != nil {
					return dst, err
				}
				if dst[len(dst)-2] != '\r' || dst[len(dst)-1] != '\n' {
					return dst, errBadFrame
				}
			}
		case '*', '~', '>', '%', '|':
			n, err := parseLen(body, maxReplyArray)
			if err != nil {
				return dst, err
			}
			switch line[0] {
			case '%':
				n *= 2
			case '|':
				n = n*2 + 1 // an attribute and the reply it annotates: one frame
			}
			if n > 0 {
				if len(stack) == maxReplyDepth {
					return dst, errFrameTooDeep
				}
				stack = append(stack, remaining)
				remaining = n
				continue
			}
		default:
			return dst, errBadFrame
		}
		for remaining == 0 && len(stack) > 0 {
			remaining = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		}
	}
	return dst, nil
}

// readLine returns one CRLF-terminated line including the CRLF. The slice is only
// valid until the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		line, err = readLongLine(r, line)
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, errBadFrame
	}
	return line, nil
}

// readLongLine reads the rest of a line longer than r's buffer, of which part
// was read, into a slice of its own: a script may return a status or an error
// reply of any length, as a single line.
func readLongLine(r *bufio.Reader, part []byte) ([]byte, error) {
	line := append([]byte(nil), part...)
	for {
		part, err := r.ReadSlice('\n')
		if len(line)+len(part) > maxReplyLine {
			return nil, errLineTooLong
		}
		line = append(line, part...)
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

func readN(r *bufio.Reader, dst []byte, n int) ([]byte, error) {
	start := len(dst)
	if cap(dst)-start < n {
		grown := make([]byte, start, start+n)
		copy(grown, dst)
		dst = grown
	}
	dst = dst[:start+n]
	got := 0
	for got < n {
		m, err := r.Read(dst[start+got:])
		got += m
		if err != nil {
			return dst[:start+got], err
		}
	}
	return dst, nil
}

// parseLen parses a RESP length: -1 (null) or 0..max.
func parseLen(b []byte, max int) (int, error) {
	if len(b) == 2 && b[0] == '-' && b[1] == '1' {
		return -1, nil
	}
	if len(b) == 0 || len(b) > 10 {
		return 0, errBadLength
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errBadLength
		}
		n = n*10 + int(c-'0')
	}
	if n > max {
		return 0, errBadLength
	}
	return n, nil
}

// parseInt parses a signed decimal integer as Redis writes it.
func parseInt(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

var (
	errBadFrame     = errors.New("router: malformed RESP reply from backend")
	errBadLength    = errors.New("router: bad length in RESP reply from backend")
	errFrameTooDeep = errors.New("router: RESP reply nested too deeply")
	errLineTooLong  = errors.New("router: RESP reply line too long")
)

// appendBulk appends b as a RESP bulk string.
func appendBulk(dst, b []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

// appendBulkInt appends n as a RESP bulk string holding its decimal form.
func appendBulkInt(dst []byte, n int64) []byte {
	var tmp [20]byte
	return appendBulk(dst, strconv.AppendInt(tmp[:0], n, 10))
}

// appendArrayHeader appends a RESP array header of n elements.
func appendArrayHeader(dst []byte, n int) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

// AppendError appends a RESP error reply; msg must not contain CR or LF.
func AppendError(dst []byte, msg string) []byte {
	dst = append(dst, '-')
	dst = append(dst, msg...)
	return append(dst, '\r', '\n')
}
