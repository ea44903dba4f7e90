package proxy

import (
	"math"
	"sync"
	"time"

	"github.com/syncproxy/syncproxy/router"
)

// The status page's charts come from a ring of samples the proxy takes every
// second: the last 15 minutes, in bounded memory. The sampler goroutine belongs
// to the admin server: the first AdminHandler starts it, Shutdown (closeAdmin)
// stops it and waits for it.

const (
	// seriesLen is the number of samples kept: 15 minutes at one a second.
	seriesLen = 900
	// sampleEvery is the time between two samples.
	sampleEvery = time.Second
	// maxStateEvents bounds the slaves' state changes kept for the charts.
	maxStateEvents = 256
)

// sample is one second of the proxy's life.
type sample struct {
	t             int64   // unix milliseconds
	reads, writes float64 // commands per second
	p50, p99      float64 // milliseconds; NaN when no command was served
	errors        float64 // error replies per second
	clients       int64
	slaves        []slaveSample
}

// slaveSample is one slave's lag in a sample.
type slaveSample struct {
	name           string
	lagMsgs, lagMs int64
	state          string
}

// StateEvent is a slave's change of state, as seen by the sampler.
type StateEvent struct {
	T     int64  `json:"t"` // unix milliseconds
	Slave string `json:"slave"`
	State string `json:"state"`
	From  string `json:"from"` // the state at the sample before
}

// Series is the sampled history of /status.json, one array entry per sample
// (oldest first); a null latency is a second without commands.
type Series struct {
	IntervalMs int64         `json:"interval_ms"`
	T          []int64       `json:"t"`
	Reads      []float64     `json:"reads_per_s"`
	Writes     []float64     `json:"writes_per_s"`
	P50Ms      []*float64    `json:"p50_ms"`
	P99Ms      []*float64    `json:"p99_ms"`
	Errors     []float64     `json:"errors_per_s"`
	Clients    []int64       `json:"connected_clients"`
	Slaves     []SlaveSeries `json:"slaves"`
	Events     []StateEvent  `json:"state_changes"`
}

// SlaveSeries is one slave's lag in each sample; null where the slave was not
// configured.
type SlaveSeries struct {
	Name        string   `json:"name"`
	LagMessages []*int64 `json:"lag_messages"`
	LagMs       []*int64 `json:"lag_ms"`
}

// counts are the cumulative counters a sample is the difference of.
type counts struct {
	reads, writes, errors int64
	buckets               [17]uint64 // per latency bucket, the last one +Inf
}

// sampler fills the ring; its goroutine runs from start to stop.
type sampler struct {
	s     *Server
	reads []*cmdStat // commands flagged readonly
	other []*cmdStat // writes, unknown commands and the rest
	prev  counts     // sampler goroutine only
	stopC chan struct{}
	done  chan struct{}

	mu     sync.Mutex
	ring   [seriesLen]sample
	n      int // samples taken, the latest at (n-1)%seriesLen
	events []StateEvent
	states map[string]string // each slave's state at the last sample
}

func newSampler(s *Server) *sampler {
	sp := &sampler{s: s, stopC: make(chan struct{}), done: make(chan struct{}), states: map[string]string{}}
	for ci, st := range s.metrics.commands {
		if ci.Has(router.FlagReadonly) {
			sp.reads = append(sp.reads, st)
		} else {
			sp.other = append(sp.other, st)
		}
	}
	sp.other = append(sp.other, &s.metrics.unknown)
	return sp
}

// startSampler starts the server's sampler once; it is nil after Shutdown.
func (s *Server) startSampler() *sampler {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil
	}
	if s.series == nil {
		s.series = newSampler(s)
		go s.series.run()
	}
	return s.series
}

// stopSampler stops the sampler and waits for its goroutine.
func (s *Server) stopSampler() {
	s.mu.Lock()
	sp := s.series
	s.mu.Unlock()
	if sp != nil {
		sp.stop()
	}
}

func (sp *sampler) stop() {
	select {
	case <-sp.stopC:
	default:
		close(sp.stopC)
	}
	<-sp.done
}

func (sp *sampler) run() {
	defer close(sp.done)
	sp.prev = sp.counts()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-sp.stopC:
			return
		case now := <-tick.C:
			sp.take(now, now.Sub(last))
			last = now
		}
	}
}

// counts reads the cumulative counters.
func (sp *sampler) counts() counts {
	var c counts
	add := func(list []*cmdStat, n *int64) {
		for _, st := range list {
			calls := st.calls.Load()
			if calls == 0 {
				continue
			}
			*n += calls
			total, _, b := st.latency.Snapshot()
			var below uint64
			for i, bound := range router.LatencyBuckets {
				c.buckets[i] += b[bound] - below
				below = b[bound]
			}
			c.buckets[len(router.LatencyBuckets)] += total - below
		}
	}
	add(sp.reads, &c.reads)
	add(sp.other, &c.writes)
	for i := range sp.s.metrics.errors {
		c.errors += sp.s.metrics.errors[i].Load()
	}
	return c
}

