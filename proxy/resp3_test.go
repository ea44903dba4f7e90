package proxy

import (
	"strings"
	"testing"
)

// args3 splits a command line for the shape tests.
func args3(line string) [][]byte {
	var out [][]byte
	for _, f := range strings.Fields(line) {
		out = append(out, []byte(f))
	}
	return out
}

// TestToRESP3 checks the conversion of RESP2 replies to Redis 7.0's RESP3
// replies, command by command, on replies whose shape the differential tests
// cannot pin byte for byte (times, dict order): the RESP3 forms are Redis'.
func TestToRESP3(t *testing.T) {
	cases := []struct {
		name, line string
		in, want   string
	}{
		{"get", "GET k", "$-1\r\n", "_\r\n"},
		{"mget", "MGET a b", "*2\r\n$-1\r\n$1\r\nx\r\n", "*2\r\n_\r\n$1\r\nx\r\n"},
		{"exec", "EXEC", "*-1\r\n", "_\r\n"},
		{"get", "GET k", "-ERR x\r\n", "-ERR x\r\n"},
		{"get", "GET k", "$7\r\n$-1\r\n*-\r\n", "$7\r\n$-1\r\n*-\r\n"}, // a null's bytes inside a value stay
		{"hgetall", "HGETALL h", "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$-1\r\n", "%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n_\r\n"},
		{"hgetall", "HGETALL h", "-WRONGTYPE x\r\n", "-WRONGTYPE x\r\n"},
		{"smembers", "SMEMBERS s", "*1\r\n$1\r\na\r\n", "~1\r\n$1\r\na\r\n"},
		{"zscore", "ZSCORE z m", "$3\r\n1.5\r\n", ",1.5\r\n"},
		{"zadd", "ZADD z 1 m", ":1\r\n", ":1\r\n"},
		{"zrange", "ZRANGE z 0 -1 withscores", "*2\r\n$1\r\nm\r\n$4\r\n-inf\r\n", "*1\r\n*2\r\n$1\r\nm\r\n,-inf\r\n"},
		{"zrange", "ZRANGE z 0 -1", "*1\r\n$1\r\nm\r\n", "*1\r\n$1\r\nm\r\n"},
		{"zpopmin", "ZPOPMIN z", "*0\r\n", "*0\r\n"},
		{"info", "INFO", "$3\r\na:b\r\n", "=7\r\ntxt:a:b\r\n"},
		{"xread", "XREAD STREAMS a b 0 0", "*2\r\n*2\r\n$1\r\na\r\n*0\r\n*2\r\n$1\r\nb\r\n*0\r\n",
			"%2\r\n$1\r\na\r\n*0\r\n$1\r\nb\r\n*0\r\n"},
		{"memory|stats", "MEMORY STATS", "*6\r\n$4\r\ndb.0\r\n*2\r\n$1\r\nx\r\n:1\r\n$3\r\npct\r\n$3\r\n1.5\r\n$1\r\nn\r\n:2\r\n",
			"%3\r\n$4\r\ndb.0\r\n%1\r\n$1\r\nx\r\n:1\r\n$3\r\npct\r\n,1.5\r\n$1\r\nn\r\n:2\r\n"},
		{"xinfo|stream", "XINFO STREAM x FULL",
			"*4\r\n$7\r\nentries\r\n*0\r\n$6\r\ngroups\r\n*1\r\n*4\r\n$4\r\nname\r\n$1\r\ng\r\n$9\r\nconsumers\r\n*1\r\n*2\r\n$4\r\nname\r\n$1\r\nc\r\n",
			"%2\r\n$7\r\nentries\r\n*0\r\n$6\r\ngroups\r\n*1\r\n%2\r\n$4\r\nname\r\n$1\r\ng\r\n$9\r\nconsumers\r\n*1\r\n%1\r\n$4\r\nname\r\n$1\r\nc\r\n"},
		{"function|list", "FUNCTION LIST",
			"*1\r\n*4\r\n$12\r\nlibrary_name\r\n$1\r\nl\r\n$9\r\nfunctions\r\n*1\r\n*4\r\n$4\r\nname\r\n$1\r\nf\r\n$5\r\nflags\r\n*1\r\n+no-writes\r\n",
			"*1\r\n%2\r\n$12\r\nlibrary_name\r\n$1\r\nl\r\n$9\r\nfunctions\r\n*1\r\n%2\r\n$4\r\nname\r\n$1\r\nf\r\n$5\r\nflags\r\n~1\r\n+no-writes\r\n"},
		{"acl|getuser", "ACL GETUSER u",
			"*4\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$9\r\nselectors\r\n*1\r\n*2\r\n$4\r\nkeys\r\n$3\r\n~x*\r\n",
			"%2\r\n$5\r\nflags\r\n~1\r\n$2\r\non\r\n$9\r\nselectors\r\n*1\r\n%1\r\n$4\r\nkeys\r\n$3\r\n~x*\r\n"},
		{"command|info", "COMMAND INFO x",
			"*2\r\n$-1\r\n*10\r\n$1\r\nx\r\n:-2\r\n*0\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*1\r\n" +
				"*10\r\n$3\r\nx|y\r\n:2\r\n*1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n",
			"*2\r\n_\r\n*10\r\n$1\r\nx\r\n:-2\r\n~0\r\n:0\r\n:0\r\n:0\r\n~0\r\n~0\r\n~0\r\n*1\r\n" +
				"*10\r\n$3\r\nx|y\r\n:2\r\n~1\r\n+fast\r\n:0\r\n:0\r\n:0\r\n~0\r\n~0\r\n~0\r\n~0\r\n"},
		{"hgetall", "HGETALL h", "*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n", "*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n"}, // odd: kept
		{"hgetall", "HGETALL h", "*4\r\n$1\r\na\r\n", "*4\r\n$1\r\na\r\n"},                                             // cut short: kept
		{"hgetall", "HGETALL h", "%1\r\n$1\r\na\r\n_\r\n", "%1\r\n$1\r\na\r\n_\r\n"},                                   // RESP3 already
		{"get", "GET k", "|1\r\n$1\r\na\r\n$-1\r\n$-1\r\n", "|1\r\n$1\r\na\r\n_\r\n_\r\n"},                             // attribute, then the value
	}
	for _, tc := range cases {
		got := string(toRESP3(replyShape(tc.name, args3(tc.line)), []byte(tc.in)))
		if got != tc.want {
			t.Errorf("%s %q:\n\tgot  %q\n\twant %q", tc.line, tc.in, got, tc.want)
		}
		if again := string(toRESP3(replyShape(tc.name, args3(tc.line)), []byte(got))); again != got {
			t.Errorf("%s: converting twice gave %q", tc.line, again)
		}
	}
}

