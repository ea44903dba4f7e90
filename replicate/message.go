package replicate

import (
	"bytes"
	"errors"
	"strconv"
)

// MessageTag is the first element of every sync message; it names the format.
const MessageTag = "syncproxy/1"

// Limits applied when decoding a message, so that a corrupt or hostile payload
// cannot make the decoder allocate without bound.
const (
	maxEffects    = 1 << 20
	maxEffectArgs = 1 << 20
)

// Effect is one command to apply on a slave, in a given DB.
type Effect struct {
	DB   int
	Args [][]byte // Args[0] is the command name
}

// Message is one sync message: the effects of one script call on the master, with
// the sequence number the master assigned to it.
//
// Wire format (binary safe, RESP2 encoded, documented in README.md):
//
//	*5
//	$11 syncproxy/1         format tag
//	$N  <epoch>             replication id of the master's data set
//	:<seq>                  sequence number, 1, 2, 3 ... within the epoch
//	:<unix-ms>              master time when the write ran
//	*E                      effects, in execution order, each an array:
//	  *K $<db> $<cmd> $<arg>...
type Message struct {
	Epoch   string
	Seq     int64
	TimeMs  int64
	Effects []Effect

	gen uint64 // the master generation it came from (see Replicator.SetMaster)
}

// Decoding errors.
var (
	ErrMessageFormat = errors.New("replicate: malformed sync message")
	ErrMessageTag    = errors.New("replicate: unknown sync message format")
)

// DecodeMessage parses a sync message. The returned effects' arguments alias b.
func DecodeMessage(b []byte) (*Message, error) {
	d := decoder{b: b}
	if n, ok := d.header('*'); !ok || n != 5 {
		return nil, ErrMessageFormat
	}
	tag, ok := d.bulk()
	if !ok {
		return nil, ErrMessageFormat
	}
	if string(tag) != MessageTag {
		return nil, ErrMessageTag
	}
	m := &Message{}
	epoch, ok := d.bulk()
	if !ok || len(epoch) == 0 {
		return nil, ErrMessageFormat
	}
	m.Epoch = string(epoch)
	if m.Seq, ok = d.integer(); !ok || m.Seq <= 0 {
		return nil, ErrMessageFormat
	}
	if m.TimeMs, ok = d.integer(); !ok {
		return nil, ErrMessageFormat
	}
	ne, ok := d.header('*')
	if !ok || ne < 0 || ne > maxEffects || ne > len(d.b) {
		return nil, ErrMessageFormat
	}
	m.Effects = make([]Effect, 0, ne)
	// The effects' arguments share arrays: one allocation for most messages,
	// whatever their number of effects.
	var args [][]byte
	for i := 0; i < ne; i++ {
		na, ok := d.header('*')
		if !ok || na < 2 || na > maxEffectArgs || na > len(d.b) {
			return nil, ErrMessageFormat
		}
		dbb, ok := d.bulk()
		if !ok {
			return nil, ErrMessageFormat
		}
		db, ok := parseDecimal(dbb)
		if !ok || db > 1<<20 {
			return nil, ErrMessageFormat
		}
		if cap(args)-len(args) < na-1 {
			args = make([][]byte, 0, max(na-1, (ne-i)*(na-1)))
		}
		e := Effect{DB: db, Args: args[len(args) : len(args)+na-1 : len(args)+na-1]}
		args = args[:len(args)+na-1]
		for j := range e.Args {
			if e.Args[j], ok = d.bulk(); !ok {
				return nil, ErrMessageFormat
			}
		}
		m.Effects = append(m.Effects, e)
	}
	if len(d.b) != 0 {
		return nil, ErrMessageFormat
	}
	return m, nil
}

// AppendMessage encodes m in the wire format; it is the Go twin of the master
// script's encoder, used by tests and by tools that produce messages.
func AppendMessage(dst []byte, m *Message) []byte {
	dst = append(dst, "*5\r\n"...)
	dst = appendBulk(dst, []byte(MessageTag))
	dst = appendBulk(dst, []byte(m.Epoch))
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, m.Seq, 10)
	dst = append(dst, "\r\n:"...)
	dst = strconv.AppendInt(dst, m.TimeMs, 10)
	dst = append(dst, "\r\n*"...)
	dst = strconv.AppendInt(dst, int64(len(m.Effects)), 10)
	dst = append(dst, "\r\n"...)
	for _, e := range m.Effects {
		dst = append(dst, '*')
		dst = strconv.AppendInt(dst, int64(len(e.Args)+1), 10)
		dst = append(dst, "\r\n"...)
		dst = appendBulk(dst, []byte(strconv.Itoa(e.DB)))
		for _, a := range e.Args {
			dst = appendBulk(dst, a)
		}
	}
	return dst
}

func appendBulk(dst, b []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, b...)
	return append(dst, "\r\n"...)
}

type decoder struct{ b []byte }

// line returns the next CRLF-terminated line without its CRLF.
func (d *decoder) line() ([]byte, bool) {
	i := bytes.IndexByte(d.b, '\n')
	if i < 1 || d.b[i-1] != '\r' {
		return nil, false
	}
	l := d.b[:i-1]
	d.b = d.b[i+1:]
	return l, true
}

func (d *decoder) header(prefix byte) (int, bool) {
	l, ok := d.line()
	if !ok || len(l) < 2 || l[0] != prefix {
		return 0, false
	}
	if l[1] == '-' {
		n, ok := parseDecimal(l[2:])
		return -n, ok
	}
	return parseDecimal(l[1:])
}

// parseDecimal parses a non-negative decimal of at most 18 digits.
func parseDecimal(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func (d *decoder) integer() (int64, bool) {
	l, ok := d.line()
	if !ok || len(l) < 2 || l[0] != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(l[1:]), 10, 64)
	return n, err == nil
}

func (d *decoder) bulk() ([]byte, bool) {
	n, ok := d.header('$')
	if !ok || n < 0 || n > len(d.b)-2 {
		return nil, false
	}
	v := d.b[:n:n]
	if d.b[n] != '\r' || d.b[n+1] != '\n' {
		return nil, false
	}
	d.b = d.b[n+2:]
	return v, true
}

// peekSeq returns the epoch and sequence number in a sync message's header,
// without decoding its effects: all a message on the channel is used for (a
// hint).
func peekSeq(b []byte) (string, int64, bool) {
	d := decoder{b: b}
	if n, ok := d.header('*'); !ok || n != 5 {
		return "", 0, false
	}
	if tag, ok := d.bulk(); !ok || string(tag) != MessageTag {
		return "", 0, false
	}
	epoch, ok := d.bulk()
	if !ok {
		return "", 0, false
	}
	seq, ok := d.integer()
	return string(epoch), seq, ok && seq > 0
}
