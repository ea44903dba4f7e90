package proxy

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// Blocking list and sorted-set pops are served by the proxy itself: it tries the
// non-blocking form (LMPOP, LMOVE, ZMPOP) through the replication script, so the
// pop that happens is what the slaves receive, exactly and in master order; when
// there is nothing to pop, the client waits until a replicated write touches one
// of its keys (every proxy's writes arrive through the sync channel), or its
// timeout. A blocked client holds up only itself, as in Redis.

// blockRetry is how often a blocked client tries again without a wake-up: a
// backstop for missed notifications and for noticing a client that left.
const blockRetry = 250 * time.Millisecond

// Redis' errors for a bad timeout argument.
const (
	msgTimeoutNotFloat = "ERR timeout is not a float or out of range"
	msgTimeoutNegative = "ERR timeout is negative"
)

// waitKey names a key in a database.
type waitKey struct {
	db  int
	key string
}

// waiters wakes blocked clients when a replicated write touches their keys.
type waiters struct {
	n atomic.Int64 // registered channels, to skip the lock when there are none
	// onFirst is called when a first client blocks (set before use).
	onFirst func()
	mu      sync.Mutex
	m       map[waitKey]map[chan struct{}]struct{}
}

func (w *waiters) add(keys []waitKey, ch chan struct{}) {
	w.mu.Lock()
	if w.m == nil {
		w.m = map[waitKey]map[chan struct{}]struct{}{}
	}
	for _, k := range keys {
		set := w.m[k]
		if set == nil {
			set = map[chan struct{}]struct{}{}
			w.m[k] = set
		}
		set[ch] = struct{}{}
	}
	first := w.n.Add(1) == 1
	w.mu.Unlock()
	if first && w.onFirst != nil {
		w.onFirst()
	}
}

func (w *waiters) remove(keys []waitKey, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range keys {
		if set := w.m[k]; set != nil {
			delete(set, ch)
			if len(set) == 0 {
				delete(w.m, k)
			}
		}
	}
	w.n.Add(-1)
}

// touched wakes the clients waiting on key (non-blocking sends).
func (w *waiters) touched(db int, key []byte) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.m[waitKey{db, string(key)}] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// wakeAll wakes every blocked client, to look at its keys again: at shutdown,
// on a flush, and when the sync stream starts (writes meanwhile reached no hook).
func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.m {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// nonBlocking returns the non-blocking form of a blocking pop and its timeout
// argument, or an error message.
func nonBlocking(name string, args [][]byte) (form [][]byte, timeout []byte, errMsg string) {
	last := len(args) - 1
	count := func(n int) []byte { return []byte(strconv.Itoa(n)) }
	switch name {
	case "blpop", "brpop":
		keys := args[1:last]
		form = append([][]byte{[]byte("LMPOP"), count(len(keys))}, keys...)
		if name == "blpop" {
			form = append(form, []byte("LEFT"))
		} else {
			form = append(form, []byte("RIGHT"))
		}
		return form, args[last], ""
	case "bzpopmin", "bzpopmax":
		keys := args[1:last]
		form = append([][]byte{[]byte("ZMPOP"), count(len(keys))}, keys...)
		if name == "bzpopmin" {
			form = append(form, []byte("MIN"))
		} else {
			form = append(form, []byte("MAX"))
		}
		return form, args[last], ""
	case "blmove":
		return [][]byte{[]byte("LMOVE"), args[1], args[2], args[3], args[4]}, args[5], ""
	case "brpoplpush":
		return [][]byte{[]byte("LMOVE"), args[1], args[2], []byte("RIGHT"), []byte("LEFT")}, args[3], ""
	case "blmpop":
		return append([][]byte{[]byte("LMPOP")}, args[2:]...), args[1], ""
	case "xread", "xreadgroup":
		// The same command without BLOCK <ms>.
		for i := 1; i+1 < len(args); i++ {
			if strings.EqualFold(string(args[i]), "streams") {
				break
			}
			if strings.EqualFold(string(args[i]), "block") {
				form = append(append(form, args[:i]...), args[i+2:]...)
				return form, args[i+1], ""
			}
		}
		return nil, nil, msgSyntax
	case "bzmpop":
		return append([][]byte{[]byte("ZMPOP")}, args[2:]...), args[1], ""
	}
	return nil, nil, errNotSupported(name)
}

// parseBlockMs parses XREAD's BLOCK argument: milliseconds, 0 is forever.
func parseBlockMs(b []byte) (time.Duration, string) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, "ERR timeout is not an integer or out of range"
	}
	if n < 0 {
		return 0, msgTimeoutNegative
	}
	if n > math.MaxInt64/int64(time.Millisecond) {
		return math.MaxInt64, "" // Redis takes up to ~2^63 ms: as good as forever
	}
	return time.Duration(n) * time.Millisecond, ""
}

