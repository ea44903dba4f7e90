package history

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// builder makes hand-made histories; times are in milliseconds. Operations must be
// added in invocation order.
type builder struct{ ops []Op }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func (b *builder) add(o Op, inv, done int) *builder {
	o.Index, o.Invoke, o.Complete = len(b.ops), ms(inv), ms(done)
	if o.Outcome == Pending {
		o.Outcome = OK
	}
	b.ops = append(b.ops, o)
	return b
}

func (b *builder) incr(conn int, key string, v int64, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: Incr, Key: key, Value: v}, inv, done)
}

func (b *builder) set(conn int, key string, v int64, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: Set, Key: key, Value: v}, inv, done)
}

func (b *builder) get(conn int, key string, v int64, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: Get, Key: key, Value: v}, inv, done)
}

func (b *builder) getNil(conn int, key string, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: Get, Key: key, Nil: true}, inv, done)
}

func (b *builder) wait(conn int, n int64, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: Wait, Value: n}, inv, done)
}

func (b *builder) token(conn int, tok string, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: SyncToken, Token: tok}, inv, done)
}

func (b *builder) after(conn int, tok string, inv, done int) *builder {
	return b.add(Op{Conn: conn, Kind: SyncAfter, Token: tok}, inv, done)
}

const all = GlobalLevel | Linearizable

// check runs every check on b with two slaves.
func check(b *builder, init map[string]int64) Report {
	return Check(b.ops, init, Config{Checks: all, Slaves: 2})
}

// TestCorrectHistory: a history that keeps every guarantee, with concurrent
// operations, a token handoff, a WAIT, a write of unknown outcome and a failed one,
// passes every check.
func TestCorrectHistory(t *testing.T) {
	b := &builder{}
	b.incr(1, "k", 1, 0, 10).
		get(2, "k", 0, 1, 5).  // concurrent with the INCR: the old value is fine
		get(3, "k", 1, 2, 12). // concurrent: the new one too
		get(1, "k", 1, 11, 13).
		token(1, "e:1", 14, 15).
		after(2, "e:1", 16, 17).
		get(2, "k", 1, 18, 19).
		set(4, "s", 5, 20, 21).
		wait(4, 2, 22, 30).
		get(3, "s", 5, 31, 32).
		add(Op{Conn: 1, Kind: Incr, Key: "k", Err: "i/o timeout", Outcome: Unknown}, 40, 50).
		add(Op{Conn: 4, Kind: Incr, Key: "s", Err: "ERR boom", Outcome: Failed}, 41, 42).
		get(2, "k", 2, 60, 61). // the unknown INCR took effect
		get(3, "k", 2, 62, 63)
	rep := check(b, map[string]int64{"k": 0, "s": 0})
	if rep.Total() != 0 || len(rep.Notes) != 0 {
		t.Fatalf("a correct history: %s", rep.String())
	}
	if rep.Reads != 7 || rep.Writes != 2 {
		t.Errorf("counted %d reads, %d writes; want 7, 2", rep.Reads, rep.Writes)
	}
}

