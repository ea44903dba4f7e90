package replicate

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// pipeConn is a net.Conn that keeps what is written and reads canned replies.
type pipeConn struct {
	net.Conn
	out bytes.Buffer
	in  bytes.Reader
}

func (c *pipeConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *pipeConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }

// runOf returns n messages of one SET each, every fourth in DB 1.
func runOf(n int) []*Message {
	msgs := make([]*Message, n)
	for i := range msgs {
		k := []byte("key:" + strconv.Itoa(i))
		msgs[i] = &Message{Epoch: "0123456789abcdef-1700000000000", Seq: int64(100 + i),
			Effects: []Effect{{DB: i % 4 / 3, Args: [][]byte{[]byte("SET"), k, []byte("xyz")}}}}
	}
	return msgs
}

// sendRunRedigo sends the transaction as the applier did with redigo's Send.
func sendRunRedigo(c redis.Conn, msgs []*Message, from int64, token string) int {
	last := msgs[len(msgs)-1]
	c.Send("WATCH", KeyApplied, KeyResync, keyApplyGuard)
	c.Send("EVAL", guardScript, 0, last.Epoch+":"+strconv.FormatInt(from, 10), token)
	c.Send("MULTI")
	db, queued := 0, 1
	for _, m := range msgs {
		for _, e := range m.Effects {
			if e.DB != db {
				c.Send("SELECT", e.DB)
				db = e.DB
				queued++
			}
			args := make([]interface{}, 0, len(e.Args)-1)
			for _, arg := range e.Args[1:] {
				args = append(args, arg)
			}
			c.Send(string(e.Args[0]), args...)
			queued++
		}
	}
	if db != 0 {
		c.Send("SELECT", 0)
		queued++
	}
	c.Send("SET", KeyApplied, last.Epoch+":"+strconv.FormatInt(last.Seq, 10))
	c.Send("EXEC")
	c.Flush()
	return queued
}

// TestAppendRunMatchesRedigo: the raw encoding of a run is, byte for byte, what
// redigo sends for the same commands.
func TestAppendRunMatchesRedigo(t *testing.T) {
	msgs := runOf(7)
	pc := &pipeConn{}
	want := sendRunRedigo(redis.NewConn(pc, 0, 0), msgs, 99, "tok")
	got, queued := appendRun(nil, msgs, msgs[len(msgs)-1], 99, "tok")
	if !bytes.Equal(got, pc.out.Bytes()) {
		t.Fatalf("raw encoding:\n%q\nredigo's:\n%q", got, pc.out.Bytes())
	}
	if queued != want {
		t.Fatalf("queued %d, want %d", queued, want)
	}
}

// execReplies returns the replies of a run of n SETs that Redis sends, one
// effect refused at run time.
func execReplies(n int) []byte {
	b := []byte("+OK\r\n:1\r\n+OK\r\n")
	for i := 0; i < n+1; i++ {
		b = append(b, "+QUEUED\r\n"...)
	}
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(n+1), 10)
	b = append(b, "\r\n-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"...)
	for i := 0; i < n; i++ {
		b = append(b, "+OK\r\n"...)
	}
	return b
}

// TestReadRunReplies: the raw reader counts the effects that failed, and
// reports the guard's and EXEC's errors and EXEC's null.
func TestReadRunReplies(t *testing.T) {
	for _, tc := range []struct {
		name, replies string
		queued        int
		want          txResult
	}{
		{"ran", string(execReplies(3)), 4, txResult{exec: execRan, failed: 1}},
		{"aborted", "+OK\r\n:1\r\n+OK\r\n+QUEUED\r\n*-1\r\n", 1, txResult{exec: execAborted}},
		{"guard", "+OK\r\n-SYNCGAP 5:3\r\n+OK\r\n+QUEUED\r\n*-1\r\n", 1, txResult{guard: "SYNCGAP 5:3", exec: execAborted}},
		{"refused", "+OK\r\n:1\r\n+OK\r\n-ERR unknown command 'X'\r\n+QUEUED\r\n-EXECABORT Transaction discarded\r\n", 2,
			txResult{exec: execRefused, execErr: "EXECABORT Transaction discarded"}},
		{"nested", "+OK\r\n:1\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*2\r\n$1\r\na\r\n-ERR x\r\n$-1\r\n", 2, txResult{exec: execRan}},
	} {
		pc := &pipeConn{}
		pc.in.Reset([]byte(tc.replies))
		a := &Applier{sc: &slaveConn{Conn: pc, br: bufio.NewReader(pc)}}
		got, err := a.readRun(tc.queued)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
		if pc.in.Len() != 0 || a.sc.br.Buffered() != 0 {
			t.Errorf("%s: replies left unread", tc.name)
		}
	}
}

// BenchmarkApplyEncode compares the encoding of an apply transaction of 16
// SETs with redigo (before) and raw (after).
func BenchmarkApplyEncode(b *testing.B) {
	msgs := runOf(16)
	b.Run("redigo", func(b *testing.B) {
		pc := &pipeConn{}
		c := redis.NewConn(pc, 0, 0)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			pc.out.Reset()
			sendRunRedigo(c, msgs, 99, "")
		}
	})
	b.Run("raw", func(b *testing.B) {
		var buf []byte
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf, _ = appendRun(buf[:0], msgs, msgs[len(msgs)-1], 99, "")
		}
	})
}

// BenchmarkApplyReplies compares reading the replies of an apply transaction
// of 16 SETs with redigo (before) and raw (after).
func BenchmarkApplyReplies(b *testing.B) {
	replies := execReplies(15)
	b.Run("redigo", func(b *testing.B) {
		pc := &pipeConn{}
		c := redis.NewConn(pc, 0, 0)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			pc.in.Reset(replies)
			for j := 0; j < 3+16+1; j++ {
				c.Receive()
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		pc := &pipeConn{}
		a := &Applier{sc: &slaveConn{Conn: pc, br: bufio.NewReader(pc)}}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			pc.in.Reset(replies)
			a.readRun(16)
		}
	})
}
