package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// fatalTB stands in for the test when the code under test is expected to fail it: it
// records the Fatal message and ends the goroutine, as testing.T ends a test.
type fatalTB struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (f *fatalTB) Fatal(args ...interface{}) { f.fail(fmt.Sprint(args...)) }

func (f *fatalTB) Fatalf(format string, args ...interface{}) { f.fail(fmt.Sprintf(format, args...)) }

func (f *fatalTB) fail(msg string) {
	f.mu.Lock()
	f.msg = msg
	f.mu.Unlock()
	runtime.Goexit()
}

// expectFatal runs fn on its own goroutine and returns the message it failed with; the
// test fails if fn returns normally.
func expectFatal(t *testing.T, fn func(tb testing.TB)) string {
	t.Helper()
	f := &fatalTB{TB: t}
	returned := make(chan bool)
	go func() {
		ok := false
		defer func() { returned <- ok }()
		fn(f)
		ok = true
	}()
	if <-returned {
		t.Fatal("expected a fatal failure, got none")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}

// mustDiff is Diff failing the test on error.
func mustDiff(t *testing.T, master, slave *Server) []string {
	t.Helper()
	diffs, err := Diff(master.Addr, slave.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return diffs
}

// selectDB returns a connection to s with db selected.
func selectDB(t *testing.T, s *Server, db int) redis.Conn {
	t.Helper()
	c := s.Dial(t)
	if _, err := c.Do("SELECT", db); err != nil {
		t.Fatal(err)
	}
	return c
}

// mustDo runs a command on c, failing the test on any error.
func mustDo(t *testing.T, c redis.Conn, cmd string, args ...interface{}) interface{} {
	t.Helper()
	reply, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", cmd, args, err)
	}
	return reply
}

func TestStartDoInfo(t *testing.T) {
	t.Parallel()
	s := Start(t, "--maxmemory", "12mb")
	if want := "127.0.0.1:" + strconv.Itoa(s.Port); s.Addr != want {
		t.Errorf("Addr = %q, want %q", s.Addr, want)
	}
	if got := s.Info(t, "server", "tcp_port"); got != strconv.Itoa(s.Port) {
		t.Errorf("tcp_port = %q, want %d", got, s.Port)
	}
	if got, _ := redis.String(s.Do(t, "SET", "k", "v"), nil); got != "OK" {
		t.Errorf("SET = %q", got)
	}
	if got, _ := redis.String(s.Do(t, "GET", "k"), nil); got != "v" {
		t.Errorf("GET = %q", got)
	}
	err, ok := s.Do(t, "LPUSH", "k", "x").(redis.Error)
	if !ok || !strings.HasPrefix(string(err), "WRONGTYPE ") {
		t.Errorf("LPUSH on a string = %#v, want a WRONGTYPE redis.Error", err)
	}
	cfg, _ := redis.Strings(s.Do(t, "CONFIG", "GET", "maxmemory"), nil)
	if len(cfg) != 2 || cfg[1] != strconv.Itoa(12<<20) {
		t.Errorf("extra argument not applied: CONFIG GET maxmemory = %q", cfg)
	}
	for _, param := range []string{"save", "appendonly", "enable-debug-command", "bind"} {
		cfg, _ := redis.Strings(s.Do(t, "CONFIG", "GET", param), nil)
		t.Logf("%s = %q", param, cfg)
	}
	if got, _ := redis.String(s.Dial(t).Do("PING")); got != "PONG" {
		t.Errorf("PING on Dial = %q", got)
	}
	if !s.Running() {
		t.Error("Running() = false for a started server")
	}
}

func TestStartRequirePass(t *testing.T) {
	t.Parallel()
	s := Start(t, "--requirepass", "secret")
	err, ok := s.Do(t, "PING").(redis.Error)
	if !ok || !strings.HasPrefix(string(err), "NOAUTH ") {
		t.Errorf("PING without AUTH = %#v, want a NOAUTH redis.Error", err)
	}
	s.Restart(t)
	s.Stop(t)
}

func TestStartN(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 3)
	seen := map[int]bool{}
	for _, s := range servers {
		if seen[s.Port] {
			t.Errorf("port %d used twice", s.Port)
		}
		seen[s.Port] = true
		if got := s.Info(t, "server", "tcp_port"); got != strconv.Itoa(s.Port) {
			t.Errorf("server %s answers as port %s", s.Addr, got)
		}
	}
}