// TestPlanted: each check catches the violation planted for it, reports the
// operations involved, and the history without the plant passes.
func TestPlanted(t *testing.T) {
	init := map[string]int64{"k": 0, "j": 0}
	for _, tc := range []struct {
		name  string
		check Checks
		hist  func(b *builder, bad bool)
		ops   []int  // indexes of the operations the violation must show
		under Checks // the checks run (0: all); the session cases read stale data that Global refuses
	}{
		{"read-your-writes", ReadYourWrites, func(b *builder, bad bool) {
			b.incr(1, "k", 1, 0, 1).incr(1, "k", 2, 2, 3).get(1, "k", pick(bad, 1, 2), 4, 5)
		}, []int{2, 1}, 0},
		{"monotonic-reads", MonotonicReads, func(b *builder, bad bool) {
			b.incr(1, "k", 1, 0, 100).incr(1, "k", 2, 101, 200).
				get(2, "k", 2, 150, 160).get(2, "k", pick(bad, 1, 2), 170, 180)
		}, []int{3, 2}, 0},
		{"monotonic-reads-nil", MonotonicReads, func(b *builder, bad bool) {
			b.incr(1, "n", 1, 0, 100).get(2, "n", 1, 150, 160)
			if bad {
				b.getNil(2, "n", 170, 180)
			} else {
				b.get(2, "n", 1, 170, 180)
			}
		}, []int{2, 1}, 0},
		{"causal-tokens", CausalTokens, func(b *builder, bad bool) {
			b.incr(3, "j", 1, 0, 1). // acknowledged before the issuer's write was sent: covered
							incr(1, "k", 1, 2, 3).token(1, "e:2", 4, 5).
							get(2, "j", 0, 5, 50). // before SYNCAFTER: anything goes
							after(2, "e:2", 60, 61).get(2, "k", 1, 62, 63).get(2, "j", pick(bad, 0, 1), 64, 65)
		}, []int{6, 0, 4}, Session},
		{"wait", WaitAll, func(b *builder, bad bool) {
			b.incr(3, "j", 1, 0, 1).incr(1, "k", 1, 2, 3).wait(1, 2, 4, 10).
				get(2, "k", 0, 5, 6). // concurrent with WAIT: may be older
				get(2, "j", pick(bad, 0, 1), 11, 12)
		}, []int{4, 0, 2}, Session},
		{"existing-keys", Existing, func(b *builder, bad bool) {
			if bad {
				b.getNil(2, "k", 0, 1)
			} else {
				b.get(2, "k", 0, 0, 1)
			}
			b.getNil(2, "never-set", 2, 3)
		}, []int{0}, 0},
		{"global", Global, func(b *builder, bad bool) {
			b.incr(1, "k", 1, 0, 10).get(2, "k", 0, 5, 15). // concurrent: fine
									get(2, "k", pick(bad, 0, 1), 16, 17)
		}, []int{2, 0}, 0},
		{"linearizable", Linearizable, func(b *builder, bad bool) {
			// Two concurrent reads order the writes: seeing 2 then 1 is not linearizable
			// although each read alone is (and no other check looks across connections).
			b.incr(1, "k", 1, 0, 100).incr(4, "k", 2, 1, 100).get(2, "k", 2, 2, 3).get(3, "k", pick(bad, 1, 2), 4, 5)
		}, []int{3}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good, bad := &builder{}, &builder{}
			tc.hist(good, false)
			tc.hist(bad, true)
			cfg := Config{Checks: all, Slaves: 2}
			if tc.under != 0 {
				cfg.Checks = tc.under
			}
			if rep := Check(good.ops, init, cfg); rep.Total() != 0 {
				t.Fatalf("without the plant: %s", rep.String())
			}
			rep := Check(bad.ops, init, cfg)
			if rep.Count(tc.check) != 1 {
				t.Fatalf("%s: %d violations, want 1: %s", tc.check, rep.Count(tc.check), rep.String())
			}
			var v Violation
			for _, s := range rep.Shown {
				if s.Check == tc.check {
					v = s
				}
			}
			got := map[int]bool{}
			for _, op := range v.Ops {
				got[op.Index] = true
			}
			for _, i := range tc.ops {
				if !got[i] {
					t.Errorf("the violation does not show operation #%d: %s", i, v)
				}
			}
		})
	}
}

func pick(bad bool, ifBad, ifGood int64) int64 {
	if bad {
		return ifBad
	}
	return ifGood
}

// TestPooledClient: a read on another connection of the same client may miss a
// write under the session checks, not under Global.
func TestPooledClient(t *testing.T) {
	b := (&builder{}).
		add(Op{Client: 1, Conn: 1, Kind: Incr, Key: "k", Value: 1}, 0, 1).
		add(Op{Client: 1, Conn: 2, Kind: Get, Key: "k", Value: 0}, 2, 3)
	if rep := Check(b.ops, nil, Config{Checks: Session, Slaves: 2}); rep.Total() != 0 {
		t.Errorf("session: %s", rep.String())
	}
	if rep := Check(b.ops, nil, Config{Checks: GlobalLevel, Slaves: 2}); rep.Count(Global) != 1 {
		t.Errorf("global: %s", rep.String())
	}
}

// TestTokenScope: a SYNCAFTER holds until the next one on the connection; a token
// nobody issued (or issued before any write) imposes nothing.
func TestTokenScope(t *testing.T) {
	b := (&builder{}).
		incr(1, "k", 1, 0, 1).token(1, "e:1", 2, 3).
		incr(3, "j", 1, 0, 1).incr(3, "j", 2, 4, 5).token(3, "e:3", 6, 7).
		after(2, "e:3", 8, 9).get(2, "j", 1, 10, 11).   // violation: j=2 covered
		after(2, "e:1", 12, 13).get(2, "j", 1, 14, 15). // the second token does not cover j=2
		after(2, "x:9", 16, 17).get(2, "k", 0, 18, 19)  // unknown token
	rep := Check(b.ops, nil, Config{Checks: CausalTokens})
	if rep.Count(CausalTokens) != 1 || rep.Shown[0].Ops[0].Index != 6 {
		t.Fatalf("want one violation, by #6: %s", rep.String())
	}
}

