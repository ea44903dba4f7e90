// Package proxy is the client side of syncproxy: it accepts Redis clients and
// serves each with a loop of its own on redcon's protocol functions (conn.go),
// keeps each client's session state, and dispatches every command along the path
// the router chooses.
//
// # Data path
//
// A client connection (a clientConn, which is a redcon.Conn) is a Session. The
// connection's loop reads requests into its own buffer, checking the input limits
// as it frames them (limits.go), and redcon.Parse splits each into arguments. The
// handler takes the whole pipelined batch (the first command plus
// conn.ReadPipeline()), dispatches every command
// at once — writes to the master through the replication script, reads to a slave
// that holds the session's read floor (consistency.go: its last write, what it
// read, its causal token, and at global level the master's position), local
// commands answered in place — then waits for the batch and writes the replies in
// order with one flush. Each command of the batch is a call (session.go): its
// command, route, request, reply flags and finishing step in one value.
// dispatch runs a call through the gate (arity, authentication, rights,
// reserved keys, a held master reset, the sync channel: the same checks for
// MULTI's queue and blocking commands), then the handler its command's
// router.Policy row names (local.go holds the locally answered commands), or
// routes it by its class. Transactions, WATCH, subscriptions, blocking commands and
// scripts have files of their own (multi.go, watch.go, pubsub.go, blocking.go and blockstream.go,
// eval.go, wait.go). Replies are the backends' raw RESP frames, forwarded byte for
// byte, so their types are exactly Redis'. The commands about the proxy's own
// clients and settings have theirs: clientinfo.go (CLIENT INFO and LIST),
// clientadmin.go (CLIENT KILL, PAUSE, UNBLOCK ...), configset.go (CONFIG SET
// and RESETSTAT), monitor.go (MONITOR).
//
// # RESP3
//
// The backends answer the proxy in RESP2. A client that switched to RESP3 (HELLO
// 3, hello.go) gets each reply converted, as the batch is written, to the type
// Redis 7.0 gives a RESP3 client for that command (resp3.go, with the commands'
// shapes in resp3shapes.go): maps, sets, doubles, verbatim text, _ for nulls;
// EXEC converts each queued command's reply. Its subscription's frames become
// pushes, and it may run any command while subscribed (pubsub.go).
//
// # Configuration
//
// Config holds every setting; DefaultConfig gives the defaults and Validate the
// first problem, worded for a user. Flags are parsed only in cmd/syncproxy.
//
// # TLS and credentials
//
// Serve wraps the listener with TLS when Config has a certificate (tls.go builds
// both TLS configurations from the files). Every backend connection gets the
// backend TLS configuration and credentials: the router's links, the
// replicator's endpoints, the COMMAND read at start, and the dedicated WATCH and
// SUBSCRIBE connections (dialMaster, dial.go), all opened by internal/dial: TCP,
// TLS, AUTH, PING, one error wording. Passwords are never logged; the start line says whether they are set.
//
// # Sentinel
//
// With Config.Sentinels the master's address comes from Redis Sentinel
// (sentinel.go): NewServer asks the sentinels in turn and fails if none answers;
// then the Server follows their failovers without a restart. Server.master holds
// the address — the one source of truth, read by dialMaster, the COMMAND read,
// INFO — and switchMaster changes it, moves the master backend (SetAddr: what is
// in flight fails with "master switched to ADDR, retry", nothing is sent twice)
// and the replicator (Replicator.SetMaster), and closes the WATCH and SUBSCRIBE
// connections to the old master. While a sentinel promotes a replica, writes are
// held (Backend.Pause) so that the old master does not take writes its
// successor will never have.
//
// # Concurrency
//
// Serve runs one goroutine per client (serveConn); Session methods run only
// there — or, once a client subscribes, in the goroutine the session detaches to
// (tracked by the Server's detachedWG), with one forwarder goroutine per
// subscription that the session stops and waits for. A MONITOR client detaches
// too, to two goroutines (detachedWG): one reads what it sends, one writes the
// stream the other sessions feed through a bounded channel (a client too far
// behind is cut). CLIENT LIST and KILL read the other sessions' clientShown
// (atomics), never their state. Blocked clients (BLPOP, WAIT) wait in their own
// goroutine, woken by the replicator's OnEffect hook or by their timeout, and
// notice a client that left; WAIT and reads waiting for ryw-wait are woken by
// Replicator.Moved when a slave's position moves. Shutdown waits for the last
// client to leave (lastLeft), not polling. WATCH and SUBSCRIBE use dedicated
// master connections owned by their session and closed with it; SCRIPT KILL and
// FUNCTION KILL one that lives for the command. Client scripts run on the master
// backend's script connections (a lane per run of scripts in a batch), the
// session waiting for the batch's earlier requests before and for the scripts
// after (eval.go). Server owns the backends (package
// router) and the replicator (package replicate): NewServer starts them and
// Shutdown stops them, after it stopped accepting clients and the clients went
// idle (what they sent is answered). With Sentinel, the Server also owns a
// sentinelWatch: one goroutine per sentinel (each with a receiver goroutine for
// its subscription, which it stops and waits for) and one that decides and
// switches; Shutdown stops them before the replicator and the backends.
// Shutdown is safe to call twice. A transaction that needs a fresh sample of the
// master's memory starts one short goroutine (refreshMemory, one at a time), which
// ends with its INFO request: at the latest when the master backend fails it.
// The status page's sampler (series.go) is one goroutine, started by the first
// AdminHandler and stopped and waited for by Shutdown (closeAdmin).
//
// Global reads share the fetch of the master's position (masterPosition): the
// session whose fetch is due sends it and waits for it on its own goroutine; the
// reads that joined it wait on a condition variable. No goroutine of its own.
//
// The near cache (nearcache.go, --near-cache) has no goroutine of its own: the
// replicator's backlog reader drops its entries through the keyFeed, and
// sessions read and fill it under one lock per shard.
//
// CLIENT TRACKING (tracking.go): the replicator's backlog reader calls the
// tracker (a keyFeed consumer) under its mutex, which queues invalidations on
// the tracking sessions (each under its own mutex, taken after the tracker's).
// Each tracking session has one pusher goroutine, started by CLIENT TRACKING ON
// and stopped by OFF, RESET or the client leaving, which writes what is queued
// while the session is idle. Whoever writes to a client holds its session's
// outMu: the session for a whole batch (handle, serveDetached), the
// subscription's forwarder, the pusher; outMu is taken before the tracking
// mutexes, never after.
//
// Reload (reload.go), serialized with itself and with Shutdown's stop of the
// backends, publishes what it changes through atomic pointers — the config in
// force, the client limits, the router's read set and read options — so that
// sessions read them without locks. It stops the applier and the backend of a
// slave it removes before it returns.
package proxy
