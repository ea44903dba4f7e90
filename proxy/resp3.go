package proxy

import (
	"bytes"
	"strconv"
)

// RESP3 (HELLO 3). The backends always answer the proxy in RESP2, and the
// replication script returns RESP2 replies; a RESP3 client gets each reply
// converted as Redis 7.0 itself writes it to a RESP3 client. Redis chooses the
// RESP3 type per command (addReplyMap, addReplySet, addReplyDouble,
// addReplyVerbatim, addReplyNull), so the conversion is per command too: a reply
// shape (resp3shapes.go) says which arrays are maps, sets or pairs and which
// bulk strings are doubles or verbatim text; every null ($-1, *-1) becomes _.

// shapeKind says how a RESP2 value becomes its RESP3 form.
type shapeKind uint8

const (
	shapeKeep        shapeKind = iota // the same type; elem applies to array elements
	shapeDouble                       // a bulk string holding a double: ,<double>
	shapeVerbatim                     // a bulk string of text: =<len> txt:<text>
	shapeSet                          // an array: ~ with each element as elem
	shapeMap                          // a flat array k1 v1 k2 v2: % with each value as fields[k] or elem
	shapePairs                        // a flat array k1 v1 k2 v2: an array of [k, v] with v as elem
	shapeTuple                        // an array whose element i is items[i] (beyond: elem)
	shapeMapOfPairs                   // an array of [k, v] arrays: % with each v as elem
	shapeLast                         // an array whose last element is elem, the others kept
	shapeStat                         // MEMORY STATS values: an array is a map, a bulk string a double
	shapeSubcommands                  // COMMAND's subcommands: an empty set, or an array of elem
)

// shape is a reply's RESP3 form, nested as the reply is. A nil *shape keeps
// the value's type (nulls still become _).
type shape struct {
	kind   shapeKind
	elem   *shape
	fields map[string]*shape
	items  []*shape
}

// toRESP3 converts one RESP2 reply to the RESP3 reply of the given shape. A
// value that does not have the expected form is kept as it is (an error, a
// null); input already in RESP3 passes unchanged, so converting twice is safe.
func toRESP3(sh *shape, reply []byte) []byte {
	if sh == nil && !bytes.Contains(reply, []byte("$-1\r\n")) && !bytes.Contains(reply, []byte("*-1\r\n")) {
		return reply
	}
	out, rest, ok := convert(make([]byte, 0, len(reply)+16), reply, sh, 0)
	if !ok || len(rest) != 0 {
		return reply
	}
	return out
}

// maxConvertDepth bounds the recursion on a reply (the backends' replies are
// bounded the same way by router.ReadFrame).
const maxConvertDepth = 128

// header reads the line at the start of b: its type, its number (for lengths)
// and the rest of b.
func header(b []byte) (typ byte, line []byte, n int, rest []byte, ok bool) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 1 {
		return 0, nil, 0, nil, false
	}
	typ, line, rest = b[0], b[:i+2], b[i+2:]
	switch typ {
	case '$', '*', '~', '%', '>', '|', '=', '!':
		v, err := strconv.Atoi(string(b[1:i]))
		if err != nil {
			return 0, nil, 0, nil, false
		}
		n = v
	}
	return typ, line, n, rest, true
}

// convert appends the RESP3 form of the value at the start of b to out and
// returns what follows it in b.
func convert(out, b []byte, sh *shape, depth int) ([]byte, []byte, bool) {
	if depth > maxConvertDepth {
		return out, b, false
	}
	typ, line, n, rest, ok := header(b)
	if !ok {
		return out, b, false
	}
	switch typ {
	case '$':
		if n < 0 {
			return append(out, "_\r\n"...), rest, true
		}
		if len(rest) < n+2 {
			return out, b, false
		}
		return appendBulk3(out, line, rest[:n], sh), rest[n+2:], true
	case '=', '!':
		if n < 0 || len(rest) < n+2 {
			return out, b, false
		}
		return append(out, b[:len(line)+n+2]...), rest[n+2:], true
	case '*':
		if n < 0 {
			return append(out, "_\r\n"...), rest, true
		}
		return convertArray(out, rest, n, sh, depth)
	case '~', '>':
		out = append(out, line...)
		return convertElems(out, rest, n, nil, depth)
	case '%', '|':
		out = append(out, line...)
		out, rest, ok = convertElems(out, rest, 2*n, nil, depth)
		if ok && typ == '|' { // an attribute precedes the value it annotates
			return convert(out, rest, sh, depth+1)
		}
		return out, rest, ok
	}
	return append(out, line...), rest, true
}

// appendBulk3 appends a bulk string's RESP3 form: a double, verbatim text, or
// the bulk string as it was.
func appendBulk3(out, line, data []byte, sh *shape) []byte {
	switch {
	case sh != nil && (sh.kind == shapeDouble || sh.kind == shapeStat):
		out = append(out, ',')
		out = append(out, data...)
		return append(out, "\r\n"...)
	case sh != nil && sh.kind == shapeVerbatim:
		out = append(out, '=')
		out = strconv.AppendInt(out, int64(len(data)+4), 10)
		out = append(out, "\r\ntxt:"...)
		out = append(out, data...)
		return append(out, "\r\n"...)
	}
	out = append(out, line...)
	out = append(out, data...)
	return append(out, "\r\n"...)
}

