package proxy

import (
	"strconv"
	"strings"

	"github.com/syncproxy/syncproxy/router"
)

// The commands the proxy answers itself (router.ClassLocal), one handler each
// (see handlers in session.go).

func (sess *Session) ping(c *call) {
	if args := c.cmd.Args; len(args) > 1 {
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
	c.req.Raw = buildCommand(c.cmd.Args)
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
	sess.local(&c.req, appendBulk(nil, []byte(sess.clientLine())))
}

func (sess *Session) clientList(c *call) {
	sess.local(&c.req, appendBulk(nil, []byte(sess.s.clientList())))
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
