package router

import (
	"bufio"
	"bytes"
	"time"

	"github.com/syncproxy/syncproxy/replicate"
)

// A write too large for the master script (Request.Split set) runs natively on
// the master in a transaction with the numbering of its effects; the format of
// that transaction is package replicate's (replicate.WriteNativeCall). So does
// a group of writes that cannot fail once queued (replicate.ModeNative), queued
// one behind the other in one DB: replicate.WriteGroupStart and the following.
// Both go through the same link as script calls, so that a write keeps its place
// among the writes of its client.

// groupsNative reports whether r starts, or may join, a native group.
func groupsNative(r *Request) bool {
	return r.Kind == KindWrite && r.Mode == replicate.ModeNative && r.Script == nil &&
		r.Split.Group == 0 && r.next == nil
}

// sendNativeGroup writes r and the native writes in its DB queued behind it
// as one transaction with the numbering of their effects.
func (w *connWriter) sendNativeGroup(r *Request) error {
	l := w.l
	if err := l.waitGroups(w.ctx, w.conn, w.bw, w.readerDone, w.gen); err != nil {
		l.failChain(r)
		return err
	}
	n, size := w.collectNative(r)
	if err := w.selectDB(r); err != nil {
		return err
	}
	replicate.WriteGroupStart(w.bw)
	for q := r; q != nil; q = q.next {
		w.bw.Write(q.Raw)
	}
	replicate.WriteGroupNumber(w.bw, l.b.opts.Script.Args, time.Now().UnixMilli(), r.DB, n, size)
	for q := r; q != nil; q = q.next {
		replicate.WriteGroupEffect(w.bw, q.DB, q.Argc, skipArrayHeader(q.Raw))
	}
	replicate.WriteGroupEnd(w.bw)
	l.groups.Add(1)
	if err := w.push(pending{kind: pendNative, req: r, n: replicate.GroupQueued(n)}); err != nil {
		l.failSent(r, err)
		return err
	}
	return nil
}

// collectNative chains behind r the native writes of r's DB queued behind it,
// up to MaxGroup; the first other request is carried to the next send. It
// returns the group's size and the length of its effects.
func (w *connWriter) collectNative(r *Request) (n, size int) {
	l := w.l
	n, size = 1, replicate.GroupEffectLen(r.DB, r.Argc, skipArrayHeader(r.Raw))
	for last := r; n < l.b.opts.MaxGroup; n++ {
		nx := l.tryNext()
		if nx == nil {
			break
		}
		if !groupsNative(nx) || nx.DB != r.DB {
			w.carry = nx
			break
		}
		last.next, last = nx, nx
		size += replicate.GroupEffectLen(nx.DB, nx.Argc, skipArrayHeader(nx.Raw))
	}
	return n, size
}

// tryNext returns the next queued request, nil when none is.
func (l *link) tryNext() *Request {
	select {
	case r := <-l.queue:
		return r
	default:
		return nil
	}
}

// sendNative writes a write too large for the master script as a transaction
// of its own: SELECT its DB first, then MULTI, the command between the two
// numbering calls, EXEC (replicate.WriteNativeCall). It counts as a script call
// in flight.
func (w *connWriter) sendNative(r *Request) error {
	l, s := w.l, w.l.b.opts.Script
	if err := l.waitGroups(w.ctx, w.conn, w.bw, w.readerDone, w.gen); err != nil {
		l.failChain(r)
		return err
	}
	if err := w.selectDB(r); err != nil {
		return err
	}
	replicate.WriteNativeCall(w.bw, s.Body, s.Args, time.Now().UnixMilli(), r.DB, r.Split, r.Raw, r.Argc)
	l.groups.Add(1)
	if err := w.push(pending{kind: pendNative, req: r, n: replicate.NativeQueued}); err != nil {
		l.failSent(r, err)
		return err
	}
	return nil
}

