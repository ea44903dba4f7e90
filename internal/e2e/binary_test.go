package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// Bounds of the tests of the built binary.
const (
	buildTimeout = 3 * time.Minute
	startTimeout = 10 * time.Second // from exec to the listening log line
	exitTimeout  = 5 * time.Second  // from SIGTERM to exit
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	// binDir holds the binary; TestMain removes it.
	binDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// syncproxyBinary builds cmd/syncproxy once per test binary and returns its path.
func syncproxyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %v", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			buildErr = errors.New("go env GOMOD: not inside the module")
			return
		}
		if binDir, buildErr = os.MkdirTemp("", "syncproxy-e2e-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "syncproxy")
		build := exec.CommandContext(ctx, "go", "build", "-o", binPath, "./cmd/syncproxy")
		build.Dir = filepath.Dir(gomod)
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/syncproxy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running syncproxy binary whose stderr (the log) is collected line by line.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer
	lines  chan string // every stderr line, closed at EOF
	done   chan struct{}
	err    error // exit status, once done is closed
}

// startBinary runs syncproxy with args; it is killed at cleanup if still running.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, lines: make(chan string, 1000), done: make(chan struct{})}
	p.cmd = exec.Command(syncproxyBinary(t), args...)
	p.cmd.Stdout = io.Discard
	pipe, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.stderr.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for lines any more
			}
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("syncproxy %s log:\n%s", strings.Join(args, " "), p.stderr.String())
		}
	})
	return p
}

// waitLine returns the first log line matching re, and its submatches.
func (p *proc) waitLine(re *regexp.Regexp) []string {
	p.t.Helper()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				<-p.done
				p.t.Fatalf("syncproxy exited (%v) before logging a line matching %q; log:\n%s", p.err, re, p.stderr.String())
			}
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-timer.C:
			p.t.Fatalf("no log line matching %q within %v; log:\n%s", re, startTimeout, p.stderr.String())
		}
	}
}

// listening waits for the JSON "syncproxy listening" line and returns its address.
func (p *proc) listening() string {
	p.t.Helper()
	m := p.waitLine(regexp.MustCompile(`^\{.*"syncproxy listening".*\}$`))
	var entry struct {
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal([]byte(m[0]), &entry); err != nil || entry.Addr == "" {
		p.t.Fatalf("listening line %q: no addr (%v)", m[0], err)
	}
	return entry.Addr
}

// terminate sends SIGTERM and requires exit status 0 within exitTimeout.
func (p *proc) terminate() {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("syncproxy exited with %v after SIGTERM, want status 0", p.err)
		}
		p.t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(exitTimeout):
		p.t.Fatalf("syncproxy still running %v after SIGTERM", exitTimeout)
	}
}

// runBinary runs syncproxy to completion and returns its exit code, stdout and stderr.
func runBinary(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, syncproxyBinary(t), args...)
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit) && exit.Exited():
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatalf("syncproxy %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	return 0, "", ""
}

// TestDemoMode starts the binary with no master, as a user trying it would, and
// uses it.
func TestDemoMode(t *testing.T) {
	t.Parallel()
	p := startBinary(t, "--listen", "127.0.0.1:0")
	m := p.waitLine(regexp.MustCompile(`redis-cli -p (\d+)`))
	addr := net.JoinHostPort("127.0.0.1", m[1])

	c := redistest.DialRaw(t, addr)
	mustReply(t, c, "+PONG\r\n", "PING")
	mustReply(t, c, "+OK\r\n", "SET", "greeting", "hello")
	mustReply(t, c, string(bulk("hello")), "GET", "greeting")
	mustReply(t, c, ":1\r\n", "INCR", "counter")
	mustReply(t, c, ":2\r\n", "INCR", "counter")
	mustReply(t, c, "+OK\r\n", "SELECT", "1")
	mustReply(t, c, "$-1\r\n", "GET", "greeting")
	mustReply(t, c, "+OK\r\n", "SET", "greeting", "db one")
	mustReply(t, c, string(bulk("db one")), "GET", "greeting")
	mustReply(t, c, "+OK\r\n", "SELECT", "0")
	mustReply(t, c, string(bulk("hello")), "GET", "greeting")
	mustReply(t, c, "*2\r\n$5\r\nhello\r\n$1\r\n2\r\n", "MGET", "greeting", "counter")
	// A new client: no read-your-writes constraint, its reads go to the demo slaves.
	redistest.CheckFor(t, 5*time.Second, poll, func() error {
		c2 := redistest.DialRaw(t, addr)
		defer c2.Close()
		if got := c2.Do("GET", "counter"); string(got) != string(bulk("2")) {
			return fmt.Errorf("GET counter from a new client: %q", got)
		}
		return nil
	})
	c.Close()
	p.terminate()
}

