package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestCheckCommand runs `syncproxy check` against slaves replicated by a proxy:
// equal, then with differences planted on a slave (status 1, the keys listed),
// then --repair while clients keep writing through the proxy (status 0), after
// which the slaves match the master.
func TestCheckCommand(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)

	c, err := redis.Dial("tcp", addr, redis.DialReadTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cmd := range [][]interface{}{
		{"SET", "user:1", "alice"},
		{"SET", "session", "s", "EX", 3600},
		{"HSET", "h", "a", 1, "b", 2},
		{"RPUSH", "l", "x", "y"},
		{"SADD", "s", "m1", "m2"},
		{"ZADD", "z", 1, "one"},
		{"XADD", "stream", "*", "f", "v"},
		{"SET", "bin\x00key\r\n", "\xff"},
		{"SELECT", 2},
		{"INCR", "counter"},
		{"SELECT", 0},
	} {
		if _, err := c.Do(cmd[0].(string), cmd[1:]...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)

	args := []string{"check", "--master", master.Addr, "--slaves", slaves[0].Addr + "," + slaves[1].Addr}
	code, stdout, stderr := runBinary(t, args...)
	if code != 0 || strings.Count(stdout, "no differences") != 2 {
		t.Fatalf("equal slaves: status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	sc := slaves[1].Dial(t)
	for _, cmd := range [][]interface{}{
		{"SET", "user:1", "mallory"},
		{"SET", "stray", "1"},
		{"SELECT", 2},
		{"DEL", "counter"},
	} {
		if _, err := sc.Do(cmd[0].(string), cmd[1:]...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	sc.Close()

	// Writes go on meanwhile: keys in flight are read again, not reported.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w, err := redis.Dial("tcp", addr, redis.DialReadTimeout(5*time.Second))
		if err != nil {
			t.Error(err)
			return
		}
		defer w.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Do("SET", fmt.Sprintf("load:%d", i%50), i); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	stopWriter := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopWriter()

	want := []string{
		`slave-2 db0 "user:1" value: string values differ`,
		`slave-2 db0 "stray" extra: only on the slave (string)`,
		`slave-2 db2 "counter" missing: only on the master (string)`,
	}
	code, stdout, stderr = runBinary(t, args...)
	if code != 1 || strings.Count(stdout, "\n") != len(want)+2 {
		t.Errorf("planted differences: status %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stdout, w+"\n") {
			t.Errorf("planted differences: %q missing from stdout:\n%s", w, stdout)
		}
	}

	t.Logf("check:\n%s", stdout)
	code, stdout, stderr = runBinary(t, append(args, "--repair")...)
	t.Logf("check --repair:\n%s", stdout)
	if code != 0 || strings.Count(stdout, "(repaired)") != len(want) {
		t.Errorf("--repair: status %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stdout, w+" (repaired)\n") {
			t.Errorf("--repair: %q missing from stdout:\n%s", w+" (repaired)", stdout)
		}
	}

	stopWriter()
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if code, stdout, stderr = runBinary(t, args...); code != 0 {
		t.Errorf("after the repair: status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestCheckCommandUsage: --help, bad flags and unreachable servers.
func TestCheckCommandUsage(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runBinary(t, "check", "--help")
	if code != 0 || !strings.Contains(stdout, "syncproxy check") || !strings.Contains(stdout, "-repair") {
		t.Errorf("check --help: status %d, stdout:\n%s", code, stdout)
	}
	for _, args := range [][]string{
		{"check", "--bogus"},
		{"check", "--master", "127.0.0.1:1"},
		{"check", "--master", "127.0.0.1:1", "--slaves", "nohostport"},
		{"check", "--master", "127.0.0.1:1", "--slaves", "127.0.0.1:1"},
		{"check", "--master", "127.0.0.1:1", "--slaves", "127.0.0.1:2", "--dbs", "3-1"},
		{"check", "--master", "127.0.0.1:1", "--slaves", "127.0.0.1:2", "--rate", "-1"},
		{"check", "--master", "127.0.0.1:1", "--slaves", "127.0.0.1:2"}, // nothing listens
		{"check", "--master", "127.0.0.1:1", "--slaves", "127.0.0.1:2", "extra"},
	} {
		code, stdout, stderr := runBinary(t, args...)
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if code != 2 || len(lines) != 1 || lines[0] == "" || stdout != "" {
			t.Errorf("syncproxy %s: status %d, stdout %q, stderr %q; want status 2 and one line on stderr",
				strings.Join(args, " "), code, stdout, stderr)
		} else {
			t.Logf("syncproxy %s: %s", strings.Join(args, " "), lines[0])
		}
	}
}
