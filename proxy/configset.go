package proxy

import (
	"strings"

	"github.com/tidwall/redcon"
)

// CONFIG SET and CONFIG GET of the settings that are the proxy's own. The
// password clients give (requirepass) is the proxy's: CONFIG SET requirepass
// changes it in the proxy, as a reload would, and never on the backends, where
// it would lock the proxy out; CONFIG GET requirepass shows it. Settings that
// would cut the proxy off its backends (their passwords, addresses, TLS) are
// never broadcast: they are changed on each server and in syncproxy's
// configuration together.

// errConfigCutOff refuses to broadcast a setting that would cut the proxy off
// its backends.
func errConfigCutOff(name string) string {
	return "ERR syncproxy: CONFIG SET " + name + " is not broadcast: it would cut syncproxy off its backends; " +
		"change it on each server and in syncproxy's configuration"
}

// cutOffParams are the settings that, changed on a backend, would refuse or
// move the proxy's connections to it.
var cutOffParams = map[string]bool{
	"masterauth": true, "masteruser": true, "bind": true, "bind-source-addr": true, "port": true,
	"unixsocket": true, "unixsocketperm": true, "protected-mode": true,
}

// cutsOff reports whether CONFIG SET name on a backend could cut the proxy off it.
func cutsOff(name string) bool { return cutOffParams[name] || strings.HasPrefix(name, "tls-") }

// configSet is CONFIG SET name value [name value ...]: requirepass is set in
// the proxy, the other settings are broadcast to every backend when the
// configuration allows it.
func (sess *Session) configSet(c *call) {
	args := c.cmd.Args
	if len(args)%2 != 0 {
		sess.localError(&c.req, msgSyntax) // (as Redis: the arity is checked before)
		return
	}
	rest := append(make([][]byte, 0, len(args)), args[:2]...)
	pass, setPass := "", false
	for i := 2; i+1 < len(args); i += 2 {
		switch name := strings.ToLower(string(args[i])); {
		case name == "requirepass":
			pass, setPass = string(args[i+1]), true
		case cutsOff(name):
			sess.localError(&c.req, errConfigCutOff(name))
			return
		default:
			rest = append(rest, args[i], args[i+1])
		}
	}
	if len(rest) > 2 && sess.s.config().ConfigSet != "broadcast" {
		sess.localError(&c.req, msgConfigSet)
		return
	}
	if setPass {
		sess.s.setRequirePass(pass)
	}
	if len(rest) == 2 {
		sess.local(&c.req, []byte("+OK\r\n"))
		return
	}
	if setPass {
		c.cmd.Raw = buildCommand(rest)
	}
	sess.broadcast(c)
}

// setRequirePass changes the password clients give, as a reload would: new
// connections and new AUTHs need it, authenticated clients stay so (as with
// Redis' CONFIG SET requirepass).
func (s *Server) setRequirePass(pass string) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	next := *s.config()
	next.RequirePass = pass
	s.cur.Store(&next)
	s.log.Info().Bool("requirepass", pass != "").Msg("CONFIG SET requirepass: the clients' password changed")
}

// showRequirePass puts the proxy's requirepass in CONFIG GET's [name, value,
// ...] reply in place of the master's.
func showRequirePass(reply []byte, pass string) []byte {
	items := splitArray(reply)
	if len(items)%2 != 0 {
		return reply
	}
	found := false
	for i := 0; i < len(items) && !found; i += 2 {
		found = strings.EqualFold(bulkText(items[i]), "requirepass")
	}
	if !found {
		return reply
	}
	out := redcon.AppendArray(nil, len(items))
	for i := 0; i < len(items); i += 2 {
		out = append(out, items[i]...)
		if strings.EqualFold(bulkText(items[i]), "requirepass") {
			out = redcon.AppendBulkString(out, pass)
		} else {
			out = append(out, items[i+1]...)
		}
	}
	return out
}

// configResetStat is CONFIG RESETSTAT: the proxy's statistics (INFO's
// total_commands_processed) and every backend's are reset.
func (sess *Session) configResetStat(c *call) {
	sess.s.commands.Store(0)
	sess.broadcast(c)
}
