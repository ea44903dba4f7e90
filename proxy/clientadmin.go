package proxy

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// CLIENT KILL, PAUSE, UNPAUSE, UNBLOCK and NO-EVICT act on the proxy's own
// clients, as Redis' act on Redis' clients: the backends' clients are the
// proxy's connections, which no client may kill or pause.

// clientAdmin serves CLIENT KILL, PAUSE, UNPAUSE, UNBLOCK and NO-EVICT, and
// the tracking subcommands (tracking.go).
func (sess *Session) clientAdmin(c *call) {
	args := c.cmd.Args
	switch c.route.Info.Name {
	case "client|kill":
		sess.clientKill(c)
	case "client|pause":
		sess.clientPause(c)
	case "client|unpause":
		sess.s.pause.end()
		sess.local(&c.req, []byte("+OK\r\n"))
	case "client|unblock":
		sess.clientUnblock(c)
	case "client|tracking":
		sess.clientTracking(c)
	case "client|caching":
		sess.clientCaching(c)
	case "client|trackinginfo":
		sess.clientTrackingInfo(c)
	case "client|getredir":
		sess.clientGetRedir(c)
	case "client|no-evict":
		switch strings.ToLower(string(args[2])) {
		case "on", "off":
			sess.shown.noEvict.Store(strings.EqualFold(string(args[2]), "on"))
			sess.local(&c.req, []byte("+OK\r\n"))
		default:
			sess.localError(&c.req, msgSyntax)
		}
	default:
		sess.localError(&c.req, errNotSupported(c.route.Info.Name))
	}
}

// killFilter is what CLIENT KILL's filters select.
type killFilter struct {
	id, addr, laddr, user string
	typ                   string // normal, pubsub, or "" (any)
	skipMe                bool
}

func (f *killFilter) match(sess, o *Session) bool {
	switch {
	case f.skipMe && o == sess,
		f.id != "" && strconv.FormatInt(o.id, 10) != f.id,
		f.addr != "" && o.netConn.RemoteAddr().String() != f.addr,
		f.laddr != "" && o.netConn.LocalAddr().String() != f.laddr,
		f.user != "" && o.shownUser() != f.user,
		f.typ == "normal" && o.detached.Load(), f.typ == "pubsub" && !o.detached.Load(),
		f.typ == "none":
		return false
	}
	return true
}

// clientKill is CLIENT KILL addr, or CLIENT KILL filter value [filter value ...].
func (sess *Session) clientKill(c *call) {
	args := c.cmd.Args
	f := killFilter{skipMe: true}
	if len(args) == 3 {
		f.addr, f.skipMe = string(args[2]), false
	}
	for i := 2; len(args) > 3 && i < len(args); i += 2 {
		if i+1 >= len(args) {
			sess.localError(&c.req, msgSyntax)
			return
		}
		v := string(args[i+1])
		switch strings.ToLower(string(args[i])) {
		case "id":
			if n, err := strconv.ParseInt(v, 10, 64); err != nil || n < 1 {
				sess.localError(&c.req, "ERR client-id should be greater than 0")
				return
			}
			f.id = v
		case "type":
			switch t := strings.ToLower(v); t {
			case "normal", "pubsub":
				f.typ = t
			case "master", "replica", "slave":
				f.typ = "none" // the proxy has none
			default:
				sess.localError(&c.req, "ERR Unknown client type '"+sanitize(args[i+1], 128)+"'")
				return
			}
		case "addr":
			f.addr = v
		case "laddr":
			f.laddr = v
		case "user":
			if !sess.s.config().hasUser(v) {
				sess.localError(&c.req, "ERR No such user '"+sanitize(args[i+1], 128)+"'")
				return
			}
			f.user = v
		case "skipme":
			switch strings.ToLower(v) {
			case "yes":
				f.skipMe = true
			case "no":
				f.skipMe = false
			default:
				sess.localError(&c.req, msgSyntax)
				return
			}
		default:
			sess.localError(&c.req, msgSyntax)
			return
		}
	}
	killed := sess.kill(&f, c)
	switch {
	case len(args) > 3:
		sess.local(&c.req, []byte(":"+strconv.Itoa(killed)+"\r\n"))
	case killed == 0:
		sess.localError(&c.req, "ERR No such client")
	default:
		sess.local(&c.req, []byte("+OK\r\n"))
	}
}

// kill closes the connections of the clients f selects, this one after its
// reply; it returns how many.
func (sess *Session) kill(f *killFilter, c *call) int {
	n := 0
	for _, o := range sess.s.sessionList() {
		if !f.match(sess, o) {
			continue
		}
		n++
		if o == sess {
			c.quit = true
		} else {
			o.netConn.Close() // its goroutine sees the connection closed and ends
		}
	}
	return n
}

// hasUser reports whether the proxy has a user of that name.
func (c *Config) hasUser(name string) bool {
	for _, u := range c.aclUsers() {
		if u.name == name {
			return true
		}
	}
	return false
}

