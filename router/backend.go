package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/syncproxy/syncproxy/internal/dial"
	"github.com/syncproxy/syncproxy/replicate"
)

// Kind says how a Request is sent to its backend.
type Kind uint8

const (
	// KindRaw forwards the client's command frame unchanged.
	KindRaw Kind = iota
	// KindWrite runs the command on the master inside the replication script, which
	// assigns it a sequence number and publishes its effects. Consecutive KindWrite
	// requests on one connection are grouped into one script call (group commit).
	KindWrite
	// KindLocal is answered by the proxy itself; it never reaches a backend.
	KindLocal
)

// Request is one command on its way to a backend and, once completed, its reply.
// The session owns Requests and reuses them across batches; a backend holds a
// pointer only until it completes the request, exactly once.
type Request struct {
	Kind Kind
	DB   int
	// Raw is the command as a RESP array of bulk strings (redcon's Command.Raw).
	Raw []byte
	// Argc is the number of arguments in Raw (needed for KindWrite).
	Argc int
	// Mode says what the replication script does with a KindWrite request:
	// take the command as its effect, derive the effect, run a read or a client's
	// script (see replicate.Mode).
	Mode replicate.Mode
	// NullArray: the command's nil reply is a null array, which Lua turns into a
	// null bulk string; the reader turns it back.
	NullArray bool
	// Script: with ModeScript, the script composed to run a client's script (see
	// replicate.UserScript); Raw holds numkeys, keys and args. It runs alone.
	Script *WriteScript
	// Split, when set (Group > 0), marks a KindWrite too large for the master
	// script: it runs natively in a transaction with the numbering of its
	// effects, this split of the command (replicate.WriteNativeCall). It runs
	// alone, not chained.
	Split replicate.Split
	// Reply holds the raw RESP reply once the request is complete.
	Reply []byte
	// Seq is the replication sequence number a KindWrite request was given (0 when
	// it had no effect, e.g. it failed), within Epoch, the master's data set.
	Seq   int64
	Epoch string
	// Failed is true when Reply is an error made by the proxy (backend down, timeout),
	// not a reply of the backend.
	Failed bool

	waiter *Waiter
	next   *Request // chains the requests of one script group
}

// Reset prepares r for reuse, keeping its reply buffer.
func (r *Request) Reset() {
	reply := r.Reply[:0]
	*r = Request{Reply: reply}
}

func (r *Request) complete() {
	if w := r.waiter; w != nil {
		r.waiter = nil
		w.done()
	}
}

// failIn completes r with the proxy's error msg, counted in b's stats.
func (b *Backend) failIn(r *Request, msg string) {
	b.Stats.Failed.Add(1)
	r.fail(msg)
}

func (r *Request) fail(msg string) {
	r.Reply = AppendError(r.Reply[:0], msg)
	r.Failed = true
	r.Seq = 0
	r.complete()
}

// Waiter counts outstanding requests of one batch. Add and Wait belong to one
// goroutine (the session's); completions come from any. The count holds one extra
// guard while the batch is being dispatched, so that requests completing before
// the last one is added cannot signal early.
type Waiter struct {
	n  atomic.Int32
	ch chan struct{}
	// deferred are raw requests for connection deferredIdx of deferredTo, not
	// yet queued: they go in one step (see Defer).
	deferred    []*Request
	deferredTo  *Backend
	deferredIdx int
}

// NewWaiter returns a Waiter ready for use.
func NewWaiter() *Waiter {
	w := &Waiter{ch: make(chan struct{}, 1)}
	w.n.Store(1)
	return w
}

// Add registers r with w; it must be called before r is submitted.
func (w *Waiter) Add(r *Request) {
	w.n.Add(1)
	r.waiter = w
}

func (w *Waiter) done() {
	if w.n.Add(-1) == 0 {
		w.ch <- struct{}{}
	}
}

// Defer queues r, a KindRaw request added to w, for connection idx of b, behind
// the requests deferred before it: consecutive ones for the same connection are
// queued in one step (one hand-over to its writer, written together), when one
// for another connection is deferred, or at Flush or Wait.
func (w *Waiter) Defer(b *Backend, idx int, r *Request) {
	if len(w.deferred) > 0 && (w.deferredTo != b || w.deferredIdx != idx) {
		w.Flush()
	}
	w.deferredTo, w.deferredIdx = b, idx
	w.deferred = append(w.deferred, r)
}

// Flush queues the deferred requests.
func (w *Waiter) Flush() {
	if len(w.deferred) == 0 {
		return
	}
	w.deferredTo.SubmitChain(w.deferredIdx, w.deferred)
	clear(w.deferred)
	w.deferred, w.deferredTo = w.deferred[:0], nil
	if cap(w.deferred) > maxKeptDeferred {
		w.deferred = nil
	}
}

// maxKeptDeferred bounds the deferred list a Waiter keeps between batches.
const maxKeptDeferred = 64

// Wait queues the deferred requests, blocks until every added request
// completed, then readies w for the next batch. Backends guarantee completion
// within their timeout, so Wait never blocks forever.
func (w *Waiter) Wait() {
	w.Flush()
	if w.n.Add(-1) != 0 {
		<-w.ch
	}
	w.n.Store(1)
}

// WriteScript is the replication script that KindWrite requests run in; Args are
// its fixed arguments. The call's format and its reply's are package replicate's
// (replicate/call.go).
type WriteScript struct {
	SHA  string
	Body string
	Args [][]byte
}

