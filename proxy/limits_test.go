package proxy

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/redcon"
)

var testLimits = Limits{MaxBulkLen: 20000, MaxArgs: 16, QueryBuffer: 30000}

// scanAll feeds data to a fresh scanner in chunks cut at cuts; it returns the
// offset in data of the request over a limit, malformed or (the first) ignored,
// -1 if none, and the verdict.
func scanAll(data []byte, authed bool, cuts ...int) (int, string) {
	r := reqScanner{lim: &testLimits, authed: func() bool { return authed }}
	pos, start := 0, 0
	for _, end := range append(cuts, len(data)) {
		if end < pos || end > len(data) {
			continue
		}
		for pos < end {
			n, ev := r.scan(data[pos:end])
			pos += n
			switch ev {
			case evRequest:
				start = pos
			case evIgnore:
				return start, "ignore"
			case evMalformed:
				return start, "malformed"
			case evLimit:
				return start, r.err.reply
			}
		}
	}
	return -1, ""
}

func TestScannerLimits(t *testing.T) {
	big := strings.Repeat("x", 20001)
	cases := []struct {
		name   string
		in     string
		authed bool
		at     int
		err    string
	}{
		{"plain commands", "*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n", true, -1, ""},
		{"bulk at the limit", "*2\r\n$3\r\nGET\r\n$20000\r\n" + strings.Repeat("x", 20000) + "\r\n", true, -1, ""},
		{"bulk over the limit", "PING\r\n*2\r\n$3\r\nSET\r\n$20001\r\n" + big + "\r\n", true, 6, "ERR Protocol error: invalid bulk length"},
		{"declared size far beyond", "*1\r\n$99999999999999999999999\r\n", true, 0, "ERR Protocol error: invalid bulk length"},
		{"too many arguments", "*17\r\n", true, 0, "ERR Protocol error: invalid multibulk length"},
		{"huge argument count", "*2000000000000\r\n", true, 0, "ERR Protocol error: invalid multibulk length"},
		{"unauthenticated arguments", "*11\r\n", false, 0, "ERR Protocol error: unauthenticated multibulk length"},
		{"unauthenticated bulk", "*2\r\n$4\r\nAUTH\r\n$16385\r\n", false, 0, "ERR Protocol error: unauthenticated bulk length"},
		{"authenticated small", "*2\r\n$4\r\nAUTH\r\n$3\r\npwd\r\n", false, -1, ""},
		{"inline too long", "PING\r\n" + strings.Repeat("a", maxInline+1), true, 6, "ERR Protocol error: too big inline request"},
		{"inline of many arguments", "SET " + strings.Repeat("a ", 3000) + "\r\n", true, 0, "ERR Protocol error: too big inline request"},
		{"inline of a few arguments", "SET k " + strings.Repeat("a", 20000) + "\r\n", true, -1, ""},
		{"count string too long", "*" + strings.Repeat("0", maxInline+1), true, 0, "ERR Protocol error: too big mbulk count string"},
		{"bulk count string too long", "*1\r\n$" + strings.Repeat("0", maxInline+1), true, 0, "ERR Protocol error: too big bulk count string"},
		{"query buffer", "*4\r\n$3\r\nSET\r\n$10000\r\n" + strings.Repeat("x", 10000) + "\r\n$10000\r\n" + strings.Repeat("x", 10000) + "\r\n$10000\r\n", true, 0, "ERR Protocol error: client reached the query buffer limit (30000 bytes)"},
		// Malformed framing is redcon's to report; the scanner stops checking.
		{"missing dollar", "*2\r\n$3\r\nGET\r\nx\r\n*5000\r\n", true, 0, "malformed"},
		{"negative count", "PING\r\n*-1\r\n*5000\r\n", true, 6, "ignore"},
		{"zero count", "*0\r\n", true, 0, "ignore"},
		{"bad count", "*x\r\n*5000\r\n", true, 0, "malformed"},
		{"bulk not ended by CRLF", "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPINGxx*5000\r\n", true, 14, "malformed"},
		{"header ended by LF only", "*1\n", true, 0, "malformed"},
		{"signed count as Atoi takes it", "*+2\r\n$+3\r\nGET\r\n$1\r\nk\r\n*17\r\n", true, 22, "ERR Protocol error: invalid multibulk length"},
	}
	for _, c := range cases {
		at, err := scanAll([]byte(c.in), c.authed)
		if at != c.at || err != c.err {
			t.Errorf("%s: got (%d, %q), want (%d, %q)", c.name, at, err, c.at, c.err)
		}
		// The verdict does not depend on how the stream is cut into reads.
		for cut := 1; cut < len(c.in) && cut < 200; cut++ {
			at2, err2 := scanAll([]byte(c.in), c.authed, cut)
			if err2 != err || (at2 != at && !(at2 >= 0 && at >= 0 && at2 <= cut && at <= cut)) {
				t.Fatalf("%s cut at %d: got (%d, %q), whole (%d, %q)", c.name, cut, at2, err2, at, err)
			}
		}
	}
}

