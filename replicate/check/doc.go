// Package check compares slaves with their master key by key, offline: the
// `syncproxy check` tool. For each key it compares existence, type, value (DEBUG
// DIGEST-VALUE, or a hash of the content) and absolute expiry, reading the master
// and each slave atomically (MULTI) with their replication positions, so that a
// key that differs only because a slave is behind is read again rather than
// reported. With Repair, a differing key is copied again (DUMP/RESTORE) in one
// script on the slave that checks the slave's position first.
//
// It uses only replicate's exported names (endpoints, dial options, metadata
// keys).
//
// # Concurrency
//
// Run works in the caller's goroutine and starts none; its connections are
// closed when it returns. OnDiff and OnProgress are called from that goroutine.
package check
