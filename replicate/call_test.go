package replicate_test

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/syncproxy/syncproxy/replicate"
)

// TestCallFormat pins the master script's call format: the header, then per
// command db, argc, the mode letter, the effect and the arguments.
func TestCallFormat(t *testing.T) {
	var b bytes.Buffer
	args := []byte("$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
	replicate.WriteCallHeader(&b, "abc", [][]byte{[]byte("E"), []byte("100"), []byte("ch")}, 1234, 2, 2, 4)
	replicate.WriteCallCommand(&b, 1, 3, replicate.ModeCommand, args)
	replicate.WriteCallCommand(&b, 0, 1, replicate.ModeRewriteQuiet, []byte("$4\r\nSPOP\r\n"))
	want := "*21\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n$1\r\nE\r\n$3\r\n100\r\n$2\r\nch\r\n" +
		"$4\r\n1234\r\n$1\r\n2\r\n$1\r\n2\r\n" +
		"$1\r\n1\r\n$1\r\n3\r\n$1\r\n0\r\n$34\r\n*4\r\n$1\r\n1\r\n" + string(args) + "\r\n" + string(args) +
		"$1\r\n0\r\n$1\r\n1\r\n$1\r\nq\r\n$21\r\n*2\r\n$1\r\n0\r\n$4\r\nSPOP\r\n\r\n$4\r\nSPOP\r\n"
	if got := b.String(); got != want {
		t.Fatalf("call:\n%q\nwant\n%q", got, want)
	}
	letters := map[replicate.Mode]string{replicate.ModeCommand: "0", replicate.ModeRewrite: "x",
		replicate.ModeRewriteQuiet: "q", replicate.ModeRead: "r", replicate.ModeScript: "e"}
	for m, l := range letters {
		b.Reset()
		replicate.WriteCallCommand(&b, 0, 0, m, nil)
		if !bytes.HasPrefix(b.Bytes(), []byte("$1\r\n0\r\n$1\r\n0\r\n$1\r\n"+l+"\r\n")) {
			t.Errorf("mode %d: %q, want letter %s", m, b.String(), l)
		}
	}
}

// TestCallReply checks the decoding helpers of a call's reply.
func TestCallReply(t *testing.T) {
	if n := replicate.CallReplyLen(3); n != 5 {
		t.Errorf("CallReplyLen(3) = %d", n)
	}
	if seq, ok := replicate.CallSeq([]byte(":42\r\n")); !ok || seq != 42 {
		t.Errorf("CallSeq = %d, %v", seq, ok)
	}
	if _, ok := replicate.CallSeq([]byte("$2\r\n42\r\n")); ok {
		t.Error("CallSeq accepted a bulk string")
	}
	for in, want := range map[string]string{
		"+\x01I18446744073709551615\r\n": ":18446744073709551615\r\n",
		"$-1\r\n":                        "*-1\r\n",
		"+OK\r\n":                        "+OK\r\n",
		// BITFIELD: big integers inside an array; bulks and nulls kept.
		"*4\r\n:1\r\n+\x01I-9223372036854775808\r\n$-1\r\n+\x01I9010098499300399616\r\n": "*4\r\n:1\r\n:-9223372036854775808\r\n$-1\r\n:9010098499300399616\r\n",
		"*2\r\n$6\r\n\r\n+\x01I1\r\n*1\r\n+\x01I7\r\n":                                   "*2\r\n$6\r\n\r\n+\x01I1\r\n*1\r\n:7\r\n",
		"*3\r\n+\x01I1\r\n": "*3\r\n+\x01I1\r\n", // malformed: left alone
	} {
		if got := string(replicate.FixCallReply([]byte(in), true)); got != want {
			t.Errorf("FixCallReply(%q) = %q, want %q", in, got, want)
		}
	}
	if got := string(replicate.FixCallReply([]byte("$-1\r\n"), false)); got != "$-1\r\n" {
		t.Errorf("FixCallReply without null array = %q", got)
	}
}

// TestNativeCallFormat pins the transaction of a write too large for the
// script: MULTI, the counting call, the command as sent, the numbering call
// with the effects as one bulk and their count, EXEC.
func TestNativeCallFormat(t *testing.T) {
	var b bytes.Buffer
	raw := "*4\r\n$4\r\nSADD\r\n$1\r\ns\r\n$1\r\na\r\n$2\r\nbc\r\n"
	sp, ok := replicate.SplitOf([][]byte{[]byte("SADD"), []byte("s"), []byte("a"), []byte("bc")})
	if !ok {
		t.Fatal("SADD does not split")
	}
	replicate.WriteNativeCall(&b, "B", [][]byte{[]byte("E")}, 7, 2, sp, []byte(raw), 4)
	call := func(mode, tail string, argc int) string {
		return "*" + strconv.Itoa(11+argc) + "\r\n$4\r\nEVAL\r\n$1\r\nB\r\n$1\r\n0\r\n$1\r\nE\r\n$1\r\n7\r\n$1\r\n2\r\n$1\r\n1\r\n" +
			"$1\r\n2\r\n$1\r\n" + strconv.Itoa(argc) + "\r\n$1\r\n" + mode + "\r\n" + tail
	}
	effect := "*5\r\n$1\r\n2\r\n$4\r\nSADD\r\n$1\r\ns\r\n$1\r\na\r\n$2\r\nbc\r\n"
	want := "*1\r\n$5\r\nMULTI\r\n" + call("p", "$0\r\n\r\n", 0) + raw +
		call("n", "$"+strconv.Itoa(len(effect))+"\r\n"+effect+"\r\n$1\r\n1\r\n", 1) + "*1\r\n$4\r\nEXEC\r\n"
	if got := b.String(); got != want {
		t.Fatalf("native call:\n%q\nwant\n%q", got, want)
	}
}