// TestStartMissingBinary cannot be parallel: it changes PATH.
func TestStartMissingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	msg := expectFatal(t, func(tb testing.TB) { Start(tb) })
	if msg != "redis-server not found: run `make test`, which installs it" {
		t.Errorf("message = %q", msg)
	}
}

func TestStartBadArgument(t *testing.T) {
	t.Parallel()
	msg := expectFatal(t, func(tb testing.TB) { Start(tb, "--no-such-directive", "x") })
	if !strings.Contains(msg, "did not start") || !strings.Contains(msg, "Bad directive") {
		t.Errorf("message lacks the cause or the log tail:\n%s", msg)
	}
}

func TestRestartStopKill(t *testing.T) {
	t.Parallel()
	s := Start(t)
	addr, port := s.Addr, s.Port
	pid := s.Info(t, "server", "process_id")
	s.Do(t, "SET", "k", "v")

	s.Restart(t)
	if s.Addr != addr || s.Port != port {
		t.Fatalf("restarted on %s, want %s", s.Addr, addr)
	}
	if got := s.Info(t, "server", "process_id"); got == pid {
		t.Errorf("same process %s after Restart", got)
	}
	if got := s.Do(t, "GET", "k"); got != nil {
		t.Errorf("GET k after Restart = %q, want nil: data must not survive", got)
	}

	s.Stop(t)
	s.Stop(t) // a no-op
	if s.Running() {
		t.Error("Running() after Stop")
	}
	msg := expectFatal(t, func(tb testing.TB) { s.Do(tb, "PING") })
	if !strings.Contains(msg, "connection refused") {
		t.Errorf("Do on a stopped server: %q", msg)
	}
	s.Restart(t)
	s.Do(t, "SET", "k", "v2")

	s.Kill(t)
	if s.Running() {
		t.Error("Running() after Kill")
	}
	s.Restart(t)
	if got := s.Do(t, "DBSIZE"); got != int64(0) {
		t.Errorf("DBSIZE after Kill and Restart = %v", got)
	}

	// A server that ends by itself is noticed, and restarts.
	c := DialRaw(t, s.Addr)
	c.Send("SHUTDOWN", "NOSAVE")
	c.Flush()
	CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if s.Running() {
			return errors.New("still running after SHUTDOWN")
		}
		return nil
	})
	s.Restart(t)
	if got, _ := redis.String(s.Do(t, "PING"), nil); got != "PONG" {
		t.Errorf("PING after SHUTDOWN and Restart = %q", got)
	}
}

func TestRestartPortTaken(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.Stop(t)
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	msg := expectFatal(t, func(tb testing.TB) { s.Restart(tb) })
	if !strings.Contains(msg, "port already in use") || !strings.Contains(msg, "Address already in use") {
		t.Errorf("Restart on a taken port:\n%s", msg)
	}
	ln.Close()
	s.Restart(t)
	s.Do(t, "PING")
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.Pause(t)
	c := DialRaw(t, s.Addr) // the kernel still accepts connections
	c.SetTimeout(200 * time.Millisecond)
	c.Send("PING")
	c.Flush()
	var nerr net.Error
	if frame, err := c.TryRead(); !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Fatalf("a paused server answered: %q, %v", frame, err)
	}
	s.Resume(t)
	c.SetTimeout(10 * time.Second)
	if got := string(c.Read()); got != "+PONG\r\n" {
		t.Errorf("PING sent while paused, after Resume = %q", got)
	}
}