// readNative reads a large write's (or, through readNativeGroup, a native
// group's) replies: MULTI's, the queued commands', then
// EXEC's {pre, command, numbering}. The command's reply is the client's; an
// aborted transaction gives the client the error that aborted it (the command
// refused when queued: OOM, READONLY, ...). An error returned means the
// connection is unusable; rest is then the request, not completed.
func (l *link) readNative(br *bufio.Reader, p pending, gen uint64) (rest *Request, err error) {
	r := p.req
	if r.Split.Group == 0 {
		return l.readNativeGroup(br, p, gen)
	}
	var multiErr, queuedErr, cmdQueued []byte
	for i := 0; i <= p.n; i++ {
		if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
			return r, err
		}
		switch {
		case i == 0 && l.scratch[0] == '-':
			multiErr = append([]byte(nil), l.scratch...)
		case l.scratch[0] == '-' && queuedErr == nil:
			queuedErr = append([]byte(nil), l.scratch...)
		}
		if i == 2 {
			cmdQueued = append(cmdQueued[:0], l.scratch...)
		}
	}
	head, err := br.Peek(1)
	if err != nil {
		return r, err
	}
	if head[0] != '*' || multiErr != nil {
		if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
			return r, err
		}
		return l.nativeAborted(p, multiErr, queuedErr, cmdQueued, gen)
	}
	line, err := readLine(br)
	if err != nil {
		return r, err
	}
	n, err := parseLen(line[1:len(line)-2], maxReplyArray)
	if err != nil {
		return r, err
	}
	if n != p.n {
		header := append([]byte(nil), line...)
		if err := l.discard(br, n); err != nil {
			return r, err
		}
		return l.badGroup(p, header, gen)
	}
	if err := l.discard(br, 1); err != nil { // the first numbering call's reply
		return r, err
	}
	if r.Reply, err = ReadFrame(br, r.Reply[:0]); err != nil {
		return r, err
	}
	seq, epoch, err := l.readNumbering(br)
	if err == nil && l.gen.Load() != gen {
		err = errSwitched
	}
	if err != nil {
		return r, err
	}
	l.completeNative(p, seq, epoch)
	return nil, nil
}

// nativeAborted completes a native write whose transaction did not run: EXEC
// failed (or MULTI did, and the commands ran alone: their outcome is unknown).
func (l *link) nativeAborted(p pending, multiErr, queuedErr, cmdReply []byte, gen uint64) (*Request, error) {
	r := p.req
	if l.gen.Load() != gen {
		return r, errSwitched
	}
	switch {
	case multiErr != nil && (len(cmdReply) == 0 || cmdReply[0] != '-'):
		l.log.Error().Str("reply", sanitizeReply(multiErr, 200)).
			Msg("MULTI failed before a native write: it may have run without its number")
		l.failChainMsg(r, "ERR syncproxy: the master refused MULTI around a large write: the write's outcome is unknown")
		return nil, nil
	case multiErr != nil:
		r.Reply = append(r.Reply[:0], cmdReply...)
	case queuedErr != nil:
		r.Reply = append(r.Reply[:0], queuedErr...)
	default:
		r.Reply = append(r.Reply[:0], l.scratch...)
	}
	l.completeNative(p, 0, "")
	return nil, nil
}

// readNumbering reads the numbering call's reply, {seq, epoch, nil} (a native
// group's: {seq, epoch}), and
// returns seq (0: the command failed, nothing numbered) and the epoch. A reply
// of another shape means that the command ran and was not numbered: logged, as
// the slaves miss it.
func (l *link) readNumbering(br *bufio.Reader) (int64, string, error) {
	var err error
	if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
		return 0, "", err
	}
	frame := l.scratch
	if bytes.HasPrefix(frame, []byte("*3\r\n")) || bytes.HasPrefix(frame, []byte("*2\r\n")) {
		b := bufio.NewReader(bytes.NewReader(frame[4:]))
		seqF, err1 := ReadFrame(b, nil)
		epochF, err2 := ReadFrame(b, nil)
		if seq, ok := replicate.CallSeq(seqF); ok && err1 == nil && err2 == nil && epochF[0] == '$' {
			return seq, l.internEpoch(epochF), nil
		}
	}
	l.log.Error().Err(errGroupShape).Str("reply", sanitizeReply(frame, 200)).
		Msg("writes ran natively on the master but were not numbered: the slaves miss them")
	return 0, "", nil
}

// completeNative completes a native write with its reply, numbered seq in
// epoch (0: not numbered).
func (l *link) completeNative(p pending, seq int64, epoch string) {
	r := p.req
	r.Seq, r.Epoch = seq, epoch
	l.b.Outstanding.Add(-1)
	l.b.Stats.Requests.Add(1)
	l.b.Stats.Latency.Observe(time.Duration(monoNow() - p.sent))
	r.complete()
}

