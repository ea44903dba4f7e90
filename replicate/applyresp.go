package replicate

import "strconv"

// The constant parts of an apply transaction (applytx.go), in RESP.
var (
	// txHead is the WATCH, then the guard's EVAL up to its two ARGV.
	txHead = string(appendBulkString(appendBulkString(appendBulkString(appendArrayHeader(
		appendCommand(nil, "WATCH", KeyApplied, KeyResync, keyApplyGuard), 5),
		"EVAL"), guardScript), "0"))
	txMulti = string(appendCommand(nil, "MULTI"))
	txExec  = string(appendCommand(nil, "EXEC"))
	// txSetApplied is SET's header and key: the position follows.
	txSetApplied = string(appendBulkString(appendBulkString(appendArrayHeader(nil, 3), "SET"), KeyApplied))
)

// appendRun appends to buf the transaction that applies msgs from the position
// from (see applytx.go), and returns it with the number of commands queued
// after MULTI.
func appendRun(buf []byte, msgs []*Message, last *Message, from int64, token string) ([]byte, int) {
	buf = append(buf, txHead...)
	buf = appendPosition(buf, last.Epoch, from)
	buf = appendBulkString(buf, token)
	buf = append(buf, txMulti...)
	queued, db := 0, 0
	for _, m := range msgs {
		for _, e := range m.Effects {
			if len(e.Args) == 0 {
				continue
			}
			if e.DB != db {
				buf = appendSelect(buf, e.DB)
				db = e.DB
				queued++
			}
			buf = appendArrayHeader(buf, len(e.Args))
			for _, arg := range e.Args {
				buf = appendBulk(buf, arg)
			}
			queued++
		}
	}
	if db != 0 {
		buf = appendSelect(buf, 0)
		queued++
	}
	buf = append(buf, txSetApplied...)
	buf = appendPosition(buf, last.Epoch, last.Seq)
	buf = append(buf, txExec...)
	return buf, queued + 1
}

// appendPosition appends "<epoch>:<seq>" as a bulk string.
func appendPosition(buf []byte, epoch string, seq int64) []byte {
	var digits [20]byte
	n := strconv.AppendInt(digits[:0], seq, 10)
	buf = append(buf, '$')
	buf = strconv.AppendInt(buf, int64(len(epoch)+1+len(n)), 10)
	buf = append(buf, "\r\n"...)
	buf = append(buf, epoch...)
	buf = append(buf, ':')
	buf = append(buf, n...)
	return append(buf, "\r\n"...)
}

func appendSelect(buf []byte, db int) []byte {
	buf = append(buf, "*2\r\n$6\r\nSELECT\r\n"...)
	return appendBulkInt(buf, int64(db))
}

func appendBulkString(buf []byte, s string) []byte {
	buf = append(buf, '$')
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, "\r\n"...)
	buf = append(buf, s...)
	return append(buf, "\r\n"...)
}

func appendCommand(buf []byte, args ...string) []byte {
	buf = appendArrayHeader(buf, len(args))
	for _, a := range args {
		buf = appendBulkString(buf, a)
	}
	return buf
}
