// Package history records what clients of syncproxy did and saw, and checks the
// record against the consistency guarantees the proxy promises, in the manner of
// Jepsen: the checker knows nothing of the proxy's insides, only of operations, their
// invocation and completion times, and their results.
//
// # Recording
//
// A History is shared by every client of a test. Each operation is announced with
// Invoke before it is sent and finished with one of the Call methods once its reply
// (or error) arrived: OK, Nil, Token, Fail (it certainly did not take effect) or
// Unknown (it may have: a timeout, a connection lost with the request in flight).
// Times come from the monotonic clock, as durations since New. Operations are
// numbered in invocation order. Init declares a key's value before the history
// began (every slave already holds it).
//
// # Values
//
// The checker orders the versions of a key by value: writes must give each key
// strictly increasing values in master order. INCR does that by itself; SET does when
// the key has a single writer that writes increasing numbers. A read of a missing key
// (nil) is older than any value.
//
// # Checks
//
// Check tests the checks named in Config.Checks, each independently (one stale read
// may break several):
//   - ReadYourWrites: a read on a connection returns the connection's last
//     acknowledged write to the key, or a later version.
//   - MonotonicReads: on one connection and key, a read never returns an older
//     version than an earlier read did.
//   - CausalTokens: after CLIENT SYNCAFTER t, until the next SYNCAFTER on the
//     connection, a read sees what t covers. A token is its issuer's last write
//     position: it covers the issuer's last acknowledged write before CLIENT
//     SYNCTOKEN, and every write acknowledged by anyone before that write was sent
//     (all of them precede it in master order).
//   - WaitAll: WAIT answered n >= Config.Slaves (every slave applied the connection's
//     last write) makes that write, and everything it covers as a token would, visible
//     to every read by any client through any proxy invoked after WAIT returned,
//     whatever the read's level. WAIT answered 1 <= n < Slaves promises nothing to
//     other connections (the read may go to a slave outside the n), so nothing beyond
//     ReadYourWrites is checked for it.
//   - Existing: a read of a key given to Init never returns nil (no workload here
//     deletes keys).
//   - Global: a read sees every write acknowledged by anyone, through any proxy, before
//     the read was invoked (the `global` level). It implies read-your-writes across the
//     connections of a pooled client.
//   - Linearizable: the SET/INCR/GET operations, per key, are linearizable on a
//     register model, checked with github.com/anishathalye/porcupine. Only histories
//     whose reads go to the master can pass. Writes of unknown outcome may take effect
//     at any time after their invocation, or never.
//
// Session is the set for the `session` level (and for today's default level);
// GlobalLevel adds Global.
//
// A Report counts the violations of each check and keeps the first few of each in
// full, with the operations involved: the offending read first, then the write (or
// read, WAIT, SYNCAFTER) that made it wrong.
//
// # Concurrency
//
// History's methods and Call's may be used from any number of goroutines; one Call
// belongs to the goroutine that made the request. Check works on a copy (Ops) and
// may run while clients still record.
package history
