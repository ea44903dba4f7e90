package history

import "fmt"

// connState is what a connection did so far, as the read checks walk it.
type connState struct {
	own   map[string]floor // its acknowledged writes per key
	seen  map[string]int   // its newest read per key
	after int              // the SYNCAFTER in force, -1 for none
	token int              // the write its token covers, -1 for none
}

// checkReads walks the operations in invocation order (each connection's in its
// own order) and checks every acknowledged read.
func (c *checker) checkReads() {
	conns := map[int]*connState{}
	for _, op := range c.ops {
		st := conns[op.Conn]
		if st == nil {
			st = &connState{own: map[string]floor{}, seen: map[string]int{}, after: -1, token: -1}
			conns[op.Conn] = st
		}
		if op.Outcome != OK {
			continue
		}
		switch {
		case op.Kind.IsWrite():
			st.own[op.Key] = st.own[op.Key].raise(floor{value: op.Value, op: op.Index, via: -1, ok: true})
		case op.Kind == SyncAfter:
			st.after, st.token = op.Index, -1
			if w, ok := c.tokens[op.Token]; ok {
				st.token = w
			}
		case op.Kind == Get:
			c.checkRead(st, op)
			c.noteRead(st, op)
		}
	}
}

// checkRead checks one acknowledged read of a connection in state st.
func (c *checker) checkRead(st *connState, r Op) {
	on := c.cfg.Checks
	if on&ReadYourWrites != 0 {
		if f := st.own[r.Key]; stale(r, f) {
			c.violate(ReadYourWrites, r, f, "written before on the same connection")
		}
	}
	if on&MonotonicReads != 0 {
		if i, ok := st.seen[r.Key]; ok && newer(c.ops[i], r) {
			got := "nil"
			if !r.Nil {
				got = fmt.Sprint(r.Value)
			}
			c.rep.add(Violation{Check: MonotonicReads, Ops: []Op{r, c.ops[i]},
				Msg: fmt.Sprintf("GET %s returned %s after %s on the same connection", r.Key, got, c.ops[i].valueText())})
		}
	}
	if on&CausalTokens != 0 && st.token >= 0 {
		if f := c.covered(st.token, r.Key); stale(r, f) {
			f.via = st.after
			c.violate(CausalTokens, r, f, "covered by the token given to CLIENT SYNCAFTER")
		}
	}
	if on&WaitAll != 0 {
		if f := c.waitFloor(r.Key, r.Invoke); stale(r, f) {
			c.violate(WaitAll, r, f, "applied on every slave according to WAIT")
		}
	}
	if on&Existing != 0 && r.Nil {
		if v, ok := c.init[r.Key]; ok {
			c.rep.add(Violation{Check: Existing, Ops: []Op{r},
				Msg: fmt.Sprintf("GET %s returned nil; the key exists (initialized to %d, never deleted)", r.Key, v)})
		}
	}
	if on&Global != 0 {
		if f := c.globalFloor(r.Key, r.Invoke); stale(r, f) {
			c.violate(Global, r, f, "acknowledged before the read was sent")
		}
	}
}

// noteRead keeps r as the connection's newest read of its key.
func (c *checker) noteRead(st *connState, r Op) {
	if i, ok := st.seen[r.Key]; !ok || newer(r, c.ops[i]) {
		st.seen[r.Key] = r.Index
	}
}

// newer reports whether read a returned a newer version than read b.
func newer(a, b Op) bool {
	switch {
	case a.Nil:
		return false
	case b.Nil:
		return true
	}
	return a.Value > b.Value
}

// valueText is a read's result for a message.
func (o Op) valueText() string {
	if o.Nil {
		return "nil"
	}
	return fmt.Sprint(o.Value)
}
