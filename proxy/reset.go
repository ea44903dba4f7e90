package proxy

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/syncproxy/syncproxy/router"
)

// After a master reset with --on-master-reset hold (see package replicate), the
// slaves keep their data and serve reads, and every write is refused, as a
// read-only replica refuses them, until an operator confirms with the proxy's
// own command SYNCPROXY MASTER-RESET CONFIRM (or POST /master-reset/confirm on
// the admin listener); the slaves then resync to the master and writes resume.

// Replies of the master-reset hold and of the SYNCPROXY command.
const (
	msgMasterResetHeld = "READONLY syncproxy: the master was reset (it lost the slaves' data); " +
		"writes are held until an operator confirms with SYNCPROXY MASTER-RESET CONFIRM"
	msgNoResetHeld    = "ERR syncproxy: no master reset is held"
	msgSyncproxyUsage = "ERR syncproxy: unknown SYNCPROXY subcommand; try SYNCPROXY MASTER-RESET CONFIRM"
	msgSyncproxyMulti = "ERR syncproxy: SYNCPROXY is not allowed inside MULTI"
)

// heldWrite reports whether rt is a write (or a script that may write) refused
// because a master reset is held.
func (sess *Session) heldWrite(rt router.Route) bool {
	if rt.Info == nil {
		return false
	}
	write := rt.Class == router.ClassWrite || rt.Info.Has(router.FlagWrite)
	switch rt.Info.Name {
	case "eval", "evalsha", "fcall":
		write = true
	}
	return write && sess.s.repl.MasterResetHeld()
}

// isSyncproxyCommand reports whether args is the proxy's own SYNCPROXY command.
func isSyncproxyCommand(args [][]byte) bool {
	return len(args) > 0 && bytes.EqualFold(args[0], []byte("syncproxy"))
}

// syncproxyCommand answers SYNCPROXY MASTER-RESET CONFIRM: admin rights are
// needed (a read-only user gets NOPERM).
func (sess *Session) syncproxyCommand(r *router.Request, args [][]byte) {
	if !sess.authed {
		sess.localError(r, msgNoAuth)
		return
	}
	if sess.user != nil && sess.user.Access == AccessReadOnly {
		sess.localError(r, "NOPERM this user has no permissions to run the 'syncproxy' command")
		return
	}
	if len(args) != 3 || !strings.EqualFold(string(args[1]), "master-reset") || !strings.EqualFold(string(args[2]), "confirm") {
		sess.localError(r, msgSyncproxyUsage)
		return
	}
	if n := sess.s.confirmMasterReset("client " + strconv.FormatInt(sess.id, 10)); n == 0 {
		sess.localError(r, msgNoResetHeld)
		return
	}
	sess.local(r, []byte("+OK\r\n"))
}

// confirmMasterReset releases the held slaves; it returns how many were held.
func (s *Server) confirmMasterReset(by string) int {
	if !s.repl.MasterResetHeld() {
		return 0
	}
	s.log.Warn().Str("by", by).Msg("master reset confirmed")
	return s.repl.ConfirmMasterReset()
}

// serveConfirmReset is POST /master-reset/confirm on the admin listener. It
// asks what SYNCPROXY MASTER-RESET CONFIRM asks of a client, since confirming
// makes every slave drop its data: with requirepass set, the password of the
// default user or of a read-write user, as HTTP Basic auth. A browser's
// cross-site request is refused, so that no web page can confirm through the
// browser of someone who can reach the listener.
func (s *Server) serveConfirmReset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if crossSite(r) {
		w.WriteHeader(http.StatusForbidden)
		w.Write([]byte("cross-site requests are refused\n"))
		return
	}
	if code, msg := s.adminAuth(r); code != 0 {
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="syncproxy", charset="UTF-8"`)
		}
		w.WriteHeader(code)
		w.Write([]byte(msg))
		return
	}
	n := s.confirmMasterReset("admin " + r.RemoteAddr)
	if n == 0 {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte("no master reset is held\n"))
		return
	}
	w.Write([]byte("confirmed: " + strconv.Itoa(n) + " slave(s) resync to the master\n"))
}

// adminAuth checks an admin request's HTTP Basic credentials against the proxy's
// users, as AUTH does; it returns 0 when the request may go on, else the HTTP
// status and the reason.
func (s *Server) adminAuth(r *http.Request) (int, string) {
	cfg := s.config()
	if cfg.RequirePass == "" {
		return 0, "" // as for clients: no password, no authentication
	}
	name, pass, ok := r.BasicAuth()
	if !ok {
		return http.StatusUnauthorized, "authentication required: the password of user default (requirepass) or of a read-write user, as HTTP Basic auth\n"
	}
	u, ok := cfg.login(name, []byte(pass))
	switch {
	case !ok:
		return http.StatusUnauthorized, "invalid username-password pair or user is disabled\n"
	case u != nil && u.Access == AccessReadOnly:
		return http.StatusForbidden, "user " + u.Name + " is read-only: it may not confirm a master reset\n"
	}
	return 0, ""
}

// crossSite reports whether r is a browser's request from another site (its
// Sec-Fetch-Site or Origin header says so); curl and other tools send neither.
func crossSite(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err != nil || u.Host != r.Host
	}
	return false
}