// BackendOptions configures a Backend.
type BackendOptions struct {
	Name         string // "master", "slave-1", for logs and errors
	Addr         string
	Conns        int           // connections in the pool
	Timeout      time.Duration // a reply's wait
	DialTimeout  time.Duration // dial and handshake (AUTH, SCRIPT LOAD); 0: Timeout
	WriteTimeout time.Duration // a write; 0: Timeout
	// ReplyTimeout bounds the wait for a reply once sent (0: Timeout). The master
	// gets a long one (--write-reply-timeout): a write still running there may be
	// applied, and a direct client would wait for its reply; giving up earlier
	// would report failed a write that succeeded.
	ReplyTimeout time.Duration
	Username     string
	Password     string
	TLS          *tls.Config
	QueueLen     int // requests waiting to be written, per connection
	MaxGroup     int // writes per script call
	Script       *WriteScript
	// ScriptConns are connections of their own for client scripts (SubmitScript):
	// a runaway script holds only its own connection, and every other command
	// reaches the server and gets its BUSY reply, as a direct client would.
	ScriptConns int
	// OnReconnect, when set, is called when a connection is established again
	// after it was lost (the server may have restarted, empty).
	OnReconnect func()
	Log         zerolog.Logger
}

// Backend is a pool of multiplexed connections to one Redis server.
type Backend struct {
	opts  BackendOptions
	links []*link
	// scriptLinks run client scripts (SubmitScript); see BackendOptions.ScriptConns.
	scriptLinks []*link
	// busyAt is the monoNow of the last BUSY reply: the server is alive, running
	// a script (see busy.go).
	busyAt atomic.Int64
	up     atomic.Int32 // connections currently up
	closed atomic.Bool  // Close was called: requests enqueued late are failed
	// addr is the server's address; SetAddr moves the backend to another.
	addr atomic.Pointer[string]
	// paused: the writers send nothing (Pause, Resume); requests wait queued.
	paused atomic.Bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// tried is closed once the first connection attempt of every link ended.
	tried     chan struct{}
	triedLeft atomic.Int32

	// Outstanding counts requests submitted and not yet completed (for balancing).
	Outstanding atomic.Int64
	// Stats counts completed requests and their latency.
	Stats BackendStats
}

