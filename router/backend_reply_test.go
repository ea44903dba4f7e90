package router_test

import (
	"crypto/sha1"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/redistest"
	"github.com/syncproxy/syncproxy/replicate"
	"github.com/syncproxy/syncproxy/router"
)

// newMaster is newBackend with the replication script s (the real one when nil)
// and a reply timeout of its own, as the proxy's master backend.
func newMaster(t *testing.T, addr string, timeout, replyTimeout time.Duration, s *router.WriteScript) *router.Backend {
	t.Helper()
	if s == nil {
		ms := replicate.MasterScript()
		s = &router.WriteScript{SHA: ms.SHA, Body: ms.Body, Args: [][]byte{[]byte("epoch-test"), []byte("1000"), []byte("test:sync")}}
	}
	b := router.NewBackend(router.BackendOptions{Name: "master", Addr: addr, Conns: 1, Timeout: timeout,
		ReplyTimeout: replyTimeout, Script: s, Log: zerolog.Nop()})
	t.Cleanup(b.Close)
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if !b.Up() {
			return errString("backend not up")
		}
		return nil
	})
	return b
}

// clientID returns the id of the backend's connection (CLIENT ID through it).
func clientID(t *testing.T, b *router.Backend) string {
	t.Helper()
	r := &router.Request{Kind: router.KindRaw, Raw: cmd("CLIENT", "ID")}
	do(b, r)
	if r.Failed || r.Reply[0] != ':' {
		t.Fatalf("CLIENT ID: %q", r.Reply)
	}
	return string(r.Reply)
}

// TestBackendWriteOutlastsTimeout: a write the master answers later than the
// backend timeout (the master frozen meanwhile) gets its real reply, as from a
// direct client, and so does a request queued behind it; the connection stays.
func TestBackendWriteOutlastsTimeout(t *testing.T) {
	srv := redistest.Start(t)
	const timeout = 300 * time.Millisecond
	b := newMaster(t, srv.Addr, timeout, 20*time.Second, nil)
	id := clientID(t, b)
	write := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "v"), Argc: 3}
	read := &router.Request{Kind: router.KindRaw, Raw: cmd("GET", "k")}
	w := router.NewWaiter()
	srv.Pause(t)
	for _, r := range []*router.Request{write, read} {
		w.Add(r)
		b.Submit(0, r)
	}
	time.Sleep(4 * timeout) // the master stays frozen well past the timeout
	srv.Resume(t)
	w.Wait()
	if string(write.Reply) != "+OK\r\n" || write.Seq <= 0 {
		t.Errorf("write: %q seq %d, want +OK and a sequence number", write.Reply, write.Seq)
	}
	if string(read.Reply) != "$1\r\nv\r\n" {
		t.Errorf("read behind it: %q", read.Reply)
	}
	if got := clientID(t, b); got != id {
		t.Errorf("the connection was replaced: CLIENT ID %q, then %q", id, got)
	}
}

// TestBackendWriteReplyTimeout: past the reply timeout, a write and what waits
// behind it fail with "outcome unknown", never "unavailable": the write was in
// fact applied. The backend reconnects afterwards.
func TestBackendWriteReplyTimeout(t *testing.T) {
	srv := redistest.Start(t)
	b := newMaster(t, srv.Addr, 100*time.Millisecond, 500*time.Millisecond, nil)
	write := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "applied"), Argc: 3}
	read := &router.Request{Kind: router.KindRaw, Raw: cmd("GET", "k")}
	w := router.NewWaiter()
	srv.Pause(t)
	start := time.Now()
	for _, r := range []*router.Request{write, read} {
		w.Add(r)
		b.Submit(0, r)
	}
	w.Wait()
	took := time.Since(start)
	srv.Resume(t)
	if took < 400*time.Millisecond || took > 3*time.Second {
		t.Errorf("failed after %v, want about the reply timeout (500ms)", took)
	}
	const want = "-ERR syncproxy: the master did not answer in time (500ms): the write's outcome is unknown\r\n"
	if string(write.Reply) != want || !write.Failed || write.Seq != 0 {
		t.Errorf("write: %q failed=%v, want %q", write.Reply, write.Failed, want)
	}
	if !strings.Contains(string(read.Reply), "the command's outcome is unknown") {
		t.Errorf("read behind it: %q", read.Reply)
	}
	waitPong(t, b)
	if got := srv.Do(t, "GET", "k"); string(got.([]byte)) != "applied" {
		t.Fatalf("k = %v: the write reported with an unknown outcome was applied", got)
	}
}

// TestBackendLostWithWritesInFlight: the master's connection breaks with a write
// in flight (held by CLIENT PAUSE, then the connection killed): the write's
// outcome is unknown, and the backend connects again.
func TestBackendLostWithWritesInFlight(t *testing.T) {
	srv := redistest.Start(t)
	b := newMaster(t, srv.Addr, 100*time.Millisecond, 20*time.Second, nil)
	id := strings.TrimSpace(clientID(t, b)[1:])
	srv.Do(t, "CLIENT", "PAUSE", "20000", "WRITE")
	defer srv.Do(t, "CLIENT", "UNPAUSE")
	write := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "v"), Argc: 3}
	w := router.NewWaiter()
	w.Add(write)
	b.Submit(0, write)
	redistest.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		lb, _ := srv.Do(t, "CLIENT", "LIST", "ID", id).([]byte)
		l := string(lb)
		if !strings.Contains(l, "flags=b") || !strings.Contains(l, "cmd=evalsha") {
			return errString("the write is not held by the pause yet: " + l)
		}
		return nil
	})
	srv.Do(t, "CLIENT", "KILL", "ID", id)
	w.Wait()
	if !strings.Contains(string(write.Reply), "was lost before the reply") ||
		!strings.HasSuffix(string(write.Reply), "the write's outcome is unknown\r\n") {
		t.Errorf("write: %q, want the outcome unknown", write.Reply)
	}
	srv.Do(t, "CLIENT", "UNPAUSE")
	waitPong(t, b)
}