// TestCleanup checks that a server's processes end with its test, even when paused.
func TestCleanup(t *testing.T) {
	t.Parallel()
	var s *Server
	var pid int
	t.Run("inner", func(t *testing.T) {
		s = Start(t)
		pid, _ = strconv.Atoi(s.Info(t, "server", "process_id"))
		s.Pause(t)
	})
	if s.Running() {
		t.Error("Running() after its test ended")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists: kill 0 = %v", pid, err)
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	ln.Close()
}

func TestCheckFor(t *testing.T) {
	t.Parallel()
	calls := 0
	CheckFor(t, 10*time.Second, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}

	msg := expectFatal(t, func(tb testing.TB) {
		n := 0
		CheckFor(tb, 50*time.Millisecond, 5*time.Millisecond, func() error {
			n++
			return fmt.Errorf("not yet (%d)", n)
		})
	})
	if !strings.Contains(msg, "condition not met after 50ms: not yet (") {
		t.Errorf("timeout message = %q", msg)
	}
}

// writeAll writes the same data, of every type, with and without expire, in several
// databases.
func writeAll(t *testing.T, s *Server, expireAt int64) {
	t.Helper()
	c0 := selectDB(t, s, 0)
	mustDo(t, c0, "SET", "str", "value")
	mustDo(t, c0, "SET", "ttl", "x", "PXAT", expireAt)
	mustDo(t, c0, "RPUSH", "list", "a", "b", "c")
	mustDo(t, c0, "SADD", "set", "a", "b")
	mustDo(t, c0, "ZADD", "zset", 1, "a", 2.5, "b")
	mustDo(t, c0, "HSET", "hash", "f", "v", "g", "w")
	mustDo(t, c0, "XADD", "stream", "1-1", "f", "v")
	mustDo(t, c0, "SET", "bin\x00\xff", "\x00\r\n")
	c7 := selectDB(t, s, 7)
	mustDo(t, c7, "SET", "str", "other db")
	mustDo(t, c7, "HSET", "hash7", "f", "v")
	mustDo(t, c7, "PEXPIREAT", "hash7", expireAt)
	c15 := selectDB(t, s, 15)
	mustDo(t, c15, "SET", "last", "db")
}

func TestDiff(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 2)
	m, s := servers[0], servers[1]
	if diffs := mustDiff(t, m, s); len(diffs) != 0 {
		t.Fatalf("empty servers differ: %q", diffs)
	}
	expireAt := time.Now().Add(time.Hour).UnixMilli()
	writeAll(t, m, expireAt)
	writeAll(t, s, expireAt)
	if diffs := mustDiff(t, m, s); len(diffs) != 0 {
		t.Fatalf("identical servers differ: %q", diffs)
	}
	WaitConverged(t, 10*time.Second, m, s)

	m0, s0 := selectDB(t, m, 0), selectDB(t, s, 0)
	m3, s7 := selectDB(t, m, 3), selectDB(t, s, 7)
	mustDo(t, m0, "SET", "only-master", "1")
	mustDo(t, s0, "RPUSH", "only-slave", "x", "y")
	mustDo(t, s0, "SET", "str", "VALUE")
	mustDo(t, s0, "PEXPIREAT", "ttl", expireAt+1)
	mustDo(t, s0, "PERSIST", "list")
	mustDo(t, m0, "PEXPIREAT", "list", expireAt)
	mustDo(t, s0, "HSET", "hash", "f", "changed")
	mustDo(t, s0, "DEL", "set")
	mustDo(t, s0, "SADD", "set", "b", "a") // same members, other order: equal
	mustDo(t, m3, "SET", "db3", "only on master")
	mustDo(t, s7, "SET", "str", "other DB")
	// The proxy's own keys are never compared.
	mustDo(t, m0, "SET", "syncproxy:seq", "42")
	mustDo(t, s0, "SET", "syncproxy:seq", "41")
	mustDo(t, m3, "SET", "syncproxy:only-master", "1")

	want := []string{
		`db 0: key "only-master" only on master: string "1"`,
		`db 0: key "only-slave" only on slave: list(2) ["x" "y"]`,
		`db 0: key "hash" value differs: master hash(2) ["f" "v" "g" "w"], slave hash(2) ["f" "changed" "g" "w"]`,
		fmt.Sprintf(`db 0: key "list" expire differs: master PEXPIRETIME %d, slave -1`, expireAt),
		`db 0: key "str" value differs: master string "value", slave string "VALUE"`,
		fmt.Sprintf(`db 0: key "ttl" expire differs: master PEXPIRETIME %d, slave %d`, expireAt, expireAt+1),
		`db 3: key "db3" only on master: string "only on master"`,
		`db 7: key "str" value differs: master string "other db", slave string "other DB"`,
	}
	got := mustDiff(t, m, s)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Diff =\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}

	// WaitConverged reports the differences when they remain.
	msg := expectFatal(t, func(tb testing.TB) { WaitConverged(tb, 100*time.Millisecond, m, s) })
	if !strings.Contains(msg, "differs from master") || !strings.Contains(msg, want[0]) {
		t.Errorf("WaitConverged failure message:\n%s", msg)
	}

	mustDo(t, m0, "DEL", "only-master")
	mustDo(t, s0, "DEL", "only-slave")
	mustDo(t, s0, "SET", "str", "value", "KEEPTTL")
	mustDo(t, s0, "PEXPIREAT", "ttl", expireAt)
	mustDo(t, s0, "PEXPIREAT", "list", expireAt)
	mustDo(t, s0, "HSET", "hash", "f", "v")
	mustDo(t, m3, "DEL", "db3")
	mustDo(t, s7, "SET", "str", "other db")
	if diffs := mustDiff(t, m, s); len(diffs) != 0 {
		t.Errorf("servers made equal still differ: %q", diffs)
	}
}

