package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
	"github.com/syncproxy/syncproxy/router"
)

// slaveAt returns the slave of srv's read set at addr, or nil.
func slaveAt(srv *proxy.Server, addr string) *router.Slave {
	for _, sl := range srv.Router().Slaves() {
		if sl.Backend.Addr() == addr {
			return sl
		}
	}
	return nil
}

// proxyConnections counts the connections to s other than the caller's.
func proxyConnections(t *testing.T, s *redistest.Server) int {
	t.Helper()
	list, err := redis.String(s.Do(t, "CLIENT", "LIST"), nil)
	if err != nil {
		t.Fatalf("CLIENT LIST on %s: %v", s.Addr, err)
	}
	return strings.Count(list, "\n") - 1
}

// reloadOK reloads cfg into srv and fails the test on an error.
func reloadOK(t *testing.T, srv *proxy.Server, cfg proxy.Config) {
	t.Helper()
	if err := srv.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
}

// TestReload changes a running proxy's configuration: slaves added (resynced,
// then serving reads) and removed (no more reads, its goroutines and connections
// gone), weights, the password, a client limit, and a setting that needs a
// restart. It does not run in parallel: it counts the process' goroutines.
func TestReload(t *testing.T) {
	servers := redistest.StartN(t, 4)
	master, s1, s2, s3 := servers[0], servers[1], servers[2], servers[3]
	var logs lockedBuffer
	log := zerolog.New(&logs).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs.String())
		}
	})
	addr, srv := serveProxy(t, log, func(c *proxy.Config) {
		c.ReadYourWrites = false // reads go to the slaves, to count them
		c.RequirePass = "pw-one"
	}, master, s1, s2)
	waitOnline(t, srv)
	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+OK\r\n", "AUTH", "pw-one")
	for i := 0; i < 100; i++ {
		mustReply(t, c, "+OK\r\n", "SET", "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	redistest.WaitConverged(t, convergeTimeout, master, s1, s2)
	// readsOn reads until sl served one more read.
	readsOn := func(sl *router.Slave) {
		t.Helper()
		before := sl.Reads.Load()
		redistest.CheckFor(t, onlineTimeout, poll, func() error {
			mustReply(t, c, string(bulk("7")), "GET", "k7")
			if sl.Reads.Load() == before {
				return fmt.Errorf("%s serves no reads", sl.Backend.Name())
			}
			return nil
		})
	}
	readsOn(slaveAt(srv, s1.Addr))
	readsOn(slaveAt(srv, s2.Addr))
	baseline := runtime.NumGoroutine()

	t.Run("add a slave", func(t *testing.T) {
		cfg := srv.Config()
		cfg.Slaves = append(cfg.Slaves, s3.Addr)
		reloadOK(t, srv, cfg)
		sl := slaveAt(srv, s3.Addr)
		if sl == nil || len(srv.Router().Slaves()) != 3 {
			t.Fatalf("read set after adding %s: %d slaves", s3.Addr, len(srv.Router().Slaves()))
		}
		if name := sl.Backend.Name(); name != "slave-3" {
			t.Errorf("the new slave is named %q, want slave-3", name)
		}
		redistest.WaitConverged(t, convergeTimeout, master, s3)
		waitOnline(t, srv)
		if n := srv.Replicator().Appliers()[2].Resyncs(); n < 1 {
			t.Errorf("the new slave, empty, had %d full resyncs", n)
		}
		readsOn(sl)
		mustReply(t, c, "+OK\r\n", "SET", "after-add", "1")
		redistest.WaitConverged(t, convergeTimeout, master, s1, s2, s3)
	})

	t.Run("remove a slave", func(t *testing.T) {
		removed := slaveAt(srv, s2.Addr)
		if n := proxyConnections(t, s2); n == 0 {
			t.Fatalf("the proxy has no connection to %s before removing it", s2.Addr)
		}
		// A client keeps reading while the slave goes: every read is answered.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var readErr error
		var reads atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := redis.Dial("tcp", addr, redis.DialPassword("pw-one"), redis.DialReadTimeout(5*time.Second))
			if err != nil {
				readErr = err
				return
			}
			defer rc.Close()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := redis.String(rc.Do("GET", "k42"))
				if err != nil || v != "42" {
					readErr = fmt.Errorf("GET k42 during the removal: %q, %v", v, err)
					return
				}
				reads.Add(1)
			}
		}()
		readsFrom := func(n int64) {
			t.Helper()
			redistest.CheckFor(t, onlineTimeout, poll, func() error {
				if reads.Load() < n {
					return fmt.Errorf("the reading client made %d reads", reads.Load())
				}
				return nil
			})
		}
		readsFrom(100)
		cfg := srv.Config()
		cfg.Slaves = []string{s1.Addr, s3.Addr}
		reloadOK(t, srv, cfg)
		readsFrom(reads.Load() + 100)
		close(stop)
		wg.Wait()
		if readErr != nil {
			t.Error(readErr)
		}
		t.Logf("%d reads while the slave was removed", reads.Load())
		if slaveAt(srv, s2.Addr) != nil || len(srv.Router().Slaves()) != 2 {
			t.Fatalf("%s still in the read set", s2.Addr)
		}
		for _, a := range srv.Replicator().Appliers() {
			if a.Addr() == s2.Addr {
				t.Errorf("the applier of %s still runs", s2.Addr)
			}
		}
		before := removed.Reads.Load()
		for i := 0; i < 50; i++ {
			mustReply(t, c, string(bulk("7")), "GET", "k7")
		}
		if n := removed.Reads.Load() - before; n != 0 {
			t.Errorf("the removed slave served %d reads", n)
		}
		info := string(c.Do("INFO", "sync"))
		for _, want := range []string{"sync_slaves:2", "name=slave-1,addr=" + s1.Addr, "name=slave-3,addr=" + s3.Addr} {
			if !strings.Contains(info, want) {
				t.Errorf("INFO lacks %q:\n%s", want, info)
			}
		}
		redistest.CheckFor(t, onlineTimeout, poll, func() error {
			if n := proxyConnections(t, s2); n != 0 {
				return fmt.Errorf("%d connections to the removed slave left", n)
			}
			return nil
		})
		// As many slaves as at the baseline, and the same clients: as many
		// goroutines, or fewer, besides this subtest's own.
		redistest.CheckFor(t, onlineTimeout, poll, func() error {
			if n := runtime.NumGoroutine() - 1; n > baseline {
				return fmt.Errorf("%d goroutines, %d before the slave was added and another removed", n, baseline)
			}
			return nil
		})
	})

	t.Run("weights", func(t *testing.T) {
		cfg := srv.Config()
		cfg.Weights = map[string]int{s1.Addr: 1, s3.Addr: 3}
		reloadOK(t, srv, cfg)
		sl1, sl3 := slaveAt(srv, s1.Addr), slaveAt(srv, s3.Addr)
		if w1, w3 := srv.Router().Weight(sl1), srv.Router().Weight(sl3); w1 != 1 || w3 != 3 {
			t.Fatalf("weights %d and %d, want 1 and 3", w1, w3)
		}
		// The balancer evens out the reads served per unit of weight since the
		// start: once it has, reads split 1:3.
		redistest.CheckFor(t, convergeTimeout, time.Millisecond, func() error {
			mustReply(t, c, string(bulk("7")), "GET", "k7")
			if r1, r3 := sl1.Reads.Load(), sl3.Reads.Load(); r3 < 3*r1-3 {
				return fmt.Errorf("reads %d and %d", r1, r3)
			}
			return nil
		})
		r1, r3 := sl1.Reads.Load(), sl3.Reads.Load()
		for i := 0; i < 400; i++ {
			mustReply(t, c, string(bulk("7")), "GET", "k7")
		}
		d1, d3 := sl1.Reads.Load()-r1, sl3.Reads.Load()-r3
		t.Logf("400 reads after the weights 1:3: %d and %d", d1, d3)
		if d1 < 80 || d1 > 120 || d3 < 280 || d3 > 320 {
			t.Errorf("400 reads split %d:%d, want about 100:300", d1, d3)
		}
	})

	t.Run("requirepass", func(t *testing.T) {
		cfg := srv.Config()
		cfg.RequirePass = "pw-two"
		reloadOK(t, srv, cfg)
		// The authenticated session stays so.
		mustReply(t, c, string(bulk("7")), "GET", "k7")
		n := redistest.DialRaw(t, addr)
		defer n.Close()
		mustReply(t, n, "-NOAUTH Authentication required.\r\n", "GET", "k7")
		mustReply(t, n, "-WRONGPASS invalid username-password pair or user is disabled.\r\n", "AUTH", "pw-one")
		mustReply(t, n, "+OK\r\n", "AUTH", "pw-two")
		mustReply(t, n, string(bulk("7")), "GET", "k7")
	})

	t.Run("proto-max-bulk-len", func(t *testing.T) {
		cfg := srv.Config()
		cfg.ProtoMaxBulkLen = 2048
		reloadOK(t, srv, cfg)
		n := redistest.DialRaw(t, addr)
		defer n.Close()
		mustReply(t, n, "+OK\r\n", "AUTH", "pw-two")
		mustReply(t, n, "+OK\r\n", "SET", "small", strings.Repeat("s", 2000))
		mustReply(t, n, "-ERR Protocol error: invalid bulk length\r\n", "SET", "big", strings.Repeat("b", 3000))
		if r, err := n.TryRead(); err == nil {
			t.Errorf("the connection is still open after the refused bulk: read %q", r)
		}
	})

	t.Run("refused setting", func(t *testing.T) {
		cfg := srv.Config()
		listen := cfg.Listen
		cfg.Listen = "127.0.0.1:1"
		cfg.MaxPipeline = 7
		err := srv.Reload(cfg)
		if !errors.Is(err, proxy.ErrRestartNeeded) || !strings.Contains(err.Error(), "listen") {
			t.Fatalf("Reload with another listen address: %v, want ErrRestartNeeded naming listen", err)
		}
		if got := srv.Config(); got.Listen != listen || got.MaxPipeline != 7 {
			t.Errorf("after the reload: listen %q (want %q kept), max-pipeline %d (want 7 applied)", got.Listen, listen, got.MaxPipeline)
		}
		warn := regexp.MustCompile(`"level":"warn"[^\n]*"setting":"listen"[^\n]*restart`)
		if !warn.MatchString(logs.String()) {
			t.Errorf("no warn line about listen needing a restart in the log")
		}
		// An invalid configuration changes nothing.
		bad := srv.Config()
		bad.MaxClients = 0
		bad.MaxPipeline = 9
		if err := srv.Reload(bad); err == nil || errors.Is(err, proxy.ErrRestartNeeded) {
			t.Errorf("Reload of an invalid configuration: %v", err)
		}
		if got := srv.Config().MaxPipeline; got != 7 {
			t.Errorf("an invalid configuration changed max-pipeline to %d", got)
		}
	})

	t.Run("slave added again", func(t *testing.T) {
		mustReply(t, c, "+OK\r\n", "SET", "while-out", "1")
		cfg := srv.Config()
		cfg.Slaves = append(cfg.Slaves, s2.Addr)
		reloadOK(t, srv, cfg)
		// A name of its own: slave-2 was the removed one's.
		if sl := slaveAt(srv, s2.Addr); sl == nil || sl.Backend.Name() != "slave-4" {
			t.Fatalf("slave %s added again: not in the read set as slave-4", s2.Addr)
		}
		waitOnline(t, srv)
		redistest.WaitConverged(t, convergeTimeout, master, s1, s2, s3)
	})

	out := logs.String()
	for _, secret := range []string{"pw-one", "pw-two"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds the password %q", secret)
		}
	}
	if !regexp.MustCompile(`"changed":\["requirepass"\][^\n]*"configuration reloaded"`).MatchString(out) {
		t.Errorf("no reload line saying requirepass changed")
	}
}

