package proxy

import (
	"strings"
	"testing"
)

func TestReplyHelpers(t *testing.T) {
	arr := "*3\r\n$1\r\na\r\n*1\r\n:1\r\n$-1\r\n"
	parts := splitArray([]byte(arr))
	if len(parts) != 3 || string(parts[0]) != "$1\r\na\r\n" || string(parts[1]) != "*1\r\n:1\r\n" || string(parts[2]) != "$-1\r\n" {
		t.Fatalf("splitArray: %q", parts)
	}
	for _, notArray := range []string{"*-1\r\n", "$1\r\na\r\n", "*2\r\n$1\r\na\r\n", ""} {
		if p := splitArray([]byte(notArray)); p != nil {
			t.Errorf("splitArray(%q) = %q", notArray, p)
		}
	}
	if bulkText([]byte("$3\r\nabc\r\n")) != "abc" || bulkText([]byte("+OK\r\n")) != "" || bulkData([]byte("$-1\r\n")) != nil {
		t.Fatal("bulkText")
	}
	keys := "*3\r\n$1\r\nk\r\n$14\r\nsyncproxy:seq1\r\n$2\r\nk2\r\n"
	if got := string(hideMeta([]byte(keys))); got != "*2\r\n$1\r\nk\r\n$2\r\nk2\r\n" {
		t.Errorf("hideMeta(KEYS) = %q", got)
	}
	scan := "*2\r\n$1\r\n0\r\n" + keys
	if got := string(hideMeta([]byte(scan))); got != "*2\r\n$1\r\n0\r\n*2\r\n$1\r\nk\r\n$2\r\nk2\r\n" {
		t.Errorf("hideMeta(SCAN) = %q", got)
	}
	if got := string(hideMeta([]byte("-ERR x\r\n"))); got != "-ERR x\r\n" {
		t.Errorf("hideMeta(error) = %q", got)
	}
	if got := string(blockingReply("blpop", []byte("*2\r\n$1\r\nl\r\n*1\r\n$1\r\nv\r\n"))); got != "*2\r\n$1\r\nl\r\n$1\r\nv\r\n" {
		t.Errorf("blockingReply(blpop) = %q", got)
	}
	if got := string(blockingReply("bzpopmin", []byte("*2\r\n$1\r\nz\r\n*1\r\n*2\r\n$1\r\nm\r\n$1\r\n1\r\n"))); got != "*3\r\n$1\r\nz\r\n$1\r\nm\r\n$1\r\n1\r\n" {
		t.Errorf("blockingReply(bzpopmin) = %q", got)
	}
	if !countZero([]byte("*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n")) || countZero([]byte("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n:0\r\n")) {
		t.Error("countZero")
	}
}

// FuzzReplyHelpers: the proxy's reply rewriters never panic, and leave what is
// not theirs unchanged.
func FuzzReplyHelpers(f *testing.F) {
	for _, s := range []string{"*2\r\n$1\r\n0\r\n*1\r\n$3\r\nabc\r\n", "*1\r\n$14\r\nsyncproxy:seq1\r\n", "$-1\r\n",
		"*2\r\n$1\r\nl\r\n*1\r\n$1\r\nv\r\n", "*3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n", "*9\r\n",
		"*4\r\n$11\r\nrequirepass\r\n$3\r\npwd\r\n$10\r\nmasterauth\r\n$0\r\n\r\n",
		"*2\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n", "*4\r\n:0\r\n$-1\r\n$-1\r\n$-1\r\n", "$4\r\n,1.5\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		splitArray(b)
		bulkText(b)
		countZero(b)
		out := hideMeta(b)
		if !strings.HasPrefix(string(b), "*") && string(out) != string(b) {
			t.Fatalf("hideMeta changed a non-array %q into %q", b, out)
		}
		for _, name := range []string{"blpop", "bzpopmax", "blmove"} {
			blockingReply(name, b)
		}
		if out := hideSecrets(b); len(splitArray(out)) != len(splitArray(b)) {
			t.Fatalf("hideSecrets changed the shape of %q into %q", b, out)
		}
		frameArgs(b)
		if out := unwrapRESP3(b); len(out) > len(b) {
			t.Fatalf("unwrapRESP3 grew %q into %q", b, out)
		}
		for _, raw := range []string{"*1\r\n$6\r\nGEOPOS\r\n", "*3\r\n$8\r\nXPENDING\r\n$1\r\ns\r\n$1\r\ng\r\n"} {
			if out := nestedNullArrays([]byte(raw), b); len(splitArray(out)) != len(splitArray(b)) {
				t.Fatalf("nestedNullArrays changed the shape of %q into %q", b, out)
			}
		}
	})
}

// FuzzBlockingTimeouts: the timeout parsers of the blocking commands never panic
// and never give a negative wait.
func FuzzBlockingTimeouts(f *testing.F) {
	for _, s := range []string{"0", "1.5", "-1", "1e300", "9223372036854775807", "nan", "inf", "0x10", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, msg := parseTimeout(b); msg == "" && d < 0 {
			t.Fatalf("parseTimeout(%q) = %v", b, d)
		}
		if d, msg := parseBlockMs(b); msg == "" && d < 0 {
			t.Fatalf("parseBlockMs(%q) = %v", b, d)
		}
	})
}
