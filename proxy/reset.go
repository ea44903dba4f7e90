package proxy

import (
	"bytes"
	"net/http"
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

// serveConfirmReset is POST /master-reset/confirm on the admin listener.
func (s *Server) serveConfirmReset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	n := s.confirmMasterReset("admin " + r.RemoteAddr)
	if n == 0 {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte("no master reset is held\n"))
		return
	}
	w.Write([]byte("confirmed: " + strconv.Itoa(n) + " slave(s) resync to the master\n"))
}
