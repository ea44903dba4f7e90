package proxy

import (
	"strconv"
	"strings"

	"github.com/syncproxy/syncproxy/router"
)

// The commands the proxy answers itself (router.ClassLocal), one handler each
// (see handlers in session.go).

func (sess *Session) ping(c *call) {
	args := c.cmd.Args
	if len(args) > 2 { // PING's arity is -1, but it takes one argument at most
		sess.localError(&c.req, errWrongArity("ping"))
		return
	}
	if len(args) == 2 {
		sess.local(&c.req, appendBulk(nil, args[1]))
		return
	}
	sess.local(&c.req, []byte("+PONG\r\n"))
}

func (sess *Session) echo(c *call) { sess.local(&c.req, appendBulk(nil, c.cmd.Args[1])) }

func (sess *Session) quit(c *call) {
	sess.local(&c.req, []byte("+OK\r\n"))
	c.quit = true
}

func (sess *Session) selectDB(c *call) {
	n, err := strconv.Atoi(string(c.cmd.Args[1]))
	switch {
	case err != nil:
		sess.localError(&c.req, msgNotInteger)
	case n < 0 || n >= numDBs:
		sess.localError(&c.req, msgDBRange)
	default:
		sess.setDB(n)
		sess.local(&c.req, []byte("+OK\r\n"))
	}
}

// reset is RESET: the connection's state as a new connection's.
func (sess *Session) reset(c *call) {
	sess.setAuthed(sess.s.config().RequirePass == "")
	sess.user = nil
	sess.tx = nil
	sess.closeWatch()
	sess.trackOff()
	sess.setDB(0)
	sess.setName("")
	sess.replyMode = replyOn
	sess.setConsistency(levelDefault)
	sess.resp3.Store(false)
	sess.local(&c.req, []byte("+RESET\r\n"))
}

func (sess *Session) auth(c *call) {
	args := c.cmd.Args
	switch {
	case len(args) > 3:
		sess.localError(&c.req, msgSyntax)
	case len(args) == 2 && sess.s.config().RequirePass == "":
		sess.localError(&c.req, msgAuthNoPassword)
	case sess.checkPassword(args[1:]):
		sess.setAuthed(true)
		sess.local(&c.req, []byte("+OK\r\n"))
	default:
		sess.localError(&c.req, msgWrongPass)
	}
}

// info is the master's INFO with the proxy's sections in front (postInfo).
func (sess *Session) info(c *call) {
	c.req.Kind = router.KindRaw
	if wantsKeyspace(c.cmd.Args) {
		c.req.Raw = infoMetaFree(c.cmd.Args)
	} else {
		c.req.Raw = buildCommand(c.cmd.Args)
	}
	c.post = postInfo
	sess.toMaster(&c.req)
}

func (sess *Session) clientSetName(c *call) {
	name := c.cmd.Args[2]
	if !validClientName(name) {
		sess.localError(&c.req, msgClientName)
		return
	}
	sess.setName(string(name))
	sess.local(&c.req, []byte("+OK\r\n"))
}

func (sess *Session) clientGetName(c *call) {
	if sess.name == "" {
		sess.local(&c.req, []byte("$-1\r\n"))
		return
	}
	sess.local(&c.req, appendBulk(nil, []byte(sess.name)))
}

func (sess *Session) clientID(c *call) {
	sess.local(&c.req, []byte(":"+strconv.FormatInt(sess.id, 10)+"\r\n"))
}

func (sess *Session) clientInfo(c *call) {
	sess.noteCommand(c)
	sess.local(&c.req, appendBulk(nil, []byte(sess.clientLine(sess))))
}

// clientList is CLIENT LIST [TYPE type | ID id [id ...]].
func (sess *Session) clientList(c *call) {
	sess.noteCommand(c)
	args := c.cmd.Args
	switch {
	case len(args) == 2:
		sess.local(&c.req, appendBulk(nil, []byte(sess.s.clientList(sess))))
	case len(args) == 4 && strings.EqualFold(string(args[2]), "type"):
		pubsub := false
		switch strings.ToLower(string(args[3])) {
		case "normal":
		case "pubsub":
			pubsub = true
		case "master", "replica", "slave":
			sess.local(&c.req, appendBulk(nil, nil)) // the proxy has none
			return
		default:
			sess.localError(&c.req, "ERR Unknown client type '"+sanitize(args[3], 128)+"'")
			return
		}
		var b strings.Builder
		for _, o := range sess.s.sessionList() {
			if o.detached.Load() == pubsub {
				b.WriteString(o.clientLine(sess))
			}
		}
		sess.local(&c.req, appendBulk(nil, []byte(b.String())))
	case len(args) > 3 && strings.EqualFold(string(args[2]), "id"):
		sess.clientListIDs(c)
	default:
		sess.localError(&c.req, msgSyntax)
	}
}

// clientListIDs is CLIENT LIST ID id [id ...]: the clients in the order asked.
func (sess *Session) clientListIDs(c *call) {
	list := sess.s.sessionList()
	var b strings.Builder
	for _, a := range c.cmd.Args[3:] {
		id, err := strconv.ParseInt(string(a), 10, 64)
		if err != nil {
			sess.localError(&c.req, "ERR Invalid client ID")
			return
		}
		for _, o := range list {
			if o.id == id {
				b.WriteString(o.clientLine(sess))
			}
		}
	}
	sess.local(&c.req, appendBulk(nil, []byte(b.String())))
}

func (sess *Session) clientSetInfo(c *call) { sess.local(&c.req, []byte("+OK\r\n")) }

// clientReply is CLIENT REPLY ON|OFF|SKIP; it decides for its own reply.
func (sess *Session) clientReply(c *call) {
	sess.replyDecided = true
	switch strings.ToLower(string(c.cmd.Args[2])) {
	case "on":
		sess.replyMode = replyOn
		sess.local(&c.req, []byte("+OK\r\n"))
	case "off":
		sess.replyMode = replyOff
		c.skip = true
	case "skip":
		sess.replyMode = replySkipNext
		c.skip = true
	default:
		sess.localError(&c.req, msgSyntax)
	}
}
