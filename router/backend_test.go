package router_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

func cmd(args ...string) []byte {
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulkString(b, a)
	}
	return b
}

func newBackend(t *testing.T, addr string, timeout time.Duration, script bool) *router.Backend {
	t.Helper()
	o := router.BackendOptions{Name: "test", Addr: addr, Conns: 1, Timeout: timeout, Log: zerolog.Nop()}
	if script {
		ms := replicate.MasterScript()
		o.Script = &router.WriteScript{SHA: ms.SHA, Body: ms.Body, Args: [][]byte{[]byte("epoch-test"), []byte("1000"), []byte("test:sync")}}
	}
	b := router.NewBackend(o)
	t.Cleanup(b.Close)
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !b.Up() {
			return errString("backend not up")
		}
		return nil
	})
	return b
}

type errString string

func (e errString) Error() string { return string(e) }

// waitPong polls until the backend answers PING again (it reconnected).
func waitPong(t *testing.T, b *router.Backend) {
	t.Helper()
	redistest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		r := &router.Request{Kind: router.KindRaw, Raw: cmd("PING")}
		do(b, r)
		if string(r.Reply) != "+PONG\r\n" {
			return errString("reply " + string(r.Reply))
		}
		return nil
	})
}

// do submits requests as one batch and waits for them.
func do(b *router.Backend, reqs ...*router.Request) {
	w := router.NewWaiter()
	for _, r := range reqs {
		w.Add(r)
		b.Submit(0, r)
	}
	w.Wait()
}

func TestBackendRawAndDB(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 2*time.Second, false)
	reqs := []*router.Request{
		{Kind: router.KindRaw, DB: 3, Raw: cmd("SET", "k", "in-db-3")},
		{Kind: router.KindRaw, DB: 0, Raw: cmd("SET", "k", "in-db-0")},
		{Kind: router.KindRaw, DB: 3, Raw: cmd("GET", "k")},
		{Kind: router.KindRaw, DB: 0, Raw: cmd("GET", "k")},
		{Kind: router.KindRaw, DB: 0, Raw: cmd("GET", "missing")},
		{Kind: router.KindRaw, DB: 0, Raw: cmd("LRANGE", "k", "0", "1")},
	}
	do(b, reqs...)
	want := []string{"+OK\r\n", "+OK\r\n", "$7\r\nin-db-3\r\n", "$7\r\nin-db-0\r\n", "$-1\r\n",
		"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"}
	for i, r := range reqs {
		if string(r.Reply) != want[i] {
			t.Errorf("request %d: reply %q, want %q", i, r.Reply, want[i])
		}
	}
	if got := srv.Do(t, "SELECT", 3); got != "OK" {
		t.Fatal(got)
	}
}

// TestBackendGroupCommit sends many writes from concurrent batches; they are grouped
// into script calls, and every request gets its own reply and the group's sequence.
func TestBackendGroupCommit(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 5*time.Second, true)
	const batches, per = 20, 50
	var wg sync.WaitGroup
	seqs := make(chan int64, batches*per)
	for i := 0; i < batches; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			reqs := make([]*router.Request, per)
			for j := range reqs {
				raw := cmd("INCR", "counter")
				if j%10 == 9 {
					raw = cmd("LPUSH", "counter", "x") // WRONGTYPE: no effect
				}
				reqs[j] = &router.Request{Kind: router.KindWrite, DB: i % 4, Raw: raw, Argc: strings.Count(string(raw), "$")}
			}
			do(b, reqs...)
			for j, r := range reqs {
				if j%10 == 9 {
					if !strings.HasPrefix(string(r.Reply), "-WRONGTYPE") {
						t.Errorf("LPUSH reply %q", r.Reply)
					}
					continue
				}
				if r.Reply[0] != ':' || r.Seq <= 0 {
					t.Errorf("INCR reply %q seq %d", r.Reply, r.Seq)
				}
				seqs <- r.Seq
			}
		}(i)
	}
	wg.Wait()
	close(seqs)
	max := int64(0)
	for s := range seqs {
		if s > max {
			max = s
		}
	}
	total := 0
	for db := 0; db < 4; db++ {
		c := srv.Dial(t)
		c.Do("SELECT", db)
		n, _ := c.Do("GET", "counter")
		v, _ := n.([]byte)
		var k int
		for _, ch := range v {
			k = k*10 + int(ch-'0')
		}
		total += k
	}
	if total != batches*per*9/10 {
		t.Fatalf("counters sum to %d, want %d", total, batches*per*9/10)
	}
	// The sequence counter counts script calls that had an effect.
	if got := srv.Do(t, "GET", replicate.KeySeq); string(got.([]byte)) != strconv.FormatInt(max, 10) {
		t.Fatalf("master seq %s, highest seq seen %d", got, max)
	}
	if n := srv.Do(t, "XLEN", replicate.KeyBacklog).(int64); n != max {
		t.Fatalf("backlog has %d messages, want %d", n, max)
	}
}