// NewBackend starts the connection loops of a backend; Close stops them.
func NewBackend(opts BackendOptions) *Backend {
	if opts.Conns <= 0 {
		opts.Conns = 2
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = opts.Timeout
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = opts.Timeout
	}
	if opts.ReplyTimeout <= 0 {
		opts.ReplyTimeout = opts.Timeout
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 4096
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 512
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Backend{opts: opts, cancel: cancel, tried: make(chan struct{})}
	b.addr.Store(&opts.Addr)
	b.triedLeft.Store(int32(opts.Conns + opts.ScriptConns))
	for i := 0; i < opts.Conns+opts.ScriptConns; i++ {
		l := &link{
			b:         b,
			idx:       i,
			queue:     make(chan *Request, opts.QueueLen),
			groupDone: make(chan struct{}, 1),
			wake:      make(chan struct{}, 1),
		}
		if i < opts.Conns {
			b.links = append(b.links, l)
		} else {
			b.scriptLinks = append(b.scriptLinks, l)
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			l.run(ctx)
		}()
	}
	return b
}

// allLinks returns the backend's links, the script links included.
func (b *Backend) allLinks() []*link {
	return append(b.links[:len(b.links):len(b.links)], b.scriptLinks...)
}

// WaitFirstAttempt waits until every connection tried to connect once, or ctx
// ends; it reports whether the backend is up.
func (b *Backend) WaitFirstAttempt(ctx context.Context) bool {
	select {
	case <-b.tried:
	case <-ctx.Done():
	}
	return b.Up()
}

// Name returns the backend's name.
func (b *Backend) Name() string { return b.opts.Name }

// Addr returns the backend's address.
func (b *Backend) Addr() string { return *b.addr.Load() }

// SetAddr moves the backend to another server (a master that Sentinel replaced).
// Every connection to the old address is closed: the requests sent on it and not
// yet answered fail with "switched to ADDR, retry" — a reply that arrives after
// SetAddr began is never delivered — and none is sent again anywhere. Requests
// still queued, never sent, go to the new address once connected; one that a
// connection's writer took from the queue and had not sent yet fails with the
// same retry error.
func (b *Backend) SetAddr(addr string) {
	if addr == b.Addr() {
		return
	}
	b.addr.Store(&addr)
	for _, l := range b.allLinks() {
		l.switching.Store(true)
		l.gen.Add(1)
		l.signal()
	}
}

// Pause stops sending requests: they wait in the queues (enqueueing waits at
// most the timeout for room) until Resume or SetAddr moves them on. Requests
// already sent complete normally. The proxy pauses the master while Sentinel
// promotes a replica, so that no write reaches the old master meanwhile.
func (b *Backend) Pause() {
	b.paused.Store(true)
	for _, l := range b.allLinks() {
		l.signal()
	}
}

// Resume undoes Pause.
func (b *Backend) Resume() {
	if b.paused.Swap(false) {
		for _, l := range b.allLinks() {
			l.signal()
		}
	}
}

// Paused reports whether the backend is paused.
func (b *Backend) Paused() bool { return b.paused.Load() }

// Up reports whether at least one connection is established.
func (b *Backend) Up() bool { return b.up.Load() > 0 }

// Conns returns the number of pooled connections.
func (b *Backend) Conns() int { return len(b.links) }

// Submit queues r on connection idx (mod the pool size). Requests submitted to the
// same connection are executed in submission order. r is always completed: with
// the backend's reply, or with an error when the backend is down or times out.
func (b *Backend) Submit(idx int, r *Request) {
	b.SubmitOn(Lane(idx%len(b.links)), r)
}

// SubmitChain queues reqs, KindRaw requests, on connection idx (mod the pool
// size) in one step: they are written in order behind what was submitted there
// before, and each is completed with its own reply, as with Submit.
func (b *Backend) SubmitChain(idx int, reqs []*Request) {
	l := b.laneLink(Lane(idx % len(b.links)))
	if !l.up.Load() && !l.switching.Load() {
		for _, r := range reqs {
			b.failIn(r, l.downMsg())
		}
		return
	}
	for i := 0; i+1 < len(reqs); i++ {
		reqs[i].next = reqs[i+1]
	}
	l.enqueue(reqs[0], len(reqs))
}

// enqueue queues r — with the n-1 requests chained behind it — for the writer,
// waiting at most the backend timeout for room; it fails them all otherwise.
func (l *link) enqueue(r *Request, n int) {
	b := l.b
	b.Outstanding.Add(int64(n))
	select {
	case l.queue <- r:
		l.failIfClosed()
		return
	default:
	}
	t := time.NewTimer(b.opts.Timeout)
	defer t.Stop()
	select {
	case l.queue <- r:
		l.failIfClosed()
	case <-t.C:
		b.Outstanding.Add(-int64(n))
		for r != nil {
			next := r.next
			r.next = nil
			b.failIn(r, "ERR syncproxy: "+b.opts.Name+" request queue is full")
			r = next
		}
	}
}

// failIfClosed fails what is queued on l once the backend is closed: a request
// that a client submitted while Close ran (a slave removed from the read set
// by a reload) would otherwise wait for a writer that is gone.
func (l *link) failIfClosed() {
	if l.b.closed.Load() {
		l.drain(context.Background(), 0)
	}
}

// Close stops every connection loop and fails what is still queued, and what is
// submitted afterwards.
func (b *Backend) Close() {
	b.closed.Store(true)
	b.cancel()
	b.wg.Wait()
}

// link is one multiplexed connection: a writer (the run goroutine) sends queued
// requests and flushes when the queue is empty; a reader completes them in FIFO order.
type link struct {
	b     *Backend
	idx   int
	queue chan *Request
	up    atomic.Bool
	log   zerolog.Logger // set by run before each connection

	// gen counts SetAddr calls; serving is the gen of the connection in use: when
	// they differ, that connection belongs to an old address. switching is set by
	// SetAddr until the new address was tried: Submit queues meanwhile.
	gen, serving atomic.Uint64
	switching    atomic.Bool
	// wake tells the writer that SetAddr, Pause or Resume was called.
	wake chan struct{}

	// reload asks the writer to SCRIPT LOAD before its next script call.
	reload atomic.Bool
	// waitSince is the monoNow at which the reply the reader waits for was
	// sent, 0 when it waits for none (ScriptLane avoids a connection held by a
	// runaway script).
	waitSince atomic.Int64
	// groups counts script calls sent and not yet answered; groupDone wakes a
	// writer waiting for one to complete.
	groups    atomic.Int32
	groupDone chan struct{}
	// epoch, epochBuf and scratch belong to the reader.
	epoch    string
	epochBuf []byte
	scratch  []byte
}

// pendingKind says what the reader must do with the next reply.
type pendingKind uint8

const (
	pendRequest pendingKind = iota // complete one request with the reply
	pendGroup                      // a script call: seq + one reply per chained request
	pendDiscard                    // a reply the link asked for itself (SELECT, PING, SCRIPT LOAD)
	pendNative                     // a native write's MULTI, queued replies and EXEC
)

type pending struct {
	kind pendingKind
	req  *Request
	n    int
	sent int64 // monoNow when queued for writing, for the latency
}

// writeBufferSize is a backend connection's write buffer: a native group of
// small writes (MaxGroup 512 SETs of short keys: about 50 KB, the writes and
// their effects) goes out in one write system call, not in one per 16 KB.
const writeBufferSize = 64 << 10

// maxGroupsInFlight bounds the script calls in flight on one connection.
const maxGroupsInFlight = 2

const (
	minBackoff    = 50 * time.Millisecond
	maxBackoff    = 2 * time.Second
	keepaliveIdle = time.Second
)

// errSwitched ends a connection whose backend moved to another address.
var errSwitched = errors.New("router: backend switched to another address")

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// downMsg is the error of the requests the link cannot serve: never sent.
func (l *link) downMsg() string {
	if l.gen.Load() != l.serving.Load() {
		return "ERR syncproxy: " + l.b.opts.Name + " switched to " + l.b.Addr() + ", retry"
	}
	return "ERR syncproxy: " + l.b.opts.Name + " " + l.b.Addr() + " is unavailable"
}

// lostMsg is the error of a request sent (or perhaps sent) on a connection that
// failed before its reply came, because of cause. On the master (the backend
// with a script) the command may have run: its outcome is unknown, and a client
// must not take it for failed. A read from a slave keeps the plain error.
func (l *link) lostMsg(write bool, cause error) string {
	if l.gen.Load() != l.serving.Load() || l.b.opts.Script == nil {
		return l.downMsg()
	}
	if cause == nil {
		cause = io.ErrUnexpectedEOF
	}
	what := "the command's"
	if write {
		what = "the write's"
	}
	if errors.Is(cause, errReplyTimeout) {
		return "ERR syncproxy: the " + l.b.opts.Name + " did not answer in time (" +
			l.b.opts.ReplyTimeout.String() + "): " + what + " outcome is unknown"
	}
	return "ERR syncproxy: the connection to the " + l.b.opts.Name + " " + l.b.Addr() +
		" was lost before the reply (" + cause.Error() + "): " + what + " outcome is unknown"
}

func (l *link) run(ctx context.Context) {
	backoff := minBackoff
	first := true
	refused := "" // the last handshake failure logged, so that a retry does not log it again
	for {
		gen, addr := l.gen.Load(), l.b.Addr()
		l.log = l.b.opts.Log.With().Str("backend", l.b.opts.Name).Str("addr", addr).Int("conn", l.idx).Logger()
		conn, br, err := l.dial(ctx, addr)
		if err == nil && l.gen.Load() != gen {
			conn.Close() // moved while dialing: dial the new address
			continue
		}
		l.serving.Store(gen)
		switch {
		case err == nil:
			refused = ""
		case dial.Refused(err) && err.Error() != refused && ctx.Err() == nil:
			// Connected, but refused (TLS, AUTH): a configuration problem, not an outage.
			refused = err.Error()
			lvl := zerolog.ErrorLevel
			if l.idx >= l.b.opts.Conns {
				lvl = zerolog.DebugLevel // a script link: its pool's links said it already
			}
			l.log.WithLevel(lvl).Err(err).Msg("backend refused the connection; check the TLS and credential settings")
		}
		if err == nil {
			l.b.up.Add(1)
			l.up.Store(true)
		}
		if l.gen.Load() == gen {
			l.switching.Store(false)
		}
		if first {
			first = false
			if l.b.triedLeft.Add(-1) == 0 {
				close(l.b.tried)
			}
		} else if err == nil && l.b.opts.OnReconnect != nil {
			l.b.opts.OnReconnect()
		}
		if err == nil {
			backoff = minBackoff
			l.log.Info().Msg("backend connected")
			err = l.serve(ctx, conn, br, gen)
			l.up.Store(false)
			l.b.up.Add(-1)
			if ctx.Err() != nil {
				l.drain(ctx, 0)
				return
			}
			if errors.Is(err, errSwitched) {
				l.log.Info().Str("to", l.b.Addr()).Msg("backend connection closed: switched to another address")
				continue
			}
			l.log.Warn().Err(err).Msg("backend connection lost")
		} else {
			if ctx.Err() != nil {
				l.drain(ctx, 0)
				return
			}
			l.log.Debug().Err(err).Dur("backoff", backoff).Msg("backend dial failed")
		}
		// While down, fail whatever is queued and keep failing new arrivals.
		if !l.drain(ctx, backoff) {
			return
		}
		if l.gen.Load() != gen {
			backoff = minBackoff
			continue
		}
		backoff *= 2
		if backoff > maxBackoff {
			backoff = maxBackoff
		}
	}
}

// drain fails queued requests for d (or just once when d is 0). It returns false
// when ctx ended.
func (l *link) drain(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		for {
			select {
			case r := <-l.queue:
				l.failChain(r)
			default:
				return true
			}
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case r := <-l.queue:
			l.failChain(r)
		case <-t.C:
			return true
		case <-l.wake:
			if l.gen.Load() != l.serving.Load() {
				return true // moved to another address: dial it now
			}
		case <-ctx.Done():
			l.drain(ctx, 0)
			return false
		}
	}
}