// TestToPush checks pub/sub frames as RESP3 pushes.
func TestToPush(t *testing.T) {
	cases := map[string]string{
		"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n":       ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$0\r\n\r\n",
		"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n":          ">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
		"-ERR wrong number of arguments for 'subscribe'\r\n": "-ERR wrong number of arguments for 'subscribe'\r\n",
	}
	for in, want := range cases {
		if got := string(toPush([]byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// TestRawShape checks the shape of a queued command's reply, found from its
// RESP frame (EXEC's replies).
func TestRawShape(t *testing.T) {
	if sh := rawShape(buildCommand(args3("XINFO STREAM x FULL"))); sh != xinfoFull {
		t.Errorf("XINFO STREAM x FULL: %+v", sh)
	}
	if sh := rawShape(buildCommand(args3("zrange z 0 1 WITHSCORES"))); sh != withScores {
		t.Errorf("ZRANGE WITHSCORES: %+v", sh)
	}
	if sh := rawShape(buildCommand(args3("CONFIG GET x"))); sh != flatMap {
		t.Errorf("CONFIG GET: %+v", sh)
	}
	if sh := rawShape(buildCommand(args3("GET k"))); sh != nil {
		t.Errorf("GET: %+v", sh)
	}
}

// FuzzToRESP3 checks that no input makes the conversion panic or loop.
func FuzzToRESP3(f *testing.F) {
	f.Add("hgetall", "*2\r\n$1\r\na\r\n$-1\r\n")
	f.Add("xread", "*1\r\n*2\r\n$1\r\na\r\n*0\r\n")
	f.Add("command|info", "*1\r\n*10\r\n$1\r\nx\r\n:1\r\n*0\r\n:0\r\n:0\r\n:0\r\n*0\r\n*0\r\n*0\r\n*0\r\n")
	f.Add("zrange", "*2\r\n$1\r\nm\r\n$1\r\n1\r\n")
	f.Fuzz(func(t *testing.T, name, in string) {
		out := toRESP3(replyShape(name, args3("x withscores full idx withvalues withcoord")), []byte(in))
		_ = toPush(out)
	})
}