func TestDiffBounded(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 2)
	c := selectDB(t, servers[0], 5)
	for i := 0; i < MaxDiffs+10; i++ {
		c.Send("SET", fmt.Sprintf("k%02d", i), i)
	}
	mustDo(t, c, "")
	got := mustDiff(t, servers[0], servers[1])
	if len(got) != MaxDiffs+1 || got[MaxDiffs] != "... and 10 more differences" {
		t.Errorf("Diff returned %d lines, last %q", len(got), got[len(got)-1])
	}
	if got[0] != `db 5: key "k00" only on master: string "0"` {
		t.Errorf("first difference = %q", got[0])
	}
}

func TestDiffManyKeys(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 2)
	for _, s := range servers {
		c := s.Dial(t)
		for i := 0; i < 3*keyBatch+7; i++ {
			c.Send("SET", "key:"+strconv.Itoa(i), i)
		}
		mustDo(t, c, "")
	}
	if diffs := mustDiff(t, servers[0], servers[1]); len(diffs) != 0 {
		t.Fatalf("equal servers differ: %q", diffs)
	}
	servers[1].Do(t, "SET", "key:1000", "changed")
	want := `db 0: key "key:1000" value differs: master string "1000", slave string "changed"`
	if diffs := mustDiff(t, servers[0], servers[1]); len(diffs) != 1 || diffs[0] != want {
		t.Errorf("Diff = %q", diffs)
	}
}

// TestWaitConvergedReplica lets Redis' own replication converge while WaitConverged
// polls: a real asynchronous catch-up.
func TestWaitConvergedReplica(t *testing.T) {
	t.Parallel()
	m := Start(t, "--repl-diskless-sync-delay", "0")
	writeAll(t, m, time.Now().Add(time.Hour).UnixMilli())
	r := Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(m.Port))
	WaitConverged(t, 10*time.Second, m, r)
	if got := r.Info(t, "replication", "role"); got != "slave" {
		t.Errorf("role = %q", got)
	}
}

func TestDiffErrors(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 2)
	noDebug := Start(t, "--enable-debug-command", "no")
	for _, s := range []*Server{servers[0], noDebug} {
		s.Do(t, "SET", "k", "v")
	}
	if _, err := Diff(servers[0].Addr, noDebug.Addr); err == nil || !strings.Contains(err.Error(), "DEBUG") {
		t.Errorf("Diff with DEBUG disabled: err = %v", err)
	}
	servers[1].Stop(t)
	if _, err := Diff(servers[0].Addr, servers[1].Addr); err == nil || !strings.Contains(err.Error(), "slave") {
		t.Errorf("Diff with a stopped slave: err = %v", err)
	}
}

