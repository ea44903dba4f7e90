package router

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestReadFrame(t *testing.T) {
	good := []string{
		"+OK\r\n",
		"-ERR bad\r\n",
		":-42\r\n",
		"$0\r\n\r\n",
		"$-1\r\n",
		"*-1\r\n",
		"*0\r\n",
		"$5\r\nhe\r\no\r\n",
		"*2\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n+x\r\n",
		"*3\r\n*0\r\n$-1\r\n*-1\r\n",
		"%1\r\n+k\r\n:1\r\n",
		"_\r\n",
		",1.5\r\n",
		"~2\r\n:1\r\n:2\r\n",
		"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
	}
	for _, in := range good {
		// Two frames back to back: ReadFrame must stop exactly after the first.
		br := bufio.NewReader(strings.NewReader(in + in))
		got, err := ReadFrame(br, nil)
		if err != nil || string(got) != in {
			t.Errorf("ReadFrame(%q) = %q, %v", in, got, err)
			continue
		}
		got, err = ReadFrame(br, got[:0])
		if err != nil || string(got) != in {
			t.Errorf("second ReadFrame(%q) = %q, %v", in, got, err)
		}
	}
	bad := []string{
		"?\r\n",
		"+OK\n",
		"$3\r\nabcd\r\n",
		"$-2\r\n",
		"*-3\r\n",
		"$99999999999\r\n",
		"*x\r\n",
		"$\r\n",
		"$3\r\nab",
		"*2\r\n+a\r\n",
		strings.Repeat("*1\r\n", maxReplyDepth+2) + "+x\r\n",
	}
	for _, in := range bad {
		br := bufio.NewReaderSize(strings.NewReader(in), 16)
		if got, err := ReadFrame(br, nil); err == nil {
			t.Errorf("ReadFrame(%q) = %q, want an error", in, got)
		}
	}
}

// TestReadFrameLongLine: a status or error line longer than the reader's buffer
// (a script can return one of any length) is read whole, also inside an array.
func TestReadFrameLongLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, in := range []string{"+" + long + "\r\n", "-ERR " + long + "\r\n", "*2\r\n+" + long + "\r\n:1\r\n"} {
		br := bufio.NewReaderSize(strings.NewReader(in+"+next\r\n"), 16)
		got, err := ReadFrame(br, nil)
		if err != nil || string(got) != in {
			t.Fatalf("ReadFrame(%q) = %q, %v", in, got, err)
		}
		if next, err := ReadFrame(br, nil); err != nil || string(next) != "+next\r\n" {
			t.Fatalf("the frame after %q: %q, %v", in, next, err)
		}
	}
	br := bufio.NewReaderSize(strings.NewReader("+"+long+"\n"), 16)
	if got, err := ReadFrame(br, nil); err == nil {
		t.Fatalf("a long line without CR: %q, want an error", got)
	}
}

// FuzzReadFrame checks that ReadFrame never panics, and that what it accepts is
// exactly a prefix of its input that it can read again identically.
func FuzzReadFrame(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$1\r\na\r\n:1\r\n", "$-1\r\n", "*1\r\n*1\r\n*0\r\n", "%1\r\n+a\r\n+b\r\n", "$3\r\nab"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 64)
		got, err := ReadFrame(br, nil)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(in, got) {
			t.Fatalf("frame %q is not a prefix of the input %q", got, in)
		}
		again, err := ReadFrame(bufio.NewReaderSize(bytes.NewReader(got), 64), nil)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("re-reading %q gave %q, %v", got, again, err)
		}
		if _, err := br.Peek(1); err != nil && err != io.EOF && !bytes.Equal(got, in) {
			t.Fatalf("unexpected reader state: %v", err)
		}
	})
}

// BenchmarkReadFrameGroupReplies reads a native group's replies as the master
// link's reader does: one +QUEUED per write, then EXEC's +OK per write.
func BenchmarkReadFrameGroupReplies(b *testing.B) {
	const n = 200
	var in []byte
	for i := 0; i < n; i++ {
		in = append(in, "+QUEUED\r\n"...)
	}
	for i := 0; i < n; i++ {
		in = append(in, "+OK\r\n"...)
	}
	rd := bytes.NewReader(in)
	br := bufio.NewReaderSize(rd, 16<<10)
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for i := 0; i < b.N; i++ {
		rd.Reset(in)
		br.Reset(rd)
		for j := 0; j < 2*n; j++ {
			var err error
			if dst, err = ReadFrame(br, dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
	}
}
