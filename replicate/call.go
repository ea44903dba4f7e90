package replicate

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
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
	// ModeTxScript: a client's script in a transaction (the call is TxScript's);
	// the arguments are the script's body, numkeys, keys and args.
	ModeTxScript
	// modePre and modeNumber are the two calls around a native command (see
	// WriteNativeCall): note the error count; number the effects given.
	modePre
	modeNumber
	// ModeNative: a write that is its own effect and cannot fail once queued
	// (its arity is right): it may run natively in a group's transaction
	// (WriteGroupEffect); in a script call it is ModeCommand.
	ModeNative
	// ModeTxScriptRO is ModeTxScript for a read-only script (EVAL_RO, EVALSHA_RO):
	// its writes get Redis' refusal.
	ModeTxScriptRO
	// modeScript3, modeTxScript3 and modeTxScriptRO3 are the script modes for a
	// RESP3 client (see RESP3Mode).
	modeScript3
	modeTxScript3
	modeTxScriptRO3
	// ModeSplit: a write too large for the script's unpack, in a transaction
	// (outside one it runs natively: WriteNativeCall), one of SplitOf's: the
	// script runs it in parts, its arguments checked whole first, and its effect
	// is the parts the slaves apply.
	ModeSplit
)

// RESP3Mode returns the mode that runs a client's script (ModeScript,
// ModeTxScript, ModeTxScriptRO) for a RESP3 client: the script's reply comes back
// as a bulk string holding the reply Redis would write to a RESP3 client (maps,
// sets, doubles, booleans...: a RESP2 connection cannot carry them), or as an
// error. Other modes are returned unchanged.
func RESP3Mode(m Mode) Mode {
	switch m {
	case ModeScript:
		return modeScript3
	case ModeTxScript:
		return modeTxScript3
	case ModeTxScriptRO:
		return modeTxScriptRO3
	}
	return m
}

// IsRESP3Mode reports whether m is one of RESP3Mode's.
func IsRESP3Mode(m Mode) bool {
	return m == modeScript3 || m == modeTxScript3 || m == modeTxScriptRO3
}

// modeLetters are the modes as the Lua script reads them.
var modeLetters = [...]string{
	ModeCommand:      "$1\r\n0\r\n",
	ModeRewrite:      "$1\r\nx\r\n",
	ModeRewriteQuiet: "$1\r\nq\r\n",
	ModeRead:         "$1\r\nr\r\n",
	ModeScript:       "$1\r\ne\r\n",
	ModeTxScript:     "$1\r\nt\r\n",
	modePre:          "$1\r\np\r\n",
	modeNumber:       "$1\r\nn\r\n",
	ModeNative:       "$1\r\n0\r\n",
	ModeTxScriptRO:   "$1\r\no\r\n",
	modeScript3:      "$1\r\nE\r\n",
	modeTxScript3:    "$1\r\nT\r\n",
	modeTxScriptRO3:  "$1\r\nO\r\n",
}