func TestRawConnFrames(t *testing.T) {
	t.Parallel()
	s := Start(t)
	c := DialRaw(t, s.Addr)
	big := strings.Repeat("x", 100000)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"SET", "k", "v"}, "+OK\r\n"},
		{[]string{"GET", "k"}, "$1\r\nv\r\n"},
		{[]string{"GET", "missing"}, "$-1\r\n"},
		{[]string{"SET", "empty", ""}, "+OK\r\n"},
		{[]string{"GET", "empty"}, "$0\r\n\r\n"},
		{[]string{"SET", "crlf", "a\r\nb"}, "+OK\r\n"},
		{[]string{"GET", "crlf"}, "$4\r\na\r\nb\r\n"},
		{[]string{"SET", "big", big}, "+OK\r\n"},
		{[]string{"GET", "big"}, "$100000\r\n" + big + "\r\n"},
		{[]string{"INCR", "n"}, ":1\r\n"},
		{[]string{"INCRBY", "n", "-5"}, ":-4\r\n"},
		{[]string{"LPUSH", "k", "x"}, "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"},
		{[]string{"NOSUCHCMD", "a"}, "-ERR unknown command 'NOSUCHCMD', with args beginning with: 'a' \r\n"},
		{[]string{"RPUSH", "l", "a", "bb", ""}, ":3\r\n"},
		{[]string{"LRANGE", "l", "0", "-1"}, "*3\r\n$1\r\na\r\n$2\r\nbb\r\n$0\r\n\r\n"},
		{[]string{"LRANGE", "missing", "0", "-1"}, "*0\r\n"},
		{[]string{"XADD", "st", "1-1", "f", "v"}, "$3\r\n1-1\r\n"},
		{[]string{"XRANGE", "st", "-", "+"}, "*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{[]string{"BLPOP", "missing", "0.01"}, "*-1\r\n"},
		{[]string{"EVAL", "return {1, {2, {3, {}}}, 'x'}", "0"}, "*3\r\n:1\r\n*2\r\n:2\r\n*2\r\n:3\r\n*0\r\n$1\r\nx\r\n"},
		{[]string{"EVAL", "return redis.error_reply('MY custom error')", "0"}, "-MY custom error\r\n"},
		{[]string{"ZADD", "z", "1.5", "m"}, ":1\r\n"},
		{[]string{"ZRANGE", "z", "0", "-1", "WITHSCORES"}, "*2\r\n$1\r\nm\r\n$3\r\n1.5\r\n"},
	}
	for _, tt := range tests {
		if got := string(c.Do(tt.args...)); got != tt.want {
			t.Errorf("%q = %q, want %q", tt.args, got, tt.want)
		}
	}

	// Pipelined: three commands, one flush, three frames in order.
	c.Send("PING")
	c.Send("ECHO", "hi")
	c.Send("GET", "missing")
	c.Flush()
	for _, want := range []string{"+PONG\r\n", "$2\r\nhi\r\n", "$-1\r\n"} {
		if got := string(c.Read()); got != want {
			t.Errorf("pipelined reply = %q, want %q", got, want)
		}
	}

	// Inline commands.
	c.WriteRaw([]byte("PING\r\nSET inline 1\r\nGET inline\r\n"))
	for _, want := range []string{"+PONG\r\n", "+OK\r\n", "$1\r\n1\r\n"} {
		if got := string(c.Read()); got != want {
			t.Errorf("inline reply = %q, want %q", got, want)
		}
	}

	// Malformed input: Redis answers a protocol error and closes the connection.
	c.WriteRaw([]byte("*1\r\n$x\r\n"))
	if got := string(c.Read()); got != "-ERR Protocol error: invalid bulk length\r\n" {
		t.Errorf("reply to a bad bulk length = %q", got)
	}
	if frame, err := c.TryRead(); !errors.Is(err, io.EOF) {
		t.Errorf("after a protocol error: %q, %v; want io.EOF", frame, err)
	}
}