// failChain fails a chain of requests that were never sent.
func (l *link) failChain(r *Request) {
	l.failChainMsg(r, l.downMsg())
}

// failSent fails a chain of writes that were sent, or perhaps sent, on a
// connection that failed because of cause.
func (l *link) failSent(r *Request, cause error) {
	l.failChainMsg(r, l.lostMsg(true, cause))
}

func (l *link) failChainMsg(r *Request, msg string) {
	for r != nil {
		next := r.next
		r.next = nil
		l.b.Outstanding.Add(-1)
		l.b.failIn(r, msg)
		r = next
	}
}

// dial opens a connection of the link to addr: TCP, TLS, AUTH, SCRIPT LOAD,
// PING, all synchronous before the link goes live.
func (l *link) dial(ctx context.Context, addr string) (net.Conn, *bufio.Reader, error) {
	o := &l.b.opts
	t := dial.Target{Role: o.Name, Addr: addr, Username: o.Username, Password: o.Password,
		TLS: o.TLS, Timeout: o.DialTimeout, BufferSize: 16 << 10}
	if o.Script != nil {
		t.Setup = [][]string{{"SCRIPT", "LOAD", o.Script.Body}}
		// A master running a script is alive: connected, its script is loaded
		// before the first call.
		t.OnBusy = func() {
			l.reload.Store(true)
			l.b.busyAt.Store(monoNow())
		}
	}
	return dial.Dial(ctx, t)
}

// serve runs the writer in this goroutine and the reader in another, until either
// fails or ctx ends or the backend moves (gen changes); then it fails every
// request in flight.
func (l *link) serve(ctx context.Context, conn net.Conn, br *bufio.Reader, gen uint64) error {
	pend := make(chan pending, 1024)
	l.groups.Store(0)
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	go func() { readerDone <- l.reader(conn, br, pend, stop, gen) }()

	werr := l.writer(ctx, conn, pend, readerDone, gen)
	close(stop)
	conn.Close()
	rerr := <-readerDone
	cause := rerr
	if werr != nil && (werr != errStopped || ctx.Err() != nil) {
		cause = werr
	}
	// Both loops stopped: fail whatever the reader did not complete. It was sent:
	// a write's outcome is unknown.
	for {
		select {
		case p := <-pend:
			l.failPending(p, cause)
			continue
		default:
		}
		break
	}
	return cause
}

