package history

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Checks is a set of checks (see the package documentation).
type Checks uint

// The checks.
const (
	ReadYourWrites Checks = 1 << iota // a connection reads its own acknowledged writes
	MonotonicReads                    // a connection never reads an older version of a key
	CausalTokens                      // reads after CLIENT SYNCAFTER see what the token covers
	WaitAll                           // a write WAITed on every slave is seen by every later read
	Existing                          // a key given to Init is never read as nil
	Global                            // a read sees every write acknowledged before it was sent
	Linearizable                      // SET/INCR/GET are linearizable per key
)

// Sets of checks for the consistency levels.
const (
	Session     = ReadYourWrites | MonotonicReads | CausalTokens | WaitAll | Existing
	GlobalLevel = Session | Global
)

var checkNames = []struct {
	c    Checks
	name string
}{
	{ReadYourWrites, "read-your-writes"},
	{MonotonicReads, "monotonic-reads"},
	{CausalTokens, "causal-tokens"},
	{WaitAll, "wait"},
	{Existing, "existing-keys"},
	{Global, "global"},
	{Linearizable, "linearizable"},
}

// String names the checks of the set.
func (c Checks) String() string {
	var names []string
	for _, n := range checkNames {
		if c&n.c != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, "+")
}

// Config says what Check checks.
type Config struct {
	Checks           Checks        // the checks to run
	Slaves           int           // the number of slaves: WAIT answered >= Slaves covers every read (0: no WAIT check)
	Show             int           // violations kept in full per check (0: 5)
	LinearizeTimeout time.Duration // bound of the linearizability search per key (0: 10s)
}

// Violation is one broken guarantee.
type Violation struct {
	Check Checks // the check that caught it
	Msg   string // what is wrong
	Ops   []Op   // the offending operation first, then the ones that make it wrong
}

// String renders the violation with its operations, one per line.
func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", v.Check, v.Msg)
	for _, op := range v.Ops {
		b.WriteString("\n    " + op.String())
	}
	return b.String()
}

// Report is what Check found.
type Report struct {
	Ops, Reads, Writes int            // operations checked; reads and writes acknowledged
	Counts             map[Checks]int // violations per check
	Shown              []Violation    // the first violations of each check
	Notes              []string       // what could not be decided
	show               int            // Config.Show
	shown              map[Checks]int // len(Shown) per check
}

// Total is the number of violations of every check.
func (r *Report) Total() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// Count is the number of violations of check c.
func (r *Report) Count(c Checks) int { return r.Counts[c] }

// Summary is one line of figures.
func (r *Report) Summary() string {
	parts := []string{fmt.Sprintf("%d ops (%d reads, %d writes acknowledged)", r.Ops, r.Reads, r.Writes)}
	for _, n := range checkNames {
		if c, ok := r.Counts[n.c]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d", n.name, c))
		}
	}
	return strings.Join(parts, " ")
}

// String is the summary, the shown violations and the notes.
func (r *Report) String() string {
	var b strings.Builder
	b.WriteString(r.Summary())
	for _, v := range r.Shown {
		b.WriteString("\n  " + v.String())
	}
	for _, n := range r.Notes {
		b.WriteString("\n  note: " + n)
	}
	return b.String()
}

func (r *Report) add(v Violation) {
	r.Counts[v.Check]++
	if r.shown[v.Check] < r.show {
		r.shown[v.Check]++
		r.Shown = append(r.Shown, v)
	}
}

// Check checks ops (in invocation order, as Ops returns them) against cfg; init
// holds the keys' values before the history began.
func Check(ops []Op, init map[string]int64, cfg Config) Report {
	if cfg.Show <= 0 {
		cfg.Show = 5
	}
	if cfg.LinearizeTimeout <= 0 {
		cfg.LinearizeTimeout = 10 * time.Second
	}
	c := &checker{cfg: cfg, ops: finish(ops), init: init, tokens: map[string]int{}}
	c.rep = Report{Ops: len(ops), Counts: map[Checks]int{}, show: cfg.Show, shown: map[Checks]int{}}
	for _, n := range checkNames {
		if cfg.Checks&n.c != 0 {
			c.rep.Counts[n.c] = 0
		}
	}
	c.index()
	c.checkReads()
	if cfg.Checks&Linearizable != 0 {
		c.linearizable()
	}
	return c.rep
}

// finish returns ops with pending operations taken as unknown, never completed.
func finish(ops []Op) []Op {
	out := append([]Op(nil), ops...)
	for i := range out {
		out[i].Index = i
		if out[i].Outcome == Pending {
			out[i].Outcome, out[i].Complete = Unknown, time.Duration(math.MaxInt64)
		}
	}
	return out
}

