package replicate

import "testing"

func TestRecentMessages(t *testing.T) {
	r := newRecentMessages(4)
	msg := func(epoch string, seq int64) *Message { return &Message{Epoch: epoch, Seq: seq} }
	for s := int64(1); s <= 6; s++ {
		r.add(msg("e", s))
	}
	for _, c := range []struct {
		from, to int64
		want     bool
	}{
		{3, 6, true}, {4, 5, true}, {6, 6, true},
		{2, 6, false}, // fell out of the ring
		{5, 7, false}, // not read yet
		{5, 4, false}, // empty span
	} {
		got := r.span("e", c.from, c.to)
		if (got != nil) != c.want {
			t.Errorf("span(%d, %d) = %d messages, want held %v", c.from, c.to, len(got), c.want)
			continue
		}
		for i, m := range got {
			if m.Seq != c.from+int64(i) {
				t.Errorf("span(%d, %d)[%d] is seq %d", c.from, c.to, i, m.Seq)
			}
		}
	}
	if r.span("other", 5, 6) != nil {
		t.Error("span of another epoch")
	}
	r.add(msg("e", 9)) // a gap: what was held no longer leads to it
	if r.span("e", 6, 6) != nil || r.span("e", 9, 9) == nil {
		t.Error("after a gap the ring must hold only what follows it")
	}
	r.add(msg("f", 1)) // another epoch: e's tail is kept apart
	if r.span("e", 9, 9) == nil || r.span("f", 1, 1) == nil {
		t.Error("after an epoch change the ring must hold the new epoch and the old one's tail")
	}
	r.add(msg("f", 2))
	if r.span("e", 9, 9) == nil || r.span("f", 1, 2) == nil || r.span("e", 8, 9) != nil {
		t.Error("the old epoch's tail must stay as it was")
	}
	for i, e := range []string{"g", "h", "i"} { // the oldest epoch's tail goes
		r.add(msg(e, 1))
		if held := r.span("e", 9, 9) != nil; held != (i < 2) || r.span(e, 1, 1) == nil || r.span("f", 1, 2) == nil {
			t.Errorf("after epoch %s: e's tail held %v, want the last %d epochs", e, held, recentEpochs)
		}
	}
}

// TestRecentMessagesBytes: what the ring holds is bounded in bytes too.
func TestRecentMessagesBytes(t *testing.T) {
	r := newRecentMessages(100)
	big := make([]byte, recentMaxBytes/4)
	for s := int64(1); s <= 10; s++ {
		r.add(&Message{Epoch: "e", Seq: s, Effects: []Effect{{Args: [][]byte{[]byte("SET"), []byte("k"), big}}}})
	}
	if r.rings[0].bytes > recentMaxBytes {
		t.Errorf("the ring holds %d bytes, more than %d", r.rings[0].bytes, recentMaxBytes)
	}
	if r.span("e", 10, 10) == nil || r.span("e", 1, 10) != nil {
		t.Errorf("the ring holds %d messages, want the newest only within the bound", r.rings[0].n)
	}
}

// TestChannelCopies: a number is taken from the channel only when it was
// received exactly once (or twice the same), whole and well-formed.
func TestChannelCopies(t *testing.T) {
	enc := func(epoch string, seq int64, val string) []byte {
		return AppendMessage(nil, &Message{Epoch: epoch, Seq: seq, Effects: []Effect{{Args: [][]byte{[]byte("SET"), []byte("k"), []byte(val)}}}})
	}
	c := newChannelCopies()
	for s := int64(1); s <= 5; s++ {
		c.add("e", s, enc("e", s, "v"))
	}
	c.add("e", 3, enc("e", 3, "v")) // the same again: harmless
	if got := c.span("e", 2, 4); len(got) != 3 || got[0].Seq != 2 || string(got[2].Effects[0].Args[2]) != "v" {
		t.Fatalf("span(2, 4) = %v", got)
	}
	if c.last("e") != 5 || c.last("f") != 0 {
		t.Errorf("last: %d %d", c.last("e"), c.last("f"))
	}
	c.add("e", 4, enc("e", 4, "forged")) // two different messages numbered 4
	if c.span("e", 2, 4) != nil || c.span("e", 4, 5) != nil {
		t.Error("a number received twice with different messages was used")
	}
	if c.span("e", 5, 6) != nil {
		t.Error("a number never received was used")
	}
	c.add("e", 6, enc("f", 6, "v")) // its message names another epoch
	c.add("e", 7, []byte("junk"))
	if c.span("e", 6, 6) != nil || c.span("e", 7, 7) != nil {
		t.Error("a malformed or mislabelled message was used")
	}
	if c.span("e", 5, 5) == nil {
		t.Error("span(5, 5) missing")
	}
}
