package proxy

import "strings"

// Error replies sent to clients. Where Redis has a reply for the situation, these
// use its exact wording, since clients parse the prefixes; the proxy's own
// conditions say "syncproxy".
const (
	// msgSyntax is Redis' generic syntax error.
	msgSyntax = "ERR syntax error"
	// msgNotInteger is Redis' reply to a non-integer where an integer is expected.
	msgNotInteger = "ERR value is not an integer or out of range"
	// msgDBRange is Redis' reply to SELECT of a DB that does not exist.
	msgDBRange = "ERR DB index is out of range"
	// msgNoProto is Redis' reply to HELLO with a protocol it does not speak.
	msgNoProto = "NOPROTO unsupported protocol version"
	// msgProtoNotInt is Redis' reply to HELLO with a non-numeric protocol.
	msgProtoNotInt = "ERR Protocol version is not an integer or out of range"
	// msgAuthNoPassword is Redis' reply to AUTH when no password is configured.
	msgAuthNoPassword = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
	// msgNoAuth is Redis' reply before authentication.
	msgNoAuth = "NOAUTH Authentication required."
	// msgWrongPass is Redis' reply to a wrong password.
	msgWrongPass = "WRONGPASS invalid username-password pair or user is disabled."
	// msgHelloNoAuth is Redis' reply to HELLO without AUTH before authentication.
	msgHelloNoAuth = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
	// msgMaxClients is Redis' reply when maxclients is reached.
	msgMaxClients = "ERR max number of clients reached"
	// msgClientName is Redis' reply to CLIENT SETNAME with a bad name.
	msgClientName = "ERR Client names cannot contain spaces, newlines or special characters."
	// msgReservedKey refuses reads and writes of the replication metadata.
	msgReservedKey = "ERR syncproxy: keys starting with 'syncproxy:' are reserved for replication metadata"
	// msgSyncChannel refuses PUBLISH to the sync channel.
	msgSyncChannel = "ERR syncproxy: the sync channel is reserved for replication"
	// msgNoSlave: read policy slave and no slave may serve the read.
	msgNoSlave = "ERR syncproxy: no slave is eligible for this read (read policy slave)"
	// msgSwapDB0 refuses SWAPDB of DB 0.
	msgSwapDB0 = "ERR syncproxy: SWAPDB with DB 0 is refused: DB 0 holds the replication metadata"
	// msgConfigSet refuses CONFIG SET unless it may be broadcast.
	msgConfigSet = "ERR syncproxy: CONFIG SET would change one backend only; start syncproxy with --config-set broadcast to apply it to the master and every slave"
	// msgTooManyArgs refuses writes too large for the replication script that
	// cannot be replicated in parts (replicate.SplitOf).
	msgTooManyArgs = "ERR syncproxy: too many arguments for a replicated write (more than 7900 only for " +
		"DEL, UNLINK, MSET, SADD, SREM, HSET, HMSET, HDEL, RPUSH, LPUSH, RPUSHX, LPUSHX, ZADD, ZREM, " +
		"GEOADD, PFADD, XDEL, XACK; split the command)"
)

// errWrongArity is Redis 7's wrong-arity error; name is the full command name
// ("get", "config|get").
func errWrongArity(name string) string {
	return "ERR wrong number of arguments for '" + name + "' command"
}

// errUnknownCommand is Redis 7's unknown-command error: the name and the first
// arguments, quoted, as far as 128 bytes of them go.
func errUnknownCommand(args [][]byte) string {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.WriteString(sanitize(args[0], 128))
	b.WriteString("', with args beginning with: ")
	total := 0
	for _, a := range args[1:] {
		if total >= 128 {
			break
		}
		s := sanitize(a, 128-total)
		total += len(a)
		b.WriteString("'")
		b.WriteString(s)
		b.WriteString("' ")
	}
	return b.String()
}

// errDenied refuses a command that would break the topology or bypass replication.
func errDenied(name string) string {
	return "ERR syncproxy: '" + name + "' is not allowed through syncproxy (it would change the topology or bypass replication)"
}

// errNotSupported refuses a command the proxy cannot route yet.
func errNotSupported(name string) string {
	return "ERR syncproxy: '" + name + "' is not supported by this version of syncproxy"
}

// sanitize truncates b to max bytes and replaces CR and LF, which would break the
// error line (Redis does the same).
func sanitize(b []byte, max int) string {
	if len(b) > max {
		b = b[:max]
	}
	s := []byte(string(b))
	for i, c := range s {
		if c == '\r' || c == '\n' {
			s[i] = ' '
		}
	}
	return string(s)
}
