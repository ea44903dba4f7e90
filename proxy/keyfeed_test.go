package proxy

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// feedRecorder is a keyConsumer that writes down what it is given.
type feedRecorder struct{ got []string }

func (r *feedRecorder) written(epoch string, seq int64, db int, key []byte) {
	r.got = append(r.got, fmt.Sprintf("%s:%d w %d %s", epoch, seq, db, key))
}
func (r *feedRecorder) flushed(epoch string, seq int64, db int) {
	r.got = append(r.got, fmt.Sprintf("%s:%d f %d", epoch, seq, db))
}
func (r *feedRecorder) reset() { r.got = append(r.got, "reset") }

func effect(db int, args ...string) replicate.Effect {
	e := replicate.Effect{DB: db}
	for _, a := range args {
		e.Args = append(e.Args, []byte(a))
	}
	return e
}

// The feed names every key an effect wrote, in its DB (and the other DB of
// MOVE and COPY ... DB), turns key-less whole-DB writes into flushes, resets
// consumers on a break, and gives nothing while no consumer wants the stream.
func TestKeyFeed(t *testing.T) {
	f := newKeyFeed(router.BuiltinTable())
	rec := &feedRecorder{}
	f.add(rec)
	f.message(&replicate.Message{Epoch: "e", Seq: 1, Effects: []replicate.Effect{effect(0, "set", "a", "1")}}, false)
	if len(rec.got) != 0 {
		t.Fatalf("given %v while no consumer wants the stream", rec.got)
	}
	f.want(1)
	f.message(&replicate.Message{Epoch: "e", Seq: 2, Effects: []replicate.Effect{
		effect(0, "mset", "a", "1", "b", "2"), effect(3, "move", "c", "5"), effect(1, "copy", "x", "y", "DB", "2"),
		effect(0, "flushdb"), effect(0, "swapdb", "1", "4"), effect(0, "flushall"), effect(0, "function", "flush"), effect(0, "nosuchcommand", "k"),
	}}, true)
	f.message(&replicate.Message{Epoch: "e", Seq: 4, Effects: []replicate.Effect{effect(0, "del", "z")}}, false)
	f.lost()
	want := []string{
		"e:2 w 0 a", "e:2 w 0 b", "e:2 w 3 c", "e:2 w 5 c", "e:2 w 1 x", "e:2 w 1 y", "e:2 w 2 y",
		"e:2 f 0", "e:2 f 1", "e:2 f 4", "e:2 f -1", "e:2 f -1",
		"reset", "e:4 w 0 z", "reset",
	}
	if !slices.Equal(rec.got, want) {
		t.Fatalf("given\n%q\nwant\n%q", rec.got, want)
	}
}

// waitFed returns once the position is given, and false on a timeout, in
// another epoch, or while the stream is lost.
func TestKeyFeedWait(t *testing.T) {
	f := newKeyFeed(router.BuiltinTable())
	if f.waitFed("e", 1, 0) {
		t.Fatal("fed before any message")
	}
	done := make(chan bool)
	go func() { done <- f.waitFed("e", 2, time.Minute) }()
	f.message(&replicate.Message{Epoch: "e", Seq: 1}, false)
	f.message(&replicate.Message{Epoch: "e", Seq: 2}, true)
	if !<-done {
		t.Fatal("waitFed(e, 2) false after message 2")
	}
	if f.waitFed("other", 1, time.Millisecond) {
		t.Fatal("fed in another epoch")
	}
	f.lost()
	if f.waitFed("e", 2, time.Millisecond) {
		t.Fatal("fed while the stream is lost")
	}
}
