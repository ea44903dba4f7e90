// Package router decides where each command goes and carries it there.
//
// # Command table
//
// Table describes every command (arity, flags, key positions). It is read from
// the master's COMMAND reply at start, with a built-in fallback generated from
// Redis 7.0 (commands_builtin.go, go generate). Router.Route classifies a command:
// read (a slave), write (the master, through the replication script), master
// (forwarded unchanged: COMMAND, CONFIG GET, PUBLISH, SCAN cursors...), local (the
// proxy answers), special (session state: transactions, subscriptions, scripts,
// blocking), denied (would break the topology or bypass replication). Unknown
// commands are never sent to a slave. How the proxy treats a command is one
// Policy row (rows.go), attached to its CommandInfo when the table is built:
// class, effect rewrite, null array, blocking, subscribe, read-only-denied, the
// reply's finishing step and the session handler that serves it. A command
// without a row follows its COMMAND flags.
//
// # Backends
//
// A Backend is a small pool of long-lived connections ("links") to one server,
// shared by every client. Each link has a writer (its run goroutine) that sends
// queued requests — a SELECT first when the request's DB differs from the
// connection's — and flushes when its queue is empty, and a reader that completes
// requests in FIFO order with the raw RESP frame of their reply. A session's
// batch of reads reaches a link in one step (Waiter.Defer, SubmitChain): one
// hand-over to the writer and one entry for the reader per run of one DB, not
// one per request. Consecutive
// writes are grouped into one script call (group commit), encoded with package
// replicate's call codec (replicate/call.go); Request.Mode says what the script
// does with each command. A write too large for the script (Request.Split set)
// is sent alone, natively, in a MULTI/EXEC of its own with the script's
// numbering calls (replicate.WriteNativeCall, native.go), on the same link, so
// that it keeps its place among its client's writes. Consecutive writes that
// cannot fail once queued (replicate.ModeNative: the command table's Native
// rows) are grouped natively the same way, in one DB: MULTI, the writes, one
// short numbering call, EXEC (sendNativeGroup). A link that fails or
// times out fails every request it holds with an -ERR and reconnects with capped
// exponential backoff; while it is down, requests fail at once. A keepalive PING
// on idle links notices dead connections.
//
// Client scripts run on script links of their own (BackendOptions.ScriptConns,
// SubmitOn with ScriptLane), so that a runaway script holds no other client's
// commands: those reach the server and get its BUSY reply. BUSY is a sign of
// life, not a failure (busy.go).
//
// A reply is awaited for BackendOptions.ReplyTimeout: long on the master, where
// a write still running may be applied. A request sent whose reply never came
// (timeout, connection lost) fails, on the master, with "outcome unknown" — never
// "unavailable", which means not sent. A script call's reply that is well framed
// but not of the replication script's shape fails that call's requests only; only
// broken framing or I/O errors cost the connection.
//
// # Concurrency
//
// NewBackend starts one run goroutine per link; each run starts and waits for its
// reader. Close cancels them and waits. Every Request submitted is completed
// exactly once — by a reply, a timeout or a failure, also when it is submitted
// while or after its backend closes — so Waiter.Wait never blocks forever.
// SetAddr, Pause and Resume may be called from any goroutine: they only set the
// backend's state and wake the writers, which act on it.
//
// The read set (Slaves, weights) and the read options are immutable snapshots
// behind atomic pointers: SetSlaves and SetReadOptions replace them whole, and
// picking a slave never locks.
package router
