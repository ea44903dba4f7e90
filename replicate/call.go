package replicate

import (
	"io"
	"strconv"
)

// The call format of the master script, in one place: what the proxy sends to run
// a group of commands (WriteCallHeader, then WriteCallCommand per command) and how
// it reads the reply (CallReplyLen, CallSeq, FixCallReply).
//
// A call is one EVALSHA:
//
//	EVALSHA <sha> 0 <script args...> <now-ms> <conn-db> <n>
//	        then per command: <db> <argc> <mode> <effect> <args...>
//
// where the script args are MasterScript's fixed arguments (epoch candidate,
// backlog length, channel), now-ms the proxy's clock, conn-db the DB the
// connection has selected, n the number of commands. mode is one letter (see
// Mode); effect is the command's sync-message encoding (*<argc+1> $<db> then the
// client's argument bulks, so that Lua need not build it); args are the
// command's arguments as the client sent them.
//
// The reply is an array of n+2 elements: the sequence number (an integer; 0 when
// no command had an effect), the epoch (a bulk string), then one reply per
// command. Lua cannot return every RESP reply unchanged: an integer too large
// for a Lua number comes back as the status "\x01I<digits>", and a null array as
// a null bulk string; FixCallReply restores both.

// Mode says what the master script does with one command of a call.
type Mode uint8

const (
	// ModeCommand: the command is its own effect (a deterministic write).
	ModeCommand Mode = iota
	// ModeRewrite: the script derives the effect from what the command did
	// (non-deterministic and time-relative commands), as Redis' replication does.
	ModeRewrite
	// ModeRewriteQuiet is ModeRewrite with no effect when the command returned
	// nil (a blocked client trying again).
	ModeRewriteQuiet
	// ModeRead: a read run inside the script (in a transaction), with no effect.
	ModeRead
	// ModeScript: a client's script (the composed script of UserScript); the
	// arguments are numkeys, keys and args.
	ModeScript
)

// modeLetters are the modes as the Lua script reads them.
var modeLetters = [...]string{
	ModeCommand:      "$1\r\n0\r\n",
	ModeRewrite:      "$1\r\nx\r\n",
	ModeRewriteQuiet: "$1\r\nq\r\n",
	ModeRead:         "$1\r\nr\r\n",
	ModeScript:       "$1\r\ne\r\n",
}

// CallWriter is what a call is written to (bufio.Writer, bytes.Buffer): the
// arguments are written as they are, never copied.
type CallWriter interface {
	io.Writer
	io.StringWriter
}

// WriteCallHeader writes the start of a call of the script sha carrying n
// commands with argc arguments in all; nowMs is the proxy's clock, connDB the DB
// the connection has selected.
func WriteCallHeader(w CallWriter, sha string, scriptArgs [][]byte, nowMs int64, connDB, n, argc int) {
	var buf [256]byte
	h := appendArrayHeader(buf[:0], 3+len(scriptArgs)+3+4*n+argc)
	h = append(h, "$7\r\nEVALSHA\r\n"...)
	h = appendBulk(h, []byte(sha))
	h = append(h, "$1\r\n0\r\n"...)
	w.Write(h)
	for _, a := range scriptArgs {
		w.Write(appendBulk(buf[:0], a))
	}
	h = appendBulkInt(buf[:0], nowMs)
	h = appendBulkInt(h, int64(connDB))
	h = appendBulkInt(h, int64(n))
	w.Write(h)
}

// WriteCallCommand writes one command of a call: args are its argc arguments
// as RESP bulks (the client's frame without its array header).
func WriteCallCommand(w CallWriter, db, argc int, mode Mode, args []byte) {
	var buf [128]byte
	h := appendBulkInt(buf[:0], int64(db))
	h = appendBulkInt(h, int64(argc))
	h = append(h, modeLetters[mode]...)
	// The effect: an array header and the DB bulk, then the arguments as sent.
	var eh [64]byte
	e := appendArrayHeader(eh[:0], argc+1)
	e = appendBulkInt(e, int64(db))
	h = append(h, '$')
	h = strconv.AppendInt(h, int64(len(e)+len(args)), 10)
	h = append(h, '\r', '\n')
	h = append(h, e...)
	w.Write(h)
	w.Write(args)
	w.WriteString("\r\n")
	w.Write(args)
}

// CallReplyLen is the length of the array that answers a call of n commands.
func CallReplyLen(n int) int { return n + 2 }

// CallSeq parses the first element of a call's reply, the sequence number; it
// reports false when the frame is not an integer reply.
func CallSeq(frame []byte) (int64, bool) {
	if len(frame) < 4 || frame[0] != ':' {
		return 0, false
	}
	n, err := strconv.ParseInt(string(frame[1:len(frame)-2]), 10, 64)
	return n, err == nil
}

// FixCallReply restores what Lua changed in one command's reply: a big integer
// sent as "\x01I<digits>" (alone, or in an array: BITFIELD), and, when the
// command's nil is a null array (nullArray), the null bulk Lua made of it. It
// rewrites reply in place (an array with big integers: in a new slice).
func FixCallReply(reply []byte, nullArray bool) []byte {
	if len(reply) > 3 && reply[0] == '+' && reply[1] == 1 && reply[2] == 'I' {
		n := copy(reply[1:], reply[3:])
		reply = reply[:1+n]
		reply[0] = ':'
	}
	reply = fixNestedBigInts(reply)
	if nullArray && string(reply) == "$-1\r\n" {
		reply = append(reply[:0], "*-1\r\n"...)
	}
	return reply
}

func appendArrayHeader(dst []byte, n int) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

func appendBulkInt(dst []byte, n int64) []byte {
	var num [20]byte
	return appendBulk(dst, strconv.AppendInt(num[:0], n, 10))
}