func (l *link) failPending(p pending, cause error) {
	switch p.kind {
	case pendRequest:
		l.failChainMsg(p.req, l.lostMsg(false, cause))
	case pendGroup, pendNative:
		l.failSent(p.req, cause)
	}
}

var (
	errStopped = errors.New("router: backend closed")
	// errReplyTimeout: a reply did not come within ReplyTimeout.
	errReplyTimeout = errors.New("router: backend reply timed out")
	// errGroupShape: a script call's reply was well framed but not of the shape
	// the replication script returns.
	errGroupShape = errors.New("router: unexpected reply from the replication script")
)

// connWriter is the writer's state for one connection.
type connWriter struct {
	l          *link
	ctx        context.Context
	conn       net.Conn
	bw         *bufio.Writer
	pend       chan pending // what the reader must read, in order
	readerDone chan error
	gen        uint64
	curDB      int
	carry      *Request // taken from the queue but not sent yet
	idle       *time.Timer
}

// writer sends the queued requests on conn, grouping writes into script calls,
// and flushes when the queue is empty; it returns why it stopped.
func (l *link) writer(ctx context.Context, conn net.Conn, pend chan pending, readerDone chan error, gen uint64) error {
	w := &connWriter{l: l, ctx: ctx, conn: conn, bw: bufio.NewWriterSize(conn, writeBufferSize), pend: pend,
		readerDone: readerDone, gen: gen, idle: time.NewTimer(keepaliveIdle)}
	defer w.idle.Stop()
	defer func() {
		if w.carry != nil { // taken from the queue, never sent: it would wait forever
			l.failChain(w.carry)
		}
	}()
	for {
		r, err := w.next()
		if err != nil {
			return err
		}
		if r == nil {
			continue
		}
		if err := w.send(r); err != nil {
			return err
		}
		if err := w.flushWhenIdle(); err != nil {
			return err
		}
	}
}

// next returns the next request to send, or nil when there was something else
// to do (a keepalive, a wake-up).
func (w *connWriter) next() (*Request, error) {
	l := w.l
	paused := l.b.paused.Load()
	if w.carry != nil && !paused {
		r := w.carry
		w.carry = nil
		return r, nil
	}
	queue := l.queue
	if paused {
		queue = nil // requests wait in the queue until Resume
		if err := w.flush(); err != nil {
			return nil, err
		}
	}
	if queue != nil && l.gen.Load() == w.gen && !l.b.closed.Load() && len(w.readerDone) == 0 {
		// Busy: the next request without the full select below (measured).
		select {
		case r := <-queue:
			return r, nil
		default:
		}
	}
	select {
	case r := <-queue:
		return r, nil
	case <-l.wake:
		if l.gen.Load() != w.gen {
			return nil, errSwitched
		}
		return nil, nil
	case <-w.ctx.Done():
		w.flush()
		return nil, errStopped
	case err := <-w.readerDone:
		w.readerDone <- err
		return nil, err
	case <-w.idle.C:
		// Keepalive: a dead idle connection is noticed within about a second.
		w.bw.WriteString("*1\r\n$4\r\nPING\r\n")
		if err := w.push(pending{kind: pendDiscard}); err != nil {
			return nil, err
		}
		if err := w.flush(); err != nil {
			return nil, err
		}
		w.idle.Reset(keepaliveIdle)
		return nil, nil
	}
}

// send writes r: a client's script call, a group of writes, or a raw command.
func (w *connWriter) send(r *Request) error {
	o := &w.l.b.opts
	switch {
	case r.Kind == KindWrite && o.Script != nil && r.Split.Group > 0 && r.next == nil:
		return w.sendNative(r)
	case o.Script != nil && groupsNative(r):
		return w.sendNativeGroup(r)
	case r.Kind == KindWrite && o.Script != nil && r.Script != nil:
		return w.sendScript(r)
	case r.Kind == KindWrite && o.Script != nil:
		return w.sendGroup(r)
	}
	return w.sendRaw(r)
}

// sendScript writes the call of a client's script: its own script, alone (or
// a transaction's, chained behind r).
func (w *connWriter) sendScript(r *Request) error {
	l := w.l
	if err := l.waitGroups(w.ctx, w.conn, w.bw, w.readerDone, w.gen); err != nil {
		l.failChain(r)
		return err
	}
	_, n := chainEnd(r)
	writeScriptCall(w.bw, r.Script, r, n, w.curDB)
	l.groups.Add(1)
	if err := w.push(pending{kind: pendGroup, req: r, n: n}); err != nil {
		l.failSent(r, err)
		return err
	}
	return nil
}

// sendGroup writes one call of the replication script carrying r and the
// writes queued behind it (group commit).
func (w *connWriter) sendGroup(r *Request) error {
	l, o := w.l, &w.l.b.opts
	// Adaptive group commit: with enough script calls in flight, let writes
	// accumulate in the queue until one completes, so that the next call
	// carries them all (the master's cost is per call, not per write).
	if err := l.waitGroups(w.ctx, w.conn, w.bw, w.readerDone, w.gen); err != nil {
		l.failChain(r)
		return err
	}
	first := r
	last, n := chainEnd(r)
	for n < o.MaxGroup {
		nx := l.tryNext()
		if nx == nil {
			break
		}
		if nx.Kind != KindWrite || nx.Script != nil || nx.Split.Group > 0 {
			w.carry = nx
			break
		}
		last.next = nx
		var k int
		last, k = chainEnd(nx)
		n += k
	}
	if l.reload.CompareAndSwap(true, false) {
		w.bw.WriteString("*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n")
		w.bw.Write(appendBulk(nil, []byte(o.Script.Body)))
		if err := w.push(pending{kind: pendDiscard}); err != nil {
			l.failChain(first)
			return err
		}
	}
	l.writeGroup(w.bw, first, n, w.curDB)
	l.groups.Add(1)
	if err := w.push(pending{kind: pendGroup, req: first, n: n}); err != nil {
		l.failSent(first, err)
		return err
	}
	return nil
}

