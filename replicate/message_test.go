package replicate_test

import (
	"bytes"
	"reflect"
	"strconv"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

func TestMessageRoundTrip(t *testing.T) {
	m := &replicate.Message{
		Epoch:  "e1",
		Seq:    42,
		TimeMs: 1700000000123,
		Effects: []replicate.Effect{
			{DB: 0, Args: [][]byte{[]byte("SET"), []byte("k\r\n\x00"), {}}},
			{DB: 15, Args: [][]byte{[]byte("DEL"), []byte("a"), []byte("b")}},
		},
	}
	b := replicate.AppendMessage(nil, m)
	got, err := replicate.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("decoded %+v, want %+v", got, m)
	}
	for i := 0; i < len(b); i++ {
		if _, err := replicate.DecodeMessage(b[:i]); err == nil {
			t.Fatalf("truncated message (%d of %d bytes) decoded", i, len(b))
		}
	}
	if _, err := replicate.DecodeMessage(append(b, 'x')); err == nil {
		t.Fatal("trailing garbage accepted")
	}
	other := bytes.Replace(b, []byte(replicate.MessageTag), []byte("syncproxy/9"), 1)
	if _, err := replicate.DecodeMessage(other); err != replicate.ErrMessageTag {
		t.Fatalf("unknown tag: %v", err)
	}
}

// TestScriptEncoding runs the master script on a real Redis and checks that the
// message it publishes and stores is what AppendMessage encodes.
func TestScriptEncoding(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Dial(t)
	sub := srv.Dial(t)
	psc := redis.PubSubConn{Conn: sub}
	if err := psc.Subscribe("chan"); err != nil {
		t.Fatal(err)
	}
	if _, ok := psc.Receive().(redis.Subscription); !ok {
		t.Fatal("no subscription")
	}
	ms := replicate.MasterScript()
	if sha, err := redis.String(c.Do("SCRIPT", "LOAD", ms.Body)); err != nil || sha != ms.SHA {
		t.Fatalf("SCRIPT LOAD: %v %v", sha, err)
	}
	effect := func(db string, args ...string) string {
		b := redcon.AppendArray(nil, len(args)+1)
		b = redcon.AppendBulkString(b, db)
		for _, a := range args {
			b = redcon.AppendBulkString(b, a)
		}
		return string(b)
	}
	reply, err := redis.Values(c.Do("EVALSHA", ms.SHA, 0, "ep", 1000, "chan", 1700000000000, 0, 3,
		2, 3, 0, effect("2", "SET", "k", "v\x00"), "SET", "k", "v\x00",
		0, 3, 0, effect("0", "LPUSH", "k2", "x"), "LPUSH", "k2", "x",
		2, 3, 0, effect("2", "LPUSH", "k", "x"), "LPUSH", "k", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if reply[0].(int64) != 1 || string(reply[1].([]byte)) != "ep-1700000000000" || reply[2] != "OK" || reply[3].(int64) != 1 {
		t.Fatalf("reply %#v", reply)
	}
	if _, ok := reply[4].(redis.Error); !ok {
		t.Fatalf("WRONGTYPE expected, got %#v", reply[4])
	}
	want := replicate.AppendMessage(nil, &replicate.Message{Epoch: "ep-1700000000000", Seq: 1, TimeMs: 1700000000000, Effects: []replicate.Effect{
		{DB: 2, Args: [][]byte{[]byte("SET"), []byte("k"), []byte("v\x00")}},
		{DB: 0, Args: [][]byte{[]byte("LPUSH"), []byte("k2"), []byte("x")}},
	}})
	m, ok := psc.Receive().(redis.Message)
	if !ok || !bytes.Equal(m.Data, want) {
		t.Fatalf("published %q, want %q", m.Data, want)
	}
	entries, err := redis.Values(c.Do("XRANGE", replicate.KeyBacklog, "-", "+"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("backlog %v %v", entries, err)
	}
	e, _ := redis.Values(entries[0], nil)
	fields, _ := redis.ByteSlices(e[1], nil)
	if string(e[0].([]byte)) != "1-0" || !bytes.Equal(fields[1], want) {
		t.Fatalf("backlog entry %q %q", e[0], fields)
	}
	// The client's connection is back in its own DB after the script.
	if v, err := redis.String(c.Do("GET", "k")); err != redis.ErrNil {
		t.Fatalf("GET k in DB 0 = %q %v (the SET went to DB 2)", v, err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(replicate.AppendMessage(nil, &replicate.Message{Epoch: "e", Seq: 1, TimeMs: 1, Effects: []replicate.Effect{{DB: 0, Args: [][]byte{[]byte("SET"), []byte("a"), []byte("b")}}}}))
	f.Add(replicate.AppendMessage(nil, &replicate.Message{Epoch: "e", Seq: 9, TimeMs: 0}))
	f.Add([]byte("*5\r\n$11\r\nsyncproxy/1\r\n$1\r\ne\r\n:1\r\n:1\r\n*1000000\r\n"))
	f.Add([]byte("*5\r\n$11\r\nsyncproxy/1\r\n$-1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := replicate.DecodeMessage(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		if again := replicate.AppendMessage(nil, m); !bytes.Equal(again, b) {
			// Non-canonical integers ("+1", "01") decode but re-encode differently;
			// the decoded message must still round-trip.
			m2, err := replicate.DecodeMessage(again)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("%q decoded to %+v, which re-encodes to %q (%v)", b, m, again, err)
			}
		}
	})
}

// BenchmarkDecodeMessage decodes a message of a native group of 200 SETs, as
// the backlog reader does for each one it reads.
func BenchmarkDecodeMessage(b *testing.B) {
	m := &replicate.Message{Epoch: "0123456789abcdef0123456789abcdef01234567-1700000000000", Seq: 42, TimeMs: 1700000000000}
	for i := 0; i < 200; i++ {
		m.Effects = append(m.Effects, replicate.Effect{Args: [][]byte{[]byte("SET"), []byte("key:" + strconv.Itoa(i)), []byte("xyz")}})
	}
	raw := replicate.AppendMessage(nil, m)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for i := 0; i < b.N; i++ {
		if _, err := replicate.DecodeMessage(raw); err != nil {
			b.Fatal(err)
		}
	}
}