// TestReloadSIGHUP rewrites the config file of a running binary and sends SIGHUP:
// an invalid file is logged and changes nothing; a valid one adds a slave, lowers
// the log level, and its restart-only change is refused; a flag still wins
// over the file.
func TestReloadSIGHUP(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, s1, s2 := servers[0], servers[1], servers[2]
	file := filepath.Join(t.TempDir(), "syncproxy.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := fmt.Sprintf("listen: 127.0.0.1:0\nmaster: %s\nbackend-timeout: 2s\nread-your-writes: false\n", master.Addr)
	write(base + fmt.Sprintf("slaves:\n  - %s\nlog-level: info\n", s1.Addr))
	p := startBinary(t, "--config", file, "--log-format", "json")
	addr := p.listening()
	waitWritable(t, addr, startTimeout)
	c := redistest.DialRaw(t, addr)
	defer c.Close()
	mustReply(t, c, "+OK\r\n", "SET", "before-reload", "1")
	hup := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	write(base + "slaves: [unterminated\n")
	hup()
	p.waitLine(regexp.MustCompile(`"level":"error".*"configuration reload failed`))
	mustReply(t, c, string(bulk("1")), "GET", "before-reload")

	// log-format: the --log-format flag wins, the log stays JSON.
	write(base + fmt.Sprintf("slaves:\n  - %s\n  - %s\nlog-level: warn\nlog-format: console\nsync-channel: other\n", s1.Addr, s2.Addr))
	hup()
	p.waitLine(regexp.MustCompile(`"level":"warn".*"setting":"sync-channel".*restart`))
	m := p.waitLine(regexp.MustCompile(`^\{.*"configuration reloaded".*\}$`))
	var entry struct {
		Changed     []string `json:"changed"`
		Added       []string `json:"slaves_added"`
		NeedRestart []string `json:"need_restart"`
	}
	if err := json.Unmarshal([]byte(m[0]), &entry); err != nil {
		t.Fatalf("reload line %q: %v", m[0], err)
	}
	if strings.Join(entry.Changed, ",") != "slaves,log-level" || len(entry.Added) != 1 || entry.Added[0] != s2.Addr ||
		strings.Join(entry.NeedRestart, ",") != "sync-channel" {
		t.Errorf("reload line %s: want changed slaves and log-level, %s added, sync-channel needing a restart", m[0], s2.Addr)
	}
	redistest.CheckFor(t, onlineTimeout, poll, func() error {
		info := string(c.Do("INFO", "sync"))
		for _, want := range []string{"sync_slaves:2", "slave1:name=slave-2,addr=" + s2.Addr + ",state=online"} {
			if !strings.Contains(info, want) {
				return fmt.Errorf("INFO lacks %q:\n%s", want, info)
			}
		}
		return nil
	})
	redistest.WaitConverged(t, convergeTimeout, master, s1, s2)
	p.terminate()
	// At warn level, the info line of the shutdown is not logged.
	if log := p.stderr.String(); strings.Contains(log, "shutting down") {
		t.Errorf("info lines logged after the reload to log-level warn:\n%s", log)
	}
}