// TestWaitFewer: WAIT answered fewer than every slave promises other connections
// nothing; Slaves 0 turns the check off.
func TestWaitFewer(t *testing.T) {
	b := (&builder{}).incr(1, "k", 1, 0, 1).wait(1, 1, 2, 3).get(2, "k", 0, 4, 5)
	if rep := Check(b.ops, nil, Config{Checks: WaitAll, Slaves: 2}); rep.Total() != 0 {
		t.Errorf("WAIT 1 of 2: %s", rep.String())
	}
	b = (&builder{}).incr(1, "k", 1, 0, 1).wait(1, 2, 2, 3).get(2, "k", 0, 4, 5)
	if rep := Check(b.ops, nil, Config{Checks: WaitAll}); rep.Total() != 0 {
		t.Errorf("Slaves 0: %s", rep.String())
	}
	if rep := Check(b.ops, nil, Config{Checks: WaitAll, Slaves: 2}); rep.Count(WaitAll) != 1 {
		t.Errorf("WAIT 2 of 2: %s", rep.String())
	}
}

// TestLinearizableUnknown: a write of unknown outcome may take effect late or
// never; a SET resets the counter.
func TestLinearizableUnknown(t *testing.T) {
	for _, seen := range []int64{0, 1} {
		b := (&builder{}).
			add(Op{Conn: 1, Kind: Incr, Key: "k", Outcome: Unknown}, 0, 1).
			get(2, "k", seen, 10, 11).get(2, "k", 1, 12, 13)
		if rep := check(b, map[string]int64{"k": 0}); rep.Count(Linearizable) != 0 {
			t.Errorf("read %d then 1: %s", seen, rep.String())
		}
	}
	b := (&builder{}).incr(1, "k", 1, 0, 1).set(1, "k", 10, 2, 3).incr(2, "k", 11, 4, 5).get(3, "k", 11, 6, 7)
	if rep := Check(b.ops, nil, Config{Checks: Linearizable}); rep.Total() != 0 {
		t.Errorf("SET then INCR: %s", rep.String())
	}
	b = (&builder{}).incr(1, "k", 1, 0, 1).incr(2, "k", 1, 2, 3) // the same value twice
	if rep := Check(b.ops, nil, Config{Checks: Linearizable}); rep.Count(Linearizable) != 1 {
		t.Errorf("two INCRs answered 1: %s", rep.String())
	}
}

// TestReportShow keeps Show violations of a check in full and counts them all.
func TestReportShow(t *testing.T) {
	b := &builder{}
	b.incr(1, "k", 5, 0, 1)
	for i := 0; i < 10; i++ {
		b.get(1, "k", 4, 2+2*i, 3+2*i)
	}
	rep := Check(b.ops, nil, Config{Checks: ReadYourWrites, Show: 3})
	if rep.Count(ReadYourWrites) != 10 || len(rep.Shown) != 3 {
		t.Fatalf("counted %d, shown %d; want 10, 3", rep.Count(ReadYourWrites), len(rep.Shown))
	}
	s := rep.String()
	for _, want := range []string{"read-your-writes=10", "GET k returned 4, older than 5", "c0/p0/conn1 INCR k -> 5"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

// TestRecorder records from several goroutines; invocation order numbers the
// operations, and an operation never completed is checked as unknown.
func TestRecorder(t *testing.T) {
	h := New()
	h.Init("k", 0)
	var wg sync.WaitGroup
	for c := 0; c < 4; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				h.Invoke(Op{Client: c, Conn: c, Kind: Get, Key: "k"}).OK(0)
			}
		}()
	}
	wg.Wait()
	h.Invoke(Op{Conn: 9, Kind: Set, Key: "s", Value: 3}).OK(0)
	h.Invoke(Op{Conn: 9, Kind: Get, Key: "x"}).Nil()
	h.Invoke(Op{Conn: 9, Kind: SyncToken}).Token("e:1")
	h.Invoke(Op{Conn: 9, Kind: Incr, Key: "k"}).Fail(errors.New("ERR no"))
	h.Invoke(Op{Conn: 9, Kind: Incr, Key: "k"}).Unknown(errors.New("i/o timeout"))
	h.Invoke(Op{Conn: 9, Kind: Incr, Key: "k"}) // never completed
	ops := h.Ops()
	if len(ops) != 206 {
		t.Fatalf("%d ops, want 206", len(ops))
	}
	for i, op := range ops {
		if op.Index != i || (i > 0 && op.Invoke < ops[i-1].Invoke) {
			t.Fatalf("op %d: %v, after %v", i, op, ops[i-1])
		}
	}
	tail := ops[200:]
	if tail[0].Value != 3 || !tail[1].Nil || tail[2].Token != "e:1" || tail[3].Outcome != Failed ||
		tail[4].Outcome != Unknown || tail[5].Outcome != Pending || tail[0].Complete < tail[0].Invoke {
		t.Fatalf("recorded %v", tail)
	}
	rep := h.Check(Config{Checks: all, Slaves: 2})
	if rep.Total() != 0 || rep.Writes != 1 || rep.Reads != 201 {
		t.Fatalf("%s", rep.String())
	}
}