// clientUnblock is CLIENT UNBLOCK id [TIMEOUT|ERROR]: :1 when the client was
// blocked (in BLPOP & co.) and is unblocked, :0 otherwise.
func (sess *Session) clientUnblock(c *call) {
	args := c.cmd.Args
	id, err := strconv.ParseInt(string(args[2]), 10, 64)
	if err != nil {
		sess.localError(&c.req, msgNotInteger)
		return
	}
	how := unblockTimeout
	if len(args) == 4 {
		switch strings.ToLower(string(args[3])) {
		case "timeout":
		case "error":
			how = unblockError
		default:
			sess.localError(&c.req, "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
			return
		}
	} else if len(args) > 4 {
		sess.localError(&c.req, msgSyntax)
		return
	}
	for _, o := range sess.s.sessionList() {
		if o.id == id && o.unblock(how) {
			sess.local(&c.req, []byte(":1\r\n"))
			return
		}
	}
	sess.local(&c.req, []byte(":0\r\n"))
}

// How CLIENT UNBLOCK ends a blocking command.
const (
	unblockTimeout int32 = 1 // as if it timed out
	unblockError   int32 = 2 // with the UNBLOCKED error
)

// msgUnblocked is the reply of a command CLIENT UNBLOCK ... ERROR ended.
const msgUnblocked = "UNBLOCKED client unblocked via CLIENT UNBLOCK"

// unblock asks the session's blocking command, if any, to end; it reports
// whether the session was blocked.
func (sess *Session) unblock(how int32) bool {
	sh := &sess.shown
	sh.bmu.Lock()
	defer sh.bmu.Unlock()
	if sh.wake == nil {
		return false
	}
	sh.unblocked = how
	select {
	case sh.wake <- struct{}{}:
	default:
	}
	return true
}

// blockingStarted and blockingEnded bracket a blocking command's wait, wake
// being its wake-up channel; unblocked returns (and clears) CLIENT UNBLOCK's
// request, or 0.
func (sess *Session) blockingStarted(wake chan struct{}) {
	sh := &sess.shown
	sh.bmu.Lock()
	sh.wake, sh.unblocked = wake, 0
	sh.bmu.Unlock()
}

func (sess *Session) blockingEnded() {
	sh := &sess.shown
	sh.bmu.Lock()
	sh.wake, sh.unblocked = nil, 0
	sh.bmu.Unlock()
}

func (sess *Session) unblocked() int32 {
	sh := &sess.shown
	sh.bmu.Lock()
	defer sh.bmu.Unlock()
	how := sh.unblocked
	sh.unblocked = 0
	return how
}

// clientPause is CLIENT PAUSE timeout [WRITE|ALL].
func (sess *Session) clientPause(c *call) {
	args := c.cmd.Args
	all := true
	if len(args) > 4 {
		sess.localError(&c.req, "ERR unknown subcommand or wrong number of arguments for '"+sanitize(args[1], 128)+"'. Try CLIENT HELP.")
		return
	}
	if len(args) == 4 {
		switch strings.ToLower(string(args[3])) {
		case "write":
			all = false
		case "all":
		default:
			sess.localError(&c.req, "ERR CLIENT PAUSE mode must be WRITE or ALL")
			return
		}
	}
	ms, err := strconv.ParseInt(string(args[2]), 10, 64)
	switch {
	case err != nil:
		sess.localError(&c.req, "ERR timeout is not an integer or out of range")
		return
	case ms < 0:
		sess.localError(&c.req, "ERR timeout is negative")
		return
	}
	sess.s.pause.start(time.Now().Add(time.Duration(ms)*time.Millisecond), all)
	sess.local(&c.req, []byte("+OK\r\n"))
}

// clientPause holds the commands of the proxy's clients (all of them, or the
// writes) until a time, as CLIENT PAUSE does; the proxy's own traffic to the
// backends goes on.
type clientPause struct {
	untilNs atomic.Int64 // until, for a look without the lock
	mu      sync.Mutex
	until   time.Time
	all     bool
	changed chan struct{} // closed when the pause ends or changes
}

// start pauses until then (a pause is extended, never shortened, as Redis').
func (p *clientPause) start(until time.Time, all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Now().After(p.until) {
		p.all = all
	} else {
		p.all = p.all || all
	}
	if until.After(p.until) {
		p.until = until
	}
	p.untilNs.Store(p.until.UnixNano())
	p.signal()
}

// end is CLIENT UNPAUSE.
func (p *clientPause) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.until = time.Time{}
	p.untilNs.Store(0)
	p.signal()
}

func (p *clientPause) signal() {
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
}

// wait returns once a command (a write or not) may run.
func (p *clientPause) wait(write bool) {
	for {
		p.mu.Lock()
		left := time.Until(p.until)
		if left <= 0 || (!p.all && !write) {
			p.mu.Unlock()
			return
		}
		ch := p.changed
		p.mu.Unlock()
		t := time.NewTimer(left)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// active reports whether a pause may be in force.
func (p *clientPause) active() bool {
	until := p.untilNs.Load()
	return until != 0 && until > time.Now().UnixNano() // no clock reading when none was ever set
}

// paused holds a command while CLIENT PAUSE is in force.
func (sess *Session) paused(rt router.Route) {
	if !sess.s.pause.active() {
		return
	}
	ci := rt.Info
	write := rt.Class == router.ClassWrite || ci == nil || ci.Has(router.FlagWrite) || ci.Has(router.FlagMayReplicate)
	sess.s.pause.wait(write)
}