// readNativeGroup reads a native group's replies: MULTI's, one per queued command
// (the writes, then the numbering call), then EXEC's {reply..., {seq, epoch}}.
// An error returned means the connection is unusable; rest is then the chain,
// not completed.
func (l *link) readNativeGroup(br *bufio.Reader, p pending, gen uint64) (rest *Request, err error) {
	var multiErr, queuedErr []byte
	r := p.req
	for i := 0; i <= p.n; i++ {
		dst := &l.scratch
		if i > 0 && r != nil {
			dst = &r.Reply // its queued reply, kept for an aborted transaction
			r = r.next
		}
		if *dst, err = ReadFrame(br, (*dst)[:0]); err != nil {
			return p.req, err
		}
		switch {
		case i == 0 && (*dst)[0] == '-':
			multiErr = append([]byte(nil), *dst...)
		case i > 0 && (*dst)[0] == '-' && queuedErr == nil:
			queuedErr = append([]byte(nil), *dst...)
		}
	}
	head, err := br.Peek(1)
	if err != nil {
		return p.req, err
	}
	if head[0] != '*' || multiErr != nil {
		if l.scratch, err = ReadFrame(br, l.scratch[:0]); err != nil {
			return p.req, err
		}
		return l.groupAborted(p, multiErr, queuedErr, gen)
	}
	line, err := readLine(br)
	if err != nil {
		return p.req, err
	}
	n, err := parseLen(line[1:len(line)-2], maxReplyArray)
	if err != nil {
		return p.req, err
	}
	if n != p.n {
		header := append([]byte(nil), line...)
		if err := l.discard(br, n); err != nil {
			return p.req, err
		}
		return l.badGroup(p, header, gen)
	}
	for r := p.req; r != nil; r = r.next {
		if r.Reply, err = ReadFrame(br, r.Reply[:0]); err != nil {
			return p.req, err
		}
	}
	seq, epoch, err := l.readNumbering(br)
	if err == nil && l.gen.Load() != gen {
		err = errSwitched
	}
	if err != nil {
		return p.req, err
	}
	l.completeGroup(p, seq, epoch)
	return nil, nil
}

// groupAborted completes a native group whose transaction did not run: EXEC
// failed, and each write gets the error that refused it when queued, else the
// first such error among the others' (or the numbering call's), else EXEC's.
// If MULTI failed, the writes ran alone: those that did not fail have an
// unknown outcome.
func (l *link) groupAborted(p pending, multiErr, queuedErr []byte, gen uint64) (*Request, error) {
	if l.gen.Load() != gen {
		return p.req, errSwitched
	}
	switch {
	case multiErr != nil:
		l.b.noteBusy(multiErr)
		l.log.Error().Str("reply", sanitizeReply(multiErr, 200)).
			Msg("MULTI failed before a native group: its writes may have run without their number")
	case queuedErr != nil:
		l.b.noteBusy(queuedErr)
	}
	for r := p.req; r != nil; r = r.next {
		switch {
		case len(r.Reply) > 0 && r.Reply[0] == '-':
		case multiErr != nil:
			r.Reply = append(r.Reply[:0], "-ERR syncproxy: the master refused MULTI around the write: its outcome is unknown\r\n"...)
		case queuedErr != nil:
			r.Reply = append(append(r.Reply[:0], "-ERR syncproxy: the write was not applied, another write of its transaction on the master was refused ("...),
				bytes.TrimSpace(queuedErr[1:])...)
			r.Reply = append(r.Reply, "), retry\r\n"...)
		default:
			r.Reply = append(r.Reply[:0], l.scratch...)
		}
	}
	l.completeGroup(p, 0, "")
	return nil, nil
}

// completeGroup completes a native group's writes with their replies,
// numbered seq in epoch (0: not numbered).
func (l *link) completeGroup(p pending, seq int64, epoch string) {
	n := 0
	for r := p.req; r != nil; n++ {
		next := r.next
		r.next = nil
		r.Seq, r.Epoch = seq, epoch
		l.b.Outstanding.Add(-1)
		r.complete()
		r = next
	}
	l.b.Stats.Requests.Add(int64(n))
	l.b.Stats.Latency.ObserveN(time.Duration(monoNow()-p.sent), n)
}