// resolveDollar replaces the "$" IDs of an XREAD form by the streams' last IDs
// (0-0 for a stream that does not exist), as Redis does when the call blocks.
func (sess *Session) resolveDollar(form [][]byte) string {
	si := -1
	for i, a := range form {
		if strings.EqualFold(string(a), "streams") {
			si = i
		}
	}
	if si < 0 || (len(form)-si-1)%2 != 0 {
		return "" // the master words the syntax error
	}
	n := (len(form) - si - 1) / 2
	for j := 0; j < n; j++ {
		idi := si + 1 + n + j
		if string(form[idi]) != "$" {
			continue
		}
		r := &router.Request{Kind: router.KindRaw, DB: sess.db, Raw: buildCommand([][]byte{
			[]byte("XINFO"), []byte("STREAM"), form[si+1+j]})}
		sess.waiter.Add(r)
		sess.s.router.Master().Submit(int(sess.id), r)
		sess.waiter.Wait()
		switch {
		case r.Failed:
			return string(r.Reply[1 : len(r.Reply)-2])
		case r.Reply[0] == '-':
			if strings.Contains(string(r.Reply), "no such key") {
				form[idi] = []byte("0-0")
				continue
			}
			return string(r.Reply[1 : len(r.Reply)-2])
		}
		fields := splitArray(r.Reply)
		for k := 0; k+1 < len(fields); k += 2 {
			if bulkText(fields[k]) == "last-generated-id" {
				form[idi] = []byte(bulkText(fields[k+1]))
			}
		}
	}
	return ""
}

// parseTimeout parses a blocking timeout in seconds, as Redis does; 0 is forever.
func parseTimeout(b []byte) (time.Duration, string) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, msgTimeoutNotFloat
	}
	if f < 0 {
		return 0, msgTimeoutNegative
	}
	if f*float64(time.Second) >= math.MaxInt64 {
		return math.MaxInt64, "" // as good as forever (Redis' bound is ~2^63 ms)
	}
	return time.Duration(f * float64(time.Second)), ""
}

// isBlocking reports whether args is a blocking pop (its Policy row says
// Blocking, and it blocks with these arguments) that passes the gate, which
// block must serve, and its info. Inside MULTI nothing blocks.
func (sess *Session) isBlocking(args [][]byte) (*router.CommandInfo, bool) {
	if sess.tx != nil || !sess.authed || len(args) == 0 || len(args[0]) < 5 || (args[0][0]|0x20 != 'b' && args[0][0]|0x20 != 'x') {
		return nil, false // the common case, without a table lookup
	}
	c := call{cmd: redcon.Command{Args: args}, route: sess.s.router.Route(args)}
	if c.route.Info == nil || c.route.Class != router.ClassSpecial || !c.route.Info.Policy.Blocking || sess.gate(&c) != "" {
		return nil, false // dispatch answers with the error
	}
	return c.route.Info, true
}

// blockedPop is a blocking pop being served: its non-blocking form, tried until
// it pops or the deadline passes.
type blockedPop struct {
	name     string
	form     [][]byte // the non-blocking form's arguments
	raw      []byte   // the non-blocking form
	argc     int
	deadline time.Time // zero: forever
	keys     []waitKey
	wake     chan struct{}
}

// block serves one blocking pop; it reports whether the client went away.
func (sess *Session) block(ci *router.CommandInfo, args [][]byte) (gone bool) {
	bp, msg := sess.blockedPop(ci, args)
	if msg != "" {
		sess.conn.WriteError(msg)
		return false
	}
	s := sess.s
	// Register before trying, so a push between the try and the wait wakes us.
	s.waiters.add(bp.keys, bp.wake)
	defer s.waiters.remove(bp.keys, bp.wake)
	sess.blockingStarted(bp.wake) // CLIENT UNBLOCK may end the wait
	defer sess.blockingEnded()
	// Shown blocked (CLIENT LIST flags=b) only once CLIENT UNBLOCK can end it.
	sess.noteBlocked(ci.Name, args)
	r := &router.Request{}
	for tries := 0; ; tries++ {
		sess.tryPop(bp, r)
		reply, again := r.Reply, isNull(r.Reply)
		if tries > 0 && !again {
			reply, again = sess.streamRetry(bp, reply) // the stream changed under the client
		}
		if !again {
			sess.conn.WriteRaw(sess.blockedReply(bp.name, args, blockingReply(bp.name, reply)))
			return false
		}
		if s.closing.Load() {
			sess.conn.WriteRaw(sess.blockedReply(bp.name, args, []byte("*-1\r\n")))
			return false
		}
		wait := blockRetry
		if !bp.deadline.IsZero() {
			left := time.Until(bp.deadline)
			if left <= 0 {
				sess.conn.WriteRaw(sess.blockedReply(bp.name, args, []byte("*-1\r\n")))
				return false
			}
			wait = min(wait, left)
		}
		if !sess.sleepBlocked(bp, wait) {
			return true
		}
		switch sess.unblocked() {
		case unblockTimeout:
			sess.conn.WriteRaw([]byte("*-1\r\n"))
			return false
		case unblockError:
			sess.conn.WriteError(msgUnblocked)
			return false
		}
	}
}