func TestBackendDownFailsFast(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, time.Second, false)
	srv.Stop(t)
	// The keepalive notices the dead connection; meanwhile requests fail with an error.
	redistest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		r := &router.Request{Kind: router.KindRaw, Raw: cmd("PING")}
		start := time.Now()
		do(b, r)
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("request took %v with the backend down", d)
		}
		if !strings.HasPrefix(string(r.Reply), "-ERR syncproxy: test") {
			return errString("reply " + string(r.Reply))
		}
		return nil
	})
	srv.Restart(t)
	waitPong(t, b)
}

func TestBackendHangTimesOut(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 300*time.Millisecond, false)
	srv.Pause(t)
	defer srv.Resume(t)
	reqs := []*router.Request{
		{Kind: router.KindRaw, Raw: cmd("GET", "a")},
		{Kind: router.KindRaw, Raw: cmd("GET", "b")},
	}
	start := time.Now()
	do(b, reqs...)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("requests took %v against a hung backend with a 300ms timeout", d)
	}
	for _, r := range reqs {
		if !r.Failed || !strings.HasPrefix(string(r.Reply), "-ERR syncproxy:") {
			t.Fatalf("reply %q failed=%v", r.Reply, r.Failed)
		}
	}
	srv.Resume(t)
	waitPong(t, b)
}

func TestBackendNoScriptReload(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, 2*time.Second, true)
	srv.Do(t, "SCRIPT", "FLUSH")
	r := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "a", "1"), Argc: 3}
	do(b, r)
	if !strings.HasPrefix(string(r.Reply), "-ERR syncproxy: the replication script") || r.Seq != 0 {
		t.Fatalf("first write after SCRIPT FLUSH: %q", r.Reply)
	}
	r = &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "a", "2"), Argc: 3}
	do(b, r)
	if string(r.Reply) != "+OK\r\n" || r.Seq <= 0 {
		t.Fatalf("write after reload: %q seq %d", r.Reply, r.Seq)
	}
	if got := srv.Do(t, "GET", "a"); string(got.([]byte)) != "2" {
		t.Fatalf("a = %s", got)
	}
}

