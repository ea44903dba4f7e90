package router_test

import (
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/router"
)

// fixedStatus is a slave's replication status as its applier would know it.
type fixedStatus struct {
	epoch   string
	applied int64
}

func (s *fixedStatus) Online() bool         { return true }
func (s *fixedStatus) Applied() int64       { return s.applied }
func (s *fixedStatus) Reached(n int64) bool { return s.applied >= n }
func (s *fixedStatus) Epoch() string        { return s.epoch }
func (s *fixedStatus) LagMessages() int64   { return 0 }
func (s *fixedStatus) LagMs() int64         { return 0 }

// TestObservedPosition: a slave whose applier lags what a session read back from
// it (Observe) serves the reads that must see that, in the same epoch only, until
// ForgetObserved.
func TestObservedPosition(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 2*time.Second, false)
	sl := &router.Slave{Backend: b, Status: &fixedStatus{epoch: "e1", applied: 10}}
	rt := router.New(router.BuiltinTable(), b, []*router.Slave{sl})
	pick := func(epoch string, seq int64) bool { return rt.PickSlave(epoch, seq) == sl }
	if !pick("e1", 10) || pick("e1", 11) {
		t.Fatal("eligibility from the applier's position")
	}
	sl.Observe("e1", 20)
	sl.Observe("e1", 15) // never lowers
	if !pick("e1", 20) || pick("e1", 21) {
		t.Error("an observed position 20 does not make the slave eligible for 20 only")
	}
	if pick("e2", 5) {
		t.Error("eligible for another epoch")
	}
	sl.Observe("e2", 30) // an epoch the applier does not know yet
	if pick("e2", 30) || pick("e1", 20) {
		t.Error("an observed position in another epoch than the applier's counts")
	}
	sl.Observe("e1", 25)
	sl.ForgetObserved()
	if pick("e1", 11) || !pick("e1", 10) {
		t.Error("ForgetObserved kept the observed position")
	}
}
