package replicate_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
)

// feedLog records what OnMessage and OnStreamLost were given.
type feedLog struct {
	mu     sync.Mutex
	seqs   []int64
	breaks []int64 // sequence numbers given with continuous false
	lost   int
}

func (f *feedLog) message(m *replicate.Message, continuous bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !continuous {
		f.breaks = append(f.breaks, m.Seq)
	}
	f.seqs = append(f.seqs, m.Seq)
}

func (f *feedLog) snapshot() (seqs, breaks []int64, lost int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.seqs...), append([]int64(nil), f.breaks...), f.lost
}

// OnMessage gets every message in stream order, continuous except the first
// after the reader (re)started; OnStreamLost says when the stream stops being
// followed, and the next message is then not continuous.
func TestMessageFeed(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	var fl feedLog
	rg := newRigWith(t, srvs[0], srvs[1], 10000, 10000, func(c *replicate.Config) {
		c.OnMessage = fl.message
		c.OnStreamLost = func() { fl.mu.Lock(); fl.lost++; fl.mu.Unlock() }
	})
	writeAll := func(from, to int) {
		for i := from; i < to; i++ {
			rg.write(t, 0, "SET", fmt.Sprint("k", i), "v")
		}
	}
	waitSeq := func(n int64) {
		redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			if seqs, _, _ := fl.snapshot(); len(seqs) == 0 || seqs[len(seqs)-1] < n {
				return fmt.Errorf("fed %v, want up to %d", seqs, n)
			}
			return nil
		})
	}
	writeAll(0, 50)
	waitSeq(rg.repl.Latest())
	seqs, breaks, lost := fl.snapshot()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("fed out of order: %v", seqs)
		}
	}
	if len(breaks) != 1 || breaks[0] != seqs[0] || lost != 0 {
		t.Fatalf("breaks %v (first fed %d), lost %d: want only the first message not continuous", breaks, seqs[0], lost)
	}

	// The subscription killed: the stream is lost, and the next message breaks.
	rg.master.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, _, lost := fl.snapshot(); lost != 1 {
			return fmt.Errorf("lost %d times", lost)
		}
		return nil
	})
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !rg.repl.Subscribed() {
			return fmt.Errorf("not subscribed again")
		}
		return nil
	})
	writeAll(50, 60)
	waitSeq(rg.repl.Latest())
	if _, breaks, _ := fl.snapshot(); len(breaks) != 2 {
		t.Fatalf("breaks %v after the subscription came back: want a second one", breaks)
	}
}