// The scanner and redcon agree on where requests start: requests under the
// limits parse with redcon into the same commands whatever the chunking.
func FuzzLimitScanner(f *testing.F) {
	for _, seed := range limitSeeds(f) {
		f.Add(seed, uint(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, cut uint) {
		at, err := scanAll(data, true)
		_, err2 := scanAll(data, true, int(cut%uint(len(data)+1)))
		if err != err2 {
			t.Fatalf("verdict depends on the chunking: %q vs %q", err, err2)
		}
		if err == "" {
			return
		}
		if at < 0 || at > len(data) {
			t.Fatalf("offset %d out of range", at)
		}
		// What precedes the request over a limit is whole requests: redcon
		// reads it without leaving a partial one.
		rd := redcon.NewReader(bytes.NewReader(data[:at]))
		for {
			if _, e := rd.ReadCommand(); e != nil {
				if e.Error() == "EOF" {
					return
				}
				if strings.Contains(e.Error(), "Protocol error") {
					return // malformed before: redcon would have closed first
				}
				t.Fatalf("prefix before the limit is not whole requests: %v", e)
			}
		}
	})
}

// scanWhole takes a request only where the byte-at-a-time scan ends a request
// at the same place (fed one byte per call, it never takes the whole path).
func FuzzScanWhole(f *testing.F) {
	for _, seed := range limitSeeds(f) {
		f.Add(seed, false)
	}
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "*1\r\n$0\r\n\r\n", "*2\r\n$3\r\nGET\r\n$01\r\nk\r\n",
		"*11\r\n", "*16\r\n", "*2\r\n$4\r\nAUTH\r\n$16385\r\n" + strings.Repeat("x", 16385) + "\r\n",
		"*1\r\n$20001\r\n" + strings.Repeat("x", 20001) + "\r\n", "*1\r\n$3\r\nGET\r\r", "*1\r\n$3\r\nGET",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, authed bool) {
		fast := reqScanner{lim: &testLimits, authed: func() bool { return authed }}
		n, bounds := fast.scanWhole(data, []int{7})
		if n == 0 {
			if len(bounds) != 1 {
				t.Fatalf("bounds %v after a refusal", bounds)
			}
			return
		}
		// The arguments at bounds are redcon's.
		cmd, err := redcon.Parse(data[:n])
		if err != nil || 2*len(cmd.Args)+1 != len(bounds) {
			t.Fatalf("redcon: %v, %d arguments; bounds %v", err, len(cmd.Args), bounds)
		}
		args := make([][]byte, len(cmd.Args))
		argsAt(data[:n], bounds[1:], args)
		for i := range args {
			if !bytes.Equal(args[i], cmd.Args[i]) {
				t.Fatalf("argument %d: %q, redcon's %q", i, args[i], cmd.Args[i])
			}
		}
		slow := reqScanner{lim: &testLimits, authed: func() bool { return authed }}
		for i := 0; i < len(data); i++ {
			_, ev := slow.scan(data[i : i+1])
			if ev == evMore {
				continue
			}
			if ev != evRequest || i+1 != n {
				t.Fatalf("scanWhole took %d bytes; the scan stopped at %d with %v", n, i+1, ev)
			}
			return
		}
		t.Fatalf("scanWhole took %d bytes; the scan wants more", n)
	})
}

// limitSeeds are the malformed and limit-breaking inputs of testdata/malformed,
// shared with the end-to-end bad-input test.
func limitSeeds(tb testing.TB) [][]byte {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "malformed", "*.resp"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no seeds in testdata/malformed: %v", err)
	}
	var seeds [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return seeds
}

// testConn returns a client connection of a server with the limits lim over one
// end of a pipe, and the other end, the client's.
func testConn(t *testing.T, lim *Limits) (*clientConn, net.Conn) {
	t.Helper()
	s := &Server{}
	s.cur.Store(&Config{})
	s.limits.Store(lim)
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return newClientConn(s, b), a
}

// clientReads returns what the client end a reads until it is closed or 5 s pass.
func clientReads(a net.Conn) <-chan string {
	got := make(chan string, 1)
	go func() {
		a.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(a)
		got <- string(b)
	}()
	return got
}

// The requests before one over a limit are served; that one is answered with
// the limit's error, and the connection fails.
func TestConnAnswersAfterEarlierRequests(t *testing.T) {
	c, a := testConn(t, &testLimits)
	go a.Write([]byte("PING\r\n*99\r\n"))
	cmds, err := c.readCommands()
	if err != nil || len(cmds) != 1 || string(cmds[0].Args[0]) != "PING" {
		t.Fatalf("first read: %q %v", cmds, err)
	}
	got := clientReads(a)
	if _, err := c.readCommands(); err == nil {
		t.Fatal("second read should fail")
	}
	c.nc.Close()
	if s := <-got; s != "-ERR Protocol error: invalid multibulk length\r\n" {
		t.Fatalf("client got %q", s)
	}
	if r := c.nc.reason.Load(); r == nil || *r != "ERR Protocol error: invalid multibulk length" {
		t.Fatalf("reason %v", r)
	}
}

