package replicate_test

import (
	"fmt"
	"github.com/gomodule/redigo/redis"
	"slices"
	"strings"
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

// With OnStreamStart, the reader says where it starts following the stream:
// the message after that position comes next, continuous, and so on in order;
// after a loss it starts again.
func TestMessageFeedStart(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	var mu sync.Mutex
	var events []string
	note := func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }
	rg := newRigWith(t, srvs[0], srvs[1], 10000, 10000, func(c *replicate.Config) {
		c.OnMessage = func(m *replicate.Message, continuous bool) { note(fmt.Sprint("msg ", m.Seq, " ", continuous)) }
		c.OnStreamStart = func(epoch string, seq int64) { note(fmt.Sprint("start ", seq)) }
		c.OnStreamLost = func() { note("lost") }
	})
	masterSeq := func() int64 {
		n, err := redis.Int64(rg.master.Do(t, "GET", replicate.KeySeq), nil)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	phase := func(from, to int) {
		for i := from; i < to; i++ {
			rg.write(t, 0, "SET", fmt.Sprint("k", i), "v")
		}
		want := fmt.Sprint("msg ", masterSeq(), " true")
		redistest.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(events) == 0 || events[len(events)-1] != want {
				return fmt.Errorf("events %v, want last %q", events, want)
			}
			return nil
		})
	}
	phase(0, 30)
	before := masterSeq()
	rg.master.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
	redistest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(events, "lost") || !rg.repl.Subscribed() {
			return fmt.Errorf("not lost and subscribed again")
		}
		return nil
	})
	phase(30, 60)
	mu.Lock()
	defer mu.Unlock()
	var next int64 = -1 // the message expected next; -1: none given since the last loss
	starts := 0
	for _, ev := range events {
		var n int64
		var cont bool
		switch {
		case ev == "lost":
			next = -1
		case strings.HasPrefix(ev, "start "):
			fmt.Sscan(ev[6:], &n)
			next, starts = n+1, starts+1
		default:
			fmt.Sscanf(ev, "msg %d %t", &n, &cont)
			if next == -1 && !cont && starts == 0 {
				// The master had no epoch yet when the reader started: no
				// position to start from, the first message breaks.
				next = n
			}
			if n != next || (!cont && n != 1) {
				t.Fatalf("%q where message %d, continuous, was due; events %v", ev, next, events)
			}
			next++
		}
	}
	if starts < 1 || !slices.Contains(events, fmt.Sprint("start ", before)) {
		t.Fatalf("no start after the loss at message %d: %v", before, events)
	}
}