// take records one sample: the rates since the previous one, over elapsed.
func (sp *sampler) take(now time.Time, elapsed time.Duration) {
	cur := sp.counts()
	secs := elapsed.Seconds()
	if secs <= 0 {
		secs = sampleEvery.Seconds()
	}
	var delta [17]uint64
	for i := range delta {
		if cur.buckets[i] >= sp.prev.buckets[i] {
			delta[i] = cur.buckets[i] - sp.prev.buckets[i]
		}
	}
	smp := sample{
		t:       now.UnixMilli(),
		reads:   rate(cur.reads-sp.prev.reads, secs),
		writes:  rate(cur.writes-sp.prev.writes, secs),
		errors:  rate(cur.errors-sp.prev.errors, secs),
		p50:     quantile(0.5, delta[:]),
		p99:     quantile(0.99, delta[:]),
		clients: sp.s.clients.Load(),
	}
	sp.prev = cur
	sp.mu.Lock()
	defer sp.mu.Unlock()
	slot := &sp.ring[sp.n%seriesLen]
	smp.slaves = slot.slaves[:0] // reused: the ring allocates nothing once full
	for _, sl := range sp.s.router.Slaves() {
		a := applierOf(sl)
		st := a.State().String()
		if !sl.Backend.Up() {
			st = "down"
		}
		smp.slaves = append(smp.slaves, slaveSample{name: a.Name(), lagMsgs: a.LagMessages(), lagMs: a.LagMs(), state: st})
		sp.noteState(smp.t, a.Name(), st)
	}
	*slot = smp
	sp.n++
}

// noteState records a slave's change of state; mu is held.
func (sp *sampler) noteState(t int64, name, state string) {
	from, seen := sp.states[name]
	sp.states[name] = state
	if !seen || from == state {
		return // a slave's first state is no change
	}
	if len(sp.events) == maxStateEvents {
		copy(sp.events, sp.events[1:])
		sp.events = sp.events[:maxStateEvents-1]
	}
	sp.events = append(sp.events, StateEvent{T: t, Slave: name, State: state, From: from})
}

func rate(n int64, secs float64) float64 {
	if n < 0 {
		return 0
	}
	return math.Round(float64(n)/secs*10) / 10
}

// quantile estimates the q-quantile in milliseconds of the observations counted
// per bucket of router.LatencyBuckets, interpolating within the bucket as
// Prometheus' histogram_quantile does; NaN without observations.
func quantile(q float64, perBucket []uint64) float64 {
	var total uint64
	for _, n := range perBucket {
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	var below uint64
	lower := 0.0
	for i, n := range perBucket {
		if i == len(router.LatencyBuckets) {
			return lower * 1000 // beyond the last bound: report it
		}
		upper := router.LatencyBuckets[i]
		if float64(below+n) >= rank && n > 0 {
			v := lower + (upper-lower)*(rank-float64(below))/float64(n)
			return math.Round(v*1e6) / 1e3
		}
		below += n
		lower = upper
	}
	return lower * 1000
}

// snapshot returns the samples of the ring, oldest first.
func (sp *sampler) snapshot() *Series {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	count := min(sp.n, seriesLen)
	out := &Series{IntervalMs: sampleEvery.Milliseconds(), T: make([]int64, 0, count),
		Reads: make([]float64, 0, count), Writes: make([]float64, 0, count), P50Ms: make([]*float64, 0, count),
		P99Ms: make([]*float64, 0, count), Errors: make([]float64, 0, count), Clients: make([]int64, 0, count),
		Slaves: []SlaveSeries{}, Events: []StateEvent{}}
	index := map[string]int{}
	for i := 0; i < count; i++ {
		smp := &sp.ring[(sp.n-count+i)%seriesLen]
		out.T = append(out.T, smp.t)
		out.Reads = append(out.Reads, smp.reads)
		out.Writes = append(out.Writes, smp.writes)
		out.P50Ms = append(out.P50Ms, optional(smp.p50))
		out.P99Ms = append(out.P99Ms, optional(smp.p99))
		out.Errors = append(out.Errors, smp.errors)
		out.Clients = append(out.Clients, smp.clients)
		for _, ss := range smp.slaves {
			j, ok := index[ss.name]
			if !ok {
				j = len(out.Slaves)
				index[ss.name] = j
				out.Slaves = append(out.Slaves, SlaveSeries{Name: ss.name,
					LagMessages: make([]*int64, count), LagMs: make([]*int64, count)})
			}
			msgs, ms := ss.lagMsgs, ss.lagMs
			out.Slaves[j].LagMessages[i], out.Slaves[j].LagMs[i] = &msgs, &ms
		}
	}
	if count > 0 {
		oldest := out.T[0]
		for _, e := range sp.events {
			if e.T >= oldest {
				out.Events = append(out.Events, e)
			}
		}
	}
	return out
}

func optional(v float64) *float64 {
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
