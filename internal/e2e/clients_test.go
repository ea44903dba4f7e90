package e2e

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// toolTimeout bounds each run of redis-cli and redis-benchmark.
const toolTimeout = 3 * time.Minute

// lookTool returns the path of a Redis command-line tool, failing the test (not
// skipping it) when it is missing: `make test` installs it.
func lookTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: run `make test`, which installs redis-tools", name)
	}
	return p
}

// runTool runs a tool with stdin and returns its combined output; it fails the test
// unless it exits 0 within toolTimeout.
func runTool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, lookTool(t, name), args...)
	c.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	c.Stdout = &out
	c.Stderr = &out
	start := time.Now()
	err := c.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within %v; output:\n%s", name, strings.Join(args, " "), toolTimeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s %s: %v; output:\n%s", name, strings.Join(args, " "), err, out.String())
	}
	t.Logf("%s %s: %v", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return out.String()
}

func portOf(t testing.TB, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// TestRedisBenchmark runs the real redis-benchmark through the proxy: no errors,
// then the slaves converge.
func TestRedisBenchmark(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, srv := startProxy(t, master, slaves...)
	out := runTool(t, "", "redis-benchmark", "-h", "127.0.0.1", "-p", portOf(t, addr),
		"-t", "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,zadd,lrange_100,mset",
		"-n", "20000", "-c", "20", "-q")
	// -q prints progress lines ended by CR and one final line per test.
	var results []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.LastIndexByte(line, '\r'); i >= 0 {
			line = line[i+1:]
		}
		if line = strings.TrimSpace(line); line != "" {
			results = append(results, line)
		}
	}
	t.Logf("redis-benchmark:\n\t%s", strings.Join(results, "\n\t"))
	if strings.Contains(out, "ERR") || strings.Contains(strings.ToLower(out), "error") {
		t.Errorf("redis-benchmark reported errors:\n%s", out)
	}
	for _, test := range []string{"SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD",
		"HSET", "ZADD", "LRANGE_100", "MSET"} {
		found := false
		for _, r := range results {
			if strings.HasPrefix(r, test+": ") || strings.HasPrefix(r, test+" (") {
				found = strings.Contains(r, "requests per second")
			}
		}
		if !found {
			t.Errorf("redis-benchmark printed no result for %s", test)
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	reads := srv.Router().MasterReads.Load()
	for _, sl := range srv.Router().Slaves() {
		t.Logf("%s served %d reads", sl.Backend.Name(), sl.Reads.Load())
		reads += sl.Reads.Load()
	}
	t.Logf("master served %d reads", srv.Router().MasterReads.Load())
	if reads == 0 {
		t.Error("no read was served at all")
	}
}

// TestRedisCli runs the real redis-cli through the proxy, one-shot and interactive
// (commands on stdin); its start-up COMMAND DOCS must not get in the way.
func TestRedisCli(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	port := portOf(t, addr)
	cli := func(stdin string, args ...string) string {
		t.Helper()
		return runTool(t, stdin, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", port}, args...)...)
	}
	expect := func(got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("redis-cli output %q, want %q", got, want)
		}
	}

	expect(cli("", "SET", "greeting", "hello world"), "OK\n")
	expect(cli("", "GET", "greeting"), "hello world\n")
	expect(cli("", "--no-raw", "GET", "greeting"), "\"hello world\"\n")
	expect(cli("", "--no-raw", "GET", "missing"), "(nil)\n")
	expect(cli("", "--no-raw", "INCR", "counter"), "(integer) 1\n")
	expect(cli("", "--no-raw", "RPUSH", "list", "a", "b"), "(integer) 2\n")
	expect(cli("", "--no-raw", "LRANGE", "list", "0", "-1"), "1) \"a\"\n2) \"b\"\n")
	expect(cli("", "--no-raw", "LPUSH", "greeting", "x"),
		"(error) WRONGTYPE Operation against a key holding the wrong kind of value\n")
	expect(cli("", "-n", "3", "SET", "indb3", "v"), "OK\n")
	expect(cli("", "-n", "3", "GET", "indb3"), "v\n")
	expect(cli("", "GET", "indb3"), "\n")
	expect(cli("", "PING"), "PONG\n")

	// Interactive: commands read from stdin, as a user would type them.
	expect(cli("SET a 1\nGET a\nINCR a\nSELECT 2\nGET a\nSET a two\nGET a\nSELECT 0\nGET a\n"),
		"OK\n1\n2\nOK\n\nOK\ntwo\nOK\n2\n")
	expect(cli("SET a 1\nGET a\nGET nothing\nHSET h f v\nHGETALL h\nFOO bar\n", "--no-raw"),
		"OK\n\"1\"\n(nil)\n(integer) 1\n1) \"f\"\n2) \"v\"\n"+
			"(error) ERR unknown command 'FOO', with args beginning with: 'bar' \n")

	// The slaves received the writes made through redis-cli.
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