// selectDB writes a SELECT of r's DB when the connection is in another one;
// when its reply cannot be expected (the connection is going), the chain from
// r fails.
func (w *connWriter) selectDB(r *Request) error {
	if r.DB == w.curDB {
		return nil
	}
	w.bw.WriteString("*2\r\n$6\r\nSELECT\r\n")
	w.bw.Write(appendBulkInt(nil, int64(r.DB)))
	if err := w.push(pending{kind: pendDiscard}); err != nil {
		w.l.failChain(r)
		return err
	}
	w.curDB = r.DB
	return nil
}

// sendRaw writes the chain of commands from r (see SubmitChain) as the client
// sent them, SELECTing their DB first where it differs from the connection's.
// The reader reads the replies of each run of one DB as one pending entry.
func (w *connWriter) sendRaw(r *Request) error {
	l := w.l
	for r != nil {
		if err := w.selectDB(r); err != nil {
			return err
		}
		first, last, n := r, r, 0
		for ; r != nil && r.DB == w.curDB; r = r.next {
			w.bw.Write(r.Raw)
			last = r
			n++
		}
		last.next = nil // the run ends here; r is the rest
		if err := w.push(pending{kind: pendRequest, req: first, n: n}); err != nil {
			l.failChainMsg(first, l.lostMsg(false, err))
			l.failChain(r)
			return err
		}
	}
	return nil
}

// flushWhenIdle flushes once nothing more is queued.
func (w *connWriter) flushWhenIdle() error {
	if w.carry == nil && len(w.l.queue) == 0 {
		// Let the sessions that are about to submit do so, so that one write
		// system call carries many requests (system calls dominate the cost).
		// Twice: measured faster than once, and than not at all (make bench).
		runtime.Gosched()
		runtime.Gosched()
	}
	if w.carry != nil || len(w.l.queue) != 0 {
		return nil
	}
	if err := w.flush(); err != nil {
		return err
	}
	if !w.idle.Stop() {
		select {
		case <-w.idle.C:
		default:
		}
	}
	w.idle.Reset(keepaliveIdle)
	return nil
}

// push tells the reader to expect p's reply. When the reader is behind, what is
// written so far is flushed for it to read.
func (w *connWriter) push(p pending) error {
	p.sent = monoNow()
	select {
	case w.pend <- p:
		return nil
	default:
	}
	if err := w.flush(); err != nil {
		return err
	}
	select {
	case w.pend <- p:
		return nil
	case err := <-w.readerDone:
		w.readerDone <- err
		return err // the reader failed: its error is the cause
	}
}

func (w *connWriter) flush() error { return w.l.flush(w.conn, w.bw) }

// waitGroups waits, with what is written flushed, until fewer than
// maxGroupsInFlight script calls are in flight.
func (l *link) waitGroups(ctx context.Context, conn net.Conn, bw *bufio.Writer, readerDone chan error, gen uint64) error {
	if l.groups.Load() < maxGroupsInFlight {
		return nil
	}
	if err := l.flush(conn, bw); err != nil {
		return err
	}
	for l.groups.Load() >= maxGroupsInFlight {
		select {
		case <-l.groupDone:
		case <-l.wake:
			if l.gen.Load() != gen {
				return errSwitched
			}
		case <-ctx.Done():
			return errStopped
		case err := <-readerDone:
			readerDone <- err
			return err
		}
	}
	return nil
}

// ReloadScript makes every connection load the replication script again before
// its next call (after a SCRIPT FLUSH went through).
func (b *Backend) ReloadScript() {
	for _, l := range b.allLinks() {
		l.reload.Store(true)
	}
}

func (l *link) flush(conn net.Conn, bw *bufio.Writer) error {
	if bw.Buffered() == 0 {
		return nil
	}
	conn.SetWriteDeadline(time.Now().Add(l.b.opts.WriteTimeout))
	return bw.Flush()
}

// writeGroup writes one script call carrying the n chained write requests.
func (l *link) writeGroup(bw *bufio.Writer, first *Request, n, curDB int) {
	writeScriptCall(bw, l.b.opts.Script, first, n, curDB)
}

// AppendScriptCall appends the script call that runs reqs (KindWrite requests)
// in one step, as a link sends it; for callers that drive their own connection
// (WATCH ... EXEC on a dedicated one).
func AppendScriptCall(dst []byte, s *WriteScript, reqs []*Request, curDB int) []byte {
	for i := 0; i+1 < len(reqs); i++ {
		reqs[i].next = reqs[i+1]
	}
	buf := bytes.NewBuffer(dst)
	writeScriptCall(buf, s, reqs[0], len(reqs), curDB)
	for _, r := range reqs {
		r.next = nil
	}
	return buf.Bytes()
}

// FixScriptReply restores what Lua changed in a reply read from a script call: big
// integers, null arrays. ReadFrame'd replies of AppendScriptCall calls need it.
func (r *Request) FixScriptReply() {
	r.Reply = replicate.FixCallReply(r.Reply, r.NullArray)
}

