package replicate

import (
	"testing"
	"time"
)

// A position that moves wakes every waiter of Moved, once: the channel taken
// before the move is closed, the one taken after it is not.
func TestMovedWakesWaiters(t *testing.T) {
	r := &Replicator{}
	a := &Applier{r: r}
	before := r.Moved()
	select {
	case <-before:
		t.Fatal("closed before any move")
	default:
	}
	done := make(chan struct{})
	go func() {
		<-before
		close(done)
	}()
	a.setApplied(7)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter was not woken by the move")
	}
	if n := a.applied.Load(); n != 7 {
		t.Fatalf("applied %d", n)
	}
	select {
	case <-r.Moved():
		t.Fatal("a channel taken after the move is closed")
	default:
	}
	next := r.Moved()
	a.setState(StateOnline, "test")
	select {
	case <-next:
	default:
		t.Fatal("a state change did not wake")
	}
}
