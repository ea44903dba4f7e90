package router_test

import (
	"strings"
	"testing"
	"time"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/router"
)

// deferAll submits reqs through one Waiter's Defer (one chain per connection
// run) and waits for them.
func deferAll(b *router.Backend, reqs ...*router.Request) {
	w := router.NewWaiter()
	for _, r := range reqs {
		w.Add(r)
		w.Defer(b, 0, r)
	}
	w.Wait()
}

// TestSubmitChainDBRuns checks that a chain whose requests change DB is sent
// with a SELECT before each run, and each request gets its own reply, in order.
func TestSubmitChainDBRuns(t *testing.T) {
	srv := redistest.Start(t)
	for db, v := range []string{"zero", "one", "two"} {
		c := srv.Dial(t)
		c.Do("SELECT", db)
		c.Do("SET", "k", v)
		c.Close()
	}
	b := newBackend(t, srv.Addr, 2*time.Second, false)
	var reqs []*router.Request
	for _, db := range []int{1, 1, 2, 0, 0, 2} {
		reqs = append(reqs, &router.Request{Kind: router.KindRaw, DB: db, Raw: cmd("GET", "k")})
	}
	deferAll(b, reqs...)
	want := []string{"one", "one", "two", "zero", "zero", "two"}
	for i, r := range reqs {
		if w := "$" + string(rune('0'+len(want[i]))) + "\r\n" + want[i] + "\r\n"; string(r.Reply) != w || r.Failed {
			t.Errorf("request %d: reply %q (failed %v), want %q", i, r.Reply, r.Failed, w)
		}
	}
}

// TestSubmitChainConnectionLost checks that when the connection is lost in the
// middle of a chain, the requests answered keep their replies and every other
// one is failed: none waits.
func TestSubmitChainConnectionLost(t *testing.T) {
	srv := redistest.Start(t)
	srv.Do(t, "SET", "k", "v")
	b := newBackend(t, srv.Addr, 2*time.Second, false)
	reqs := []*router.Request{
		{Kind: router.KindRaw, Raw: cmd("GET", "k")},
		{Kind: router.KindRaw, Raw: cmd("QUIT")}, // the server closes the connection
		{Kind: router.KindRaw, Raw: cmd("GET", "k")},
		{Kind: router.KindRaw, Raw: cmd("GET", "k")},
	}
	deferAll(b, reqs...)
	if string(reqs[0].Reply) != "$1\r\nv\r\n" || string(reqs[1].Reply) != "+OK\r\n" {
		t.Fatalf("replies before QUIT: %q %q", reqs[0].Reply, reqs[1].Reply)
	}
	for i, r := range reqs[2:] {
		if !r.Failed || !strings.HasPrefix(string(r.Reply), "-ERR syncproxy:") {
			t.Errorf("request %d after QUIT: reply %q, failed %v", i+2, r.Reply, r.Failed)
		}
	}
	if n := b.Outstanding.Load(); n != 0 {
		t.Errorf("outstanding %d, want 0", n)
	}
	waitPong(t, b) // and the link reconnects
}

// TestSubmitChainBackendDown checks that a chain for a backend that is down
// fails at once, every request of it.
func TestSubmitChainBackendDown(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 2*time.Second, false)
	srv.Stop(t)
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if b.Up() {
			return errString("still up")
		}
		return nil
	})
	reqs := []*router.Request{{Kind: router.KindRaw, Raw: cmd("PING")}, {Kind: router.KindRaw, Raw: cmd("PING")}}
	deferAll(b, reqs...)
	for i, r := range reqs {
		if !r.Failed || !strings.Contains(string(r.Reply), "unavailable") {
			t.Errorf("request %d: reply %q, failed %v", i, r.Reply, r.Failed)
		}
	}
}

// TestWaiterDeferOrder checks that deferred requests for two backends keep each
// backend's order, and that Wait sends what is still deferred.
func TestWaiterDeferOrder(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	b1 := newBackend(t, srvs[0].Addr, 2*time.Second, false)
	b2 := newBackend(t, srvs[1].Addr, 2*time.Second, false)
	w := router.NewWaiter()
	var reqs []*router.Request
	for i, b := range []*router.Backend{b1, b1, b2, b1, b2, b2} {
		r := &router.Request{Kind: router.KindRaw, Raw: cmd("INCR", "n")}
		reqs = append(reqs, r)
		w.Add(r)
		w.Defer(b, i, r) // connection i: Conns is 1, every one is connection 0
	}
	w.Wait()
	want := []string{":1\r\n", ":2\r\n", ":1\r\n", ":3\r\n", ":2\r\n", ":3\r\n"}
	for i, r := range reqs {
		if string(r.Reply) != want[i] {
			t.Errorf("request %d: reply %q, want %q", i, r.Reply, want[i])
		}
	}
}

// BenchmarkBackendReads measures a session's batch of 16 GETs to one backend
// connection: submitted one by one (Submit), or deferred and queued in one step
// (Waiter.Defer). One op is one GET. Run with -benchmem.
func BenchmarkBackendReads(b *testing.B) {
	srv := redistest.Start(b)
	srv.Do(b, "SET", "k", "abc")
	be := router.NewBackend(router.BackendOptions{Name: "bench", Addr: srv.Addr, Conns: 1, Timeout: 5 * time.Second})
	b.Cleanup(be.Close)
	redistest.CheckFor(b, 5*time.Second, 5*time.Millisecond, func() error {
		if !be.Up() {
			return errString("backend not up")
		}
		return nil
	})
	const depth = 16
	reqs := make([]*router.Request, depth)
	for i := range reqs {
		reqs[i] = &router.Request{}
	}
	get := cmd("GET", "k")
	for _, mode := range []string{"submit", "defer"} {
		b.Run(mode, func(b *testing.B) {
			w := router.NewWaiter()
			b.ReportAllocs()
			for i := 0; i < b.N; i += depth {
				for _, r := range reqs {
					r.Reset()
					r.Kind, r.Raw = router.KindRaw, get
					w.Add(r)
					if mode == "defer" {
						w.Defer(be, 0, r)
					} else {
						be.Submit(0, r)
					}
				}
				w.Wait()
				if string(reqs[depth-1].Reply) != "$3\r\nabc\r\n" {
					b.Fatalf("reply %q", reqs[depth-1].Reply)
				}
			}
		})
	}
}