// scratch returns an empty buffer to append a short piece of a call to, then
// write it to w: the bufio.Writer's free space when w is one with room, so
// that the pieces written per command cost no allocation (a stack array passed
// to w's Write would escape).
func scratch(w CallWriter) []byte {
	if bw, ok := w.(*bufio.Writer); ok && bw.Available() >= 128 {
		return bw.AvailableBuffer()
	}
	return make([]byte, 0, 128)
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
	if mode == ModeSplit {
		writeSplitCommand(w, db, argc, args)
		return
	}
	h := appendBulkInt(scratch(w), int64(db))
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

// writeSplitCommand writes a ModeSplit command of a call: its mode says the
// split and the number of parts of its effect (writeSplitEffects).
func writeSplitCommand(w CallWriter, db, argc int, args []byte) {
	frames := argFrames(args, argc)
	data := make([][]byte, len(frames))
	for i, f := range frames {
		data[i] = f[bytes.IndexByte(f, '\n')+1 : len(f)-2]
	}
	sp, _ := SplitOf(data)
	if sp.Group == 0 {
		sp = Split{Head: 1, Group: 1} // not one of SplitOf's: the proxy refuses it before
	}
	per := (maxSplitArgs - sp.Head) / sp.Group * sp.Group
	parts := (len(frames) - sp.Head + per - 1) / per
	mode := "s" + strconv.Itoa(sp.Head) + "," + strconv.Itoa(sp.Group) + "," + strconv.Itoa(parts)
	var buf [64]byte
	h := appendBulkInt(buf[:0], int64(db))
	h = appendBulkInt(h, int64(argc))
	w.Write(appendBulk(h, []byte(mode)))
	writeSplitEffects(w, db, sp, frames)
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

// A write too large for the master script (more than MaxScriptArgs arguments:
// Lua's unpack cannot pass them to redis.call) runs natively on the master, in
// a transaction with two short calls of the master script around it:
//
//	MULTI
//	EVAL <body> 0 <script args...> <now-ms> <db> 1 <db> 0 p <empty>
//	<the command, as the client sent it>
//	EVAL <body> 0 <script args...> <now-ms> <db> 1 <db> 1 n <effects> <k>
//	EXEC
//
// The first call (mode p) notes the master's count of error replies; the second
// (mode n) numbers, appends and publishes the effects unless that count moved,
// that is unless the command failed (its error then reaches the client, and no
// slave sees it). Both are EVALs, not EVALSHAs: a script flushed from the master
// would leave a command that ran without its number, or without the count. effects is the command
// split into k commands of the same name (see Split), each small enough for a
// slave's apply script, already encoded: Lua never unpacks the arguments. The
// SELECT of the command's DB, if needed, is sent before MULTI.
//
// The EXEC reply is {pre-reply, command-reply, {seq, epoch, nil}}.

// NativeQueued is the number of commands a native call queues between MULTI and
// EXEC: the reader expects that many +QUEUED (or errors) before EXEC's reply.
const NativeQueued = 3

// maxSplitArgs bounds the arguments of one effect of a split command, far
// below what a slave's apply script can unpack.
const maxSplitArgs = 4000

// Split says how a write whose effect is the command itself splits into several
// writes of the same command, with the same outcome when it succeeded: the first
// Head arguments (name, key, options) start every part, and the rest goes in
// groups of Group arguments (a member, a field and its value, ...). A zero Split
// cannot be split.
type Split struct{ Head, Group int }

// splitRules are the writes that may be larger than the master script allows:
// those applied one group of arguments after the other (so that applying them
// in parts, in order, is the same), with no outcome that depends on the whole
// (MSETNX, the *STORE commands and scripts cannot be split: they stay refused).
var splitRules = map[string]Split{
	"del": {1, 1}, "unlink": {1, 1}, "mset": {1, 2},
	"sadd": {2, 1}, "srem": {2, 1},
	"hset": {2, 2}, "hmset": {2, 2}, "hdel": {2, 1},
	"rpush": {2, 1}, "lpush": {2, 1}, "rpushx": {2, 1}, "lpushx": {2, 1},
	"zadd": {2, 2}, "zrem": {2, 1}, "geoadd": {2, 3},
	"pfadd": {2, 1}, "xdel": {2, 1}, "xack": {3, 1},
}

// splitOptions are the options ZADD and GEOADD take before their members: they
// apply to each member alone, and start every part.
var splitOptions = map[string]map[string]bool{
	"zadd":   {"nx": true, "xx": true, "gt": true, "lt": true, "ch": true, "incr": true},
	"geoadd": {"nx": true, "xx": true, "ch": true},
}

// SplitOf returns how the write args (args[0] its name) splits, and false when it
// cannot be split.
func SplitOf(args [][]byte) (Split, bool) {
	if len(args) == 0 {
		return Split{}, false
	}
	name := strings.ToLower(string(args[0]))
	sp, ok := splitRules[name]
	if !ok || len(args) < sp.Head {
		return Split{}, false
	}
	if opts := splitOptions[name]; opts != nil {
		for sp.Head < len(args) && opts[strings.ToLower(string(args[sp.Head]))] {
			sp.Head++
		}
	}
	return sp, true
}

// WriteNativeCall writes the transaction that runs a command too large for the
// master script natively (see above); raw is the command as the client sent it
// (argc arguments), db its DB. The connection must have db selected.
func WriteNativeCall(w CallWriter, body string, scriptArgs [][]byte, nowMs int64, db int, sp Split, raw []byte, argc int) {
	w.WriteString("*1\r\n$5\r\nMULTI\r\n")
	writeNativeHeader(w, "EVAL", body, scriptArgs, nowMs, db, 0)
	w.WriteString(modeLetters[modePre])
	w.WriteString("$0\r\n\r\n")
	w.Write(raw)
	writeNativeHeader(w, "EVAL", body, scriptArgs, nowMs, db, 1)
	w.WriteString(modeLetters[modeNumber])
	args := argFrames(skipHeader(raw), argc)
	k := writeSplitEffects(w, db, sp, args)
	var buf [32]byte
	w.Write(appendBulkInt(buf[:0], int64(k)))
	w.WriteString("*1\r\n$4\r\nEXEC\r\n")
}

// writeNativeHeader writes a call of the master script carrying one command of
// argc arguments in db, up to its mode.
func writeNativeHeader(w CallWriter, verb, script string, scriptArgs [][]byte, nowMs int64, db, argc int) {
	var buf [256]byte
	h := appendArrayHeader(buf[:0], 3+len(scriptArgs)+3+4+argc)
	h = appendBulk(h, []byte(verb))
	w.Write(h)
	h = append(buf[:0], '$')
	h = strconv.AppendInt(h, int64(len(script)), 10)
	w.Write(append(h, '\r', '\n'))
	w.WriteString(script)
	w.WriteString("\r\n")
	w.WriteString("$1\r\n0\r\n")
	for _, a := range scriptArgs {
		w.Write(appendBulk(buf[:0], a))
	}
	h = appendBulkInt(buf[:0], nowMs)
	h = appendBulkInt(h, int64(db))
	h = appendBulkInt(h, 1)
	h = appendBulkInt(h, int64(db))
	h = appendBulkInt(h, int64(argc))
	w.Write(h)
}

// writeSplitEffects writes, as one bulk, the effects of the command whose
// argument frames are args, split by sp into parts of at most maxSplitArgs
// arguments; it returns the number of parts.
func writeSplitEffects(w CallWriter, db int, sp Split, args [][]byte) int {
	var dbBuf [32]byte
	dbBulk := appendBulkInt(dbBuf[:0], int64(db))
	head := args[:sp.Head]
	headLen := len(dbBulk)
	for _, a := range head {
		headLen += len(a)
	}
	per := (maxSplitArgs - sp.Head) / sp.Group * sp.Group
	parts, total := 0, 0
	for i := sp.Head; i < len(args); i += per {
		n := min(per, len(args)-i)
		total += len(appendArrayHeader(nil, 1+sp.Head+n)) + headLen
		for _, a := range args[i : i+n] {
			total += len(a)
		}
		parts++
	}
	var buf [64]byte
	h := append(buf[:0], '$')
	h = strconv.AppendInt(h, int64(total), 10)
	w.Write(append(h, '\r', '\n'))
	for i := sp.Head; i < len(args); i += per {
		n := min(per, len(args)-i)
		w.Write(appendArrayHeader(buf[:0], 1+sp.Head+n))
		w.Write(dbBulk)
		for _, a := range head {
			w.Write(a)
		}
		for _, a := range args[i : i+n] {
			w.Write(a)
		}
	}
	w.WriteString("\r\n")
	return parts
}

// argFrames returns the argc bulk frames ("$<len>\r\n<bytes>\r\n") of body, a
// command's arguments without its array header; they alias body.
func argFrames(body []byte, argc int) [][]byte {
	out := make([][]byte, 0, argc)
	for len(out) < argc && len(body) > 0 {
		i := bytes.IndexByte(body, '\n')
		if i < 0 {
			break
		}
		n, err := strconv.Atoi(string(body[1 : i-1]))
		if err != nil || n < 0 || i+1+n+2 > len(body) {
			break
		}
		end := i + 1 + n + 2
		out = append(out, body[:end])
		body = body[end:]
	}
	return out
}

// skipHeader returns raw without its leading "*N\r\n" line.
func skipHeader(raw []byte) []byte {
	if i := bytes.IndexByte(raw, '\n'); i >= 0 {
		return raw[i+1:]
	}
	return raw
}

// A group of writes that are their own effects and cannot fail once queued
// (ModeNative) runs natively on the master, all in one DB, numbered by one short
// call of NumberScript in the same transaction:
//
//	MULTI
//	<command 1, as the client sent it> ... <command n>
//	EVAL <NumberScript> 0 <script args...> <now-ms> <db> <n> <effects>
//	EXEC
//
// effects is the n commands' sync-message encodings, one bulk (WriteGroupEffect).
// The EXEC reply is {reply 1, ..., reply n, {seq, epoch}}. Since no command of
// the group can fail when it runs (a command refused when queued aborts the
// whole transaction), every one of them is numbered. EVAL, not EVALSHA: a script
// flushed from the master would leave commands that ran without their number;
// NumberScript is short, for the master to hash at each call. The SELECT of the
// DB, if needed, is sent before MULTI.

// GroupQueued is the number of commands a native group of n writes queues
// between MULTI and EXEC.
func GroupQueued(n int) int { return n + 1 }

// WriteGroupStart writes the start of a native group's transaction.
func WriteGroupStart(w CallWriter) { w.WriteString("*1\r\n$5\r\nMULTI\r\n") }

// GroupEffectLen is the length of the encoding WriteGroupEffect writes for a
// command of argc arguments (args, their bulks) in db.
func GroupEffectLen(db, argc int, args []byte) int {
	var buf [64]byte
	e := appendArrayHeader(buf[:0], argc+1)
	return len(appendBulkInt(e, int64(db))) + len(args)
}

// WriteGroupNumber writes the numbering call of a native group of n writes in
// db, up to its effects: effectsLen is the sum of their GroupEffectLen.
func WriteGroupNumber(w CallWriter, scriptArgs [][]byte, nowMs int64, db, n, effectsLen int) {
	var buf [256]byte
	h := appendArrayHeader(buf[:0], 3+len(scriptArgs)+4)
	h = append(h, "$4\r\nEVAL\r\n"...)
	h = append(h, '$')
	h = strconv.AppendInt(h, int64(len(numberScript)), 10)
	w.Write(append(h, '\r', '\n'))
	w.WriteString(numberScript)
	w.WriteString("\r\n$1\r\n0\r\n")
	for _, a := range scriptArgs {
		w.Write(appendBulk(buf[:0], a))
	}
	h = appendBulkInt(buf[:0], nowMs)
	h = appendBulkInt(h, int64(db))
	h = appendBulkInt(h, int64(n))
	h = append(h, '$')
	h = strconv.AppendInt(h, int64(effectsLen), 10)
	w.Write(append(h, '\r', '\n'))
}

// WriteGroupEffect writes the effect of one command of a native group, after
// WriteGroupNumber: args are its argc arguments as RESP bulks.
func WriteGroupEffect(w CallWriter, db, argc int, args []byte) {
	e := appendArrayHeader(scratch(w), argc+1)
	w.Write(appendBulkInt(e, int64(db)))
	w.Write(args)
}

// WriteGroupEnd ends a native group's transaction, after its effects.
func WriteGroupEnd(w CallWriter) { w.WriteString("\r\n*1\r\n$4\r\nEXEC\r\n") }
