package proxy

import "testing"

// TestTrackingEncode: invalidations as Redis sends them — RESP3 pushes, RESP2
// __redis__:invalidate messages, nothing to a RESP2 client outside subscribed
// mode; one frame per key in default mode, one for all in BCAST; a null one
// first; NOLOOP leaves out the session's own writes unless a write of the same
// group commit (same sequence number) wrote the key too.
func TestTrackingEncode(t *testing.T) {
	q := []inval{{"a", 5}, {"b", 6}, {"a", 6}, {"a", 6}}
	own := []ownWrite{{"a", 6}, {"b", 7}}
	cases := []struct {
		name          string
		bcast         bool
		resp3, pubsub bool
		null          bool
		q             []inval
		own           []ownWrite
		want          string
	}{
		{"resp3 keys", false, true, false, false, q[:2], nil,
			">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n"},
		{"resp3 null", false, true, false, true, nil, nil, ">2\r\n$10\r\ninvalidate\r\n_\r\n"},
		{"resp2 message null then key", false, false, true, true, q[1:2], nil,
			"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n" +
				"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$1\r\nb\r\n"},
		{"resp2 not subscribed", false, false, false, true, q, nil, ""},
		{"bcast one frame", true, true, false, false, q[:2], nil,
			">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"},
		{"noloop own write left out", false, true, false, false, q[:3], own,
			">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n>2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n"},
		{"noloop another write of the group", true, true, false, false, q, own,
			">2\r\n$10\r\ninvalidate\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\na\r\n"},
	}
	for _, c := range cases {
		tr := &trackState{bcast: c.bcast}
		if got := string(tr.encode(nil, c.resp3, c.pubsub, c.null, c.q, c.own)); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// TestTrackingOverlap: BCAST prefixes overlap when one starts the other.
func TestTrackingOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"a", "ab", true}, {"ab", "a", true}, {"a", "a", true}, {"a", "b", false}, {"", "x", true}} {
		if got := overlap(c.a, c.b); got != c.want {
			t.Errorf("overlap(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// TestRecentWrites: which keys may have been written after a read's position.
func TestRecentWrites(t *testing.T) {
	var r recentWrites
	if !r.since("k", "e", 10) {
		t.Error("nothing known: every key may have been written")
	}
	r.note("e", 11, "a") // the first write given: those before 11 are not known
	switch {
	case !r.since("b", "e", 9):
		t.Error("b read at 9: writes at 10 are not known")
	case r.since("b", "e", 10):
		t.Error("b read at 10: not written since")
	case !r.since("a", "e", 10):
		t.Error("a read at 10: written at 11")
	case r.since("a", "e", 11):
		t.Error("a read at 11 shows its write")
	case !r.since("a", "other", 20):
		t.Error("another epoch: not known")
	}
	r.note("e", 12, "") // a flush
	if !r.since("b", "e", 11) || r.since("b", "e", 12) {
		t.Error("a flush at 12 writes every key")
	}
	for i := int64(0); i < recentMax+1; i++ {
		r.note("e", 13+i, "x")
	}
	if !r.since("b", "e", 12) {
		t.Error("the ring forgot the first writes: a read before them may be behind any key")
	}
	tr := &tracker{}
	tr.started("e2", 100)
	if tr.recent.since("z", "e2", 100) || !tr.recent.since("z", "e2", 99) {
		t.Error("started at 100: the writes after it are known, not those before")
	}
}