func TestRawConnRESP3(t *testing.T) {
	t.Parallel()
	s := Start(t)
	c := DialRaw(t, s.Addr)
	if hello := c.Do("HELLO", "3"); !strings.HasPrefix(string(hello), "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n") {
		t.Fatalf("HELLO 3 = %q", hello)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"GET", "missing"}, "_\r\n"},
		{[]string{"BLPOP", "missing", "0.01"}, "_\r\n"},
		{[]string{"HSET", "h", "f", "v"}, ":1\r\n"},
		{[]string{"HGETALL", "h"}, "%1\r\n$1\r\nf\r\n$1\r\nv\r\n"},
		{[]string{"SADD", "s", "a"}, ":1\r\n"},
		{[]string{"SMEMBERS", "s"}, "~1\r\n$1\r\na\r\n"},
		{[]string{"ZADD", "z", "1.5", "m"}, ":1\r\n"},
		{[]string{"ZSCORE", "z", "m"}, ",1.5\r\n"},
		{[]string{"DEBUG", "PROTOCOL", "true"}, "#t\r\n"},
		{[]string{"DEBUG", "PROTOCOL", "null"}, "_\r\n"},
		{[]string{"DEBUG", "PROTOCOL", "bignum"}, "(1234567999999999999999999999999999999\r\n"},
		{[]string{"DEBUG", "PROTOCOL", "verbatim"}, "=29\r\ntxt:This is a verbatim\nstring\r\n"},
		{[]string{"DEBUG", "PROTOCOL", "attrib"}, "|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n$39\r\nSome real reply following the attribute\r\n"},
		{[]string{"SUBSCRIBE", "ch"}, ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"},
	}
	for _, tt := range tests {
		if got := string(c.Do(tt.args...)); got != tt.want {
			t.Errorf("%q = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestReadFrame(t *testing.T) {
	t.Parallel()
	frames := []string{
		"+OK\r\n", "-ERR x\r\n", ":-12\r\n", "$-1\r\n", "$0\r\n\r\n", "$3\r\na\nb\r\n",
		"*-1\r\n", "*0\r\n", "*2\r\n*1\r\n:1\r\n$1\r\nx\r\n", "_\r\n", ",1.5\r\n", "#f\r\n",
		"(12\r\n", "!3\r\nERR\r\n", "=7\r\ntxt:abc\r\n", "%1\r\n+k\r\n~1\r\n:1\r\n", ">1\r\n+p\r\n",
		"|1\r\n+a\r\n+b\r\n*1\r\n+c\r\n", "+" + strings.Repeat("y", 10000) + "\r\n",
	}
	r := bufio.NewReader(strings.NewReader(strings.Join(frames, "")))
	for _, want := range frames {
		got, err := ReadFrame(r)
		if err != nil || string(got) != want {
			t.Errorf("ReadFrame = %q, %v; want %q", got, err, want)
		}
	}
	if got, err := ReadFrame(r); err != io.EOF {
		t.Errorf("ReadFrame at end = %q, %v; want io.EOF", got, err)
	}

	bad := []string{
		"", "+OK", "+OK\n", "\r\n", "?1\r\n", "$x\r\n", "$-2\r\n", "$3\r\nab", "$2\r\nabcd",
		"*2\r\n:1\r\n", "*-2\r\n", "$?\r\n", strings.Repeat("*1\r\n", maxDepth+2),
	}
	for _, in := range bad {
		if got, err := ReadFrame(bufio.NewReader(strings.NewReader(in))); err == nil {
			t.Errorf("ReadFrame(%.40q) = %q, want an error", in, got)
		}
	}
}

func TestStartTLS(t *testing.T) {
	t.Parallel()
	certs := NewCerts(t)
	s := StartWith(t, Options{TLS: certs, Args: []string{"--requirepass", "secret"}})
	if err, ok := s.Do(t, "PING").(redis.Error); !ok || !strings.HasPrefix(string(err), "NOAUTH ") {
		t.Errorf("PING over TLS without AUTH = %#v, want a NOAUTH redis.Error", err)
	}
	if c, err := dial(s.Addr, probeTimeout); err == nil {
		if _, err := c.Do("PING"); err == nil {
			t.Error("a plain TCP PING to a TLS port got an answer")
		}
		c.Close()
	}
	c := DialRawTLS(t, s.Addr, certs.ClientTLS(false))
	if got := string(c.Do("AUTH", "secret")); got != "+OK\r\n" {
		t.Errorf("AUTH over TLS = %q", got)
	}
	if diffs, err := DiffServers(s, s); err != nil || len(diffs) > 0 {
		t.Errorf("DiffServers of a TLS server with itself: %v %v", diffs, err)
	}
	s.Restart(t)
	if err, ok := s.Do(t, "PING").(redis.Error); !ok {
		t.Errorf("PING after Restart = %#v", err)
	}
}