// writeScriptCall writes the call of s that runs the n chained requests from
// first, in the format package replicate defines (replicate.WriteCallHeader).
func writeScriptCall(w replicate.CallWriter, s *WriteScript, first *Request, n, curDB int) {
	argc := 0
	for r := first; r != nil; r = r.next {
		argc += r.Argc
	}
	replicate.WriteCallHeader(w, s.SHA, s.Args, time.Now().UnixMilli(), curDB, n, argc)
	for r := first; r != nil; r = r.next {
		replicate.WriteCallCommand(w, r.DB, r.Argc, r.Mode, skipArrayHeader(r.Raw))
	}
}

// internEpoch returns the epoch in a bulk frame as a string, reusing the previous
// one when it did not change (it changes only when the master loses its data).
func (l *link) internEpoch(frame []byte) string {
	body := frame
	if i := bytes.IndexByte(frame, '\n'); i >= 0 && len(frame) >= i+3 {
		body = frame[i+1 : len(frame)-2]
	}
	if string(body) != l.epoch {
		l.epoch = string(body)
	}
	return l.epoch
}

// chainEnd returns the last request of the chain starting at r (a transaction is
// submitted as one chain) and the chain's length.
func chainEnd(r *Request) (*Request, int) {
	n := 1
	for r.next != nil {
		r = r.next
		n++
	}
	return r, n
}

// SubmitTx queues reqs, KindWrite requests, to run in one script call on
// connection idx: atomically, as a MULTI/EXEC transaction. Each is completed with
// its own reply.
func (b *Backend) SubmitTx(idx int, reqs []*Request) {
	b.SubmitTxOn(Lane(idx%len(b.links)), reqs)
}

// skipArrayHeader returns raw without its leading "*N\r\n" line.
func skipArrayHeader(raw []byte) []byte {
	if i := bytes.IndexByte(raw, '\n'); i >= 0 {
		return raw[i+1:]
	}
	return raw
}

func (l *link) reader(conn net.Conn, br *bufio.Reader, pend chan pending, stop chan struct{}, gen uint64) error {
	for {
		var p pending
		select {
		case p = <-pend: // busy: without the select below
		default:
			select {
			case p = <-pend:
			case <-stop:
				return errStopped
			}
		}
		l.waitSince.Store(p.sent)
		if br.Buffered() == 0 {
			if err := l.awaitReply(conn, br, p, pend); err != nil {
				l.failPending(p, err)
				return err
			}
		}
		if err := l.readOne(br, p, gen); err != nil {
			return err
		}
		if len(pend) == 0 {
			l.waitSince.Store(0)
		}
	}
}

// awaitReply sets the deadline of p's reply: the reply timeout. But the link's
// own commands (the keepalive PING) get the backend timeout for their reply to
// begin: unanswered by then with nothing sent behind them, the connection is
// taken for dead, as an idle master that vanished must be noticed quickly.
func (l *link) awaitReply(conn net.Conn, br *bufio.Reader, p pending, pend chan pending) error {
	o := &l.b.opts
	start := time.Now()
	if p.kind == pendDiscard && o.Timeout < o.ReplyTimeout {
		conn.SetReadDeadline(start.Add(o.Timeout))
		_, err := br.Peek(1)
		if err != nil && (len(pend) == 0 || !errors.Is(readErr(err), errReplyTimeout)) {
			return readErr(err)
		}
	}
	conn.SetReadDeadline(start.Add(o.ReplyTimeout))
	if o.Script == nil {
		return nil
	}
	// The master: a reply late while the server answers BUSY elsewhere is still
	// coming (the command runs, or waits behind a script that runs).
	for {
		_, err := br.Peek(1)
		if err == nil {
			return nil
		}
		if err = readErr(err); !errors.Is(err, errReplyTimeout) || !(l.b.Busy() || l.probeBusy()) {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(o.ReplyTimeout))
	}
}

// readOne reads the reply of p and completes its requests. An error means that
// the connection can no longer be used (I/O error, broken framing, no reply in
// time, moved to another address); what p held is failed with it.
func (l *link) readOne(br *bufio.Reader, p pending, gen uint64) error {
	switch p.kind {
	case pendDiscard:
		reply, err := ReadFrame(br, nil)
		if err != nil {
			return readErr(err)
		}
		if IsBusy(reply) {
			l.b.noteBusy(reply) // alive, running a script
		} else if reply[0] == '-' {
			l.log.Warn().Str("reply", string(bytes.TrimSpace(reply))).Msg("backend refused an internal command")
		}
	case pendRequest:
		if rest, err := l.readRaw(br, p, gen); err != nil {
			l.failChainMsg(rest, l.lostMsg(false, err))
			return err
		}
	case pendGroup, pendNative:
		read := l.readGroup
		if p.kind == pendNative {
			read = l.readNative
		}
		rest, err := read(br, p, gen)
		l.groups.Add(-1)
		select {
		case l.groupDone <- struct{}{}:
		default:
		}
		if err != nil {
			err = readErr(err)
			l.failSent(rest, err)
			return err
		}
	}
	return nil
}

