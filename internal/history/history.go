package history

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind uint8

// Kinds of operations.
const (
	Set       Kind = iota + 1 // SET key value: Value is the value written
	Incr                      // INCR key: Value is the reply
	Get                       // GET key: Value is the reply, or Nil
	Wait                      // WAIT n timeout: Value is the reply
	SyncToken                 // CLIENT SYNCTOKEN: Token is the reply
	SyncAfter                 // CLIENT SYNCAFTER Token
)

var kindNames = [...]string{"?", "SET", "INCR", "GET", "WAIT", "SYNCTOKEN", "SYNCAFTER"}

// String is the command's name.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind" + strconv.Itoa(int(k))
}

// IsWrite reports whether the kind changes a key.
func (k Kind) IsWrite() bool { return k == Set || k == Incr }

// Outcome is how an operation ended.
type Outcome uint8

// Outcomes. A finished history has no Pending operation; Check takes one for Unknown.
const (
	Pending Outcome = iota // invoked, not completed
	OK                     // answered without error
	Failed                 // an error reply: it certainly did not take effect
	Unknown                // no reply: it may or may not have taken effect
)

var outcomeNames = [...]string{"pending", "ok", "failed", "unknown"}

// String is the outcome's name.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome" + strconv.Itoa(int(o))
}

// Op is one operation of a history.
type Op struct {
	Index    int           // position in the history, in invocation order
	Client   int           // the client (a pooled client has several connections)
	Proxy    int           // the proxy the connection goes to
	Conn     int           // the connection, unique in the history
	Kind     Kind          // what it did
	Key      string        // the key, for SET, INCR and GET
	Value    int64         // the value written or read, WAIT's reply
	Nil      bool          // GET answered nil
	Token    string        // CLIENT SYNCTOKEN's reply, CLIENT SYNCAFTER's argument
	Invoke   time.Duration // when it was sent, since the history began
	Complete time.Duration // when its reply arrived
	Outcome  Outcome       // how it ended
	Err      string        // the error, for Failed and Unknown
}

// String renders the operation for a report.
func (o Op) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d c%d/p%d/conn%d %s", o.Index, o.Client, o.Proxy, o.Conn, o.Kind)
	switch o.Kind {
	case Set:
		fmt.Fprintf(&b, " %s %d", o.Key, o.Value)
	case Incr, Get:
		b.WriteString(" " + o.Key)
	case SyncAfter:
		b.WriteString(" " + o.Token)
	}
	if o.Outcome == OK {
		switch {
		case o.Kind == Get && o.Nil:
			b.WriteString(" -> nil")
		case o.Kind == Incr || o.Kind == Get || o.Kind == Wait:
			fmt.Fprintf(&b, " -> %d", o.Value)
		case o.Kind == SyncToken:
			fmt.Fprintf(&b, " -> %q", o.Token)
		}
	}
	fmt.Fprintf(&b, " [%v..%v] %s", o.Invoke, o.Complete, o.Outcome)
	if o.Err != "" {
		b.WriteString(": " + o.Err)
	}
	return b.String()
}

// History is a record of operations, shared by the clients of a test.
type History struct {
	start time.Time // carries the monotonic clock reading

	mu   sync.Mutex
	ops  []Op
	init map[string]int64
}

// New returns an empty history whose clock starts now.
func New() *History {
	return &History{start: time.Now(), init: map[string]int64{}}
}

// Init declares that key held value before the history began.
func (h *History) Init(key string, value int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.init[key] = value
}

// Invoke records op as sent now and returns the Call that completes it. Index,
// Invoke, Complete and Outcome are set by the history.
func (h *History) Invoke(op Op) *Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Index = len(h.ops)
	op.Invoke = time.Since(h.start)
	op.Outcome = Pending
	h.ops = append(h.ops, op)
	return &Call{h: h, i: op.Index}
}

// Ops returns a copy of the operations, in invocation order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

// Inits returns a copy of the values given to Init.
func (h *History) Inits() map[string]int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int64, len(h.init))
	for k, v := range h.init {
		m[k] = v
	}
	return m
}

// Check checks the history as it stands (see the package Check).
func (h *History) Check(cfg Config) Report { return Check(h.Ops(), h.Inits(), cfg) }

// Call is an operation in flight.
type Call struct {
	h *History
	i int
}

// end completes the call now with outcome, after set changed the operation.
func (c *Call) end(outcome Outcome, set func(*Op)) {
	now := time.Since(c.h.start)
	c.h.mu.Lock()
	defer c.h.mu.Unlock()
	op := &c.h.ops[c.i]
	op.Complete, op.Outcome = now, outcome
	if set != nil {
		set(op)
	}
}

// OK completes the call with a value: INCR's or GET's reply, WAIT's count (SET has
// its value from Invoke; 0 leaves it).
func (c *Call) OK(value int64) {
	c.end(OK, func(op *Op) {
		if op.Kind != Set || value != 0 {
			op.Value = value
		}
	})
}

// Nil completes a GET that answered nil.
func (c *Call) Nil() { c.end(OK, func(op *Op) { op.Nil = true }) }

// Token completes CLIENT SYNCTOKEN with its reply.
func (c *Call) Token(tok string) { c.end(OK, func(op *Op) { op.Token = tok }) }

// Fail completes a call that certainly did not take effect (an error reply).
func (c *Call) Fail(err error) { c.end(Failed, func(op *Op) { op.Err = errText(err) }) }

// Unknown completes a call that may or may not have taken effect.
func (c *Call) Unknown(err error) { c.end(Unknown, func(op *Op) { op.Err = errText(err) }) }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
