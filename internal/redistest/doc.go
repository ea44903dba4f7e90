// Package redistest runs real redis-server processes for the tests of syncproxy.
//
// Every test of the project talks to genuine Redis rather than to a fake, so that the
// proxy is checked against the behaviour it has to reproduce byte for byte.
//
// # Servers
//
// Start launches one redis-server on a free loopback port, in a directory taken from
// t.TempDir, with persistence off (--save "" --appendonly no) and DEBUG allowed from
// loopback (needed by Diff). It returns once the server answers PING and reports the
// process id it was started with, so a test never talks to another test's server that
// happened to grab the same port. StartN starts several. A Server can be stopped,
// killed, paused (SIGSTOP), resumed and restarted on the same port; a restarted server
// is empty. If redis-server is not on PATH, Start fails the test and says how to get it.
//
// StartWith takes Options: a server given Certs (NewCerts writes a CA, a server and
// a client certificate to a temporary directory) accepts only TLS on its port, and
// the package's own connections use TLS with the client certificate.
//
// Dial and Do give redigo connections with timeouts; DialRaw gives a RawConn, a minimal
// RESP client that returns the exact bytes of each reply frame, for differential tests
// that compare direct Redis with the proxy.
//
// # Comparing servers
//
// Diff compares a master with one slave, database by database (0..15): the key sets,
// obtained with SCAN, and for every key DEBUG DIGEST-VALUE and PEXPIRETIME. Keys whose
// name starts with "syncproxy:" are the proxy's own bookkeeping and are ignored.
// DiffServers does the same for two Servers, over TLS and with their --requirepass
// when they have them; WaitConverged polls it until the slaves match the master. CheckFor is the general
// polling helper: tests wait for a condition, never sleep and hope.
//
// # Concurrency
//
// Every process started by this package is stopped, and waited for, by a t.Cleanup
// registered when it starts (SHUTDOWN NOSAVE, which is immediate, and SIGTERM, then
// SIGKILL after a bound); a paused server is resumed first. Each running process has one goroutine, owned by its Server, that
// waits for it to exit; it ends when the process does. On Linux a server also receives
// SIGKILL if the test binary dies without running its cleanups. Connections from Dial,
// DialRaw and Do are closed at t.Cleanup (Do closes its own at once). Server methods
// may be called from several goroutines, but they fail the test with t.Fatal, so call
// them from the test goroutine. A RawConn is not safe for concurrent use.
//
// The package needs a Unix system: it signals processes with SIGSTOP and SIGCONT.
package redistest