// TestBackendSetAddr moves a backend to another server: the requests in flight on
// the old one fail with the switch error, never with a reply of the old server,
// and the next ones go to the new server.
func TestBackendSetAddr(t *testing.T) {
	srvs := redistest.StartN(t, 2)
	a, bsrv := srvs[0], srvs[1]
	b := newBackend(t, a.Addr, 5*time.Second, true)

	// In flight on a: a BLPOP that blocks the connection, and a write behind it.
	blpop := &router.Request{Kind: router.KindRaw, Raw: cmd("BLPOP", "q", "4")}
	write := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "old"), Argc: 3}
	w := router.NewWaiter()
	w.Add(blpop)
	w.Add(write)
	b.Submit(0, blpop)
	b.Submit(0, write)
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if n := a.Info(t, "clients", "blocked_clients"); n != "1" {
			return errString("blocked_clients " + n)
		}
		return nil
	})
	start := time.Now()
	b.SetAddr(bsrv.Addr)
	w.Wait()
	if d := time.Since(start); d > time.Second {
		t.Errorf("in-flight requests completed %v after SetAddr", d)
	}
	want := "-ERR syncproxy: test switched to " + bsrv.Addr + ", retry\r\n"
	for _, r := range []*router.Request{blpop, write} {
		if string(r.Reply) != want || !r.Failed || r.Seq != 0 {
			t.Errorf("in-flight request: reply %q failed=%v seq=%d, want %q", r.Reply, r.Failed, r.Seq, want)
		}
	}
	if b.Addr() != bsrv.Addr {
		t.Fatalf("Addr() = %s, want %s", b.Addr(), bsrv.Addr)
	}

	// New requests go to the new server, through the replication script.
	r := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k2", "new"), Argc: 3}
	do(b, r)
	if string(r.Reply) != "+OK\r\n" || r.Seq <= 0 {
		t.Fatalf("write after SetAddr: %q seq %d", r.Reply, r.Seq)
	}
	if got := bsrv.Do(t, "GET", "k2"); string(got.([]byte)) != "new" {
		t.Fatalf("new server: k2 = %v", got)
	}
	if got := a.Do(t, "EXISTS", "k2"); got != int64(0) {
		t.Fatalf("old server got the write after SetAddr")
	}

	// Paused, a request waits in the queue; moved and resumed, it goes to the
	// address of the moment it is sent.
	b.Pause()
	held := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "p", "1"), Argc: 3}
	w = router.NewWaiter()
	w.Add(held)
	b.Submit(0, held)
	b.SetAddr(a.Addr)
	if got := bsrv.Do(t, "EXISTS", "p"); got != int64(0) {
		t.Fatalf("a paused backend sent a request")
	}
	b.Resume()
	w.Wait()
	if string(held.Reply) != "+OK\r\n" {
		t.Fatalf("held request: %q", held.Reply)
	}
	if got := a.Do(t, "GET", "p"); string(got.([]byte)) != "1" {
		t.Fatalf("held request did not reach the new address: p = %v", got)
	}
	if got := bsrv.Do(t, "EXISTS", "p"); got != int64(0) {
		t.Fatalf("held request reached the old address")
	}
}

// TestCarriedRequestFailsWhenConnectionFails: a raw request that the writer took
// from the queue behind a group of writes (carried to its next send) is failed
// when the connection fails before it was sent, instead of never completing.
// The master is frozen so that the reader's queue of expected replies fills up:
// the group's push then waits, and fails with the connection.
func TestCarriedRequestFailsWhenConnectionFails(t *testing.T) {
	srv := redistest.Start(t)
	b := newBackend(t, srv.Addr, time.Second, true)
	srv.Pause(t)
	t.Cleanup(func() { srv.Resume(t) })
	b.Pause() // everything is queued first, then taken in one go
	w := router.NewWaiter()
	var reqs []*router.Request
	submit := func(r *router.Request) {
		reqs = append(reqs, r)
		w.Add(r)
		b.Submit(0, r)
	}
	// One reply awaited by the reader, 1024 expected behind it: full.
	for i := 0; i < 1+1024; i++ {
		submit(&router.Request{Kind: router.KindRaw, Raw: cmd("GET", "k")})
	}
	write := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "v"), Argc: 3}
	submit(write)
	carried := &router.Request{Kind: router.KindRaw, Raw: cmd("GET", "k")}
	submit(carried)
	b.Resume()
	done := make(chan struct{})
	go func() { w.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("requests never completed; the carried one: %q", carried.Reply)
	}
	for i, r := range reqs {
		if !r.Failed || !strings.HasPrefix(string(r.Reply), "-ERR syncproxy: ") {
			t.Fatalf("request %d: reply %q, failed %v; want a proxy error", i, r.Reply, r.Failed)
		}
	}
	if !strings.Contains(string(carried.Reply), "unavailable") {
		t.Errorf("carried request, never sent: %q, want the backend unavailable", carried.Reply)
	}
}