// readRaw completes the chain of raw requests of p with one reply each. On an
// error it returns the requests not completed.
func (l *link) readRaw(br *bufio.Reader, p pending, gen uint64) (rest *Request, err error) {
	n := 0
	for r := p.req; r != nil; n++ {
		r.Reply, err = ReadFrame(br, r.Reply[:0])
		if err == nil && l.gen.Load() != gen {
			err = errSwitched // read after the switch: not delivered
		}
		if err != nil {
			return r, readErr(err)
		}
		next := r.next
		r.next = nil
		l.b.Outstanding.Add(-1)
		l.b.noteBusy(r.Reply)
		r.complete()
		r = next
	}
	l.b.Stats.Requests.Add(int64(n))
	l.b.Stats.Latency.ObserveN(time.Duration(monoNow()-p.sent), n)
	return nil, nil
}

// readErr names the expiry of the read deadline errReplyTimeout.
func readErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errReplyTimeout
	}
	return err
}

// readGroup reads a script call's reply: "*<n+2>", the sequence number, the
// epoch, then one reply per request. An error reply instead fails every request
// of the group with it. A well-framed reply of another shape fails the group's
// requests only, their outcome unknown, and the connection goes on. An error
// returned means the connection is unusable; rest are the requests not completed.
func (l *link) readGroup(br *bufio.Reader, p pending, gen uint64) (rest *Request, err error) {
	head, err := br.Peek(1)
	if err != nil {
		return p.req, err
	}
	if head[0] != '*' && head[0] != '-' {
		if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
			return p.req, err
		}
		return l.badGroup(p, l.scratch, gen)
	}
	line, err := readLine(br)
	if err == nil && l.gen.Load() != gen {
		err = errSwitched
	}
	if err != nil {
		return p.req, err
	}
	if line[0] == '-' {
		l.groupError(p.req, line)
		return nil, nil
	}
	n, err := parseLen(line[1:len(line)-2], maxReplyArray)
	if err != nil {
		return p.req, err
	}
	if n != replicate.CallReplyLen(p.n) {
		header := append([]byte(nil), line...) // the elements are not kept
		if err := l.discard(br, n); err != nil {
			return p.req, err
		}
		return l.badGroup(p, header, gen)
	}
	if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
		return p.req, err
	}
	seq, ok := replicate.CallSeq(l.scratch)
	if l.epochBuf, err = ReadFrame(br, l.epochBuf[:0]); err != nil {
		return p.req, err
	}
	if !ok || l.epochBuf[0] != '$' {
		seqFrame := append([]byte(nil), l.scratch...)
		if err := l.discard(br, p.n); err != nil {
			return p.req, err
		}
		return l.badGroup(p, append(seqFrame, l.epochBuf...), gen)
	}
	epoch := l.internEpoch(l.epochBuf)
	l.b.Stats.Requests.Add(int64(p.n))
	l.b.Stats.Latency.ObserveN(time.Duration(monoNow()-p.sent), p.n)
	return l.readReplies(br, p.req, seq, epoch, gen)
}

// readReplies completes the chain from r with one reply each.
func (l *link) readReplies(br *bufio.Reader, r *Request, seq int64, epoch string, gen uint64) (rest *Request, err error) {
	for r != nil {
		r.Reply, err = ReadFrame(br, r.Reply[:0])
		if err == nil && l.gen.Load() != gen {
			err = errSwitched
		}
		if err != nil {
			return r, err
		}
		next := r.next
		r.next = nil
		r.Seq = seq
		r.Epoch = epoch
		r.FixScriptReply()
		l.b.Outstanding.Add(-1)
		r.complete()
		r = next
	}
	return nil, nil
}

// groupError completes every request of a group with the error reply line that
// the script call got instead of its array (the script did not run, or failed).
func (l *link) groupError(first *Request, line []byte) {
	msg := string(line[1 : len(line)-2])
	l.b.noteBusy(line)
	if bytes.HasPrefix(line, []byte("-NOSCRIPT")) {
		l.reload.Store(true)
		msg = "ERR syncproxy: the replication script was flushed from the master; it is being reloaded, retry the command"
	}
	if bytes.HasPrefix(line, []byte("-READONLY")) {
		// The master was demoted (a failover): the prefix stays, for clients
		// that reconnect on it; the script's name in Redis' text would mislead.
		msg = "READONLY You can't write against a read only replica: " + l.b.opts.Name + " " + l.b.Addr() +
			" is a replica now (failover?); the write was not applied, retry"
	}
	for r := first; r != nil; {
		next := r.next
		r.next = nil
		l.b.Outstanding.Add(-1)
		r.Reply = append(append(append(r.Reply[:0], '-'), msg...), '\r', '\n')
		r.Seq = 0
		r.complete()
		r = next
	}
}

// discard reads and drops n frames.
func (l *link) discard(br *bufio.Reader, n int) error {
	for i := 0; i < n; i++ {
		var err error
		if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
			return err
		}
	}
	return nil
}

// badGroup fails the requests of a script call whose reply, read whole, was not
// of the replication script's shape: the writes may have run, their outcome is
// unknown. The connection stays in step, and other requests are not touched.
func (l *link) badGroup(p pending, reply []byte, gen uint64) (*Request, error) {
	if l.gen.Load() != gen {
		return p.req, errSwitched
	}
	l.log.Error().Err(errGroupShape).Str("reply", sanitizeReply(reply, 200)).Int("requests", p.n).
		Msg("the writes of this script call failed, outcome unknown")
	l.failChainMsg(p.req, "ERR syncproxy: unexpected reply from the master's replication script: the write's outcome is unknown")
	if cap(l.scratch) > 64<<10 {
		l.scratch = nil // not kept for the link's lifetime
	}
	return nil, nil
}

// sanitizeReply renders at most max bytes of a reply for a log line.
func sanitizeReply(b []byte, max int) string {
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "..."
	}
	return strconv.Quote(string(b))
}