// convertElems converts n values, each of shape sh.
func convertElems(out, b []byte, n int, sh *shape, depth int) ([]byte, []byte, bool) {
	ok := true
	for i := 0; i < n && ok; i++ {
		out, b, ok = convert(out, b, sh, depth+1)
	}
	return out, b, ok
}

// convertArray converts the n elements of a RESP2 array (b follows its header)
// as sh says.
func convertArray(out, b []byte, n int, sh *shape, depth int) ([]byte, []byte, bool) {
	kind := shapeKeep
	var elem *shape
	if sh != nil {
		kind, elem = sh.kind, sh.elem
	}
	if (kind == shapeMap || kind == shapePairs) && n%2 != 0 {
		kind = shapeKeep
	}
	if kind == shapeStat {
		kind = shapeMap
	}
	if kind == shapeSubcommands {
		kind = shapeKeep
		if n == 0 {
			kind = shapeSet
		}
	}
	switch kind {
	case shapeSet:
		out = appendAggregate(out, '~', n)
		return convertElems(out, b, n, elem, depth)
	case shapeMap:
		out = appendAggregate(out, '%', n/2)
		return convertMap(out, b, n/2, sh, depth)
	case shapePairs:
		out = appendAggregate(out, '*', n/2)
		ok := true
		for i := 0; i < n/2 && ok; i++ {
			out = appendAggregate(out, '*', 2)
			if out, b, ok = convert(out, b, nil, depth+1); ok {
				out, b, ok = convert(out, b, elem, depth+1)
			}
		}
		return out, b, ok
	case shapeMapOfPairs:
		return convertMapOfPairs(out, b, n, elem, depth)
	case shapeTuple, shapeLast:
		out = appendAggregate(out, '*', n)
		ok := true
		for i := 0; i < n && ok; i++ {
			out, b, ok = convert(out, b, sh.item(i, n), depth+1)
		}
		return out, b, ok
	}
	out = appendAggregate(out, '*', n)
	return convertElems(out, b, n, elem, depth)
}

// item is the shape of element i of n of a tuple.
func (sh *shape) item(i, n int) *shape {
	if sh.kind == shapeLast {
		if i == n-1 {
			return sh.elem
		}
		return nil
	}
	if i < len(sh.items) {
		return sh.items[i]
	}
	return sh.elem
}

// convertMap converts n key/value pairs: a value's shape is its key's field, or
// the map's elem.
func convertMap(out, b []byte, n int, sh *shape, depth int) ([]byte, []byte, bool) {
	ok := true
	for i := 0; i < n && ok; i++ {
		key := bulkData(b)
		if out, b, ok = convert(out, b, nil, depth+1); !ok {
			break
		}
		vs := sh.elem
		if f, found := sh.fields[string(key)]; found {
			vs = f
		}
		out, b, ok = convert(out, b, vs, depth+1)
	}
	return out, b, ok
}

// convertMapOfPairs turns an array of [key, value] arrays into a map.
func convertMapOfPairs(out, b []byte, n int, elem *shape, depth int) ([]byte, []byte, bool) {
	var body []byte
	rest := b
	for i := 0; i < n; i++ {
		typ, _, m, r, ok := header(rest)
		if !ok || typ != '*' || m != 2 {
			// Not pairs: kept as an array.
			out = appendAggregate(out, '*', n)
			return convertElems(out, b, n, nil, depth)
		}
		if body, r, ok = convert(body, r, nil, depth+1); ok {
			body, r, ok = convert(body, r, elem, depth+1)
		}
		if !ok {
			return out, b, false
		}
		rest = r
	}
	out = appendAggregate(out, '%', n)
	return append(out, body...), rest, true
}

func appendAggregate(out []byte, typ byte, n int) []byte {
	out = append(out, typ)
	out = strconv.AppendInt(out, int64(n), 10)
	return append(out, "\r\n"...)
}

// toPush turns a RESP2 pub/sub frame (message, pmessage, smessage, a
// subscription's confirmation) into a RESP3 push; other frames (errors) are
// converted as replies.
func toPush(frame []byte) []byte {
	if len(frame) == 0 || frame[0] != '*' || bytes.HasPrefix(frame, []byte("*-1\r\n")) {
		return toRESP3(nil, frame)
	}
	out := toRESP3(nil, frame)
	if &out[0] == &frame[0] {
		out = append([]byte(nil), frame...)
	}
	out[0] = '>'
	return out
}

// blockedReply is a blocking command's reply in the session's protocol.
func (sess *Session) blockedReply(name string, args [][]byte, reply []byte) []byte {
	if !sess.resp3.Load() {
		return reply
	}
	return toRESP3(replyShape(name, args), reply)
}

// shape is the RESP3 shape of a queued command's reply: its blocking form's
// when it was a blocking pop.
func (q *txCmd) shape() *shape {
	if q.block != "" {
		return replyShape(q.block, nil)
	}
	return rawShape(q.raw)
}
