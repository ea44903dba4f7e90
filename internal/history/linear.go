package history

import (
	"fmt"
	"math"
	"sort"

	"github.com/anishathalye/porcupine"
)

// regState is a key's value in the register model.
type regState struct {
	exists bool
	v      int64
}

// regOutput is an operation's result in the register model.
type regOutput struct {
	nil     bool
	v       int64
	unknown bool // a write with no reply: it took effect at some point, or never
}

// registerModel is the porcupine model of one key holding an integer: SET, INCR
// (1 on a missing key) and GET. init is the key's state before the history.
func registerModel(init regState) porcupine.Model {
	return porcupine.Model{
		Init: func() interface{} { return init },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			st, in, out := state.(regState), input.(Op), output.(regOutput)
			switch in.Kind {
			case Set:
				return true, regState{exists: true, v: in.Value}
			case Incr:
				next := regState{exists: true, v: st.v + 1}
				if !st.exists {
					next.v = 1
				}
				return out.unknown || out.v == next.v, next
			default: // Get
				if out.nil {
					return !st.exists, st
				}
				return st.exists && st.v == out.v, st
			}
		},
		DescribeOperation: func(input, output interface{}) string {
			return input.(Op).String()
		},
		DescribeState: func(state interface{}) string {
			if st := state.(regState); st.exists {
				return fmt.Sprint(st.v)
			}
			return "nil"
		},
	}
}

// linearizable checks the SET, INCR and GET operations of each key with porcupine.
func (c *checker) linearizable() {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range c.ops {
		o, ok := porcupineOp(op)
		if ok {
			byKey[op.Key] = append(byKey[op.Key], o)
		}
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		init := regState{}
		if v, ok := c.init[key]; ok {
			init = regState{exists: true, v: v}
		}
		hist := byKey[key]
		res, info := porcupine.CheckOperationsVerbose(registerModel(init), hist, c.cfg.LinearizeTimeout)
		switch res {
		case porcupine.Illegal:
			stuck, tail := stuckOps(hist, info)
			c.rep.add(Violation{Check: Linearizable, Ops: append(stuck, tail...),
				Msg: fmt.Sprintf("the operations on %s are not linearizable: the longest linearizable prefix cannot take the first %d below (earliest completion first); it ends with the last %d",
					key, len(stuck), len(tail))})
		case porcupine.Unknown:
			c.rep.Notes = append(c.rep.Notes, fmt.Sprintf("linearizability of %s undecided within %v (%d operations)",
				key, c.cfg.LinearizeTimeout, len(hist)))
		}
	}
}

// porcupineOp converts op for porcupine: acknowledged SET, INCR and GET, and writes
// of unknown outcome (never returning).
func porcupineOp(op Op) (porcupine.Operation, bool) {
	o := porcupine.Operation{ClientId: op.Conn, Input: op, Call: int64(op.Invoke), Return: int64(op.Complete)}
	switch {
	case op.Kind != Set && op.Kind != Incr && op.Kind != Get:
		return o, false
	case op.Outcome == OK:
		o.Output = regOutput{nil: op.Nil, v: op.Value}
	case op.Outcome == Unknown && op.Kind.IsWrite():
		o.Output, o.Return = regOutput{unknown: true}, math.MaxInt64
	default:
		return o, false
	}
	return o, true
}

// stuckOps returns, for an illegal history, a few operations the longest partial
// linearization could not take, earliest completion first, and the last few it took.
func stuckOps(hist []porcupine.Operation, info porcupine.LinearizationInfo) (stuck, tail []Op) {
	var longest []int
	for _, part := range info.PartialLinearizations() {
		for _, l := range part {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	taken := map[int]bool{}
	for _, id := range longest {
		taken[id] = true
	}
	var rest []porcupine.Operation
	for id, o := range hist {
		if !taken[id] {
			rest = append(rest, o)
		}
	}
	sort.Slice(rest, func(i, j int) bool { return rest[i].Return < rest[j].Return })
	for _, o := range rest[:min(3, len(rest))] {
		stuck = append(stuck, o.Input.(Op))
	}
	for _, id := range longest[max(0, len(longest)-3):] {
		tail = append(tail, hist[id].Input.(Op))
	}
	return stuck, tail
}