// blockedPop prepares a blocking pop, or returns the error that refuses it.
func (sess *Session) blockedPop(ci *router.CommandInfo, args [][]byte) (*blockedPop, string) {
	name := ci.Name
	form, targ, msg := nonBlocking(name, args)
	var timeout time.Duration
	if msg == "" && (name == "xread" || name == "xreadgroup") {
		timeout, msg = parseBlockMs(targ)
	} else if msg == "" {
		timeout, msg = parseTimeout(targ)
	}
	if msg != "" {
		return nil, msg
	}
	bp := &blockedPop{name: name, wake: make(chan struct{}, 1)}
	if timeout > 0 {
		bp.deadline = time.Now().Add(timeout)
	}
	for _, i := range ci.KeyIndexes(args, nil) {
		bp.keys = append(bp.keys, waitKey{sess.db, string(args[i])})
	}
	if name == "xread" {
		// "$" means the entries added from now on: pin it to the streams' last IDs.
		if msg := sess.resolveDollar(form); msg != "" {
			return nil, msg
		}
	}
	bp.form, bp.raw, bp.argc = form, buildCommand(form), len(form)
	return bp, ""
}

// tryPop runs the non-blocking form once, on the master, into r.
func (sess *Session) tryPop(bp *blockedPop, r *router.Request) {
	r.Reset()
	r.Kind = router.KindWrite
	if bp.name == "xread" {
		r.Kind = router.KindRaw // a read, on the master, which has the newest data
	}
	r.DB, r.Raw, r.Argc = sess.db, bp.raw, bp.argc
	r.NullArray = true
	r.Mode = replicate.ModeRewrite // no effect when nothing was popped
	if bp.name == "xreadgroup" {
		r.Mode = replicate.ModeRewriteQuiet
	}
	sess.waiter.Add(r)
	sess.s.router.Master().Submit(int(sess.id), r)
	if r.Kind == router.KindRaw {
		sess.readOnMaster() // monotonic reads: later reads see what it saw
		sess.sendProbes()
	}
	sess.waiter.Wait()
	sess.applyProbes()
	sess.noteWrite(r)
}

// sleepBlocked waits for a wake-up or for d; it reports false when the client
// went away meanwhile.
func (sess *Session) sleepBlocked(bp *blockedPop, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-bp.wake:
	case <-t.C:
		if peerClosed(sess.conn.NetConn()) {
			return false
		}
	}
	return true
}

// isNull reports whether a reply is a null bulk or null array.
func isNull(reply []byte) bool {
	return bytes.Equal(reply, []byte("*-1\r\n")) || bytes.Equal(reply, []byte("$-1\r\n"))
}

// blockingReply turns the non-blocking form's reply into the blocking command's:
// LMPOP's [key, [value]] is BLPOP's [key, value]; ZMPOP's [key, [[member, score]]]
// is BZPOPMIN's [key, member, score]. Errors and the other forms pass unchanged.
func blockingReply(name string, reply []byte) []byte {
	switch name {
	case "blpop", "brpop", "bzpopmin", "bzpopmax":
	default:
		return reply
	}
	top := splitArray(reply)
	if len(top) != 2 {
		return reply
	}
	inner := splitArray(top[1])
	if len(inner) != 1 {
		return reply
	}
	if name == "blpop" || name == "brpop" {
		out := redcon.AppendArray(nil, 2)
		out = append(out, top[0]...)
		return append(out, inner[0]...)
	}
	pair := splitArray(inner[0])
	if len(pair) != 2 {
		return reply
	}
	out := redcon.AppendArray(nil, 3)
	out = append(out, top[0]...)
	out = append(out, pair[0]...)
	return append(out, pair[1]...)
}