// oddScript stands for the replication script and answers with a reply of the
// wrong shape when the first command's name asks for one.
const oddScript = `
local n = tonumber(ARGV[6])
local name = ARGV[11]
if name == 'NIL' then return nil end
if name == 'INT' then return 5 end
if name == 'SHORT' then return {1, 'e'} end
if name == 'LONG' then return {1, 'e', 'a', 'b', {1, {2, {3}}}} end
if name == 'STATUS' then return {ok = string.rep('s', 70000)} end
if name == 'BADSEQ' then return {'x', 'e', 'r'} end
if name == 'BADEPOCH' then return {1, {1}, 'r'} end
if name == 'ERRLONG' then return {err = 'ERR ' .. string.rep('e', 70000)} end
local out = {7, 'e'}
for i = 1, n do out[#out + 1] = 'r' .. i end
return out
`

// TestBackendOddGroupReply: a script call whose reply, well framed, is not of the
// replication script's shape fails its own requests only, with "outcome
// unknown"; the requests of other clients on the same connection complete and
// the connection stays.
func TestBackendOddGroupReply(t *testing.T) {
	srv := redistest.Start(t)
	sum := sha1.Sum([]byte(oddScript))
	s := &router.WriteScript{Body: oddScript, SHA: hex.EncodeToString(sum[:]), Args: [][]byte{[]byte("a"), []byte("b"), []byte("c")}}
	b := newMaster(t, srv.Addr, 2*time.Second, 5*time.Second, s)
	id := clientID(t, b)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := strconv.Itoa(g) + "-" + strconv.Itoa(i)
				r := &router.Request{Kind: router.KindRaw, Raw: cmd("ECHO", msg)}
				do(b, r)
				if want := "$" + strconv.Itoa(len(msg)) + "\r\n" + msg + "\r\n"; string(r.Reply) != want {
					mu.Lock()
					bad = append(bad, string(r.Reply))
					mu.Unlock()
				}
			}
		}(g)
	}
	const unknown = "-ERR syncproxy: unexpected reply from the master's replication script: the write's outcome is unknown\r\n"
	for round := 0; round < 5; round++ {
		for _, name := range []string{"NIL", "INT", "SHORT", "LONG", "STATUS", "BADSEQ", "BADEPOCH"} {
			r := &router.Request{Kind: router.KindWrite, Raw: cmd(name, "x"), Argc: 2}
			do(b, r)
			if string(r.Reply) != unknown || !r.Failed {
				t.Errorf("%s: %q, want %q", name, r.Reply, unknown)
			}
		}
		r := &router.Request{Kind: router.KindWrite, Raw: cmd("ERRLONG", "x"), Argc: 2}
		do(b, r)
		if !strings.HasPrefix(string(r.Reply), "-ERR eeee") || len(r.Reply) < 70000 {
			t.Errorf("ERRLONG: %.40q... (%d bytes)", r.Reply, len(r.Reply))
		}
		ok := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "x", "y"), Argc: 3}
		do(b, ok)
		if string(ok.Reply) != "$2\r\nr1\r\n" || ok.Seq != 7 {
			t.Errorf("a write after them: %q seq %d", ok.Reply, ok.Seq)
		}
	}
	close(stop)
	wg.Wait()
	for i, r := range bad {
		if i == 5 {
			break
		}
		t.Errorf("a concurrent request got %q", r)
	}
	if got := clientID(t, b); got != id {
		t.Errorf("the connection was replaced: CLIENT ID %q, then %q", id, got)
	}
}

// TestBackendIdleHangNoticed: an idle master that stops answering (frozen) is
// noticed within about the keepalive period and the backend timeout, not the
// long reply timeout: writes then fail at once, not sent.
func TestBackendIdleHangNoticed(t *testing.T) {
	srv := redistest.Start(t)
	b := newMaster(t, srv.Addr, 200*time.Millisecond, 30*time.Second, nil)
	srv.Pause(t)
	defer srv.Resume(t)
	start := time.Now()
	redistest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if b.Up() {
			return errString("still up")
		}
		return nil
	})
	t.Logf("down after %v", time.Since(start))
	r := &router.Request{Kind: router.KindWrite, Raw: cmd("SET", "k", "v"), Argc: 3}
	do(b, r)
	if !strings.HasSuffix(string(r.Reply), " is unavailable\r\n") {
		t.Errorf("write to the frozen master: %q, want unavailable (not sent)", r.Reply)
	}
	srv.Resume(t)
	waitPong(t, b)
	if got := srv.Do(t, "EXISTS", "k"); got != int64(0) {
		t.Errorf("the write reported not sent was applied")
	}
}
