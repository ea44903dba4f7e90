package proxy

import (
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// hello answers HELLO [protover [AUTH user pass] [SETNAME name]] as Redis 7.0
// does: the options take effect in order as they are read (a later error
// leaves an earlier SETNAME done), then the protocol switches (RESP2 or RESP3)
// and the reply describes the server in the protocol now in force.
func (sess *Session) hello(c *call) {
	r, args := &c.req, c.cmd.Args
	proto := 0
	if len(args) >= 2 {
		v, err := strconv.ParseInt(string(args[1]), 10, 64)
		if err != nil {
			sess.localError(r, msgProtoNotInt)
			return
		}
		if v < 2 || v > 3 {
			sess.localError(r, msgNoProto)
			return
		}
		proto = int(v)
	}
	if msg := sess.helloOptions(args); msg != "" {
		sess.localError(r, msg)
		return
	}
	if !sess.authed {
		sess.localError(r, msgHelloNoAuth)
		return
	}
	if proto != 0 {
		sess.resp3.Store(proto == 3)
	}
	sess.local(r, sess.helloReply())
}

// helloOptions applies HELLO's AUTH and SETNAME options in order; it returns
// the error that stops them, or "".
func (sess *Session) helloOptions(args [][]byte) string {
	for j := 2; j < len(args); j++ {
		more := len(args) - 1 - j
		switch opt := strings.ToLower(string(args[j])); {
		case opt == "auth" && more >= 2:
			if !sess.checkPassword(args[j+1 : j+3]) {
				return msgWrongPass
			}
			sess.setAuthed(true)
			j += 2
		case opt == "setname" && more >= 1:
			if !validClientName(args[j+1]) {
				return msgClientName
			}
			sess.setName(string(args[j+1]))
			j++
		default:
			return "ERR Syntax error in HELLO option '" + sanitize(args[j], 128) + "'"
		}
	}
	return ""
}

// helloReply is HELLO's map (a flat array in RESP2): server, version, proto,
// id, mode, role, modules, with the proxy's values.
func (sess *Session) helloReply() []byte {
	proto := int64(2)
	var b []byte
	if sess.resp3.Load() {
		proto = 3
		b = append(b, "%7\r\n"...)
	} else {
		b = redcon.AppendArray(b, 14)
	}
	b = redcon.AppendBulkString(b, "server")
	b = redcon.AppendBulkString(b, "redis")
	b = redcon.AppendBulkString(b, "version")
	version := sess.s.version
	if version == "" {
		version = "7.0.0" // (the built-in command table's)
	}
	b = redcon.AppendBulkString(b, version)
	b = redcon.AppendBulkString(b, "proto")
	b = redcon.AppendInt(b, proto)
	b = redcon.AppendBulkString(b, "id")
	b = redcon.AppendInt(b, sess.id)
	b = redcon.AppendBulkString(b, "mode")
	b = redcon.AppendBulkString(b, "standalone")
	b = redcon.AppendBulkString(b, "role")
	b = redcon.AppendBulkString(b, "master")
	b = redcon.AppendBulkString(b, "modules")
	return redcon.AppendArray(b, 0)
}
