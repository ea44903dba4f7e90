package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/proxy"
)

// badInputReplies is what the proxy answers to each input of testdata/malformed;
// after an error it closes the connection. "" means no reply: the request is
// incomplete (the proxy waits for the rest) or ignored, as with Redis.
var badInputReplies = map[string][]string{
	"negative-bulk":                {"-ERR Protocol error: invalid bulk length"},
	"bad-bulk-length":              {"-ERR Protocol error: invalid bulk length"},
	"bad-multibulk-length":         {"-ERR Protocol error: invalid multibulk length"},
	"zero-multibulk":               {""}, // ignored, as Redis does (redcon alone refuses it)
	"negative-multibulk-then-ping": {"+PONG"},
	"wrong-type-prefix":            {"-ERR Protocol error: expected '$', got 'f'"},
	"colon-instead-of-dollar":      {"-ERR Protocol error: expected '$', got ':'"},
	"unbalanced-quotes":            {"-ERR Protocol error: unbalanced quotes in request"},
	"unbalanced-single-quote":      {"-ERR Protocol error: unbalanced quotes in request"},
	"quote-then-text":              {"-ERR Protocol error: unbalanced quotes in request"},
	"huge-bulk":                    {"-ERR Protocol error: invalid bulk length"},
	"huge-multibulk":               {"-ERR Protocol error: invalid multibulk length"},
	"overflow-bulk":                {"-ERR Protocol error: invalid bulk length"},
	"bulk-without-crlf":            {"-ERR Protocol error: invalid bulk length"},
	"lf-only-header":               {"-ERR Protocol error: invalid multibulk length"},
	"truncated-frame":              {""},
	"long-inline":                  {"-ERR Protocol error: too big inline request"},
	"inline-many-args":             {"-ERR Protocol error: too big inline request"},
	"long-count-string":            {"-ERR Protocol error: too big mbulk count string"},
	"random-bytes":                 {"-ERR unknown command '\x8f\x00\xff*', with args beginning with: "},
	"valid-then-bad":               {"+PONG", "-ERR Protocol error: invalid bulk length"},
}

// TestBadInput sends each kind of malformed input while a well-behaved client
// keeps writing and reading: each bad connection gets its error and is closed,
// the good client gets every reply, and no acknowledged write is lost.
func TestBadInput(t *testing.T) {
	master := redistest.Start(t)
	slaves := []*redistest.Server{redistest.Start(t), redistest.Start(t)}
	addr, srv := startProxyWith(t, func(c *proxy.Config) {
		c.ProtoMaxBulkLen = 1 << 20
		c.QueryBufferLimit = 4 << 20
	}, master, slaves...)

	stop := make(chan struct{})
	var acked atomic.Int64
	goodErr := make(chan error, 1)
	go func() { goodErr <- goodClient(addr, stop, &acked) }()

	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "malformed", "*.resp"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs in testdata/malformed: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".resp")
		want, ok := badInputReplies[name]
		if !ok {
			t.Errorf("%s: no expected reply listed", name)
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, closed := sendBad(t, addr, data)
		if name == "random-bytes" {
			// Every line is an unknown command; the first is enough to check.
			got = got[:min(len(got), 1)]
			closed = true
		}
		if strings.Join(got, "|") != strings.Join(want, "|") && !(want[0] == "" && len(got) == 0) {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
		if want[0] != "" && want[0][0] == '-' && !closed {
			t.Errorf("%s: the proxy did not close the connection", name)
		}
	}
	// A bulk over the limit that is really sent: refused before it is buffered.
	big := append([]byte("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$2000000\r\n"), bytes.Repeat([]byte("x"), 2000000)...)
	if got, closed := sendBad(t, addr, append(big, "\r\n"...)); len(got) != 1 || got[0] != "-ERR Protocol error: invalid bulk length" || !closed {
		t.Errorf("bulk over proto-max-bulk-len: %q closed=%v", got, closed)
	}

	// The good client kept going through all of it.
	n0 := acked.Load()
	deadline := time.Now().Add(5 * time.Second)
	for acked.Load() < n0+100 && time.Now().Before(deadline) {
		time.Sleep(poll)
	}
	close(stop)
	if e := <-goodErr; e != nil {
		t.Fatalf("well-behaved client: %v", e)
	}
	if acked.Load() < n0+100 {
		t.Fatalf("well-behaved client stalled at %d acknowledged writes", acked.Load())
	}
	// Every acknowledged increment is on the master and on every slave.
	c := redistest.DialRaw(t, master.Addr)
	if v := c.Do("GET", "good:counter"); string(v) != "$"+strconv.Itoa(len(strconv.FormatInt(acked.Load(), 10)))+"\r\n"+strconv.FormatInt(acked.Load(), 10)+"\r\n" {
		t.Fatalf("master has %q, %d increments were acknowledged", v, acked.Load())
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
	if big := c.Do("EXISTS", "big"); string(big) != ":0\r\n" {
		t.Fatalf("the refused SET was applied: %q", big)
	}
	_ = srv
}

// goodClient increments a counter and reads it back, one request and one
// pipeline of ten at a time, until stop; every reply is checked.
func goodClient(addr string, stop chan struct{}, acked *atomic.Int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		var req bytes.Buffer
		for i := 0; i < 10; i++ {
			req.WriteString("*2\r\n$4\r\nINCR\r\n$12\r\ngood:counter\r\n")
		}
		req.WriteString("*2\r\n$3\r\nGET\r\n$12\r\ngood:counter\r\n")
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(req.Bytes()); err != nil {
			return err
		}
		var last int64
		for i := 0; i < 10; i++ {
			line, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if line[0] != ':' {
				return fmt.Errorf("INCR replied %q", line)
			}
			last, _ = strconv.ParseInt(strings.TrimSpace(line[1:]), 10, 64)
			acked.Add(1)
		}
		head, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		val, err := br.ReadString('\n')
		if err != nil || head[0] != '$' {
			return fmt.Errorf("GET replied %q %q %v", head, val, err)
		}
		if v, _ := strconv.ParseInt(strings.TrimSpace(val), 10, 64); v < last {
			return fmt.Errorf("GET read %d after INCR gave %d", v, last)
		}
	}
}

// sendBad sends data on a new connection and returns the reply lines the proxy
// sent before closing it, and whether it closed it. A connection the proxy keeps
// open (waiting for the rest of a request) is closed by the client after a while.
func sendBad(t *testing.T, addr string, data []byte) (lines []string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		c.Write(data) // may fail once the proxy closed the connection
	}()
	br := bufio.NewReader(c)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		line, err := br.ReadString('\n')
		if err == io.EOF || (err != nil && !isTimeout(err)) {
			return lines, true
		}
		if err != nil {
			return lines, false
		}
		lines = append(lines, strings.TrimRight(line, "\r\n"))
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
