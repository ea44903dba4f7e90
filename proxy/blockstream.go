package proxy

import (
	"bytes"
	"strings"

	"github.com/syncproxy/syncproxy/router"
)

// A stream key can change under a client blocked in XREAD or XREADGROUP. Redis
// 7.0 (blocked.c, t_stream.c) then leaves XREAD blocked until the key is a
// stream with new entries again, and ends XREADGROUP with an UNBLOCKED error
// when a key is gone or no longer a stream, or a NOGROUP error when its group
// was destroyed. The proxy learns of the change when a retry of the
// non-blocking form fails, and turns that failure into Redis' answer.

// Redis' errors for a blocked XREADGROUP whose stream or group went away.
const (
	msgStreamGone = "UNBLOCKED the stream key no longer exists"
	msgGroupGone  = "NOGROUP the consumer group this client was blocked on no longer exists"
)

// streamRetry turns the error reply of a blocked stream read's retry into what
// Redis answers: wait reports that the client stays blocked; otherwise reply
// is the error to send (the master's own when nothing changed under the key).
func (sess *Session) streamRetry(bp *blockedPop, reply []byte) (out []byte, wait bool) {
	if len(reply) == 0 || reply[0] != '-' || (bp.name != "xread" && bp.name != "xreadgroup") {
		return reply, false
	}
	wrongType := bytes.HasPrefix(reply, []byte("-WRONGTYPE "))
	switch {
	case bp.name == "xread" && wrongType:
		return sess.xreadStreams(bp)
	case bp.name == "xread":
		return reply, false
	case wrongType:
		return errorLine(msgStreamGone), false
	case !bytes.HasPrefix(reply, []byte("-NOGROUP ")):
		return reply, false
	}
	// NOGROUP: the key is gone (or not a stream), or only the group.
	for _, k := range nogroupKeys(bp.keys, reply) {
		typ, ok := sess.masterType(k.key)
		if !ok {
			return reply, false
		}
		if typ != "stream" {
			return errorLine(msgStreamGone), false
		}
	}
	return errorLine(msgGroupGone), false
}

// nogroupKeys returns the key the master's NOGROUP error names ("No such key
// 'k' or consumer group 'g' ..."), or every key when none matches.
func nogroupKeys(keys []waitKey, reply []byte) []waitKey {
	for i, k := range keys {
		if bytes.HasPrefix(reply, []byte("-NOGROUP No such key '"+k.key+"' or consumer group '")) {
			return keys[i : i+1]
		}
	}
	return keys
}

// masterType is TYPE key on the master, in the session's DB; ok is false when
// the master did not answer.
func (sess *Session) masterType(key string) (typ string, ok bool) {
	r := &router.Request{Kind: router.KindRaw, DB: sess.db, Raw: buildCommand([][]byte{
		[]byte("TYPE"), []byte(key)})}
	sess.waiter.Add(r)
	sess.s.router.Master().Submit(int(sess.id), r)
	sess.waiter.Wait()
	if r.Failed || len(r.Reply) < 3 || r.Reply[0] != '+' {
		return "", false
	}
	return strings.TrimSpace(string(r.Reply[1:])), true
}

// errorLine is msg as a RESP error line.
func errorLine(msg string) []byte {
	return []byte("-" + msg + "\r\n")
}

// xreadStreams retries a blocked XREAD on those of its keys that are streams or
// absent, when another key holds a different type: Redis serves a blocked XREAD
// from whichever of its streams gets entries. wait reports there were none.
func (sess *Session) xreadStreams(bp *blockedPop) (out []byte, wait bool) {
	si := xreadStreamsIndex(bp.form)
	if si < 0 || len(bp.keys) != (len(bp.form)-si-1)/2 {
		return nil, true
	}
	n := len(bp.keys)
	keys, ids := [][]byte{}, [][]byte{}
	for j, k := range bp.keys {
		typ, ok := sess.masterType(k.key)
		if ok && (typ == "stream" || typ == "none") {
			keys, ids = append(keys, bp.form[si+1+j]), append(ids, bp.form[si+1+n+j])
		}
	}
	if len(keys) == 0 {
		return nil, true
	}
	form := append(append(append([][]byte{}, bp.form[:si+1]...), keys...), ids...)
	some := *bp
	some.raw, some.argc = buildCommand(form), len(form)
	r := &router.Request{}
	sess.tryPop(&some, r)
	if isNull(r.Reply) || bytes.HasPrefix(r.Reply, []byte("-WRONGTYPE ")) {
		return nil, true
	}
	return r.Reply, false
}

// xreadStreamsIndex is the position of STREAMS in an XREAD without BLOCK, past
// its COUNT option, or -1.
func xreadStreamsIndex(form [][]byte) int {
	for i := 1; i < len(form); i++ {
		switch strings.ToLower(string(form[i])) {
		case "count":
			i++
		case "streams":
			return i
		default:
			return -1
		}
	}
	return -1
}