// TestBinaryFlags checks --help and the handling of bad flags and values.
func TestBinaryFlags(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runBinary(t, "--help")
	if code != 0 {
		t.Errorf("--help: exit status %d, want 0; stderr:\n%s", code, stderr)
	}
	for _, flag := range []string{"--listen", "--master", "--slaves", "--config", "--log-level",
		"--log-format", "--backend-timeout", "--sync-channel"} {
		// The flag package prints "-name"; accept either form.
		if !strings.Contains(stdout, flag) && !regexp.MustCompile(`(?m)^\s+-`+flag[2:]+`\b`).MatchString(stdout) {
			t.Errorf("--help does not mention %s:\n%s", flag, stdout)
		}
	}

	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(cfg, []byte("master: [not, an, address]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--bogus"},
		{"--backend-timeout", "nope"},
		{"--log-format", "xml"},
		{"--log-level", "loud"},
		{"--master", "nohostport"},
		{"--listen", "127.0.0.1:99999"},
		{"--master", "127.0.0.1:6379", "--slaves", "127.0.0.1:6379"},
		{"--slaves", "127.0.0.1:1"},
		{"--config", filepath.Join(t.TempDir(), "missing.yaml")},
		{"--config", cfg},
		{"extra-argument"},
	} {
		code, stdout, stderr := runBinary(t, args...)
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		if code != 2 || len(lines) != 1 || lines[0] == "" || strings.Contains(stderr, "Usage") {
			t.Errorf("syncproxy %s: exit status %d, stderr %q; want status 2 and one line", strings.Join(args, " "), code, stderr)
		} else {
			t.Logf("syncproxy %s: %s", strings.Join(args, " "), lines[0])
		}
		if stdout != "" {
			t.Errorf("syncproxy %s: unexpected stdout %q", strings.Join(args, " "), stdout)
		}
	}
}

// TestConfigFile runs the binary with a YAML config file naming real servers; a
// --listen flag overrides the file's.
func TestConfigFile(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]

	// A port that the test holds: the proxy can only start if the flag wins.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cfg := filepath.Join(t.TempDir(), "syncproxy.yaml")
	yaml := fmt.Sprintf("# syncproxy test config\nlisten: %s\nmaster: %s\nslaves:\n  - %s\n  - %s\nbackend-timeout: 2s\nlog-level: info\n",
		held.Addr(), master.Addr, slaves[0].Addr, slaves[1].Addr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("file", func(t *testing.T) {
		// The file's listen address, freed for this run.
		free, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		freeAddr := free.Addr().String()
		free.Close()
		own := filepath.Join(t.TempDir(), "own.yaml")
		if err := os.WriteFile(own, []byte(strings.Replace(yaml, held.Addr().String(), freeAddr, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startBinary(t, "--config", own, "--log-format", "json")
		if addr := p.listening(); addr != freeAddr {
			t.Errorf("listening on %s, want the file's %s", addr, freeAddr)
		}
		// TestWriteRightAfterStart covers writes sent before the master link is up.
		waitWritable(t, freeAddr, startTimeout)
		c := redistest.DialRaw(t, freeAddr)
		mustReply(t, c, "+OK\r\n", "SET", "from-file", "1")
		mustReply(t, c, string(bulk("1")), "GET", "from-file")
		c.Close()
		redistest.WaitConverged(t, convergeTimeout, master, slaves...)
		p.terminate()
	})

	t.Run("flag wins", func(t *testing.T) {
		p := startBinary(t, "--config", cfg, "--listen", "127.0.0.1:0", "--log-format", "json")
		addr := p.listening()
		if addr == held.Addr().String() {
			t.Fatalf("listening on the file's address %s despite --listen", addr)
		}
		waitWritable(t, addr, startTimeout)
		c := redistest.DialRaw(t, addr)
		mustReply(t, c, "+OK\r\n", "SET", "from-flag", "2")
		mustReply(t, c, string(bulk("2")), "GET", "from-flag")
		c.Close()
		if got, _ := redis.String(master.Do(t, "GET", "from-flag"), nil); got != "2" {
			t.Errorf("the file's master does not hold the write: GET from-flag = %q", got)
		}
		redistest.WaitConverged(t, convergeTimeout, master, slaves...)
		p.terminate()
	})
}
