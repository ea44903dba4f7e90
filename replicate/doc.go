// Package replicate keeps every slave an exact copy of the master.
//
// # Writes
//
// Client writes run on the master inside one Lua script (MasterScript) that, in
// the same atomic step, executes a group of commands, increments the sequence
// counter syncproxy:seq, appends the sync message to the backlog stream
// syncproxy:backlog (ID <seq>-0) and publishes it on the sync channel. The message
// carries effects, not requests: non-deterministic or time-relative commands
// (SPOP, INCRBYFLOAT, EXPIRE, SET EX, XADD *, ...) are replaced by what they did,
// with absolute times. An epoch (syncproxy:epoch) names the master's data set.
// The script's call format and its reply's are encoded and decoded in one place,
// call.go (WriteCallHeader, WriteCallCommand, FixCallReply), which the backend
// connections of package router use. A write with more arguments than Lua's
// unpack can pass (MaxScriptArgs) runs natively instead, in a MULTI/EXEC between
// two calls of the script that number its effects unless it failed
// (WriteNativeCall); its effect is split into parts of the same command
// (SplitOf), each small enough for a slave's apply script. Writes that are their
// own effect and cannot fail once queued (ModeNative) run natively in groups, in
// a MULTI/EXEC ended by one call of a short numbering script (WriteGroupNumber).
//
// # Slaves
//
// The subscriber takes a message on the sync channel as a hint only (anyone may
// PUBLISH there): it reads the new entries of the backlog, which only the master
// script writes, and hands those to one Applier per slave. An
// applier applies runs of consecutive messages as one transaction of the plain
// effect commands (applytx.go: MULTI/EXEC under WATCH, behind a check of the
// position that fails the EXEC when the slave is elsewhere), which updates the slave's own position (syncproxy:applied =
// "<epoch>:<seq>") in the same atomic step: applying is idempotent and several proxies may apply to the
// same slaves. The transaction is written as raw RESP in one write and its
// replies read without decoding the +QUEUED ones, on the socket under the
// applier's redigo connection (slaveconn.go). A gap (lost message, overflowing queue, reconnect) is filled from
// the backlog; a slave with no position, another epoch, or behind the backlog is
// emptied and copied from the master (full resync). Another epoch, or a position
// ahead of the master, means the master lost data (a master reset, reset.go):
// logged at error level and counted, and with OnMasterReset "hold" the slave
// keeps its data until ConfirmMasterReset. Pub/sub is only the fast
// path: every applier also polls the master's position.
//
// # Several proxies
//
// Every proxy runs an applier per slave, but only the one holding the slave's
// lease (syncproxy:lease on the slave, renewed at every check, lease.go) applies;
// the others follow the slave's position and take over when the lease lapses.
// A proxy that holds no lease reads no backlog and, unless its clients need the
// stream, is not even subscribed to the sync channel (subscriber.go: standby): it
// reads the slaves' positions at each check and when its reads need a newer one
// (lease.go).
// The lease saves work; safety comes from the applier's WATCHed position check. A
// slave is emptied only by the applier holding its resync lock
// (syncproxy:resync), which every proxy's appliers see, taking the slave out of
// their read sets, and only if the slave's position is still the one the
// decision was made on, checked atomically on the slave (resync.go).
//
// # Evictions
//
// Keys the master evicts (maxmemory) are deleted on the slaves in stream order:
// the evictor (evict.go) follows the master's "evicted" keyevent notifications,
// which it enables (and restores on exit), and runs for each batch a script that,
// atomically on the master, appends a DEL of the keys the master still lacks as a
// sync message. A key written again before that is kept.
//
// # Checking
//
// Check compares slaves with the master key by key (SCAN, paced), independently
// of any running Replicator. A differing key is read again until the master's
// reads around the slave's agree and the slave's position lies between them, so
// writes in flight are not reported; with Repair it copies differing keys with a
// slave-side script that checks that same condition atomically with the RESTORE.
//
// # Concurrency
//
// Replicator.Start runs the subscriber and the appliers, each in one goroutine
// that owns its connections; the subscriber also runs a pinger that owns the
// sending side of its connection, and a backlog reader that owns a second
// connection and hands the appliers what it reads. The evictor runs in one
// more goroutine that owns its subscription; its worker owns the connection that
// runs the eviction script, and sends the pings and the fences an applier asks
// for before it takes a new epoch for a master reset (bridge.go). Close cancels them all and waits; it is safe to
// call twice. AddSlave starts one more applier and RemoveSlave stops one and
// waits for it; the subscriber hands messages to a snapshot of the appliers.
// Moved hands out a channel that the next change of an applier's position or
// state closes: the proxy's waiting reads and WAIT block on it instead of polling.
// The master the loops use belongs to a generation: SetMaster (a Sentinel
// failover) starts a new one, which ends every session on the old master — they
// registered with it — and waits for them; messages received from the old
// master carry its generation, and appliers drop them.
package replicate