// A malformed request is answered with redcon's protocol error, after the
// requests before it.
func TestConnMalformed(t *testing.T) {
	c, a := testConn(t, &testLimits)
	go a.Write([]byte("PING\r\n*1\r\n$4\r\nPINGxx"))
	cmds, err := c.readCommands()
	if err != nil || len(cmds) != 1 {
		t.Fatalf("first read: %q %v", cmds, err)
	}
	got := clientReads(a)
	if _, err := c.readCommands(); err == nil {
		t.Fatal("second read should fail")
	}
	c.nc.Close()
	if s := <-got; s != "-ERR Protocol error: invalid bulk length\r\n" {
		t.Fatalf("client got %q", s)
	}
}

// A large request is read into a buffer of its size, handed over with it, and the
// connection goes back to a small buffer: nothing of it stays with the client.
func TestConnLargeRequestLeavesNothing(t *testing.T) {
	lim := testLimits
	lim.MaxBulkLen, lim.QueryBuffer = 8<<20, 16<<20
	c, a := testConn(t, &lim)
	value := strings.Repeat("v", 4<<20)
	go a.Write([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + strconv.Itoa(len(value)) + "\r\n" + value + "\r\nPING\r\nPI"))
	var cmds []redcon.Command
	for len(cmds) < 2 {
		got, err := c.readCommands()
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, got...)
	}
	if len(cmds) != 2 || string(cmds[0].Args[2]) != value || string(cmds[1].Args[0]) != "PING" {
		t.Fatalf("read %d commands", len(cmds))
	}
	if cap(cmds[0].Raw) > len(value)+readBufSize {
		t.Errorf("the large request's buffer holds %d bytes", cap(cmds[0].Raw))
	}
	if len(c.buf) > readBufSize || string(c.buf[c.start:c.end]) != "PI" {
		t.Errorf("the connection kept a %d-byte buffer holding %q", len(c.buf), c.buf[c.start:c.end])
	}
}

func TestLimitConnOutputTimeout(t *testing.T) {
	a, b := net.Pipe() // a never reads: every write blocks
	defer a.Close()
	lim := Limits{MaxBulkLen: 1024, MaxArgs: 16, QueryBuffer: 4096, OutputTimeout: 50 * time.Millisecond}
	lc := newLimitConn(newOutputConn(b, fixedLimits(&lim)), fixedLimits(&lim), false)
	start := time.Now()
	if _, err := lc.Write([]byte("+OK\r\n")); err != errOutputStalled {
		t.Fatalf("write to a client that does not read: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	if r := lc.reason.Load(); r == nil || *r != errOutputStalled.Error() {
		t.Fatalf("reason %v", r)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"512mb": 512 << 20, "1gb": 1 << 30, "1k": 1000, "2KB": 2048, "100": 100, "3g": 3e9, "7b": 7} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "mb", "-1", "1tb", "99999999999gb", "1.5mb"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
	if s := ByteSize(512 << 20).String(); s != "512mb" {
		t.Errorf("String %q", s)
	}
}

// fixedLimits returns a source of limits that always gives lim.
func fixedLimits(lim *Limits) *atomic.Pointer[Limits] {
	var p atomic.Pointer[Limits]
	p.Store(lim)
	return &p
}

// "*0" and "*-1" are dropped from the stream, as Redis ignores them, whole or cut
// across reads; the rest is served and still checked.
func TestConnDropsEmptyArrays(t *testing.T) {
	c, a := testConn(t, &testLimits)
	go func() {
		a.Write([]byte("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*-5\r\n*"))
		a.Write([]byte("0\r\n"))
		a.Write([]byte("PING\r\n*99\r\n"))
	}()
	var got []string
	for len(got) < 2 {
		cmds, err := c.readCommands()
		if err != nil {
			t.Fatalf("read: %v after %q", err, got)
		}
		for _, cmd := range cmds {
			got = append(got, string(cmd.Raw))
		}
	}
	if strings.Join(got, "") != "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n" {
		t.Fatalf("served %q", got)
	}
	go io.Copy(io.Discard, a)
	if _, err := c.readCommands(); err == nil {
		t.Fatal("the request over the limit after the dropped headers was not refused")
	}
}

// BenchmarkScanPipeline: the scanner over a pipeline of 16 GETs, as
// redis-benchmark -P 16 sends them, as clientConn.parse runs it.
func BenchmarkScanPipeline(b *testing.B) {
	var p []byte
	for i := 0; i < 16; i++ {
		p = append(p, "*2\r\n$3\r\nGET\r\n$16\r\nkey:00000000"+strconv.Itoa(1000+i)+"\r\n"...)
	}
	r := reqScanner{lim: &testLimits}
	var bounds []int
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		bounds = bounds[:0]
		for at := 0; at < len(p); {
			n, ev := 0, evRequest
			if n, bounds = r.scanWhole(p[at:], bounds); n == 0 {
				n, ev = r.scan(p[at:])
			}
			if ev != evRequest {
				b.Fatal(ev)
			}
			at += n
		}
	}
}