// checker holds the indexes a check needs.
type checker struct {
	cfg    Config
	ops    []Op
	init   map[string]int64
	acks   floorIndex     // acknowledged writes, by completion
	tokens map[string]int // token -> the write it covers
	waits  floorIndex     // WAITed writes' own values, by WAIT completion
	waitAt []point        // by WAIT completion: the latest invocation of a WAITed write
	rep    Report
}

// point is an entry of an index: the highest value (or time) up to at, the op
// that has it, and the op through which it applies (a WAIT; -1 for none).
type point struct {
	at  time.Duration
	max int64
	op  int
	via int
}

// floorIndex holds, per key, points sorted by at with running maxima.
type floorIndex map[string][]point

func (x floorIndex) add(key string, p point) { x[key] = append(x[key], p) }

// build sorts every key's points and turns their values into running maxima.
func (x floorIndex) build() {
	for _, ps := range x {
		buildPoints(ps)
	}
}

func buildPoints(ps []point) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].at < ps[j].at })
	for i := 1; i < len(ps); i++ {
		if ps[i-1].max > ps[i].max {
			ps[i].max, ps[i].op, ps[i].via = ps[i-1].max, ps[i-1].op, ps[i-1].via
		}
	}
}

// before returns the highest point of key strictly before t.
func (x floorIndex) before(key string, t time.Duration) (point, bool) {
	return pointBefore(x[key], t)
}

func pointBefore(ps []point, t time.Duration) (point, bool) {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].at >= t })
	if i == 0 {
		return point{}, false
	}
	return ps[i-1], true
}

// index builds the acknowledged-writes index, the tokens and the WAITs.
func (c *checker) index() {
	c.acks, c.waits = floorIndex{}, floorIndex{}
	lastWrite := map[int]int{} // conn -> its last acknowledged write
	for _, op := range c.ops {
		if op.Outcome != OK {
			continue
		}
		switch {
		case op.Kind.IsWrite():
			c.rep.Writes++
			lastWrite[op.Conn] = op.Index
			c.acks.add(op.Key, point{at: op.Complete, max: op.Value, op: op.Index, via: -1})
		case op.Kind == Get:
			c.rep.Reads++
		case op.Kind == SyncToken && op.Token != "":
			if w, ok := lastWrite[op.Conn]; ok {
				c.tokens[op.Token] = w
			}
		case op.Kind == Wait && c.cfg.Slaves > 0 && op.Value >= int64(c.cfg.Slaves):
			if w, ok := lastWrite[op.Conn]; ok {
				wr := c.ops[w]
				c.waits.add(wr.Key, point{at: op.Complete, max: wr.Value, op: w, via: op.Index})
				c.waitAt = append(c.waitAt, point{at: op.Complete, max: int64(wr.Invoke), op: w, via: op.Index})
			}
		}
	}
	c.acks.build()
	c.waits.build()
	buildPoints(c.waitAt)
}

// floor is a version a read must not be older than: the write that made it, and
// the operation through which the read must see it (-1: none).
type floor struct {
	value int64
	op    int
	via   int
	ok    bool
}

func (f floor) raise(g floor) floor {
	if g.ok && (!f.ok || g.value > f.value) {
		return g
	}
	return f
}

func fromPoint(p point, ok bool) floor { return floor{value: p.max, op: p.op, via: p.via, ok: ok} }

// covered is the floor of key that write w covers: w itself and every write
// acknowledged before w was sent.
func (c *checker) covered(w int, key string) floor {
	wr := c.ops[w]
	f := fromPoint(c.acks.before(key, wr.Invoke))
	f.via = -1
	if wr.Key == key {
		f = f.raise(floor{value: wr.Value, op: w, via: -1, ok: true})
	}
	return f
}

// globalFloor is the floor of a read invoked at t under the Global check.
func (c *checker) globalFloor(key string, t time.Duration) floor {
	f := fromPoint(c.acks.before(key, t))
	f.via = -1
	return f
}

// waitFloor is the floor WAITs completed before t impose on key.
func (c *checker) waitFloor(key string, t time.Duration) floor {
	f := fromPoint(c.waits.before(key, t))
	p, ok := pointBefore(c.waitAt, t)
	if !ok {
		return f
	}
	g := fromPoint(c.acks.before(key, time.Duration(p.max)))
	g.via = p.via
	return f.raise(g)
}

// stale reports whether read r is older than f.
func stale(r Op, f floor) bool { return f.ok && (r.Nil || r.Value < f.value) }

// violate adds a violation of check by read r against floor f.
func (c *checker) violate(check Checks, r Op, f floor, why string) {
	ops := []Op{r, c.ops[f.op]}
	if f.via >= 0 {
		ops = append(ops, c.ops[f.via])
	}
	got := "nil"
	if !r.Nil {
		got = fmt.Sprint(r.Value)
	}
	c.rep.add(Violation{Check: check, Ops: ops,
		Msg: fmt.Sprintf("GET %s returned %s, older than %d %s", r.Key, got, f.value, why)})
}
