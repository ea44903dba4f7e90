package proxy

import (
	"bytes"
	"testing"

	"github.com/tidwall/redcon"
)

// TestSplitArgsAsRedcon checks that the batch parser splits well-formed array
// requests as redcon.Parse does, and hands every other one to redcon.
func TestSplitArgsAsRedcon(t *testing.T) {
	for _, req := range []string{
		"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n",
		"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n",
	} {
		want, err := redcon.Parse([]byte(req))
		if err != nil {
			t.Fatalf("%q: redcon: %v", req, err)
		}
		b := []byte(req)
		n := arrayLen(b)
		got, ok := splitArgs(b, make([][]byte, n))
		if !ok || !bytes.Equal(got.Raw, want.Raw) || len(got.Args) != len(want.Args) {
			t.Fatalf("%q: got %q %q ok=%v, want %q", req, got.Raw, got.Args, ok, want.Args)
		}
		for i := range want.Args {
			if !bytes.Equal(got.Args[i], want.Args[i]) || cap(got.Args[i]) != len(got.Args[i]) {
				t.Errorf("%q: arg %d %q (cap %d), want %q", req, i, got.Args[i], cap(got.Args[i]), want.Args[i])
			}
		}
	}
	for _, req := range []string{
		"*2\r\n$3\r\nGET\r\n+3\r\nkey\r\n",  // not a bulk
		"*2\r\n$3\r\nGET\r\n$3\r\nkeyX\r\n", // length off
		"*1\r\n$-1\r\n",                     // null bulk
		"*2\r\n$3\r\nGET\r\n",               // fewer arguments
		"*1\r\n$3\r\nGET\r\n$3\r\nkey\r\n",  // more
		"*1\n$3\r\nGET\r\n",                 // LF alone
	} {
		b := []byte(req)
		if _, ok := splitArgs(b, make([][]byte, arrayLen(b))); ok {
			t.Errorf("%q: split, want it left to redcon", req)
		}
	}
}

// TestCopySpansBatch checks that the requests of one read share two
// allocations and that each command's slices stop at its own bytes.
func TestCopySpansBatch(t *testing.T) {
	get, ping := "*2\r\n$3\r\nGET\r\n$1\r\na\r\n", "*1\r\n$4\r\nPING\r\n"
	c := &clientConn{buf: []byte(get + ping + "*1\r\n+3\r\nGET\r\n")}
	c.spans = []span{{start: 0, end: len(get)}, {start: len(get), end: len(get) + len(ping)}}
	cmds, err := c.copySpans(nil)
	if err != nil || len(cmds) != 2 {
		t.Fatalf("copySpans: %d commands, %v", len(cmds), err)
	}
	if string(cmds[0].Raw) != "*2\r\n$3\r\nGET\r\n$1\r\na\r\n" || string(cmds[1].Args[0]) != "PING" {
		t.Fatalf("commands %q %q", cmds[0].Raw, cmds[1].Raw)
	}
	if cap(cmds[0].Raw) != len(cmds[0].Raw) || cap(cmds[0].Args) != 2 {
		t.Errorf("the first command's slices reach into the next one's")
	}
	c.buf[0] = 'X'
	if cmds[0].Raw[0] != '*' {
		t.Errorf("the command shares the read buffer")
	}
	c.spans = []span{{start: len(get) + len(ping), end: len(c.buf)}} // not a bulk string: redcon refuses it
	if _, err := c.copySpans(nil); err == nil {
		t.Errorf("a malformed request parsed")
	}
}
